"""Measuring a lesion from the pixels under its box: partial-volume ellipses of known size in
either orientation, a vessel touching the lesion, and what is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rgct.data.lesion_measure import (
    MIN_CONTRAST_HU,
    box_of,
    lesion_evidence_line,
    measure_lesion,
    widen_box,
)

SPACING = (5.0, 2.5, 2.5)  # (d, h, w) mm, as the phantoms
SHAPE = (5, 64, 64)


def ellipse_slice(
    long_mm: float, short_mm: float, vertical: bool, lesion: float, background: float
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A (H, W) slice holding an axis-aligned ellipse with linear partial volume (4x4
    supersampled), and its box (y0, y1, x0, x1) of whole pixels."""
    h, w = SHAPE[1:]
    cy, cx = h / 2 + 0.3, w / 2 - 0.2  # off the pixel grid
    a, b = (short_mm / 2, long_mm / 2) if not vertical else (long_mm / 2, short_mm / 2)
    sub = (np.arange(4) + 0.5) / 4
    ys = (np.arange(h)[:, None] + sub[None, :]).reshape(-1)
    xs = (np.arange(w)[:, None] + sub[None, :]).reshape(-1)
    yy, xx = np.meshgrid((ys - cy) * SPACING[1], (xs - cx) * SPACING[2], indexing="ij")
    inside = ((yy / a) ** 2 + (xx / b) ** 2 <= 1.0).reshape(h, 4, w, 4).mean(axis=(1, 3))
    image = background + inside * (lesion - background)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    return image, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def volume_and_box(image: np.ndarray, box: tuple[int, int, int, int], key: int = 2):
    hu = np.full(SHAPE, -850.0)
    hu[key] = image
    mask = np.zeros(SHAPE, bool)
    y0, y1, x0, x1 = box
    mask[key, y0:y1, x0:x1] = True
    return hu, mask


@pytest.mark.parametrize("vertical", [False, True])
@pytest.mark.parametrize(
    ("long_mm", "short_mm", "lesion", "background"),
    [(6.0, 5.0, 20.0, -850.0), (14.0, 9.0, -30.0, -860.0), (24.0, 18.0, 45.0, -90.0)],
)
def test_ellipses_of_known_size_in_either_orientation(
    long_mm, short_mm, lesion, background, vertical
) -> None:
    image, box = ellipse_slice(long_mm, short_mm, vertical, lesion, background)
    m = measure_lesion(*volume_and_box(image, box), SPACING)
    assert m is not None
    assert m.long_mm == pytest.approx(long_mm, abs=1.0)
    assert m.short_mm == pytest.approx(short_mm, abs=1.0)
    assert m.area_mm2 == pytest.approx(math.pi * long_mm * short_mm / 4, rel=0.1)
    assert m.background_hu == pytest.approx(background, abs=1.0)


def test_a_touching_vessel_outside_the_box_and_brighter_tissue_are_not_the_lesion() -> None:
    image, box = ellipse_slice(12.0, 10.0, False, -20.0, -850.0)
    y0, y1, x0, x1 = box
    cy = (y0 + y1) // 2
    with_vessel = image.copy()
    with_vessel[cy - 1 : cy + 1, x1:] = -20.0  # a vessel of the lesion's density, from the box on
    with_wall = image.copy()
    with_wall[:, x1 - 2 :] = 60.0  # a chest wall brighter than the lesion, inside the box too
    plain = measure_lesion(*volume_and_box(image, box), SPACING)
    for touched in (with_vessel, with_wall):
        m = measure_lesion(*volume_and_box(touched, box), SPACING)
        assert m is not None and m.long_mm == pytest.approx(plain.long_mm, abs=2.0)


def test_nothing_standing_out_under_the_box_is_not_measured() -> None:
    flat = np.full(SHAPE[1:], -850.0)
    image, box = ellipse_slice(12.0, 10.0, False, -850.0 + MIN_CONTRAST_HU / 2, -850.0)
    assert measure_lesion(*volume_and_box(image, box), SPACING) is None
    assert measure_lesion(*volume_and_box(flat, (20, 30, 20, 30)), SPACING) is None


def test_bad_boxes_raise_with_their_shape() -> None:
    hu = np.zeros(SHAPE)
    two = np.zeros(SHAPE, bool)
    two[1:3, 10:20, 10:20] = True
    with pytest.raises(ValueError, match="covers 2 slices"):
        measure_lesion(hu, two, SPACING)
    with pytest.raises(ValueError, match="covers 0 slices"):
        box_of(np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="differ in shape"):
        measure_lesion(hu[:3], two, SPACING)
    one = np.zeros(SHAPE, bool)
    one[3, 10:20, 12:15] = True
    assert box_of(one) == (3, 10, 20, 12, 15)


def test_widen_box_stays_on_its_slice_and_in_the_image() -> None:
    one = np.zeros(SHAPE, bool)
    one[3, 1:4, 10:12] = True
    wide = widen_box(one, 2)
    assert box_of(wide) == (3, 0, 6, 8, 14) and wide.sum() == 6 * 6


def test_evidence_line() -> None:
    assert lesion_evidence_line("lung", 15.6, 11.4) == "Lesion in this box: lung, 16 x 11 mm."
    assert lesion_evidence_line(None, 15.6, 11.4) == "Lesion in this box: 16 x 11 mm."
    assert lesion_evidence_line("mediastinum", None, None) == "Lesion in this box: mediastinum."
    assert lesion_evidence_line(None, None, None) == "Lesion in this box: not measured."
