"""RAD-ChestCT labels and DeepLesion lesions as rgct samples (the same :class:`Sample` records
the RadGenome CSV rows become, so the same transforms, batches and model serve them).

- RAD-ChestCT (:func:`radchest_samples`): each region of a volume gets region-level presence
  targets (``labels``: the 18 CT-RATE labels inside it, for the region classifier) and VQA in the
  official templates: ``presence`` ("Can lung nodule be identified in the lung?" Yes/No, every
  positive plus as many absent labels the region can hold) and ``abnormality`` (the region's
  positives, CT-RATE names first, the rest under their SARLE names). ``region_report`` (one per
  region, for ``rgct generate``: the release has no report text, so its answer is the region's
  positives as the abnormality answer writes them, empty when none). Masks come from
  ``<root>/masks`` (``rgct segment --out <root>/masks``); a region without one uses the whole
  scan with its name in the prompt.
- DeepLesion (:func:`deeplesion_samples`): per lesion, the box on its key slice is the region:
  ``lesion`` ("Describe the lesion in this region." -> "A lung lesion of 15.6 x 12.0 mm."),
  ``lesion_size`` ("16x12 mm") and ``lesion_type`` ("lung.", known types only). Volumes and box
  masks are written once as NIfTI into a cache folder (:func:`rgct.data.deeplesion.materialise`).
  With ``evidence`` (``data.lesion_evidence``, training) each prompt starts with the lesion's
  evidence line from the truth: "Lesion in this box: lung, 16 x 12 mm. Describe the lesion ...".

Example::

    tables = radchest_samples(load_radchest(root, "train"), ["presence", "abnormality"])
    tables = deeplesion_samples(load_deeplesion(root), "train", ["lesion"], cache_dir)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rgct.constants import (
    CT_RATE_LABELS,
    LESION_PROMPTS,
    LESION_TASKS,
    QUESTION_TEMPLATES,
    RADCHEST_TASKS,
    REGIONS,
    REPORT_PROMPTS,
)
from rgct.data.deeplesion import DeepLesionIndex, Lesion, materialise
from rgct.data.layout import pick_mask
from rgct.data.lesion_measure import lesion_evidence_line
from rgct.data.radchestct import RadChestIndex
from rgct.data.sample_table import TEXT_FIELDS, SampleTable
from rgct.data.source_maps import (
    DEEPLESION_TYPES,
    LESION_REGIONS,
    RADCHEST_LABELS,
    MappedLabel,
    map_radchest_pair,
)
from rgct.data.source_report import check_layout_tasks

logger = logging.getLogger(__name__)

REGION_LABELS: dict[str, tuple[str, ...]] = {
    region: tuple(
        dict.fromkeys(
            rule.label
            for rule in RADCHEST_LABELS.values()
            if rule.region == region or (rule.regions and region in rule.regions)
        )
    )
    for region in REGIONS
}
"""Region -> the CT-RATE labels the mapping can put there (the absent ones are asked about)."""


class TaskTable:
    """Columns of one task's samples, added one sample at a time (``table()``: a SampleTable)."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {name: [] for name in TEXT_FIELDS}
        self.labels: list[list[int] | None] = []

    def add(self, labels: list[int] | None = None, **fields) -> None:
        for name in TEXT_FIELDS:
            self.cols[name].append(fields[name])
        self.labels.append(labels)

    def table(self) -> SampleTable:
        return SampleTable.from_columns(self.cols, self.labels)


def radchest_region_findings(pairs: list[tuple[str, str]]) -> dict[str, list[MappedLabel]]:
    """Region -> its mapped positives (distinct labels, CT-RATE labels first, then by name)."""
    out: dict[str, dict[str, MappedLabel]] = {}
    for abnormality, location in pairs:
        mapped = map_radchest_pair(abnormality, location)
        if mapped is not None:
            out.setdefault(mapped.region, {}).setdefault(mapped.label, mapped)
    return {
        region: sorted(found.values(), key=lambda m: (not m.ct_rate, m.label))
        for region, found in out.items()
    }


def region_label_vector(found: list[MappedLabel]) -> list[int]:
    """18 0/1 ints (CT_RATE_LABELS order) of a region's mapped positives."""
    present = {m.label for m in found if m.ct_rate}
    return [int(label in present) for label in CT_RATE_LABELS]


def _mask_names(folder: Path) -> frozenset[str]:
    try:
        return frozenset(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return frozenset()


def radchest_samples(
    index: RadChestIndex, tasks: Iterable[str] = RADCHEST_TASKS, *, seed: int = 0
) -> dict[str, SampleTable]:
    """Region-level presence, abnormality and region-report samples of a RAD-ChestCT split.

    Every region with a mask (every region when the volume has no masks) gets presence samples
    and a region-report sample; regions with a positive get an abnormality sample. ``labels``
    holds the region's 18 CT-RATE targets on every sample.
    """
    tasks = check_layout_tasks(list(tasks), "rad-chestct", index.root)
    rng = np.random.default_rng(seed)
    tables = {t: TaskTable() for t in tasks}
    for volume in sorted(index.volumes):
        region_dir = index.masks_root / "region_mask" / f"seg_{volume}"
        anatomy_dir = index.masks_root / "anatomy_mask" / f"seg_{volume}"
        region_files, anatomy_files = _mask_names(region_dir), _mask_names(anatomy_dir)
        with_masks = [r for r in REGIONS if f"{r}.nii.gz" in region_files]
        found = radchest_region_findings(index.positives[volume])
        for region in with_masks or REGIONS:
            picked = pick_mask(volume, region, anatomy_files, region_files)
            mask = None
            if picked is not None:
                mask = str((anatomy_dir if picked[0] == "anatomy" else region_dir) / picked[1])
            positives = found.get(region, [])
            labels = region_label_vector(positives)
            common = dict(
                volume=volume,
                region=region,
                anatomy=region,
                mask_path=mask,
                image_path=str(index.volumes[volume]),
                labels=labels,
            )
            if "presence" in tables:
                absent = [
                    lab for lab in REGION_LABELS[region] if not labels[CT_RATE_LABELS.index(lab)]
                ]
                count = min(len(absent), max(1, len(positives)))
                asked = [(m.words, "Yes.") for m in positives]
                asked += [
                    (absent[i].lower(), "No.") for i in sorted(rng.permutation(len(absent))[:count])
                ]
                for words, answer in asked:
                    prompt = QUESTION_TEMPLATES["presence"].format(abnormality=words, region=region)
                    tables["presence"].add(task="presence", prompt=prompt, answer=answer, **common)
            said = ", ".join(m.words for m in positives) + "." if positives else ""
            if "abnormality" in tables and positives:
                prompt = QUESTION_TEMPLATES["abnormality"].format(region=region)
                tables["abnormality"].add(task="abnormality", prompt=prompt, answer=said, **common)
            if "region_report" in tables:
                prompt = REPORT_PROMPTS["region_report"].format(region=region)
                tables["region_report"].add(
                    task="region_report", prompt=prompt, answer=said, **common
                )
    return {t: tab.table() for t, tab in tables.items()}


def lesion_sentence(lesion: Lesion) -> str:
    """``'A lung lesion of 15.6 x 12.0 mm.'`` (``'A lesion of ...'`` for an unknown type)."""
    long_mm, short_mm = lesion.diameters_mm
    kind = DEEPLESION_TYPES.get(lesion.lesion_type)
    words = kind.words if kind else "lesion"
    article = "An" if words[0] in "aeiou" else "A"
    return f"{article} {words} of {long_mm:.1f} x {short_mm:.1f} mm."


def lesion_size_text(lesion: Lesion) -> str:
    """``'16x12 mm'``: the long and short diameters as RadGenome writes sizes."""
    long_mm, short_mm = lesion.diameters_mm
    return f"{round(long_mm)}x{round(short_mm)} mm"


def lesion_label_vector(lesion: Lesion) -> list[int]:
    """18 0/1 ints (CT_RATE_LABELS order): the CT-RATE label of the lesion's type, if any
    (:data:`~rgct.data.source_maps.DEEPLESION_TYPES`); nothing for an unknown type. The box
    holds this one lesion, so no other label is known present."""
    kind = DEEPLESION_TYPES.get(lesion.lesion_type)
    return [int(kind is not None and label == kind.ct_rate) for label in CT_RATE_LABELS]


def lesion_truth_line(lesion: Lesion) -> str:
    """The lesion evidence line from ``DL_info.csv`` (training): the region of the lesion's type
    (none for an unknown type or one outside the segmenter's regions) and its diameters."""
    kind = DEEPLESION_TYPES.get(lesion.lesion_type)
    region = kind.region if kind is not None and kind.region in LESION_REGIONS else None
    return lesion_evidence_line(region, *lesion.diameters_mm)


def deeplesion_samples(
    index: DeepLesionIndex,
    split: str,
    tasks: Iterable[str] = LESION_TASKS,
    cache_dir: str | Path | None = None,
    max_lesions: int | None = None,
    evidence: bool = False,
) -> dict[str, SampleTable]:
    """Grounded lesion samples of one DeepLesion split (``Train_Val_Test``: train/valid/test).

    Args:
        cache_dir: where lesion volumes and box masks are written as NIfTI (default
            ``<root>/.rgct_cache/deeplesion``; the release itself is never written to).
        max_lesions: use the split's first N lesions.
        evidence: prompts start with the lesion's evidence line from the truth
            (:func:`lesion_truth_line`; ``data.lesion_evidence`` in training). Generation asks
            the plain prompts and writes the measured line itself.
    """
    tasks = check_layout_tasks(list(tasks), "deeplesion", index.root)
    cache_dir = Path(cache_dir) if cache_dir else index.root / ".rgct_cache" / "deeplesion"
    tables = {t: TaskTable() for t in tasks}
    for lesion in index.split(split)[:max_lesions]:
        image, mask = materialise(index.root, lesion, cache_dir)
        kind = DEEPLESION_TYPES.get(lesion.lesion_type)
        common = dict(
            volume=lesion.name,
            region=kind.region if kind else "others",
            anatomy=None,
            mask_path=str(mask),
            image_path=str(image),
            labels=lesion_label_vector(lesion),
        )
        answers = {
            "lesion": lesion_sentence(lesion),
            "lesion_size": lesion_size_text(lesion),
            "lesion_type": f"{kind.name}." if kind else None,
        }
        line = lesion_truth_line(lesion) + " " if evidence else ""
        for task in tasks:
            if answers[task] is not None:
                tables[task].add(
                    task=task, prompt=line + LESION_PROMPTS[task], answer=answers[task], **common
                )
    return {t: tab.table() for t, tab in tables.items()}
