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
    """Cut one 2D slice out of a (D, H, W) array as displayed.

    Axial slices are (H, W) as stored. Coronal (D, W) and sagittal (D, H) cuts are flipped so
    that the last slice is at the top, and their rows are stretched by the slice-to-pixel
    spacing ratio so anatomy keeps its proportions.

    Args:
        array: (D, H, W) volume or mask.
        view: one of :data:`VIEWS`.
        index: slice index along the view's axis; clipped into range.
        spacing: (sd, sh, sw) voxel size in mm, or None for isotropic.

    Returns:
        (rows, cols) array, same dtype as ``array``.
    """
    if view not in VIEW_AXIS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    axis = VIEW_AXIS[view]
    index = int(np.clip(index, 0, array.shape[axis] - 1))
    cut = np.take(array, index, axis=axis)
    if axis == 0:
        return cut
    cut = cut[::-1]
    if spacing is not None:
        in_plane = spacing[2] if axis == 1 else spacing[1]
        cut = _stretch_rows(cut, float(spacing[0]) / float(in_plane))
    return cut


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
        box: optional (y0, y1, x0, x1) rectangle drawn on axial slices (inclusive bounds).

    Returns:
        (rows, cols, 3) uint8 RGB image.
    """
    if isinstance(window, str):
        window = WINDOW_PRESETS[window]
    grey = window_to_grey(take_slice(volume, view, index, spacing), window)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mask is not None:
        cut = take_slice(mask, view, index, spacing).astype(bool)
        if cut.any():
            tint = np.asarray(colour, dtype=np.float32)
            fill = rgb[cut].astype(np.float32) * (1.0 - alpha) + tint * alpha
            rgb[cut] = fill.astype(np.uint8)
            rgb[_outline(cut)] = colour
    if box is not None and view == "axial":
        y0, y1, x0, x1 = (int(v) for v in box)
        h, w = grey.shape
        y0, y1 = sorted((int(np.clip(y0, 0, h - 1)), int(np.clip(y1, 0, h - 1))))
        x0, x1 = sorted((int(np.clip(x0, 0, w - 1)), int(np.clip(x1, 0, w - 1))))
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
