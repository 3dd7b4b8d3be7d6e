"""Validate a dataset folder in the RadGenome-Chest CT layout and list every problem.

Example::

    report = check_dataset("/data/rg")
    print(format_report(report))
    sys.exit(1 if report.errors else 0)
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rgct.constants import CSV_COLUMNS, SPLITS
from rgct.data.io import DataError, canonical_header, check_mask, read_canonical
from rgct.data.layout import (
    CSV_FOLDER,
    anatomy_mask_dir,
    csv_path,
    preprocessed_dir,
    region_mask_dir,
    volume_path,
)
from rgct.data.records import Problem, find_volumes, load_split

logger = logging.getLogger(__name__)


@dataclass
class SplitSummary:
    """Counts for one split."""

    volumes: int = 0
    csv_rows: dict[str, int] = field(default_factory=dict)
    """CSV stem -> rows kept (rows with problems are not counted)."""
    region_masks: dict[str, int] = field(default_factory=dict)
    """Region name -> volumes that have its mask file."""
    anatomy_masks: int = 0
    """Anatomy mask files."""


@dataclass
class CheckReport:
    """Everything :func:`check_dataset` found."""

    root: str
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "ok": not self.errors,
            "splits": {k: asdict(v) for k, v in self.splits.items()},
            "problems": [asdict(p) for p in self.problems],
        }


def _split_present(root: Path, split: str) -> bool:
    if preprocessed_dir(root, split).is_dir() or region_mask_dir(root, split).is_dir():
        return True
    return any(csv_path(root, split, stem).is_file() for stem in CSV_COLUMNS)


def _check_volume(path: Path, deep: bool, problems: list[Problem]) -> tuple | None:
    """Canonical (shape, affine) of a volume, or None after recording why it failed."""
    try:
        if deep:
            array, affine, _ = read_canonical(path, np.float32)
            if not np.isfinite(array).all():
                problems.append(
                    Problem("error", "bad_values", str(path), f"{path}: NaN or inf voxels")
                )
            return tuple(array.shape), affine
        return canonical_header(path)
    except DataError as e:
        problems.append(Problem("error", "unreadable_volume", str(path), str(e)))
        return None


_MASK_KINDS = {
    "VolumeReadError": "unreadable_mask",
    "MaskShapeError": "mask_shape",
    "MaskAffineError": "mask_affine",
    "NonBinaryMaskError": "mask_not_binary",
    "EmptyMaskError": "empty_mask",
}


def _check_mask_file(path: Path, ref: tuple | None, vpath: Path, problems: list[Problem]) -> None:
    try:
        array, affine, _ = read_canonical(path, np.float32)
        if ref is not None:
            check_mask(
                array,
                ref[0],
                source=str(path),
                affine=affine,
                ref_affine=ref[1],
                ref_source=str(vpath),
            )
        else:
            check_mask(array, array.shape, source=str(path))
    except DataError as e:
        kind = _MASK_KINDS.get(type(e).__name__, "bad_mask")
        problems.append(Problem("error", kind, str(path), str(e)))


def check_dataset(
    root: str | Path, *, deep: bool = True, max_volumes: int | None = None
) -> CheckReport:
    """Check folders, volumes, masks and CSV rows of a dataset; collect all problems.

    Args:
        root: dataset folder.
        deep: read every voxel (finds truncated files); False reads headers only.
        max_volumes: check at most this many volumes per split.

    Returns:
        A :class:`CheckReport`; ``report.errors`` empty means the folder is usable.
    """
    root = Path(root)
    report = CheckReport(root=str(root))
    problems = report.problems
    if not root.is_dir():
        problems.append(Problem("error", "missing_folder", str(root), f"{root}: folder not found"))
        return report
    if not (root / CSV_FOLDER).is_dir():
        problems.append(
            Problem(
                "error", "missing_folder", str(root / CSV_FOLDER), f"{root / CSV_FOLDER}: missing"
            )
        )
    splits = [s for s in SPLITS if _split_present(root, s)]
    if not splits:
        problems.append(
            Problem("error", "missing_folder", str(root), f"{root}: no <split>_preprocessed folder")
        )
    for split in splits:
        summary = SplitSummary()
        report.splits[split] = summary
        for folder in (preprocessed_dir(root, split), region_mask_dir(root, split)):
            if not folder.is_dir():
                problems.append(
                    Problem("error", "missing_folder", str(folder), f"{folder}: missing")
                )
        if not anatomy_mask_dir(root, split).is_dir():
            folder = anatomy_mask_dir(root, split)
            problems.append(Problem("warning", "missing_folder", str(folder), f"{folder}: missing"))
        volumes = find_volumes(root, split)[:max_volumes]
        summary.volumes = len(volumes)
        regions: Counter = Counter()
        for name in volumes:
            vpath = volume_path(root, name)
            if not vpath.is_file():
                msg = f"{vpath.parent / (name + '.nii*')}: volume not at its layout path {vpath}"
                problems.append(Problem("error", "misplaced_volume", str(vpath), msg))
                continue
            ref = _check_volume(vpath, deep, problems)
            seg = region_mask_dir(root, split) / f"seg_{name}"
            if not seg.is_dir():
                problems.append(Problem("warning", "no_masks", str(seg), f"{seg}: no region masks"))
            for mask in sorted(seg.glob("*.nii*")):
                regions[mask.name.split(".nii")[0]] += 1
                _check_mask_file(mask, ref, vpath, problems)
            for mask in sorted((anatomy_mask_dir(root, split) / f"seg_{name}").glob("*.nii*")):
                summary.anatomy_masks += 1
                _check_mask_file(mask, ref, vpath, problems)
        summary.region_masks = dict(sorted(regions.items()))
        index = load_split(root, split)
        summary.csv_rows = {stem: len(rows) for stem, rows in index.tables.items()}
        for stem in CSV_COLUMNS:
            if stem not in index.tables and not csv_path(root, split, stem).is_file():
                p = csv_path(root, split, stem)
                problems.append(Problem("warning", "missing_csv", str(p), f"{p}: missing"))
        problems.extend(index.problems)
    return report


def format_report(report: CheckReport, max_problems: int = 50) -> str:
    """The summary table and problem list as text."""
    lines = [f"dataset: {report.root}", ""]
    stems = list(CSV_COLUMNS)
    header = f"{'':26s}" + "".join(f"{s:>10s}" for s in report.splits)
    lines.append(header)
    rows = [("volumes", lambda s: s.volumes), ("anatomy masks", lambda s: s.anatomy_masks)]
    rows += [(f"rows {stem}", lambda s, k=stem: s.csv_rows.get(k, 0)) for stem in stems]
    regions = sorted({r for s in report.splits.values() for r in s.region_masks})
    rows += [(f"masks {r}", lambda s, k=r: s.region_masks.get(k, 0)) for r in regions]
    for label, get in rows:
        lines.append(
            f"{label[:26]:26s}" + "".join(f"{get(s):>10d}" for s in report.splits.values())
        )
    return "\n".join(lines + format_problems(report.problems, max_problems))


def format_problems(problems: list[Problem], max_problems: int = 50) -> list[str]:
    """The error and warning counts, then the first ``max_problems`` problems (errors first)."""
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    lines = ["", f"{len(errors)} error(s), {len(warnings)} warning(s)"]
    for p in (errors + warnings)[:max_problems]:
        lines.append(f"  {p.severity.upper():7s} {p.kind:20s} {p.message}")
    if len(problems) > max_problems:
        lines.append(f"  ... and {len(problems) - max_problems} more (see --json)")
    return lines
