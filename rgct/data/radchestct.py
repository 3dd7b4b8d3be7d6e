"""Reading the RAD-ChestCT (Duke) release: ``.npz`` volumes and the abnormality x location labels.

Layout (as released; the ``.npz`` files may sit in any sub-folder, e.g. one per archive part)::

    <root>/
      CT_Scan_Metadata_Complete_35747.csv                 spacing per volume (the name column, e.g.
                                                          VolumeAcc_DEID, + spacing columns)
      imgtrain_Abnormality_and_Location_Labels.csv        first column: volume name; then one 0/1
      imgvalid_Abnormality_and_Location_Labels.csv        column per 'abnormality*location' pair
      imgtest_Abnormality_and_Location_Labels.csv
      **/<volume>.npz                                     key 'ct': int16 HU [slices, 420, 420]
      masks/                                              optional: `rgct segment --out <root>/masks`
        region_mask/seg_<volume>/<region>.nii.gz
        anatomy_mask/seg_<volume>/<anatomy>.nii.gz

Spacing columns understood (:func:`rgct.data.io.spacing_from_metadata`): ``XYSpacing`` +
``ZSpacing``, ``spacing_d/h/w`` or ``z_spacing/y_spacing/x_spacing``; ``data check`` says which
volumes have none. How columns become rgct regions and labels: :mod:`rgct.data.source_maps`.

Example::

    index = load_radchest(root, "train")
    index.positives["trn00001"]   # [('nodule', 'right_upper'), ...]
    report = check_radchest(root)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rgct.data.io import DataError, Volume, VolumeReadError, load_npz, spacing_from_metadata
from rgct.data.records import Problem
from rgct.data.source_maps import RADCHEST_ABNORMALITIES, HeaderError, parse_radchest_column
from rgct.data.source_report import SourceReport, error

logger = logging.getLogger(__name__)

METADATA_FILE = "CT_Scan_Metadata_Complete_35747.csv"
LABEL_FILE = "img{split}_Abnormality_and_Location_Labels.csv"
RADCHEST_SPLITS = ("train", "valid", "test")
MASKS_FOLDER = "masks"
NPZ_KEY = "ct"


def label_path(root: str | Path, split: str) -> Path:
    """``<root>/img<split>_Abnormality_and_Location_Labels.csv``."""
    if split not in RADCHEST_SPLITS:
        raise DataError(f"unknown RAD-ChestCT split {split!r}; known: {RADCHEST_SPLITS}")
    return Path(root) / LABEL_FILE.format(split=split)


def is_radchest(root: str | Path) -> bool:
    """True when ``root`` holds a RAD-ChestCT label file."""
    return any(label_path(root, s).is_file() for s in RADCHEST_SPLITS)


def find_npz(root: str | Path) -> dict[str, Path]:
    """Volume name (file stem) -> ``.npz`` path, searched under ``root`` recursively."""
    return {p.stem: p for p in sorted(Path(root).rglob("*.npz"))}


def load_radchest_volume(root: str | Path, name: str, npz: dict[str, Path] | None = None) -> Volume:
    """Volume ``name`` of a RAD-ChestCT folder: its ``.npz`` with the metadata table's spacing.

    Args:
        npz: volume -> file (from :func:`find_npz`; searched when None).

    Raises:
        VolumeReadError: no such ``.npz``, or unreadable. DataError: no spacing for it.
    """
    npz = find_npz(root) if npz is None else npz
    if name not in npz:
        raise VolumeReadError(f"{root}: no {name}.npz")
    return load_npz(npz[name], npz_key=NPZ_KEY, metadata_csv=Path(root) / METADATA_FILE)


@dataclass
class RadChestIndex:
    """What :func:`load_radchest` found for one split.

    Attributes:
        root: dataset folder.
        split: 'train', 'valid' or 'test'.
        columns: the label columns kept, as (abnormality, location), in file order.
        positives: volume -> its positive (abnormality, location) pairs (volumes with a usable
            row, an ``.npz`` and a spacing; a volume with no positive has an empty list).
        volumes: volume -> its ``.npz`` file.
        spacing: volume -> (d, h, w) mm from the metadata table.
        problems: everything wrong (bad columns and rows are left out, never guessed).
    """

    root: Path
    split: str
    columns: list[tuple[str, str]] = field(default_factory=list)
    positives: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    volumes: dict[str, Path] = field(default_factory=dict)
    spacing: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def metadata_csv(self) -> Path:
        return self.root / METADATA_FILE

    @property
    def masks_root(self) -> Path:
        return self.root / MASKS_FOLDER


def _volume_spacing(
    index: RadChestIndex, name: str, where: str
) -> tuple[float, float, float] | None:
    try:
        spacing = spacing_from_metadata(index.metadata_csv, name)
    except DataError as e:
        error(index.problems, "missing_spacing", where, f"volume {name!r}: no spacing ({e})")
        return None
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        error(
            index.problems,
            "bad_spacing",
            where,
            f"volume {name!r}: spacing {list(spacing)} mm is not positive (metadata row)",
        )
        return None
    return spacing


def load_radchest(
    root: str | Path,
    split: str,
    *,
    npz: dict[str, Path] | None = None,
    max_volumes: int | None = None,
) -> RadChestIndex:
    """Read one split's label file, checking every column and row.

    Malformed ``abnormality*location`` headers and unknown locations drop their column (error);
    unknown abnormalities are kept under their own name (warning); a row with a value other than
    0/1, no ``.npz`` or no usable spacing is dropped (error naming the file and line).

    Args:
        root: dataset folder.
        split: 'train', 'valid' or 'test'.
        npz: volume -> file (from :func:`find_npz`; searched when None).
        max_volumes: keep the first N usable volumes.
    """
    root = Path(root)
    index = RadChestIndex(root=root, split=split)
    path = label_path(root, split)
    if not path.is_file():
        index.problems.append(Problem("warning", "missing_csv", str(path), f"{path}: missing"))
        return index
    try:
        df = pd.read_csv(path, dtype=object, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        error(index.problems, "bad_csv", str(path), f"cannot read CSV ({e})")
        return index
    if df.shape[1] < 2:
        error(index.problems, "bad_csv", str(path), "expected a name column and label columns")
        return index
    name_col = str(df.columns[0])
    kept: list[tuple[str, str, str]] = []  # (column, abnormality, location)
    for col in df.columns[1:]:
        col = str(col)
        try:
            abnormality, location = parse_radchest_column(col)
        except HeaderError as e:
            kind = "unknown_location" if "unknown location" in str(e) else "bad_header"
            error(index.problems, kind, str(path), str(e))
            continue
        if abnormality not in RADCHEST_ABNORMALITIES:
            msg = f"{path}: column {col!r}: abnormality {abnormality!r} is not in SARLE's vocabulary; kept under its own name"
            index.problems.append(Problem("warning", "unknown_abnormality", str(path), msg))
        kept.append((col, abnormality, location))
    index.columns = [(a, loc) for _, a, loc in kept]
    npz = find_npz(root) if npz is None else npz
    if not index.metadata_csv.is_file():
        error(index.problems, "missing_metadata", str(index.metadata_csv), "metadata CSV missing")
    values = df[[c for c, _, _ in kept]].to_numpy(dtype=object) if kept else None
    seen: set[str] = set()
    for row, raw in enumerate(df[name_col].tolist()):
        where = f"{path}:{row + 2}"
        name = str(raw).strip().removesuffix(".npz")
        if not name:
            error(index.problems, "bad_volume_name", where, "empty volume name")
            continue
        if name in seen:
            msg = f"{where}: volume {name!r} has a second row (the first is used)"
            index.problems.append(Problem("warning", "duplicate_row", where, msg))
            continue
        seen.add(name)
        cells = [] if values is None else [str(v).strip() for v in values[row]]
        bad = [(kept[i][0], v) for i, v in enumerate(cells) if v not in ("0", "1", "0.0", "1.0")]
        if bad:
            shown = ", ".join(f"{c}={v!r}" for c, v in bad[:3])
            error(index.problems, "bad_value", where, f"volume {name!r}: not 0/1: {shown}")
            continue
        if name not in npz:
            error(index.problems, "missing_volume", where, f"volume {name!r}: no {name}.npz")
            continue
        if max_volumes is not None and len(index.volumes) >= max_volumes:
            continue
        if not index.metadata_csv.is_file():
            continue  # reported once above
        spacing = _volume_spacing(index, name, where)
        if spacing is None:
            continue
        index.volumes[name] = npz[name]
        index.spacing[name] = spacing
        index.positives[name] = [
            (a, loc) for (_, a, loc), v in zip(kept, cells) if v in ("1", "1.0")
        ]
    return index


def check_radchest(
    root: str | Path, *, deep: bool = True, max_volumes: int | None = None
) -> SourceReport:
    """Check a RAD-ChestCT folder: label files, columns, rows, metadata spacing and volumes.

    Args:
        deep: also open every ``.npz`` (finds unreadable archives and a missing ``ct`` key).
        max_volumes: check at most this many volumes per split.
    """
    root = Path(root)
    report = SourceReport.start(root, "rad-chestct")
    if report.problems:
        return report
    npz = find_npz(root)
    for split in RADCHEST_SPLITS:
        if not label_path(root, split).is_file():
            continue
        index = load_radchest(root, split, npz=npz, max_volumes=max_volumes)
        report.add(index.problems)
        if deep:
            for name, path in index.volumes.items():
                try:
                    load_npz(path, npz_key=NPZ_KEY, spacing=index.spacing[name])
                except DataError as e:
                    error(report.problems, "unreadable_volume", str(path), str(e))
        report.counts[split] = {
            "volumes": len(index.volumes),
            "label columns": len(index.columns),
            "positives": sum(len(v) for v in index.positives.values()),
            "volumes with masks": sum(
                (index.masks_root / "region_mask" / f"seg_{n}").is_dir() for n in index.volumes
            ),
        }
    if not report.counts:
        error(
            report.problems,
            "missing_csv",
            str(root),
            "no img<split>_Abnormality_and_Location_Labels.csv",
        )
    return report
