"""Real-size CT onto the model grid with its geometry kept: body crop, resampling, pad/crop.

Opt-in through ``data.*`` (the default keeps today's stretch-to-grid resize):

- ``crop_foreground``: crop to the body's bounding box (:func:`body_box`);
- ``spacing``: resample to a fixed voxel size (D, H, W) in mm;
- ``fit: pad_crop``: centre pad with air / centre crop to ``input_shape`` (``resize`` stretches).

One :class:`Geometry` per volume (its spacing and body box) is computed from the image and
applied identically to the image (area-averaged when shrinking, trilinear when enlarging) and
to each of its masks (nearest neighbour), so a mask stays on its anatomy.

Example::

    geo = volume_geometry(volume.array, volume.spacing, cfg, source=volume.source)
    image = apply_geometry(torch.from_numpy(volume.array)[None], geo, cfg, "image")
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rgct.config import DataConfig
from rgct.data.io import DataError

BODY_HU = -500.0
"""Voxels above this are body (soft tissue, bone, aerated lung inside the chest wall is not,
but the box of the chest wall holds the lungs)."""
AIR_HU = -1024.0
"""Padding value of images before HU windowing."""
FITS = ("resize", "pad_crop")


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels go on their way to the model grid.

    Attributes:
        spacing: the volume's own voxel size (D, H, W) in mm.
        box: (start, stop) voxel range per axis (D, H, W) kept by the body crop.
    """

    spacing: tuple[float, float, float]
    box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing), "box": [list(b) for b in self.box]}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        box = tuple((int(a), int(b)) for a, b in d["box"])
        return cls(tuple(float(s) for s in d["spacing"]), box)  # type: ignore[arg-type]


def uses_geometry(cfg: DataConfig) -> bool:
    """True when a volume's geometry matters (body crop, resampling or pad/crop)."""
    check_settings(cfg)
    return cfg.crop_foreground or cfg.spacing is not None or cfg.fit == "pad_crop"


def check_settings(cfg: DataConfig) -> None:
    """Raise ValueError naming the ``data.*`` key for unusable geometry settings."""
    if cfg.fit not in FITS:
        raise ValueError(f"data.fit must be one of {FITS}, got {cfg.fit!r}")
    if cfg.spacing is not None and (
        len(cfg.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in cfg.spacing)
    ):
        raise ValueError(f"data.spacing must be 3 positive mm sizes (D, H, W), got {cfg.spacing}")


def body_box(hu: np.ndarray, source: str = "volume") -> tuple[tuple[int, int], ...]:
    """Bounding box (start, stop per axis) of the body in a (D, H, W) HU array.

    Body: voxels above :data:`BODY_HU` that survive an in-plane opening of 5x5 voxels at half
    resolution (removing the thin table, cables and noise), with a 2-voxel margin.

    Raises:
        DataError: no body at all (an all-air volume), naming ``source``.
    """
    coarse = torch.from_numpy(np.ascontiguousarray(hu[::2, ::2, ::2] > BODY_HU))
    x = coarse.float()[None, None]  # (1, 1, d, h, w)
    kernel, pad = (1, 5, 5), (0, 2, 2)
    eroded = -F.max_pool3d(-x, kernel, stride=1, padding=pad)
    body = F.max_pool3d(eroded, kernel, stride=1, padding=pad)[0, 0] > 0
    if not bool(body.any()):
        body = coarse  # a body thinner than the opening: keep the raw threshold
    if not bool(body.any()):
        raise DataError(
            f"{source}: no body found (no voxel above {BODY_HU:g} HU): an all-air or blank volume"
        )
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = torch.nonzero(body.any(dim=other[1]).any(dim=other[0])).flatten()
        lo, hi = int(hits[0]) * 2 - 2, int(hits[-1]) * 2 + 4
        box.append((max(lo, 0), min(hi, hu.shape[axis])))
    return tuple(box)


def volume_geometry(
    hu: np.ndarray, spacing: tuple[float, float, float], cfg: DataConfig, source: str = "volume"
) -> Geometry:
    """The :class:`Geometry` of a (D, H, W) HU volume under ``cfg``.

    Raises:
        DataError: a spacing of zero, negative or NaN (when resampling), or no body (when
            cropping), naming ``source``.
    """
    spacing = tuple(float(s) for s in spacing)
    if cfg.spacing is not None and not all(math.isfinite(s) and s > 0 for s in spacing):
        raise DataError(
            f"{source}: voxel spacing {spacing} mm is zero, negative or NaN: cannot resample to "
            f"data.spacing {list(cfg.spacing)} (a blank header? pass data.metadata_csv)"
        )
    if cfg.crop_foreground:
        box = body_box(hu, source)
    else:
        box = tuple((0, int(n)) for n in hu.shape)
    return Geometry(spacing, box)  # type: ignore[arg-type]


def _resample(x: torch.Tensor, size: tuple[int, ...], kind: str) -> torch.Tensor:
    if tuple(x.shape[1:]) == size:
        return x
    if kind == "mask":
        return F.interpolate(x[None], size=size, mode="nearest")[0]
    shrink = all(s <= n for s, n in zip(size, x.shape[1:]))
    mode = "area" if shrink else "trilinear"
    kwargs = {} if shrink else {"align_corners": False}
    return F.interpolate(x[None], size=size, mode=mode, **kwargs)[0]


def _pad_crop(x: torch.Tensor, size: tuple[int, ...], value: float) -> torch.Tensor:
    """Centre crop, then centre pad with ``value``, to ``size`` (C, *size)."""
    slices = [slice(None)]
    for n, s in zip(x.shape[1:], size):
        start = max((n - s) // 2, 0)
        slices.append(slice(start, start + min(n, s)))
    x = x[tuple(slices)]
    pads = []
    for n, s in reversed(list(zip(x.shape[1:], size))):
        before = (s - n) // 2
        pads += [before, s - n - before]
    return F.pad(x, pads, value=value) if any(pads) else x


def apply_geometry(x: torch.Tensor, geo: Geometry, cfg: DataConfig, kind: str) -> torch.Tensor:
    """Crop, resample and (with ``fit: pad_crop``) pad/crop a (C, D, H, W) volume or mask.

    Args:
        x: image in HU (before windowing) or a {0, 1} mask, on the volume's own grid.
        geo: the volume's geometry (from the image, for its masks too).
        cfg: ``spacing``, ``fit``, ``input_shape``.
        kind: 'image' (area / trilinear, padded with air) or 'mask' (nearest, padded with 0).

    Returns:
        float32 (C, D', H', W'): ``input_shape`` with ``pad_crop``, else the resampled box (a
        ``resize`` follows).
    """
    (d0, d1), (h0, h1), (w0, w1) = geo.box
    x = torch.as_tensor(x, dtype=torch.float32)[:, d0:d1, h0:h1, w0:w1]
    if cfg.spacing is not None:
        size = tuple(
            max(1, int(round(n * s / t))) for n, s, t in zip(x.shape[1:], geo.spacing, cfg.spacing)
        )
        x = _resample(x, size, kind)
    if cfg.fit == "pad_crop":
        x = _pad_crop(x, tuple(int(s) for s in cfg.input_shape), AIR_HU if kind == "image" else 0)
    return x.contiguous()
