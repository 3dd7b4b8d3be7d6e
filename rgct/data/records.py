"""CSV rows of a RadGenome-Chest CT split -> one :class:`Sample` record type for all tasks,
held in columnar :class:`~rgct.data.sample_table.SampleTable` form.

Example::

    index = load_split("/data/rg", "train")
    by_task = build_samples(index, {"region_report": 1.0, "presence": 0.5}, seed=0)
    mixed = mix_samples(by_task, {"region_report": 1.0, "presence": 0.5}, 1000, seed=0)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rgct.constants import (
    CSV_COLUMNS,
    CT_RATE_LABELS,
    OTHERS,
    QUESTION_TEMPLATES,
    REGIONS,
    REPORT_PROMPTS,
    TASKS,
    WHOLE_SCAN,
)
from rgct.data.io import DataError
from rgct.data.layout import (
    anatomy_mask_path,
    anatomy_parts,
    csv_path,
    is_whole_scan,
    leaf_name,
    mask_folders,
    normalize_split,
    parse_volume_name,
    pick_mask,
    preprocessed_dir,
    strip_suffix,
    volume_path,
)
from rgct.data.sample_table import TEXT_FIELDS, Sample, SampleTable
from rgct.data.truth import load_ground_truth

logger = logging.getLogger(__name__)


# task -> the CSV stem its rows come from
TASK_CSV = {
    "report": "region_report",
    "region_report": "region_report",
    "abnormality": "vqa_abnormality",
    "presence": "vqa_presence",
    "location": "vqa_location",
    "size": "vqa_size",
    "disorders": "case_disorders",
}


@dataclass
class Problem:
    """One thing wrong with a dataset folder.

    Attributes:
        severity: 'error' or 'warning'.
        kind: short tag, e.g. 'missing_volume', 'unknown_region', 'corrupt_nifti'.
        path: the file concerned.
        message: what is wrong, naming the file.
    """

    severity: str
    kind: str
    path: str
    message: str


@dataclass
class SplitIndex:
    """What :func:`load_split` found for one split.

    Attributes:
        root: dataset folder.
        split: 'train' or 'valid'.
        volumes: names of volumes present on disk, sorted.
        tables: CSV stem -> cleaned rows (dicts; ``Volumename`` without suffix).
        problems: everything wrong that was noticed (rows are dropped, not fixed).
        ground_truth: volume -> ground_truth.jsonl record, or None when that file is absent.
    """

    root: Path
    split: str
    volumes: list[str]
    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    ground_truth: dict[str, dict] | None = None


def find_volumes(root: str | Path, split: str) -> list[str]:
    """Names of the volumes under ``<root>/<split>_preprocessed`` (sorted)."""
    base = preprocessed_dir(root, split)
    if not base.is_dir():
        return []
    names = {strip_suffix(p.name) for p in base.glob("*/*/*.nii*")}
    return sorted(names)


def read_csv_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Read a RadGenome CSV as strings ('' for empty cells), checking its columns.

    Raises:
        DataError: unreadable file or a required column missing (both named).
    """
    try:  # object columns: plain Python strings (arrow-backed ones are slow to iterate)
        df = pd.read_csv(path, dtype=object, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read CSV ({e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; has {list(df.columns)}, expected {list(columns)}"
        )
    values = [[str(v).strip() for v in df[c].tolist()] for c in columns]
    return [dict(zip(columns, row)) for row in zip(*values)]


def _region_is_known(root: Path, volume: str, anatomy: str, cache: dict) -> bool:
    if anatomy not in cache:  # known by its name alone (a region, others, the whole scan)?
        parts = anatomy_parts(anatomy)
        cache[anatomy] = (
            not parts or any(p in REGIONS or p == OTHERS for p in parts) or is_whole_scan(anatomy)
        )
    if cache[anatomy]:
        return True
    parts = anatomy_parts(anatomy)
    key = (volume, anatomy)
    if key not in cache:
        cache[key] = any(anatomy_mask_path(root, volume, p).is_file() for p in parts)
    return cache[key]


def load_split(root: str | Path, split: str, *, max_volumes: int | None = None) -> SplitIndex:
    """Index one split: volumes on disk, cleaned CSV rows, and the problems found.

    Tolerant reading: an empty Anatomy cell is the whole report; quoted commas are kept;
    the ``.nii.gz`` suffix is optional; a missing CSV gives no rows (logged at info).
    Rows naming a volume that is not on disk, or a region that is neither known nor has an
    anatomy mask, are dropped and recorded in ``problems``.

    Args:
        root: dataset folder.
        split: 'train' or 'valid' (aliases accepted).
        max_volumes: keep only the first N volumes (sorted by name).
    """
    root = Path(root)
    split = normalize_split(split)
    volumes = find_volumes(root, split)
    if max_volumes is not None:
        volumes = volumes[:max_volumes]
    present = set(volumes)
    index = SplitIndex(root=root, split=split, volumes=volumes)
    index.ground_truth = load_ground_truth(root, split)
    known_cache: dict = {}
    name_errors: dict[str, str | None] = {}  # volume name -> why it is malformed (None: fine)
    for stem, columns in CSV_COLUMNS.items():
        path = csv_path(root, split, stem)
        if not path.is_file():
            logger.info("%s: not found; no %s samples for split %s", path, stem, split)
            continue
        try:
            rows = read_csv_rows(path, columns)
        except DataError as e:
            index.problems.append(Problem("error", "bad_csv", str(path), str(e)))
            continue
        kept = []
        stripped: dict[str, str] = {}
        for lineno, row in enumerate(rows, start=2):
            raw = row["Volumename"]
            name = stripped.get(raw) or stripped.setdefault(raw, strip_suffix(raw))
            row["Volumename"] = name
            where = f"{path}:{lineno}"
            if name not in name_errors:
                try:
                    parse_volume_name(name)
                    name_errors[name] = None
                except DataError as e:
                    name_errors[name] = str(e)
            if name_errors[name] is not None:
                msg = f"{where}: {name_errors[name]}"
                index.problems.append(Problem("error", "bad_volume_name", where, msg))
                continue
            if name not in present:
                vpath = volume_path(root, name)
                if not vpath.is_file():  # else: present but left out by max_volumes
                    msg = f"{where}: row names volume {name!r}, not found at {vpath}"
                    index.problems.append(Problem("error", "missing_volume", where, msg))
                continue
            anatomy = row.get("Anatomy", "")
            if anatomy and not _region_is_known(root, name, anatomy, known_cache):
                index.problems.append(
                    Problem(
                        "error",
                        "unknown_region",
                        where,
                        f"{where}: unknown region {anatomy!r} for {name} (not one of "
                        f"{', '.join(REGIONS)}, {OTHERS}, and no anatomy mask file)",
                    )
                )
                continue
            kept.append(row)
        index.tables[stem] = kept
    return index


# --- samples --------------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text.endswith((".", "?", "!")) else text + "."


def _region_matches(region: str, finding: dict) -> bool:
    if region == WHOLE_SCAN:
        return True
    if region == finding.get("region"):
        return True
    return region in anatomy_parts(finding.get("anatomy"))


def sample_labels(index: SplitIndex, volume: str, region: str) -> list[int] | None:
    """18 0/1 ints for ground-truth findings of ``volume`` inside ``region`` (None if unknown)."""
    if index.ground_truth is None or volume not in index.ground_truth:
        return None
    labels = [0] * len(CT_RATE_LABELS)
    for finding in index.ground_truth[volume].get("findings", []):
        label = finding.get("label")
        if label in CT_RATE_LABELS and _region_matches(region, finding):
            labels[CT_RATE_LABELS.index(label)] = 1
    return labels


def _task_list(tasks: dict[str, float] | Iterable[str]) -> list[str]:
    if isinstance(tasks, dict):
        names = [t for t, w in tasks.items() if w > 0]
    else:
        names = list(tasks)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise DataError(f"unknown task(s) {unknown}; known: {TASKS}")
    return names


class _MaskFiles:
    """:func:`~rgct.data.layout.pick_mask` on each volume's mask folders, listed once per volume
    (a set lookup per candidate name instead of a stat: millions of rows at release size)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: dict[str, tuple[Path, Path, frozenset[str], frozenset[str]]] = {}

    @staticmethod
    def _names(folder: Path) -> frozenset[str]:
        try:
            return frozenset(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return frozenset()

    def resolve(self, volume: str, anatomy: str | None) -> str | None:
        """The mask file of ``anatomy`` (as :func:`~rgct.data.layout.resolve_mask`), or None."""
        if volume not in self._folders:
            anatomy_dir, region_dir = mask_folders(self.root, volume)
            names = self._names(anatomy_dir), self._names(region_dir)
            self._folders[volume] = (anatomy_dir, region_dir, *names)
        anatomy_dir, region_dir, anatomy_files, region_files = self._folders[volume]
        picked = pick_mask(volume, anatomy, anatomy_files, region_files)
        if picked is None:
            return None
        kind, name = picked
        return str((anatomy_dir if kind == "anatomy" else region_dir) / name)


class _Columns:
    """Column lists of one task's samples, with the repeated strings memoised (one object each:
    mask lookups and paths are resolved once per volume and anatomy, not once per row)."""

    def __init__(self, index: SplitIndex, masks: _MaskFiles) -> None:
        self.index = index
        self.masks = masks
        self.cols: dict[str, list] = {name: [] for name in TEXT_FIELDS}
        self.labels: list[list[int] | None] = []
        self._masks: dict[tuple[str, str | None], str | None] = {}
        self._images: dict[str, str] = {}
        self._labels: dict[tuple[str, str], list[int] | None] = {}
        self._text: dict[str, str] = {}

    def add(
        self, volume: str, task: str, prompt: str, answer: str, region: str, anatomy: str | None
    ) -> str | None:
        """Append one sample; returns its mask path (None: an all-ones mask)."""
        key = (volume, anatomy or region)
        mask = self._masks.get(key, False)
        if mask is False:
            mask = None if region == WHOLE_SCAN else self.masks.resolve(volume, anatomy or region)
            self._masks[key] = mask
        image = self._images.get(volume)
        if image is None:
            image = self._images[volume] = str(volume_path(self.index.root, volume))
        labels_key = (volume, region)
        if labels_key not in self._labels:
            self._labels[labels_key] = sample_labels(self.index, volume, region)
        cols = self.cols
        cols["volume"].append(volume)
        cols["task"].append(task)
        cols["prompt"].append(self._text.setdefault(prompt, prompt))
        cols["answer"].append(answer)
        cols["region"].append(region)
        cols["anatomy"].append(anatomy)
        cols["mask_path"].append(mask)
        cols["image_path"].append(image)
        self.labels.append(self._labels[labels_key])
        return mask

    def table(self) -> SampleTable:
        return SampleTable.from_columns(self.cols, self.labels)


def build_samples(
    index: SplitIndex,
    tasks: dict[str, float] | list[str],
    *,
    unnamed_region_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, SampleTable]:
    """Turn the split's rows into samples, per task, with the official templates.

    Args:
        index: from :func:`load_split`.
        tasks: task names, or task -> weight (weight 0 drops the task).
        unnamed_region_fraction: fraction of region reports (with a mask) whose prompt is
            ``REPORT_PROMPTS['region_report_unnamed']``; chosen with ``seed``.
        seed: seed of that choice.

    Returns:
        task -> samples (a columnar :class:`SampleTable`) in a deterministic order (volume
        order, then row order).
    """
    out: dict[str, SampleTable] = {}
    rng = np.random.default_rng(seed)
    masks = _MaskFiles(index.root)
    for task in _task_list(tasks):
        if task not in TASK_CSV:
            raise DataError(
                f"task {task!r} has no RadGenome file in {index.root}: it is a DeepLesion task "
                "(list a DeepLesion folder under data.sources); RadGenome tasks: "
                f"{list(TASK_CSV)}"
            )
        rows = index.tables.get(TASK_CSV[task], [])
        cols = _Columns(index, masks)
        if task in ("region_report", "report"):
            regions: dict[str, dict[str, list[str]]] = {}
            whole: dict[str, str] = {}
            for row in rows:
                vol, anatomy, text = row["Volumename"], row["Anatomy"], row["Sentence"]
                if not anatomy:
                    whole[vol] = text
                elif text:
                    regions.setdefault(vol, {}).setdefault(anatomy, []).append(text)
            if task == "report":
                for vol in sorted(set(whole) | set(regions)):
                    text = whole.get(vol) or " ".join(s for ss in regions[vol].values() for s in ss)
                    cols.add(vol, task, REPORT_PROMPTS["report"], text, WHOLE_SCAN, None)
            else:
                named, unnamed = (
                    REPORT_PROMPTS["region_report"],
                    REPORT_PROMPTS["region_report_unnamed"],
                )
                for vol in sorted(regions):
                    for region, texts in regions[vol].items():
                        leaf = leaf_name(region)
                        mask = cols.add(vol, task, "", " ".join(texts), leaf, region)
                        hide = mask is not None and rng.random() < unnamed_region_fraction
                        prompt = (unnamed if hide else named).format(region=leaf)
                        cols.cols["prompt"][-1] = cols._text.setdefault(prompt, prompt)
        else:
            leaves: dict[str, str] = {}
            for row in sorted(rows, key=lambda r: r["Volumename"]):
                vol, anatomy = row["Volumename"], row.get("Anatomy", "")
                leaf = leaves.get(anatomy) or leaves.setdefault(
                    anatomy, leaf_name(anatomy) or WHOLE_SCAN
                )
                if task == "abnormality":
                    prompt = QUESTION_TEMPLATES[task].format(region=leaf)
                    answer = _sentence(row["Abnormality"])
                    cols.add(vol, task, prompt, answer, leaf, anatomy or None)
                elif task == "presence":
                    prompt = QUESTION_TEMPLATES[task].format(
                        abnormality=row["Finding"], region=leaf
                    )
                    cols.add(vol, task, prompt, _sentence(row["Presence"]), leaf, anatomy or None)
                elif task == "size":
                    prompt = QUESTION_TEMPLATES[task].format(
                        abnormality=row["Abnormality"], region=leaf
                    )
                    cols.add(vol, task, prompt, row["Size"], leaf, anatomy or None)
                elif task == "location":
                    prompt = QUESTION_TEMPLATES[task].format(abnormality=row["Abnormality"])
                    # the anatomy is the answer, so it is not handed to the model
                    cols.add(vol, task, prompt, anatomy, WHOLE_SCAN, None)
                elif task == "disorders":
                    prompt = QUESTION_TEMPLATES[task]
                    cols.add(vol, task, prompt, row["Disorders"], WHOLE_SCAN, None)
        out[task] = cols.table()
    return out


def mix_samples(
    samples_by_task: dict[str, Sequence[Sample]],
    weights: dict[str, float] | None,
    num_samples: int,
    seed: int,
    abnormal_fraction: float | None = None,
) -> SampleTable:
    """Draw ``num_samples`` samples, choosing the task of each by ``weights``.

    Within a task, samples are taken from a seeded permutation (all are used before any is
    repeated). Tasks with no samples or weight 0 are skipped. Same arguments -> same table.
    With ``abnormal_fraction``, each task whose samples carry region labels draws at least
    that fraction from samples whose region holds a finding (oversampling rare positives).

    Args:
        samples_by_task: task -> samples (:class:`SampleTable`, or a list of :class:`Sample`).

    Raises:
        DataError: no task has both a positive weight and samples.
    """
    tables = {t: SampleTable.from_samples(s) for t, s in samples_by_task.items()}
    weights = weights or {t: 1.0 for t in tables}
    tasks = [t for t in tables if len(tables[t]) and weights.get(t, 0.0) > 0]
    if not tasks:
        raise DataError(f"no samples to mix: tasks {list(tables)} with weights {weights}")
    # pool name -> (task, row numbers in that task's table)
    pools = {t: (t, np.arange(len(tables[t]))) for t in tasks}
    pool_weights = {t: weights[t] for t in tasks}
    if abnormal_fraction is not None:
        if not 0.0 <= abnormal_fraction <= 1.0:
            raise ValueError(f"abnormal_fraction must lie in [0, 1], got {abnormal_fraction}")
        pools, pool_weights = {}, {}
        for t in tasks:
            positive = tables[t].has_finding()
            abnormal, normal = np.flatnonzero(positive), np.flatnonzero(~positive)
            if not (len(abnormal) and len(normal)):  # nothing to rebalance: the task as it is
                pools[t], pool_weights[t] = (t, np.arange(len(positive))), weights[t]
                continue
            f = max(abnormal_fraction, len(abnormal) / len(positive))
            pools[t], pool_weights[t] = (t, normal), weights[t] * (1.0 - f)
            pools[f"{t}+abnormal"] = (t, abnormal)
            pool_weights[f"{t}+abnormal"] = weights[t] * f
    names = list(pools)
    rng = np.random.default_rng(seed)
    p = np.array([pool_weights[n] for n in names], dtype=np.float64)
    choice = rng.choice(len(names), size=num_samples, p=p / p.sum())
    picked = np.empty(num_samples, dtype=np.int64)  # row numbers within the chosen task
    perms: dict[int, np.ndarray] = {}
    pos: dict[int, int] = {}
    for n, k in enumerate(choice.tolist()):
        rows = pools[names[k]][1]
        if pos.get(k, len(rows)) >= len(rows):
            perms[k] = rows[rng.permutation(len(rows))]
            pos[k] = 0
        picked[n] = perms[k][pos[k]]
        pos[k] += 1
    task_of = np.array([tasks.index(pools[names[k]][0]) for k in range(len(names))])[choice]
    # one table of all mixed tasks, then the drawn rows in draw order
    offsets = np.cumsum([0] + [len(tables[t]) for t in tasks])
    return SampleTable.concat([tables[t] for t in tasks]).take(offsets[task_of] + picked)
