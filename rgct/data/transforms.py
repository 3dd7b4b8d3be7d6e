"""One MONAI dictionary pipeline: a deterministic part (cached on disk) and a random part.

Keys are ``"image"`` (a CT) and ``"mask"`` (a binary region mask); either may be absent.
Values entering the deterministic part are file paths (``"ref"`` names the volume a mask
file belongs to, for its shape/affine check), a :class:`~rgct.data.io.Volume`, or arrays
(D, H, W) already in the canonical convention. Everything leaves as float32 torch tensors
(1, D, H, W) with D, H, W = ``cfg.input_shape`` (images: one channel per HU window).

The cache boundary is explicit: :class:`TransformCache` stores the deterministic output
once per volume file and once per mask file as ``.npy`` (never pickle), keyed by a hash of
the path, its mtime and size, and the deterministic settings. The random part runs after it.

Example::

    det = build_deterministic_transforms(cfg.data)
    out = det({"image": "train_1_a_1.nii.gz"})     # out["image"]: (1, 64, 128, 128)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Lambdad,
    MapTransform,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
)

from rgct.config import DataConfig
from rgct.data.io import DataError, Volume, load_mask, load_mask_for, load_volume

logger = logging.getLogger(__name__)

KEYS = ("image", "mask")
RANDOM_KEYS = (*KEYS, "findings")
"""Keys the random transforms move together: the image, its mask and the dense finding map."""
PIPELINE_VERSION = "1"
"""Bump when the deterministic transforms change, so old cache files are not reused."""


class LoadVolumed(MapTransform):
    """Load ``image`` and ``mask`` with rgct.data.io semantics (RAS, (D, H, W), HU float32).

    ``image`` may be a path or a :class:`Volume`; ``mask`` a path (checked against the
    volume at ``d["ref"]``, or the image loaded in the same call) or a bool array (D, H, W).
    The output arrays have no channel axis.
    """

    def __init__(self, keys: tuple[str, ...] = KEYS) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        volume = None
        if "image" in d:
            img = d["image"]
            volume = img if isinstance(img, Volume) else load_volume(img)
            d["image"] = volume.array
        if "mask" in d:
            mask = d["mask"]
            if isinstance(mask, np.ndarray):
                arr = mask
            elif volume is not None:
                arr = load_mask(mask, volume)
            elif d.get("ref") is not None:
                arr = load_mask_for(mask, d["ref"])
            else:
                raise DataError(f"mask {mask}: needs 'image' or 'ref' to check it against")
            d["mask"] = np.asarray(arr, dtype=np.float32)
        d.pop("ref", None)
        return d


def _clamp01(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, 0.0, 1.0)


IMAGE_RESIZE_MODE = "area"
"""Image resize mode: area averaging (anti-aliased when downsampling)."""


def run_transforms(transforms: Compose, data: dict) -> dict:
    """Apply ``transforms``; a :class:`DataError` inside MONAI's wrapping is re-raised as is."""
    try:
        return transforms(data)
    except RuntimeError as e:
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, DataError):
                raise cause from None
            cause = cause.__cause__
        raise


class HUWindowsd(MapTransform):
    """One channel per Hounsfield window: (1, D, H, W) HU -> (C, D, H, W) in [0, 1].

    Each window ``(low, high)`` is clipped and rescaled linearly; channel order follows
    ``windows``: ``data.hu_window`` alone, or with lung, soft-tissue and calcium windows side by
    side, as radiologists read a chest CT (the multi-window form of ``ScaleIntensityRanged``).
    """

    def __init__(self, keys, windows: tuple[tuple[float, float], ...], **kwargs) -> None:
        super().__init__(keys, **kwargs)
        self.windows = tuple((float(lo), float(hi)) for lo, hi in windows)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            hu = torch.as_tensor(d[key], dtype=torch.float32)
            if hu.ndim != 4 or hu.shape[0] != 1:
                raise DataError(
                    f"{key}: expected one HU channel (1, D, H, W), got {tuple(hu.shape)}"
                )
            d[key] = torch.cat(
                [((hu - lo) / (hi - lo)).clamp_(0.0, 1.0) for lo, hi in self.windows]
            )
        return d


def build_deterministic_transforms(cfg: DataConfig) -> Compose:
    """Load, channel first, HU window(s) to [0, 1], resize to ``cfg.input_shape`` (D, H, W).

    Orientation to RAS happens in the loader (:mod:`rgct.data.io`), so image and mask
    share one convention before any MONAI op. Image resize uses area averaging
    (anti-aliased downsampling), masks nearest neighbour. With ``cfg.extra_hu_windows`` the
    image has one channel per window (``cfg.in_channels``).
    """
    size = tuple(int(s) for s in cfg.input_shape)
    return Compose(
        [
            LoadVolumed(KEYS),
            EnsureChannelFirstd(KEYS, channel_dim="no_channel", allow_missing_keys=True),
            HUWindowsd("image", cfg.hu_windows, allow_missing_keys=True),
            Resized(
                KEYS,
                spatial_size=size,
                mode=(IMAGE_RESIZE_MODE, "nearest"),
                allow_missing_keys=True,
            ),
            EnsureTyped(
                KEYS,
                data_type="tensor",
                dtype=torch.float32,
                track_meta=False,
                allow_missing_keys=True,
            ),
        ]
    )


def build_random_transforms(cfg: DataConfig, *, flip_prob: float = 0.0) -> Compose:
    """Small affine + intensity jitter, applied identically to ``image``, ``mask`` and
    ``findings`` (when present).

    Flips are off by default: a left-right flip would contradict the laterality named in
    reports ("right lung upper lobe"). Pass ``flip_prob`` > 0 to flip each axis anyway.
    The image is clamped back to [0, 1]; the mask and finding map keep their values (nearest).
    Seed with ``.set_random_state(seed)``.
    """
    shape = cfg.input_shape
    steps: list = []
    if cfg.crop_shape is not None:
        # nnU-Net-style foreground oversampling: half the crops centred on a finding voxel
        steps.append(
            RandCropByPosNegLabeld(
                RANDOM_KEYS,
                label_key="findings",
                spatial_size=tuple(cfg.crop_shape),
                pos=1,
                neg=1,
                num_samples=1,
                allow_smaller=True,
                allow_missing_keys=True,
            )
        )
        shape = cfg.crop_shape
    if flip_prob > 0:
        steps += [
            RandFlipd(RANDOM_KEYS, prob=flip_prob, spatial_axis=a, allow_missing_keys=True)
            for a in range(3)
        ]
    steps += [
        RandAffined(
            RANDOM_KEYS,
            prob=0.5,
            rotate_range=(0.08, 0.08, 0.08),  # radians, about 4.5 degrees
            scale_range=(0.05, 0.05, 0.05),
            translate_range=tuple(0.03 * s for s in shape),  # voxels
            mode=("bilinear", "nearest", "nearest"),
            padding_mode="zeros",
            allow_missing_keys=True,
        ),
        RandScaleIntensityd("image", factors=0.05, prob=0.5, allow_missing_keys=True),
        RandShiftIntensityd("image", offsets=0.03, prob=0.5, allow_missing_keys=True),
        RandGaussianNoised("image", prob=0.2, std=0.01, allow_missing_keys=True),
        Lambdad("image", _clamp01, allow_missing_keys=True),
        EnsureTyped(
            RANDOM_KEYS,
            data_type="tensor",
            dtype=torch.float32,
            track_meta=False,
            allow_missing_keys=True,
        ),
    ]
    return Compose(steps)


def preprocess(
    volume: Volume, masks: dict[str, np.ndarray] | None, cfg: DataConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Deterministic transforms on in-memory data (inference), same ops as training.

    Args:
        volume: the CT.
        masks: name -> bool/0-1 array (D, H, W) fitting ``volume`` (checked), or None.
        cfg: data settings (input_shape, hu_window).

    Returns:
        ``(image (C, D, H, W) float32 in [0, 1] (C = ``cfg.in_channels``),
        {name: mask (1, D, H, W) float32 {0, 1}})``.
    """
    det = build_deterministic_transforms(cfg)
    image = run_transforms(det, {"image": volume})["image"]
    out = {}
    for name, arr in (masks or {}).items():
        checked = load_mask(np.asarray(arr), volume)
        out[name] = run_transforms(det, {"mask": checked})["mask"]
    return image, out


# --- the on-disk cache of the deterministic part -----------------------------------------------


def _settings(cfg: DataConfig) -> dict:
    return {
        "version": PIPELINE_VERSION,
        "input_shape": [int(s) for s in cfg.input_shape],
        "hu_window": [float(v) for v in cfg.hu_window],
        **(
            {"extra_hu_windows": [list(w) for w in cfg.extra_hu_windows]}
            if cfg.extra_hu_windows
            else {}
        ),
        "image_mode": IMAGE_RESIZE_MODE,
    }


def _file_key(path: str | Path) -> list:
    p = Path(path).resolve()
    st = p.stat()
    return [str(p), st.st_mtime_ns, st.st_size]


def _atomic_save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TransformCache:
    """Disk cache of :func:`build_deterministic_transforms` outputs, one file per input file.

    Images are stored as float32 ``.npy`` (C, D, H, W), masks as uint8. Keys hash the
    file's resolved path, mtime and size plus the deterministic settings, so editing a
    file or changing ``input_shape`` / ``hu_window`` misses the cache.

    Attributes:
        hits, misses: counters (per process).
    """

    def __init__(self, cfg: DataConfig, cache_dir: str | Path) -> None:
        self.cfg = cfg
        self.dir = Path(cache_dir)
        self.transforms = build_deterministic_transforms(cfg)
        self._settings = _settings(cfg)
        self.hits = 0
        self.misses = 0

    def _path(self, kind: str, parts: list) -> Path:
        blob = json.dumps([kind, self._settings, parts], sort_keys=True).encode()
        digest = hashlib.sha256(blob).hexdigest()
        return self.dir / kind / digest[:2] / f"{digest}.npy"

    def _get(self, path: Path) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            logger.warning("%s: unreadable cache file, recomputing (%s)", path, e)
            return None
        self.hits += 1
        return torch.from_numpy(np.asarray(arr, dtype=np.float32))

    def image(self, image_path: str | Path) -> torch.Tensor:
        """Deterministic image tensor (C, D, H, W) float32 of a volume file."""
        key = self._path("image", _file_key(image_path))
        cached = self._get(key)
        if cached is not None:
            return cached
        self.misses += 1
        out = run_transforms(self.transforms, {"image": str(image_path)})["image"]
        _atomic_save(key, out.numpy().astype(np.float32))
        return out

    def mask(self, mask_path: str | Path, image_path: str | Path) -> torch.Tensor:
        """Deterministic mask tensor (1, D, H, W) float32 {0, 1} of a mask file of a volume."""
        key = self._path("mask", _file_key(mask_path) + _file_key(image_path))
        cached = self._get(key)
        if cached is not None:
            return cached
        self.misses += 1
        data = {"mask": str(mask_path), "ref": str(image_path)}
        out = run_transforms(self.transforms, data)["mask"]
        _atomic_save(key, out.numpy().astype(np.uint8))
        return out
