"""Slice rendering for the demo: numpy only, one RGB uint8 image per frame.

A frame is a 2D cut of a (D, H, W) Hounsfield volume, windowed to grey, with an optional
binary mask drawn as a translucent fill plus a solid outline, and an optional in-plane box.
Nothing here touches matplotlib or gradio, so a frame costs a few milliseconds.
"""

from __future__ import annotations

import numpy as np

from rgct.constants import OTHERS, REGIONS, WHOLE_SCAN

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-1350.0, 150.0),
    "mediastinum": (-160.0, 240.0),
    "bone": (-450.0, 1050.0),
}
"""HU window presets (low, high) offered in the viewer."""

VIEWS = ("axial", "coronal", "sagittal")
"""Viewing planes; the axis each one slices along is ``VIEW_AXIS[view]``."""

VIEW_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}

# A qualitative palette (Okabe-Ito + Tableau tones) that stays readable over grey CT.
_PALETTE = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (213, 94, 0),
    (0, 114, 178),
    (204, 121, 167),
    (255, 99, 132),
    (148, 103, 189),
    (23, 190, 207),
)
REGION_COLOURS: dict[str, tuple[int, int, int]] = dict(zip(REGIONS, _PALETTE))
REGION_COLOURS[OTHERS] = (180, 180, 180)
REGION_COLOURS[WHOLE_SCAN] = (180, 180, 180)
DEFAULT_COLOUR = (255, 64, 64)
"""Colour for masks that are not named regions (an uploaded mask, a drawn box)."""


def region_colour(name: str | None) -> tuple[int, int, int]:
    """RGB colour used for ``name`` everywhere in the app (viewer overlay and report HTML)."""
    return REGION_COLOURS.get(name or "", DEFAULT_COLOUR)


def colour_hex(name: str | None) -> str:
    """``region_colour`` as ``#rrggbb``."""
    r, g, b = region_colour(name)
    return f"#{r:02x}{g:02x}{b:02x}"


def num_slices(shape: tuple[int, ...], view: str) -> int:
    """Number of slices of a (D, H, W) volume in ``view``."""
    return int(shape[VIEW_AXIS[view]])


def _stretch_rows(image: np.ndarray, factor: float) -> np.ndarray:
    """Repeat rows (nearest neighbour) so that rows and columns have the same physical size."""
    if abs(factor - 1.0) < 0.05 or factor <= 0:
        return image
    rows = max(1, int(round(image.shape[0] * factor)))
    index = np.minimum((np.arange(rows) / factor).astype(np.int64), image.shape[0] - 1)
    return image[index]


def take_slice(
    array: np.ndarray, view: str, index: int, spacing: tuple[float, float, float] | None = None
) -> np.ndarray:
    """Cut one 2D slice out of a canonical (D, H, W) array, oriented as radiologists read it.

    Arrays follow ``rgct.data.io``'s convention (RAS: x towards the patient's right, y
    anterior, z superior). Displayed planes use the radiological convention: axial seen from
    the feet (patient's right on the image's left, anterior up), coronal seen from the front
    (patient's right on the left, head up), sagittal with anterior on the left and head up.
    Coronal and sagittal rows are stretched by the slice-to-pixel spacing ratio so anatomy
    keeps its proportions.

    Args:
        array: (D, H, W) volume or mask.
        view: one of :data:`VIEWS`.
        index: slice index along the view's axis; clipped into range.
        spacing: (sd, sh, sw) voxel size in mm, or None for isotropic.

    Returns:
        (rows, cols) array, same dtype as ``array``: axial (H, W), coronal (D', W),
        sagittal (D', H) with D' the stretched slice count.
    """
    if view not in VIEW_AXIS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    axis = VIEW_AXIS[view]
    index = int(np.clip(index, 0, array.shape[axis] - 1))
    cut = np.take(array, index, axis=axis)[::-1, ::-1]
    if axis != 0 and spacing is not None:
        in_plane = spacing[2] if axis == 1 else spacing[1]
        cut = _stretch_rows(cut, float(spacing[0]) / float(in_plane))
    return cut


def axial_display_to_voxel(
    row: int, col: int, shape: tuple[int, int], factor: int
) -> tuple[int, int]:
    """Map a pixel of the displayed axial image back to the voxel (y, x) it shows.

    Args:
        row, col: pixel in the displayed image (enlarged ``factor`` times).
        shape: (H, W) of the volume.
        factor: the display factor used by :func:`render_slice`.
    """
    h, w = shape
    y = h - 1 - min(int(row) // factor, h - 1)
    x = w - 1 - min(int(col) // factor, w - 1)
    return max(y, 0), max(x, 0)


def display_factor(shape: tuple[int, ...], min_size: int) -> int:
    """Integer upscaling factor that brings a (rows, cols) slice's longer side to ``min_size``."""
    return max(1, int(min_size) // max(int(shape[0]), int(shape[1]), 1))


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def window_to_grey(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``window`` and map it to uint8 grey, same shape."""
    lo, hi = window
    scaled = (np.asarray(hu, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2D bool mask that touch a background pixel (4-neighbourhood)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def render_slice(
    volume: np.ndarray,
    view: str,
    index: int,
    window: tuple[float, float] | str = "lung",
    *,
    mask: np.ndarray | None = None,
    colour: tuple[int, int, int] = DEFAULT_COLOUR,
    alpha: float = 0.35,
    spacing: tuple[float, float, float] | None = None,
    box: tuple[int, int, int, int] | None = None,
    min_size: int = 0,
) -> np.ndarray:
    """Render one slice with an optional mask overlay and in-plane box.

    Args:
        volume: (D, H, W) float HU.
        view: one of :data:`VIEWS`.
        index: slice index along the view's axis.
        window: (low, high) HU or a :data:`WINDOW_PRESETS` name.
        mask: optional (D, H, W) bool mask, drawn as a translucent fill and a solid outline.
        colour: RGB overlay colour.
        alpha: fill opacity in [0, 1].
        spacing: (sd, sh, sw) mm, used to keep coronal/sagittal proportions.
        box: optional (y0, y1, x0, x1) voxel rectangle (inclusive) outlined on axial slices.
        min_size: small slices are enlarged by an integer factor (nearest neighbour, see
            :func:`display_factor`) until their longer side reaches this many pixels.

    Returns:
        (rows * f, cols * f, 3) uint8 RGB image, f the display factor (1 for large slices).
    """
    if isinstance(window, str):
        window = WINDOW_PRESETS[window]
    cut_hu = take_slice(volume, view, index, spacing)
    f = display_factor(cut_hu.shape, min_size)
    grey = _upscale(window_to_grey(cut_hu, window), f)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mask is not None:
        cut = _upscale(take_slice(mask, view, index, spacing).astype(bool), f)
        if cut.any():
            tint = np.asarray(colour, dtype=np.float32)
            fill = rgb[cut].astype(np.float32) * (1.0 - alpha) + tint * alpha
            rgb[cut] = fill.astype(np.uint8)
            rgb[_outline(cut)] = colour
    if box is not None and view == "axial":
        h, w = cut_hu.shape
        y0, y1, x0, x1 = (int(v) for v in box)
        # voxel (y, x) -> displayed row/col (both axes are flipped for display)
        y0, y1 = sorted((h - 1 - int(np.clip(y0, 0, h - 1)), h - 1 - int(np.clip(y1, 0, h - 1))))
        x0, x1 = sorted((w - 1 - int(np.clip(x0, 0, w - 1)), w - 1 - int(np.clip(x1, 0, w - 1))))
        y0, x0, y1, x1 = y0 * f, x0 * f, (y1 + 1) * f - 1, (x1 + 1) * f - 1
        yellow = (255, 220, 0)
        rgb[y0, x0 : x1 + 1] = yellow
        rgb[y1, x0 : x1 + 1] = yellow
        rgb[y0 : y1 + 1, x0] = yellow
        rgb[y0 : y1 + 1, x1] = yellow
    return rgb


def mask_centre(mask: np.ndarray, view: str) -> int | None:
    """Index of the slice through the middle of ``mask`` along ``view``'s axis, None if empty."""
    axis = VIEW_AXIS[view]
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(np.asarray(mask, dtype=bool).any(axis=other))
    if present.size == 0:
        return None
    return int((present[0] + present[-1]) // 2)
