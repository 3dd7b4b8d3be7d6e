"""One MONAI dictionary pipeline: a deterministic part (cached on disk) and a random part.

Keys are ``"image"`` (a CT) and ``"mask"`` (a binary region mask); either may be absent.
Values entering the deterministic part are file paths (``"ref"`` names the volume a mask
file belongs to, for its shape/affine check), a :class:`~rgct.data.io.Volume`, or arrays
(D, H, W) already in the canonical convention. Everything leaves as float32 torch tensors
(1, D, H, W) with D, H, W = ``cfg.input_shape`` (images: one channel per HU window).

The cache boundary is explicit: :class:`TransformCache` stores the deterministic output
once per volume file and once per mask file (``.npy`` / ``.npz``, never pickle), keyed by a hash
of the path, its mtime and size, and the deterministic settings. Images are stored as uint16
(2 bytes per voxel: ``round(x * 65535)``, read back within :data:`IMAGE_CACHE_TOLERANCE` of the
float32 pipeline output), masks as packed bits (1 bit per voxel); the encoding lives in
:mod:`rgct.data.compact`. The random part runs after it.

Example::

    det = build_deterministic_transforms(cfg.data)
    out = det({"image": "train_1_a_1.nii.gz"})     # out["image"]: (1, 64, 128, 128)
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from rgct.data.compact import (
    IMAGE_CACHE_TOLERANCE,  # noqa: F401  (the cache's stated tolerance, named here too)
    encode_image,
    encode_mask,
    expand_image,
    expand_mask,
    unpack_mask,
)
from rgct.data.geometry import Geometry, apply_geometry, uses_geometry, volume_geometry
from rgct.data.io import DataError, Volume, load_mask, load_mask_for, load_volume
from rgct.files import atomic_path, write_json

logger = logging.getLogger(__name__)

KEYS = ("image", "mask")
RANDOM_KEYS = (*KEYS, "findings")
"""Keys the random transforms move together: the image, its mask and the dense finding map."""
PIPELINE_VERSION = "2"
"""Bump when the deterministic transforms or the cache encoding change, so old cache files are
not reused (version 1: float32 images, uint8 masks; version 2: uint16 images, packed-bit masks)."""


class LoadVolumed(MapTransform):
    """Load ``image`` and ``mask`` with rgct.data.io semantics (RAS, (D, H, W), HU float32).

    ``image`` may be a path or a :class:`Volume`; ``mask`` a path (checked against the
    volume at ``d["ref"]``, or the image loaded in the same call) or a bool array (D, H, W).
    The output arrays have no channel axis. With ``keep_geometry`` the image's spacing and
    source go along as ``d["spacing"]`` and ``d["source"]`` (for :class:`ApplyGeometryd`);
    ``metadata_csv`` supplies spacing for blank NIfTI headers.
    """

    def __init__(
        self,
        keys: tuple[str, ...] = KEYS,
        *,
        keep_geometry: bool = False,
        metadata_csv: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.keep_geometry = keep_geometry
        self.metadata_csv = metadata_csv

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        volume = None
        if "image" in d:
            img = d["image"]
            if isinstance(img, Volume):
                volume = img
            elif self.metadata_csv:
                volume = load_volume(img, metadata_csv=self.metadata_csv)
            else:
                volume = load_volume(img)
            d["image"] = volume.array
            if self.keep_geometry:
                d["spacing"], d["source"] = volume.spacing, str(volume.source)
        if "mask" in d:
            mask = d["mask"]
            if isinstance(mask, np.ndarray):
                arr = mask
            elif volume is not None:
                arr = load_mask(mask, volume)
            elif d.get("ref") is not None:
                arr = load_mask_for(mask, d["ref"], metadata_csv=self.metadata_csv)
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


class ApplyGeometryd(MapTransform):
    """Body crop, resampling and pad/crop (:mod:`rgct.data.geometry`) of ``image`` and ``mask``.

    The geometry comes from ``d["geometry"]`` (required for a mask alone: its image's), or is
    computed from the image (HU, channel first) with ``d["spacing"]`` and ``d["source"]``; it
    stays in ``d["geometry"]`` for the caller.
    """

    def __init__(self, cfg: DataConfig) -> None:
        super().__init__(KEYS, allow_missing_keys=True)
        self.cfg = cfg

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        spacing, source = d.pop("spacing", None), d.pop("source", "volume")
        geo = d.get("geometry")
        if geo is None:
            if "image" not in d or spacing is None:
                raise DataError("a mask alone needs its image's geometry (d['geometry'])")
            hu = np.asarray(d["image"][0])
            geo = volume_geometry(hu, spacing, self.cfg, source)
        d["geometry"] = geo
        for key, kind in (("image", "image"), ("mask", "mask")):
            if key in d:
                d[key] = apply_geometry(d[key], geo, self.cfg, kind)
        return d


def build_deterministic_transforms(cfg: DataConfig) -> Compose:
    """Load, channel first, HU window(s) to [0, 1], resize to ``cfg.input_shape`` (D, H, W)
    (``data.modality: cxr``: :func:`rgct.data.cxr_transforms.build_radiograph_transforms`).

    Orientation to RAS happens in the loader (:mod:`rgct.data.io`), so image and mask
    share one convention before any MONAI op. Image resize uses area averaging
    (anti-aliased downsampling), masks nearest neighbour. With ``cfg.extra_hu_windows`` the
    image has one channel per window (``cfg.in_channels``).

    With ``cfg.crop_foreground``, ``cfg.spacing`` or ``cfg.fit == 'pad_crop'``, the volume is
    first cropped to the body, resampled and (pad_crop) fitted to the grid in HU
    (:class:`ApplyGeometryd`); the resize then runs only with ``fit: resize``.
    """
    if cfg.modality == "cxr":  # radiographs: their own loader, no HU windows
        from rgct.data.cxr_transforms import build_radiograph_transforms

        return build_radiograph_transforms(cfg)
    size = tuple(int(s) for s in cfg.input_shape)
    geometry = uses_geometry(cfg)
    steps: list = [
        LoadVolumed(KEYS, keep_geometry=geometry, metadata_csv=cfg.metadata_csv),
        EnsureChannelFirstd(KEYS, channel_dim="no_channel", allow_missing_keys=True),
    ]
    if geometry:
        steps.append(ApplyGeometryd(cfg))
    steps.append(HUWindowsd("image", cfg.hu_windows, allow_missing_keys=True))
    if cfg.fit == "resize":
        steps.append(
            Resized(
                KEYS,
                spatial_size=size,
                mode=(IMAGE_RESIZE_MODE, "nearest"),
                allow_missing_keys=True,
            )
        )
    steps.append(
        EnsureTyped(
            KEYS,
            data_type="tensor",
            dtype=torch.float32,
            track_meta=False,
            allow_missing_keys=True,
        )
    )
    return Compose(steps)


def build_random_transforms(cfg: DataConfig, *, flip_prob: float = 0.0) -> Compose:
    """Small affine + intensity jitter, applied identically to ``image``, ``mask`` and
    ``findings`` (when present).

    Flips are off by default: a left-right flip would contradict the laterality named in
    reports ("right lung upper lobe"). Pass ``flip_prob`` > 0 to flip each axis anyway.
    The image is clamped back to [0, 1]; the mask and finding map keep their values (nearest).
    Seed with ``.set_random_state(seed)``.
    """
    shape = cfg.input_shape
    dims = len(shape)  # 3: volumes, 2: radiographs
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
            for a in range(dims)
        ]
    steps += [
        RandAffined(
            RANDOM_KEYS,
            prob=0.5,
            rotate_range=(0.08,) * (3 if dims == 3 else 1),  # radians, about 4.5 degrees
            scale_range=(0.05,) * dims,
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
    first = run_transforms(det, {"image": volume})
    geo = {"geometry": first["geometry"]} if "geometry" in first else {}
    out = {}
    for name, arr in (masks or {}).items():
        checked = load_mask(np.asarray(arr), volume)
        out[name] = run_transforms(det, {"mask": checked, **geo})["mask"]
    return first["image"], out


# --- the on-disk cache of the deterministic part -----------------------------------------------


def _settings(cfg: DataConfig) -> dict:
    if cfg.metadata_csv and not Path(cfg.metadata_csv).is_file():
        raise DataError(f"data.metadata_csv={cfg.metadata_csv}: file not found")
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
        **({"modality": cfg.modality} if cfg.modality != "ct" else {}),
        **(
            {
                "spacing": None if cfg.spacing is None else [float(s) for s in cfg.spacing],
                "crop_foreground": cfg.crop_foreground,
                "fit": cfg.fit,
            }
            if uses_geometry(cfg)
            else {}
        ),
        **({"metadata_csv": _file_key(cfg.metadata_csv)} if cfg.metadata_csv else {}),
    }


def _file_key(path: str | Path) -> list:
    p = Path(path).resolve()
    st = p.stat()
    return [str(p), st.st_mtime_ns, st.st_size]


def _atomic_save(path: Path, array: np.ndarray | dict[str, np.ndarray]) -> None:
    """Write one ``.npy`` array, or a ``.npz`` of named arrays (uncompressed), atomically."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        if isinstance(array, dict):
            np.savez(f, **array)
        else:
            np.save(f, array, allow_pickle=False)


class TransformCache:
    """Disk cache of :func:`build_deterministic_transforms` outputs, one file per input file.

    Images are stored as uint16 ``.npy`` (C, D, H, W) (2 bytes per voxel, within
    :data:`IMAGE_CACHE_TOLERANCE` of float32), masks as packed bits in ``.npz`` (1 bit per
    voxel). :meth:`compact_image` / :meth:`compact_mask` return them compact (uint16, uint8:
    what dataset items carry), :meth:`image` / :meth:`mask` expanded to float32. A miss returns
    the same values a later hit reads, so a run reads identical tensors whether the cache was
    warm or cold. Keys hash the file's resolved path, mtime and
    size plus the deterministic settings and :data:`PIPELINE_VERSION`, so editing a file,
    changing ``input_shape`` / ``hu_window`` or a new cache encoding misses the cache.

    Attributes:
        hits, misses: counters (per process).
    """

    def __init__(self, cfg: DataConfig, cache_dir: str | Path) -> None:
        self.cfg = cfg
        self.dir = Path(cache_dir)
        self.transforms = build_deterministic_transforms(cfg)
        self._settings = _settings(cfg)
        self._uses_geometry = uses_geometry(cfg)
        self._geometries: dict[str, Geometry] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, kind: str, parts: list, suffix: str) -> Path:
        blob = json.dumps([kind, self._settings, parts], sort_keys=True).encode()
        digest = hashlib.sha256(blob).hexdigest()
        return self.dir / kind / digest[:2] / f"{digest}{suffix}"

    def _read(self, path: Path, decode, check) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as f:
                stored = np.load(f, allow_pickle=False)
                if isinstance(stored, np.lib.npyio.NpzFile):
                    stored = {k: stored[k] for k in stored.files}
            problem = check(stored)
            if problem:
                raise ValueError(problem)
            out = decode(stored)
        except (OSError, ValueError, EOFError, KeyError) as e:
            logger.warning("%s: unreadable cache file, recomputing (%s)", path, e)
            return None
        self.hits += 1
        return out

    def image(self, image_path: str | Path) -> torch.Tensor:
        """Deterministic image tensor (C, D, H, W) float32 of a volume file."""
        return expand_image(self.compact_image(image_path))

    def compact_image(self, image_path: str | Path) -> torch.Tensor:
        """The stored image (C, D, H, W) uint16 of a volume file (:mod:`rgct.data.compact`)."""
        key = self._path("image", _file_key(image_path), ".npy")
        cached = self._read(key, torch.from_numpy, _check_image)
        if cached is not None:
            return cached
        self.misses += 1
        result = run_transforms(self.transforms, {"image": str(image_path)})
        if "geometry" in result:
            self._save_geometry(image_path, result["geometry"])
        stored = encode_image(result["image"].numpy())
        _atomic_save(key, stored)
        return torch.from_numpy(stored)

    def _geometry_path(self, image_path: str | Path) -> Path:
        return self._path("geometry", _file_key(image_path), ".json")

    def _save_geometry(self, image_path: str | Path, geo: Geometry) -> None:
        self._geometries[str(image_path)] = geo
        write_json(self._geometry_path(image_path), geo.to_dict())

    def geometry(self, image_path: str | Path) -> Geometry:
        """The :class:`~rgct.data.geometry.Geometry` of a volume file (cached; its masks use it)."""
        if str(image_path) in self._geometries:
            return self._geometries[str(image_path)]
        path = self._geometry_path(image_path)
        try:
            geo = Geometry.from_dict(json.loads(path.read_text()))
            self._geometries[str(image_path)] = geo
            return geo
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or unreadable: compute it from the image
        volume = load_volume(image_path, metadata_csv=self.cfg.metadata_csv)
        geo = volume_geometry(volume.array, volume.spacing, self.cfg, str(image_path))
        self._save_geometry(image_path, geo)
        return geo

    def mask(self, mask_path: str | Path, image_path: str | Path) -> torch.Tensor:
        """Deterministic mask tensor (1, D, H, W) float32 {0, 1} of a mask file of a volume."""
        return expand_mask(self.compact_mask(mask_path, image_path))

    def compact_mask(self, mask_path: str | Path, image_path: str | Path) -> torch.Tensor:
        """The stored mask (1, D, H, W) as uint8 {0, 1} of a mask file of a volume."""
        key = self._path("mask", _file_key(mask_path) + _file_key(image_path), ".npz")
        cached = self._read(key, unpack_mask, _check_mask)
        if cached is not None:
            return cached
        self.misses += 1
        data = {"mask": str(mask_path), "ref": str(image_path)}
        if self._uses_geometry:
            data["geometry"] = self.geometry(image_path)
        out = run_transforms(self.transforms, data)["mask"]
        stored = encode_mask(out.numpy())
        _atomic_save(key, stored)
        return unpack_mask(stored)


def _check_image(stored) -> str | None:
    if not isinstance(stored, np.ndarray) or stored.dtype != np.uint16 or stored.ndim not in (3, 4):
        return "expected a uint16 (C, D, H, W) or (C, H, W) array"
    return None


def _check_mask(stored) -> str | None:
    if not isinstance(stored, dict) or set(stored) != {"bits", "shape"}:
        return "expected packed mask bits and their shape"
    if stored["bits"].dtype != np.uint8 or stored["bits"].size * 8 < int(np.prod(stored["shape"])):
        return "packed mask bits too short for their shape"
    return None
