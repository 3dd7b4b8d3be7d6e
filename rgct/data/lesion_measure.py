"""Measuring a lesion from the image under its box (DeepLesion's grounded lesion tasks).

A DeepLesion lesion is given as a box on its key slice. :func:`measure_lesion` measures the
lesion in that slice from the pixels alone, the way a reader draws RECIST diameters on the
lesion rather than on the box:

1. a window: the box widened by half its size on each side (a lesion is never cut by its box);
2. the lesion's level: the median HU of the box's central third; the background's: the median
   of the window outside the box; the lesion must differ from it by at least
   :data:`MIN_CONTRAST_HU`;
3. each pixel's lesion fraction ``f = (HU - background) / (lesion - background)`` clipped to
   [0, 1] (partial volume is linear in HU); the lesion is the connected component of
   ``f >= 0.5`` that holds most of the box's centre;
4. its equivalent ellipse: the axis ratio from the second moments of ``f`` over the component
   and its one-pixel rim, the scale from its partial-volume area ``sum(f) * pixel area``
   (``pi * a * b``); long and short diameters ``2a`` and ``2b``.

Nothing here reads a diameter from ``DL_info.csv``: the box gives only where to look.
:func:`lesion_evidence_line` writes what was measured (and the region the lesion lies in) as
the evidence line of the lesion prompts (``data.lesion_evidence``): the truth in training, the
measurement at generation (:mod:`rgct.generate.lesion_evidence`).

Example::

    m = measure_lesion(volume.array, mask, volume.spacing)
    m.long_mm, m.short_mm                  # 15.4, 11.8
    lesion_evidence_line("lung", m.long_mm, m.short_mm)
    # 'Lesion in this box: lung, 15 x 12 mm.'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from rgct.constants import LESION_EVIDENCE_PREFIX

MIN_CONTRAST_HU = 40.0
"""A lesion whose level differs from its surroundings by less is not measured."""
MIN_BACKGROUND_FRACTION = 0.2
"""At least this fraction of the window outside the box must differ from the lesion's level by
:data:`MIN_CONTRAST_HU` (the background the lesion stands out from)."""
ZONE_PIXELS = 1
"""The lesion is measured within its box widened by this many pixels (its partial-volume rim):
a vessel or wall touching it outside the box is not the lesion."""
WINDOW_MARGIN = 0.5
"""The window is the box widened by this fraction of its size on each side (at least 2 px)."""


@dataclass(frozen=True)
class LesionMeasure:
    """What :func:`measure_lesion` found on the key slice.

    Attributes:
        long_mm, short_mm: diameters of the equivalent ellipse (mm).
        area_mm2: partial-volume area (mm^2).
        lesion_hu, background_hu: the two levels the fraction was taken between.
        pixels: pixels of the lesion component (``f >= 0.5``).
    """

    long_mm: float
    short_mm: float
    area_mm2: float
    lesion_hu: float
    background_hu: float
    pixels: int


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a bool (H, W) mask: (labels int (H, W), 0 = none; count)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    cc = sitk.ConnectedComponent(img, True)
    labels = sitk.GetArrayFromImage(cc).astype(np.int64)
    return labels, int(labels.max())


def _dilate(mask: np.ndarray) -> np.ndarray:
    """A bool (H, W) mask grown by one pixel (3 x 3)."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def box_of(mask: np.ndarray) -> tuple[int, int, int, int, int]:
    """(key slice, y0, y1, x0, x1) of a box mask (D, H, W): the slice holding it and its
    half-open extent there.

    Raises:
        ValueError: an empty mask, or one spread over more than one slice.
    """
    z = np.flatnonzero(mask.any(axis=(1, 2)))
    if z.size != 1:
        raise ValueError(f"a lesion box lies on one slice; this mask covers {z.size} slices")
    ys = np.flatnonzero(mask[z[0]].any(axis=1))
    xs = np.flatnonzero(mask[z[0]].any(axis=0))
    return int(z[0]), int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def widen_box(mask: np.ndarray, pixels: int) -> np.ndarray:
    """bool (D, H, W): a box mask widened in-plane by ``pixels`` on each side (within the
    image), on its own slice."""
    z, y0, y1, x0, x1 = box_of(mask)
    out = np.zeros(mask.shape, bool)
    h, w = mask.shape[1:]
    out[z, max(y0 - pixels, 0) : min(y1 + pixels, h), max(x0 - pixels, 0) : min(x1 + pixels, w)] = (
        True
    )
    return out


def measure_lesion(
    hu: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]
) -> LesionMeasure | None:
    """Measure the lesion under a box (see the module docstring).

    Args:
        hu: the volume (D, H, W) in HU.
        mask: bool (D, H, W): the box on the key slice.
        spacing: (d, h, w) mm.

    Returns:
        The measurement, or None when nothing under the box stands out from its surroundings
        (less than :data:`MIN_CONTRAST_HU`) or no component reaches the box's centre.

    Raises:
        ValueError: ``hu`` and ``mask`` of different shapes, or a mask not on one slice.
    """
    if hu.shape != mask.shape:
        raise ValueError(f"volume {hu.shape} and box mask {mask.shape} differ in shape")
    z, y0, y1, x0, x1 = box_of(mask)
    image = np.asarray(hu[z], dtype=np.float64)
    h, w = image.shape
    my = max(2, math.ceil(WINDOW_MARGIN * (y1 - y0)))
    mx = max(2, math.ceil(WINDOW_MARGIN * (x1 - x0)))
    wy0, wy1, wx0, wx1 = max(y0 - my, 0), min(y1 + my, h), max(x0 - mx, 0), min(x1 + mx, w)
    window = image[wy0:wy1, wx0:wx1]
    inside = np.zeros(window.shape, bool)
    inside[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = True
    core = np.zeros(window.shape, bool)
    cy, cx = (y1 - y0) / 3.0, (x1 - x0) / 3.0
    core[
        y0 - wy0 + int(cy) : y1 - wy0 - int(cy) or None,
        x0 - wx0 + int(cx) : x1 - wx0 - int(cx) or None,
    ] = True
    if not (~inside).any() or not core.any():
        return None
    lesion = float(np.median(window[core]))
    around = window[~inside]
    around = around[np.abs(around - lesion) >= MIN_CONTRAST_HU]  # not the lesion's own tissue
    if around.size < MIN_BACKGROUND_FRACTION * (~inside).sum():
        return None
    background = float(np.median(around))
    # the lesion's own level: its most distinct core pixel (a small lesion's core median is
    # diluted by partial volume at its edge)
    sign = 1.0 if lesion >= background else -1.0
    lesion = float(sign * np.max(sign * window[core]))
    contrast = lesion - background
    frac = np.clip((window - background) / contrast, 0.0, 1.0)
    # tissue further from the background than the lesion itself is (a vessel or wall brighter
    # than a nodule) is another structure, not partial volume of the lesion
    frac[(window - lesion) * np.sign(contrast) >= MIN_CONTRAST_HU] = 0.0
    zone = np.zeros(window.shape, bool)  # where the lesion may lie: the box and a thin margin
    zy = zx = ZONE_PIXELS
    zone[
        max(y0 - zy - wy0, 0) : y1 + zy - wy0,
        max(x0 - zx - wx0, 0) : x1 + zx - wx0,
    ] = True
    frac = np.where(zone, frac, 0.0)
    labels, count = _components(frac >= 0.5)
    if count == 0:
        return None
    hits = np.bincount(labels[core], minlength=count + 1)
    hits[0] = 0
    if hits.max() == 0:
        return None
    component = labels == int(hits.argmax())
    rim = _dilate(component)
    weights = np.where(rim, frac, 0.0)
    dy, dx = float(spacing[1]), float(spacing[2])
    total = float(weights.sum())
    yy, xx = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
    ym, xm = (weights * yy).sum() / total, (weights * xx).sum() / total
    # second moments in mm^2, each pixel a uniform square (its own spread: size^2 / 12)
    vy = (weights * ((yy - ym) * dy) ** 2).sum() / total + dy**2 / 12.0
    vx = (weights * ((xx - xm) * dx) ** 2).sum() / total + dx**2 / 12.0
    cov = (weights * ((yy - ym) * dy) * ((xx - xm) * dx)).sum() / total
    low, high = np.linalg.eigvalsh(np.array([[vy, cov], [cov, vx]]))
    ratio = math.sqrt(max(low, 0.0) / high) if high > 0 else 1.0
    area = total * dy * dx
    a = math.sqrt(area / (math.pi * max(ratio, 1e-6)))
    return LesionMeasure(
        long_mm=2.0 * a,
        short_mm=2.0 * a * ratio,
        area_mm2=area,
        lesion_hu=lesion,
        background_hu=background,
        pixels=int(component.sum()),
    )


def lesion_evidence_line(region: str | None, long_mm: float | None, short_mm: float | None) -> str:
    """The lesion evidence line: ``'Lesion in this box: lung, 15 x 12 mm.'`` (whole mm, as
    reports give sizes); a part not known is left out (``'Lesion in this box: not measured.'``
    when neither is)."""
    parts = [region] if region else []
    if long_mm is not None and short_mm is not None:
        parts.append(f"{round(long_mm)} x {round(short_mm)} mm")
    return f"{LESION_EVIDENCE_PREFIX} {', '.join(parts) if parts else 'not measured'}."
