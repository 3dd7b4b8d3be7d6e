"""Batch generation for a split to JSONL: resumable, batched, sharded across processes.

The dataset folder may be in any layout rgct reads (:func:`rgct.data.source_report.detect_layout`):
RadGenome (its tasks, its masks or others), RAD-ChestCT (region reports and VQA on regions
whose masks come from the segmenter or a folder: the release has none; rows are what
:func:`rgct.eval.sources.score_radchest` scores) or DeepLesion (the grounded lesion tasks on
each lesion's box: :func:`rgct.eval.sources.score_deeplesion`; ``volume`` is the lesion's name).

Each output line::

    {"volume", "task", "region", "question", "prediction", "reference", "mask_source"}
    (+ "sentences": [{"region", "text"}] for whole reports, assembled region by region)

Every process writes its own part file (``<out>.part-<rank>``), appending one flushed line per
output; a rerun skips what any part already holds (a half-written last line is dropped), so
an interrupted run continues without duplicating or losing a line. At the end the parts are
merged in the stable sample order into ``<out>`` (written atomically) and removed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rgct.config import DataConfig, DataSource, GenerationConfig, RGCTConfig
from rgct.constants import CXR_LAYOUTS, CXR_TASKS, LESION_TASKS, REGIONS, REPORT_PROMPTS, WHOLE_SCAN
from rgct.data.compact import expand_batch
from rgct.data.cxr import mask_box
from rgct.data.dataset import RGCTDataset, collate
from rgct.data.io import DataError
from rgct.data.layout import strip_suffix
from rgct.data.radchestct import MASKS_FOLDER
from rgct.data.source_report import check_layout_tasks, detect_layout
from rgct.data.sources import SourceDataset
from rgct.data.truth import finding_locations, load_ground_truth
from rgct.files import write_jsonl
from rgct.generate.lesion_evidence import LesionEvidence, lesion_prompts
from rgct.generate.localize import Localizer
from rgct.generate.masks import DATASET, MaskProvider, MaskUnavailable
from rgct.inference import autocast_for
from rgct.model.rgct_model import RGCTModel
from rgct.text import split_sentences

logger = logging.getLogger(__name__)

TASK_GROUPS = {
    "report": ("report",),
    "region": ("region_report",),
    "vqa": ("abnormality", "presence", "location", "size", "disorders"),
    "lesions": LESION_TASKS,
    "cxr": CXR_TASKS,
}

LAYOUT_DEFAULT_TASKS = {
    "radgenome": "report,region,vqa",
    "rad-chestct": "region",
    "deeplesion": "lesions",
    "vindr-cxr": "cxr",
    "chestxray14": "cxr",
}
"""What ``rgct generate`` asks of a folder of each layout when ``--tasks`` is not given."""


def expand_tasks(spec: str | list[str]) -> list[str]:
    """'report,region,vqa' (groups or task names) -> task names, in a fixed order."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for name in (n.strip() for n in names if n.strip()):
        if name in TASK_GROUPS:
            out += [t for t in TASK_GROUPS[name] if t not in out]
        elif any(name in g for g in TASK_GROUPS.values()):
            out += [name] if name not in out else []
        else:
            known = sorted(set(TASK_GROUPS) | {t for g in TASK_GROUPS.values() for t in g})
            raise ValueError(f"unknown task {name!r}; choose from {known}")
    return out


def generation_layout(data_root: str | Path) -> str:
    """The folder's layout (:func:`~rgct.data.source_report.detect_layout`)."""
    return detect_layout(data_root)


def check_modality(cfg: RGCTConfig, layout: str, data_root: str | Path) -> None:
    """Refuse a folder of the other modality than the checkpoint's, naming both.

    Raises:
        DataError: radiographs for a CT checkpoint or CT volumes for a radiograph checkpoint.
    """
    radiographs = layout in CXR_LAYOUTS
    if radiographs != (cfg.data.modality == "cxr"):
        folder = "chest radiographs" if radiographs else "CT volumes"
        reads = "chest radiographs" if cfg.data.modality == "cxr" else "CT volumes"
        wanted = "a radiograph (data.modality: cxr)" if radiographs else "a CT"
        raise DataError(
            f"{data_root} is a {layout} folder ({folder}) but this checkpoint reads {reads} "
            f"(data.modality={cfg.data.modality}): use {wanted} checkpoint"
        )


def check_generation_inputs(data_root: str | Path, tasks: list[str], masks_source: str) -> str:
    """The folder's layout, when it holds ``tasks`` and ``masks_source`` can serve it.

    Args:
        masks_source: ``--masks``: 'dataset', 'predicted' or a folder.

    Raises:
        DataError: a task the layout has no samples for (named with the layout); dataset masks
            asked of RAD-ChestCT (it has none); other masks asked of DeepLesion (its tasks are
            grounded on each lesion's box).
    """
    layout = generation_layout(data_root)
    check_layout_tasks(tasks, layout, data_root)
    if layout in CXR_LAYOUTS and masks_source != DATASET:
        raise DataError(
            f"{data_root} is a {layout} folder: its box tasks are grounded on the release's boxes, "
            f"so --masks must be 'dataset' (got {masks_source!r})"
        )
    if layout == "rad-chestct" and masks_source == DATASET:
        hint = Path(data_root) / MASKS_FOLDER / "region_mask"
        raise DataError(
            f"{data_root} is a RAD-ChestCT folder: the release has no region masks, so "
            "--masks dataset cannot serve it; use --masks predicted (the checkpoint's segmenter) "
            "or --masks DIR (seg_<volume>/<region>.nii.gz files, as 'rgct segment' writes them)"
            + (f", e.g. --masks {hint}" if hint.is_dir() else "")
        )
    if layout == "deeplesion" and masks_source != DATASET:
        raise DataError(
            f"{data_root} is a DeepLesion folder: its lesion tasks are grounded on each lesion's "
            f"box from DL_info.csv, so --masks must be 'dataset' (got {masks_source!r})"
        )
    return layout


def sample_box(ds: RGCTDataset, i: int) -> list[int] | None:
    """``[x_min, y_min, x_max, y_max]`` in image pixels of a ``cxr_box`` sample's box (from its
    mask file: :func:`rgct.data.cxr.mask_box`), None for other samples."""
    s = ds.samples[i]
    if s.task != "cxr_box":
        return None
    from rgct.data.cxr_transforms import radiograph_shape, read_box_mask

    return list(mask_box(read_box_mask(s.mask_path, radiograph_shape(s.image_path))))


def build_generation_dataset(
    data_cfg: DataConfig, layout: str, split: str, tasks: list[str]
) -> RGCTDataset:
    """All samples of ``tasks`` in one split of the ``data_cfg.root`` folder (any layout), in order."""
    if layout == "radgenome":
        return RGCTDataset(data_cfg, split, train=False, tasks=tasks)
    source = DataSource(str(data_cfg.root), layout=layout, tasks={t: 1.0 for t in tasks})
    return SourceDataset(data_cfg, source, split, train=False)


@dataclass
class Unit:
    """One output line: the dataset rows it generates from (several for a whole report)."""

    key: str
    task: str
    volume: str
    region: str
    question: str
    reference: str
    rows: list[int] = field(default_factory=list)
    row_regions: list[str] = field(default_factory=list)
    box: list[int] | None = None
    """A ``cxr_box`` line's box in image pixels (one image asks the same question of each box)."""


def unit_key(volume: str, task: str, region: str, question: str, box: list | None = None) -> str:
    key = f"{volume}|{task}|{region}|{question}"
    return key if box is None else key + "|" + ",".join(str(int(v)) for v in box)


def plan_units(ds: RGCTDataset, tasks: list[str]) -> list[Unit]:
    """Output units in a stable order: per task, per dataset sample (reports per volume)."""
    units: list[Unit] = []
    seen: set[str] = set()
    repeated = 0
    by_task: dict[str, list[int]] = {}
    for i, s in enumerate(ds.samples):
        by_task.setdefault(s.task, []).append(i)
    for task in tasks:
        if task == "report":
            regions_of: dict[str, list[int]] = {}
            for i in by_task.get("region_report", []):
                regions_of.setdefault(ds.samples[i].volume, []).append(i)
            whole = {ds.samples[i].volume: ds.samples[i].answer for i in by_task.get("report", [])}
            for volume, rows in regions_of.items():
                rows = sorted(
                    rows,
                    key=lambda i: (
                        REGIONS.index(ds.samples[i].region)
                        if ds.samples[i].region in REGIONS
                        else len(REGIONS)
                    ),
                )
                ref = whole.get(volume) or " ".join(ds.samples[i].answer for i in rows)
                q = REPORT_PROMPTS["report"]
                units.append(
                    Unit(
                        unit_key(volume, task, WHOLE_SCAN, q),
                        task,
                        volume,
                        WHOLE_SCAN,
                        q,
                        ref,
                        rows,
                        [ds.samples[i].region for i in rows],
                    )
                )
            continue
        for i in by_task.get(task, []):
            s = ds.samples[i]
            box = sample_box(ds, i)
            key = unit_key(s.volume, task, s.region, s.prompt, box)
            if key in seen:  # the same question twice for one volume (e.g. two nodules in one
                repeated += 1  # lobe): one output line answers it
                continue
            seen.add(key)
            units.append(
                Unit(
                    key,
                    task,
                    s.volume,
                    s.region,
                    s.prompt,
                    s.answer,
                    [i],
                    [s.region],
                    box,
                )
            )
    if repeated:
        logger.info(
            "%d repeated questions (same volume, task, region and question) answered once",
            repeated,
        )
    return units


def read_done(paths: list[Path]) -> dict[str, dict]:
    """Complete lines already written (a trailing partial line is ignored and truncated)."""
    done: dict[str, dict] = {}
    for path in paths:
        if not path.is_file():
            continue
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            logger.warning("%s: dropping a half-written last line", path)
            with open(path, "r+b") as f:
                f.truncate(cut)
        for n, line in enumerate(data[:cut].splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}:{n}: not valid JSON ({e}); remove the file to start over"
                ) from e
            key = unit_key(
                row["volume"], row["task"], row["region"], row["question"], row.get("box")
            )
            done[key] = row
    return done


def _batches(units: list[Unit], batch_size: int) -> Iterator[list[Unit]]:
    """Group units so that each group generates at most ``batch_size`` rows (a report may exceed)."""
    group: list[Unit] = []
    rows = 0
    for u in units:
        if group and rows + len(u.rows) > batch_size:
            yield group
            group, rows = [], 0
        group.append(u)
        rows += len(u.rows)
    if group:
        yield group


@torch.no_grad()
def generate_units(
    model: RGCTModel,
    ds: RGCTDataset,
    units: list[Unit],
    gen: GenerationConfig,
    device: torch.device,
    blind: bool = False,
    oracle_evidence: bool = False,
    masks: MaskProvider | None = None,
    localizer: Localizer | None = None,
    truth: dict[str, dict] | None = None,
    lesions: LesionEvidence | None = None,
) -> list[dict]:
    """Generate the text of a group of units (one batched call) and build their output lines.

    ``oracle_evidence``: the detections line states each region's true labels (phantoms; a
    diagnostic of the language model alone, as if the region classifier were perfect).
    ``masks``: take region masks from a segmenter or a folder instead of the dataset; a unit
    whose mask is unavailable is left out (and logged). ``localizer``
    (``model.evidence_locations``): where each detected finding is; with ``oracle_evidence``
    the truth's places instead; none for the blind baseline. ``lesions``
    (``data.lesion_evidence``): lesion rows get the evidence line the model measures at their
    box (:mod:`rgct.generate.lesion_evidence`), written to each line as ``lesion_evidence``."""
    if masks is not None:
        kept = []
        for u in units:
            try:
                for i in u.rows:
                    s = ds.samples[i]
                    masks.mask(s.volume, s.anatomy, s.region)
                kept.append(u)
            except MaskUnavailable as e:
                masks.warnings.append(str(e))
                masks.skipped.append(u.key)
                logger.warning("%s", e)
        units = kept
        if not units:
            return []
    flat = [i for u in units for i in u.rows]
    # Named prompts at generation time (training may have used unnamed ones).
    prompts, items = [], []
    for i in flat:
        item = ds[i]
        if item is None:
            raise ValueError(f"sample {i} could not be read")
        items.append(item)
        s = ds.samples[i]
        prompts.append(
            REPORT_PROMPTS["region_report"].format(region=s.region)
            if s.task == "region_report"
            else s.prompt
        )
    batch = expand_batch(collate(items), device)
    if masks is not None:
        for row, i in enumerate(flat):
            s = ds.samples[i]
            m = masks.mask(s.volume, s.anatomy, s.region)
            if m is not None:
                batch["mask"][row] = m
    evidence, lesion_lines = None, []
    if lesions is not None:
        if oracle_evidence:
            raise ValueError("oracle evidence is not defined with measured lesion evidence")
        prompts, lesion_lines, detections = lesion_prompts(
            lesions, [ds.samples[i] for i in flat], prompts, blind
        )
        if detections is not None and model.cfg.evidence_prompt:
            evidence = detections.to(device)
    if oracle_evidence:
        if not bool(batch["has_labels"].all()):
            bad = next(ds.samples[i] for i, it in zip(flat, items) if not it["has_labels"])
            raise ValueError(
                f"oracle evidence needs ground-truth labels: {bad.volume} {bad.region!r} has none"
            )
        evidence = (batch["labels"] > 0.5).to(device)
    locations = None
    if model.cfg.evidence_locations and not blind:
        if oracle_evidence:
            if truth is None:
                raise ValueError("oracle locations need the dataset's ground_truth.jsonl")
            locations = [
                finding_locations(
                    truth.get(strip_suffix(ds.samples[i].volume)),
                    ds.samples[i].region,
                    whole_scan=model.cfg.scan_locations,
                )
                for i in flat
            ]
        elif localizer is not None:
            locations = [
                localizer.locations(ds.samples[i].volume, ds.samples[i].region, image)
                for i, image in zip(flat, batch["image"])
            ]
    detected = None  # a radiograph's: the film segmenter's, and a "where is X?" row's X
    if evidence is None and not blind and hasattr(localizer, "detected"):
        detected = [
            localizer.detected(ds.samples[i].volume, ds.samples[i].region, image, prompt)
            for i, image, prompt in zip(flat, batch["image"], prompts)
        ]
    presupposed = None  # a radiograph's box question: the box holds something (as the Predictor)
    if evidence is None and model.modality == "cxr":
        from rgct.generate.localize_cxr import presupposes_finding

        presupposed = [presupposes_finding(ds.samples[i].region, p) for i, p in zip(flat, prompts)]
    with autocast_for(device):
        texts = model.generate(
            batch["image"],
            batch["mask"],
            prompts,
            gen,
            blind=blind,
            evidence=evidence,
            locations=locations,
            detected=detected,
            presupposed=presupposed,
            mask_source=None if masks is None else masks.label,
        )
    out, k = [], 0
    for u in units:
        mine = texts[k : k + len(u.rows)]
        k += len(u.rows)
        row = {
            "volume": u.volume,
            "task": u.task,
            "region": u.region,
            "question": u.question,
            "prediction": " ".join(mine) if u.task == "report" else mine[0],
            "reference": u.reference,
            "mask_source": DATASET if masks is None else masks.label,
        }
        if u.box is not None:
            row["box"] = u.box
        if lesion_lines:
            row["lesion_evidence"] = lesion_lines[k - len(u.rows)]
        if u.task == "report":
            row["sentences"] = [
                {"region": r, "text": s}
                for r, t in zip(u.row_regions, mine)
                for s in split_sentences(t)
            ]
        out.append(row)
    return out


def run_generation(
    model: RGCTModel,
    cfg: RGCTConfig,
    data_root: str | Path,
    split: str,
    tasks: list[str],
    out: str | Path,
    *,
    limit: int | None = None,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
    blind: bool = False,
    gen: GenerationConfig | None = None,
    oracle_evidence: bool = False,
    masks: MaskProvider | None = None,
    localizer: Localizer | None = None,
    lesions: LesionEvidence | None = None,
) -> Path:
    """Generate this process's share of the units into its part file; return the part path.

    ``data_root`` may be in any layout rgct reads (:func:`check_generation_inputs` says what each
    takes). ``blind`` zeroes the visual input; ``oracle_evidence`` puts true labels in the
    detections line; ``lesions`` measures the lesion evidence line (see :func:`generate_units`).

    Raises:
        DataError: see :func:`check_generation_inputs`; the split has no samples of ``tasks``.
    """
    out = Path(out)
    layout = check_generation_inputs(data_root, tasks, DATASET if masks is None else masks.source)
    check_modality(cfg, layout, data_root)
    device = device or next(model.parameters()).device
    gen = gen or cfg.generation
    if cfg.data.lesion_evidence and lesions is None and layout == "deeplesion":
        raise ValueError(
            "this checkpoint was trained with data.lesion_evidence: its lesion prompts need the "
            "measured evidence line (rgct.generate.lesion_evidence.build_lesion_evidence)"
        )
    data_cfg = replace(  # the dataset's own prompts carry no truth (lesion lines are measured)
        cfg.data,
        root=str(data_root),
        unnamed_region_fraction=0.0,
        augment=False,
        max_volumes=limit,
        lesion_evidence=False,
    )
    needed = sorted({t for t in tasks} | ({"region_report"} if "report" in tasks else set()))
    ds = build_generation_dataset(data_cfg, layout, split, needed)
    if not len(ds):
        raise DataError(f"{data_root}: split {split!r} has no samples of {tasks} ({layout} layout)")
    units = plan_units(ds, tasks)
    truth = load_ground_truth(data_root) if oracle_evidence else None
    part = out.with_name(f"{out.name}.part-{rank}")
    done = read_done(sorted(out.parent.glob(out.name + ".part-*")) + [out])
    mine = [u for j, u in enumerate(units) if j % world == rank and u.key not in done]
    logger.info("rank %d: %d units to generate (%d already done)", rank, len(mine), len(done))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    with (
        open(part, "a") as f,
        tqdm(total=len(mine), desc=f"generate[{rank}]", disable=rank != 0) as bar,
    ):
        if masks is not None or localizer is not None or lesions is not None:
            # each volume segmented once
            mine.sort(key=lambda u: u.volume)
        for group in _batches(mine, gen.batch_size):
            rows = generate_units(
                model,
                ds,
                group,
                gen,
                device,
                blind=blind,
                oracle_evidence=oracle_evidence,
                masks=masks,
                localizer=localizer,
                truth=truth,
                lesions=lesions,
            )
            for row in rows:
                f.write(json.dumps(row) + "\n")
            if masks is not None and masks.skipped:  # units without a mask: left out, listed
                with open(out.with_name(f"{out.name}.skipped-{rank}"), "a") as g:
                    g.write("".join(k + "\n" for k in masks.skipped))
                masks.skipped.clear()
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(group))
    if rank == 0:
        out.with_name(f"{out.name}.order").write_text("\n".join(u.key for u in units))
    return part


def merge_parts(out: str | Path) -> Path:
    """Merge all part files into ``out`` in the stable unit order; remove the parts."""
    out = Path(out)
    parts = sorted(out.parent.glob(out.name + ".part-*"))
    rows = read_done(parts + [out])
    order_file = out.with_name(f"{out.name}.order")
    order = order_file.read_text().splitlines() if order_file.is_file() else sorted(rows)
    skipped_files = sorted(out.parent.glob(out.name + ".skipped-*"))
    skipped = {k for p in skipped_files for k in p.read_text().splitlines() if k}
    if skipped:
        logger.warning("%d units left out: their region mask was unavailable", len(skipped))
    order = [k for k in order if k not in skipped]
    missing = [k for k in order if k not in rows]
    if missing:
        raise RuntimeError(
            f"{len(missing)} outputs missing after generation (first: {missing[0]}); rerun to resume"
        )
    write_jsonl(out, [rows[k] for k in order])
    for p in parts:
        p.unlink()
    order_file.unlink(missing_ok=True)
    for p in skipped_files:
        p.unlink()
    return out
