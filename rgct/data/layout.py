"""Paths of the RadGenome-Chest CT layout (see docs/DATA_FORMAT.md).

Example::

    >>> parse_volume_name("train_12_b_1.nii.gz")
    VolumeName(split='train', pid='12', scan='b', recon='1')
    >>> volume_path("/data/rg", "train_12_b_1")
    PosixPath('/data/rg/train_preprocessed/train_12/train_12b/train_12_b_1.nii.gz')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from rgct.constants import CSV_COLUMNS, CSV_SPLIT_NAMES, OTHERS, REGIONS, SPLIT_ALIASES, WHOLE_SCAN
from rgct.data.io import DataError

logger = logging.getLogger(__name__)

NIFTI_SUFFIX = ".nii.gz"
CSV_FOLDER = "radgenome_files"
_NAME_RE = re.compile(r"^(train|valid)_([A-Za-z0-9]+)_([A-Za-z]+)_(\d+)$")


class VolumeNameError(DataError):
    """A volume name does not follow ``<split>_<pid>_<scan>_<recon>``."""


class UnknownRegionError(DataError):
    """A region/anatomy name is neither a known region nor an existing anatomy mask."""


@dataclass(frozen=True)
class VolumeName:
    """The parts of a CT-RATE volume name such as ``train_12_b_1``."""

    split: str
    pid: str
    scan: str
    recon: str

    @property
    def name(self) -> str:
        """The name without suffix, e.g. ``train_12_b_1``."""
        return f"{self.split}_{self.pid}_{self.scan}_{self.recon}"


def strip_suffix(name: str) -> str:
    """``train_1_a_1.nii.gz`` -> ``train_1_a_1`` (also ``.nii``; surrounding blanks removed)."""
    name = name.strip()
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_volume_name(name: str) -> VolumeName:
    """Split a volume name (with or without ``.nii.gz``) into split, pid, scan, recon.

    Raises:
        VolumeNameError: the name does not match ``(train|valid)_<pid>_<scan>_<recon>``.
    """
    stem = strip_suffix(Path(name).name)
    m = _NAME_RE.match(stem)
    if m is None:
        raise VolumeNameError(
            f"volume name {name!r} does not look like <train|valid>_<pid>_<scan>_<recon>"
        )
    return VolumeName(*m.groups())


def normalize_split(split: str) -> str:
    """'validation'/'val'/'valid' -> 'valid'; 'train' -> 'train'."""
    try:
        return SPLIT_ALIASES[split]
    except KeyError:
        raise DataError(f"unknown split {split!r}; known: {sorted(SPLIT_ALIASES)}") from None


def preprocessed_dir(root: str | Path, split: str) -> Path:
    """``<root>/<split>_preprocessed``."""
    return Path(root) / f"{normalize_split(split)}_preprocessed"


def region_mask_dir(root: str | Path, split: str) -> Path:
    """``<root>/<split>_region_mask``."""
    return Path(root) / f"{normalize_split(split)}_region_mask"


def anatomy_mask_dir(root: str | Path, split: str) -> Path:
    """``<root>/<split>_anatomy_mask``."""
    return Path(root) / f"{normalize_split(split)}_anatomy_mask"


def volume_path(root: str | Path, name: str) -> Path:
    """Path of volume ``name``'s NIfTI file."""
    v = parse_volume_name(name)
    return (
        preprocessed_dir(root, v.split)
        / f"{v.split}_{v.pid}"
        / f"{v.split}_{v.pid}{v.scan}"
        / f"{v.name}{NIFTI_SUFFIX}"
    )


def region_mask_path(root: str | Path, name: str, region: str) -> Path:
    """``<root>/<split>_region_mask/seg_<volume>/<region>.nii.gz``."""
    v = parse_volume_name(name)
    return region_mask_dir(root, v.split) / f"seg_{v.name}" / f"{region}{NIFTI_SUFFIX}"


def anatomy_mask_path(root: str | Path, name: str, anatomy: str) -> Path:
    """``<root>/<split>_anatomy_mask/seg_<volume>/<anatomy>.nii.gz``."""
    v = parse_volume_name(name)
    return anatomy_mask_dir(root, v.split) / f"seg_{v.name}" / f"{anatomy}{NIFTI_SUFFIX}"


def csv_path(root: str | Path, split: str, stem: str) -> Path:
    """``<root>/radgenome_files/<train|validation>_<stem>.csv``."""
    if stem not in CSV_COLUMNS:
        raise DataError(f"unknown CSV stem {stem!r}; known: {sorted(CSV_COLUMNS)}")
    return Path(root) / CSV_FOLDER / f"{CSV_SPLIT_NAMES[normalize_split(split)]}_{stem}.csv"


def anatomy_parts(anatomy: str | None) -> list[str]:
    """``'lung/lung/right lung'`` -> ``['lung', 'lung', 'right lung']`` (blanks dropped)."""
    if not anatomy:
        return []
    return [p.strip() for p in anatomy.split("/") if p.strip()]


def leaf_name(anatomy: str | None) -> str:
    """Last component of an anatomy path ('' for an empty path)."""
    parts = anatomy_parts(anatomy)
    return parts[-1] if parts else ""


def is_whole_scan(anatomy: str | None) -> bool:
    """True for names whose mask is all ones: '', 'others', 'whole scan'."""
    parts = anatomy_parts(anatomy)
    return not parts or (len(parts) == 1 and parts[0] in (OTHERS, WHOLE_SCAN))


class _FilesIn:
    """The ``.nii.gz`` names of one folder, checked one stat at a time (a Container)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __contains__(self, name: object) -> bool:
        return (self.folder / str(name)).is_file()


def mask_folders(root: str | Path, volume: str) -> tuple[Path, Path]:
    """``(<split>_anatomy_mask/seg_<volume>, <split>_region_mask/seg_<volume>)``."""
    v = parse_volume_name(volume)
    seg = f"seg_{v.name}"
    return anatomy_mask_dir(root, v.split) / seg, region_mask_dir(root, v.split) / seg


def pick_mask(
    volume: str, anatomy: str | None, anatomy_files: Container[str], region_files: Container[str]
) -> tuple[str, str] | None:
    """The mask-lookup policy on file names: which file serves ``anatomy`` of ``volume``.

    Order: the leaf's anatomy mask, then each parent's anatomy mask along the ``/`` path (a
    part that is a region also tries its region mask), then the top-level region mask.

    Args:
        anatomy_files, region_files: the file names (``<name>.nii.gz``) in the volume's anatomy
            and region mask folders (any container: a set of a folder listing, or a stat).

    Returns:
        ``('anatomy' | 'region', file name)``, or None for an all-ones mask (``''``,
        ``others``, ``whole scan``, or a known region whose mask file is absent).

    Raises:
        UnknownRegionError: a name that is not a region and has no anatomy mask file.
    """
    if is_whole_scan(anatomy):
        return None
    parts = anatomy_parts(anatomy)
    for part in reversed(parts):
        name = f"{part}{NIFTI_SUFFIX}"
        if name in anatomy_files:
            return "anatomy", name
        if part in REGIONS and name in region_files:
            return "region", name
    regions = [p for p in parts if p in REGIONS or p == OTHERS]
    for region in regions:
        name = f"{region}{NIFTI_SUFFIX}"
        if name in region_files:
            return "region", name
    if regions:
        logger.debug("%s: no mask file for %r; using the whole scan", volume, anatomy)
        return None
    raise UnknownRegionError(
        f"{volume}: unknown region {anatomy!r} (no anatomy mask file either); "
        f"known regions: {', '.join(REGIONS)}, {OTHERS}"
    )


def resolve_mask(root: str | Path, volume: str, anatomy: str | None) -> Path | None:
    """Find the mask file for ``anatomy`` of ``volume``, falling back up the hierarchy
    (:func:`pick_mask` has the order).

    ``None`` means an all-ones mask (``''``, ``others``, ``whole scan``, or a known region
    whose mask file is absent).

    Raises:
        UnknownRegionError: a name that is not a region and has no anatomy mask file.
    """
    if is_whole_scan(anatomy):
        return None
    anatomy_dir, region_dir = mask_folders(root, volume)
    picked = pick_mask(volume, anatomy, _FilesIn(anatomy_dir), _FilesIn(region_dir))
    if picked is None:
        return None
    kind, name = picked
    return (anatomy_dir if kind == "anatomy" else region_dir) / name
