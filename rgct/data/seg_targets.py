"""Multi-channel segmentation targets of a volume, on the model grid, cached on disk.

One target per volume: a (K, D, H, W) uint8 {0, 1} stack in the order of
:data:`rgct.constants.SEGMENT_CLASSES` (ten regions, five lobes, prompt anatomy, finding voxel
maps) and a (K,) bool ``valid`` vector saying which channels the data actually annotates:

* regions are valid when the volume has a region-mask folder (a region without a file there,
  e.g. 'breast' in a phantom without breasts, is a true empty channel);
* lobes and anatomy are valid when the volume has an anatomy-mask folder;
* findings are valid when the dataset has ``ground_truth.jsonl`` truth for the volume (real
  RadGenome data has none: its finding channels are then left out of the loss).

Finding voxel maps follow how :mod:`rgct.data.phantom_findings` paints each finding: the
ellipsoid of ``radius_vox`` around ``center_voxel`` (:func:`rgct.data.finding_maps.
paint_finding_map`), clipped to the structure the finding belongs to (its lobe, the aorta or
heart tissue named by its anatomy path, else its region), and for findings painted by
intensity further restricted to that intensity (emphysema: air below
:data:`EMPHYSEMA_MAX_HU`; calcifications: calcium above :data:`CALCIUM_MIN_HU`).

The cache follows :class:`rgct.data.transforms.TransformCache`: one ``.npz`` per volume (no
pickle), keyed by a hash of the files' paths, mtimes and sizes, the truth record, the class
list and the deterministic settings.

Example::

    targets = SegTargetCache(DataConfig(input_shape=(64, 128, 128)), "runs/cache")
    target, valid = targets.target("data/phantoms", "train_1_a_1", truth["train_1_a_1"])
    target.shape, valid.shape       # (30, 64, 128, 128), (30,)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rgct.config import DataConfig
from rgct.constants import LUNG_LOBES, REGIONS, SEGMENT_ANATOMY, SEGMENT_CLASSES, SEGMENT_FINDINGS
from rgct.data.finding_maps import paint_finding_map
from rgct.data.io import DataError, EmptyMaskError, Volume, load_mask, load_volume
from rgct.data.layout import (
    anatomy_mask_dir,
    anatomy_mask_path,
    leaf_name,
    parse_volume_name,
    region_mask_dir,
    region_mask_path,
    volume_path,
)
from rgct.data.transforms import TransformCache
from rgct.files import atomic_path

logger = logging.getLogger(__name__)

TARGET_VERSION = "1"
"""Bump when the target recipe changes, so old cache files are not reused."""

EMPHYSEMA_MAX_HU = -940.0
"""Emphysema is painted at -975 HU (plus 10 HU noise); normal lung is brighter."""

CALCIUM_MIN_HU = 250.0
"""Calcifications are painted at 400-1000 HU; soft tissue and blood stay far below."""

_INTENSITY_RULES = {
    "Emphysema": ("below", EMPHYSEMA_MAX_HU),
    "Arterial wall calcification": ("above", CALCIUM_MIN_HU),
    "Coronary artery wall calcification": ("above", CALCIUM_MIN_HU),
}


def split_volumes(root: str | Path, split: str) -> list[str]:
    """Names of the split's volumes that have a region-mask folder and a volume file (sorted)."""
    folder = region_mask_dir(root, split)
    if not folder.is_dir():
        raise DataError(f"{folder}: no region-mask folder for split {split!r}")
    names = []
    for d in sorted(folder.iterdir()):
        if d.is_dir() and d.name.startswith("seg_"):
            name = d.name[len("seg_") :]
            if volume_path(root, name).is_file():
                names.append(name)
    return names


def _owner_mask(finding: dict, masks: dict[str, np.ndarray]) -> np.ndarray | None:
    """The mask a finding is clipped to: its lobe, its anatomy leaf, else its region."""
    for name in (finding.get("lobe"), leaf_name(finding.get("anatomy")), finding.get("region")):
        if name and name in masks:
            return masks[name]
    return None


def finding_voxel_map(
    finding: dict,
    shape: tuple[int, int, int],
    *,
    owner: np.ndarray | None = None,
    hu: np.ndarray | None = None,
    record_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """(D, H, W) bool voxels of one ground-truth finding on a grid of ``shape``.

    Args:
        finding: a ``ground_truth.jsonl`` finding (label, center_voxel, radius_vox, ...).
        shape: the grid (D, H, W) to paint on.
        owner: bool mask of the structure the finding belongs to (clips the ellipsoid).
        hu: the volume's HU on the same grid (enables the intensity rules).
        record_shape: the grid ``center_voxel`` refers to (default ``shape``).

    Returns:
        bool (D, H, W); the ellipsoid alone when clipping would leave nothing.
    """
    rec = {"volume": finding.get("volume"), "shape": list(record_shape or shape)}
    ellipsoid = paint_finding_map({**rec, "findings": [finding]}, tuple(shape)) > 0
    out = ellipsoid
    if owner is not None and (ellipsoid & owner).any():
        out = ellipsoid & owner
    rule = _INTENSITY_RULES.get(finding.get("label"))
    if rule is not None and hu is not None:
        side, value = rule
        sel = out & (hu <= value if side == "below" else hu >= value)
        if sel.any():
            out = sel
    return out


def _read_mask(path: Path, volume: Volume) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        return load_mask(path, volume)
    except EmptyMaskError:
        return np.zeros(volume.shape, bool)


def load_true_masks(root: str | Path, name: str, volume: Volume) -> dict[str, np.ndarray]:
    """name -> bool (D, H, W) of the region, lobe and prompt-anatomy files a volume has.

    A file that is absent is left out; an empty file gives an all-False mask.
    """
    masks: dict[str, np.ndarray] = {}
    for region in REGIONS:
        m = _read_mask(region_mask_path(root, name, region), volume)
        if m is not None:
            masks[region] = m
    for anatomy in (*LUNG_LOBES, *SEGMENT_ANATOMY):
        m = _read_mask(anatomy_mask_path(root, name, anatomy), volume)
        if m is not None:
            masks[anatomy] = m
    return masks


def true_findings(record: dict, masks: dict[str, np.ndarray], volume: Volume) -> list[dict]:
    """The record's findings, each with ``mask``: its voxel map on the volume's grid."""
    shape = volume.shape
    rec_shape = record.get("shape") or shape
    return [
        {
            **f,
            "mask": finding_voxel_map(
                f, shape, owner=_owner_mask(f, masks), hu=volume.array, record_shape=rec_shape
            ),
        }
        for f in record.get("findings", [])
    ]


def build_seg_target(
    root: str | Path,
    name: str,
    record: dict | None,
    input_shape: Sequence[int],
    classes: Sequence[str] = SEGMENT_CLASSES,
    volume: Volume | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (K, D, H, W) uint8 target and (K,) bool validity of one volume (no cache).

    Args:
        root: dataset folder in the RadGenome layout.
        name: volume name (``train_1_a_1``).
        record: its ``ground_truth.jsonl`` record, or None (finding channels invalid).
        input_shape: the model grid (D, H, W); masks are resized nearest-neighbour.
        classes: channel names (regions, anatomy names, finding labels).
        volume: the loaded volume, if the caller has it.

    Raises:
        DataError: a mask that does not fit the volume, a finding outside the volume's grid.
    """
    volume = volume or load_volume(volume_path(root, name))
    shape = volume.shape
    regions_known = region_mask_path(root, name, "x").parent.is_dir()
    anatomy_known = anatomy_mask_path(root, name, "x").parent.is_dir()
    masks = load_true_masks(root, name, volume)
    findings: dict[str, np.ndarray] = {}
    if record is not None:
        for f in true_findings(record, masks, volume):
            label = f["label"]
            if label in classes:
                findings[label] = findings.get(label, np.zeros(shape, bool)) | f["mask"]
    target = np.zeros((len(classes), *shape), np.uint8)
    valid = np.zeros(len(classes), bool)
    for k, cls in enumerate(classes):
        if cls in SEGMENT_FINDINGS:
            valid[k] = record is not None
            src = findings.get(cls)
        else:
            valid[k] = regions_known if cls in REGIONS else anatomy_known
            src = masks.get(cls)
        if src is not None:
            target[k] = src
    size = tuple(int(s) for s in input_shape)
    if tuple(shape) != size:
        t = torch.from_numpy(target)[None].float()
        target = F.interpolate(t, size=size, mode="nearest")[0].to(torch.uint8).numpy()
    return target, valid


def _file_key(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_mtime_ns, st.st_size]


class SegTargetCache:
    """Disk cache of :func:`build_seg_target` (and, through TransformCache, of the image).

    Args:
        cfg: data settings (``input_shape``, HU windows).
        cache_dir: cache folder (the same one :class:`TransformCache` uses is fine).
        classes: channel names.
    """

    def __init__(
        self, cfg: DataConfig, cache_dir: str | Path, classes: Sequence[str] = SEGMENT_CLASSES
    ) -> None:
        self.cfg = cfg
        self.classes = tuple(classes)
        self.dir = Path(cache_dir)
        self.images = TransformCache(cfg, cache_dir)
        self.hits = 0
        self.misses = 0

    def image(self, root: str | Path, name: str) -> torch.Tensor:
        """(C, D, H, W) float32 preprocessed image of volume ``name``."""
        return self.images.image(volume_path(root, name))

    def _key(self, root: str | Path, name: str, record: dict | None) -> Path:
        v = parse_volume_name(name)
        files = [_file_key(volume_path(root, name))]
        for folder in (region_mask_dir(root, v.split), anatomy_mask_dir(root, v.split)):
            seg = folder / f"seg_{v.name}"
            if seg.is_dir():
                files += [_file_key(p) for p in sorted(seg.glob("*.nii*"))]
        settings = {
            "version": TARGET_VERSION,
            "input_shape": [int(s) for s in self.cfg.input_shape],
            "classes": list(self.classes),
        }
        blob = json.dumps([settings, files, record], sort_keys=True, default=str).encode()
        digest = hashlib.sha256(blob).hexdigest()
        return self.dir / "seg_target" / digest[:2] / f"{digest}.npz"

    def target(
        self, root: str | Path, name: str, record: dict | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cached ``(target (K, D, H, W) uint8, valid (K,) bool)`` of volume ``name``."""
        path = self._key(root, name, record)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    out = z["target"], z["valid"]
                self.hits += 1
                return out
            except (OSError, ValueError, KeyError, EOFError) as e:
                logger.warning("%s: unreadable cache file, recomputing (%s)", path, e)
        self.misses += 1
        target, valid = build_seg_target(root, name, record, self.cfg.input_shape, self.classes)
        with atomic_path(path) as tmp:
            with tmp.open("wb") as f:
                np.savez(f, target=target, valid=valid)
        return target, valid


class SegmentationDataset(torch.utils.data.Dataset):
    """(image, target, valid) per volume of a split, from the cache.

    Items: ``{"image": (C, D, H, W) float32, "target": (K, D, H, W) uint8,
    "valid": (K,) bool, "volume": name}``.
    """

    def __init__(
        self,
        root: str | Path,
        names: Sequence[str],
        truth: dict[str, dict] | None,
        cache: SegTargetCache,
    ) -> None:
        if not names:
            raise DataError(f"{root}: no volumes to segment")
        self.root = Path(root)
        self.names = list(names)
        self.truth = truth
        self.cache = cache

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        name = self.names[i]
        record = None if self.truth is None else self.truth.get(name)
        target, valid = self.cache.target(self.root, name, record)
        return {
            "image": self.cache.image(self.root, name),
            "target": torch.from_numpy(np.ascontiguousarray(target)),
            "valid": torch.from_numpy(valid),
            "volume": name,
        }
