"""Slice rendering for the demo: numpy only, one RGB uint8 image per frame.

A frame is a 2D cut of a (D, H, W) Hounsfield volume through a cursor voxel, windowed to grey,
with optional layers on top: a mask drawn as a translucent fill and/or a solid outline (the
selected region, a finding), an in-plane box, and a crosshair at the cursor. Every frame is
built from two index maps (display row -> voxel, display column -> voxel) that also turn a
click back into a voxel, so flips, physical proportions, enlargement and zoom are written once.
Nothing here touches matplotlib or gradio, so a frame costs a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

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

ZOOM_RANGE = (1.0, 8.0)
"""Smallest and largest zoom factor of the viewer."""

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

FINDING_COLOUR = (255, 0, 200)
"""Colour of a finding's own mask (magenta: distinct from every region colour)."""

BOX_COLOUR = (255, 220, 0)
CURSOR_COLOUR = (0, 255, 255)


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


def plane_axes(view: str) -> tuple[int, int]:
    """Volume axes shown as (rows, columns) in ``view``: axial (y, x), coronal (z, x),
    sagittal (z, y)."""
    if view not in VIEW_AXIS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    axis = VIEW_AXIS[view]
    a, b = (i for i in range(3) if i != axis)
    return a, b


def window_from_level(level: float, width: float) -> tuple[float, float]:
    """(low, high) HU of a window given its level (centre) and width."""
    width = max(float(width), 1.0)
    return float(level) - width / 2, float(level) + width / 2


def level_from_window(window: tuple[float, float]) -> tuple[float, float]:
    """(level, width) of a (low, high) HU window."""
    lo, hi = window
    return (lo + hi) / 2, hi - lo


@dataclass(frozen=True)
class Plane:
    """Where each displayed pixel of a frame comes from.

    Attributes:
        view: the plane.
        index: the slice index along the view's axis.
        rows: (R,) voxel coordinate along ``plane_axes(view)[0]`` of each displayed row.
        cols: (C,) voxel coordinate along ``plane_axes(view)[1]`` of each displayed column.
    """

    view: str
    index: int
    rows: np.ndarray
    cols: np.ndarray

    def voxel(self, row: int, col: int) -> tuple[int, int, int]:
        """The (z, y, x) voxel shown at displayed pixel (row, col)."""
        a, b = plane_axes(self.view)
        out = [0, 0, 0]
        out[VIEW_AXIS[self.view]] = self.index
        out[a] = int(self.rows[int(np.clip(row, 0, len(self.rows) - 1))])
        out[b] = int(self.cols[int(np.clip(col, 0, len(self.cols) - 1))])
        return out[0], out[1], out[2]

    def pixel(self, voxel: tuple[int, int, int]) -> tuple[float, float] | None:
        """Displayed (row, col) centre of ``voxel``'s in-plane position, None if zoomed out of
        view."""
        a, b = plane_axes(self.view)
        rr = np.flatnonzero(self.rows == int(voxel[a]))
        cc = np.flatnonzero(self.cols == int(voxel[b]))
        if rr.size == 0 or cc.size == 0:
            return None
        return float(rr.mean()), float(cc.mean())


def _axis_map(n: int, out: int, zoom: float, centre: float) -> np.ndarray:
    """Voxel index of each of ``out`` displayed pixels along an axis of ``n`` voxels.

    The axis is shown flipped (highest index first: anterior up, head up, patient's right on
    the left), ``zoom`` times enlarged around voxel ``centre``.
    """
    span = n / max(float(zoom), 1.0)
    centre_flipped = (n - 1 - float(centre)) + 0.5
    lo = float(np.clip(centre_flipped - span / 2, 0.0, n - span))
    shown = np.floor(lo + (np.arange(out) + 0.5) * (span / out)).astype(np.int64)
    return n - 1 - np.clip(shown, 0, n - 1)


def plane(
    shape: tuple[int, int, int],
    view: str,
    index: int,
    *,
    spacing: tuple[float, float, float] | None = None,
    min_size: int = 0,
    zoom: float = 1.0,
    centre: tuple[int, int, int] | None = None,
) -> Plane:
    """The index maps of one frame.

    Rows are stretched by the pixel-spacing ratio so anatomy keeps its proportions; small
    slices are enlarged by an integer factor until the longer side reaches ``min_size``;
    ``zoom`` > 1 shows ``1/zoom`` of the plane around ``centre`` (z, y, x) at the same size.

    Args:
        shape: (D, H, W) of the volume.
        view: one of :data:`VIEWS`.
        index: slice index along the view's axis; clipped into range.
        spacing: (sd, sh, sw) voxel size in mm, or None for isotropic.
        min_size: target length of the displayed image's longer side, in pixels.
        zoom: magnification in :data:`ZOOM_RANGE` (clipped).
        centre: voxel to zoom around; default the middle of the volume.
    """
    a, b = plane_axes(view)
    axis = VIEW_AXIS[view]
    index = int(np.clip(index, 0, shape[axis] - 1))
    na, nb = int(shape[a]), int(shape[b])
    stretch = 1.0
    if spacing is not None:
        stretch = float(spacing[a]) / float(spacing[b])
        if abs(stretch - 1.0) < 0.05 or stretch <= 0:
            stretch = 1.0
    rows0 = max(1, int(round(na * stretch)))
    f = display_factor((rows0, nb), min_size)
    zoom = float(np.clip(zoom, *ZOOM_RANGE))
    c = centre if centre is not None else tuple(s // 2 for s in shape)
    return Plane(
        view=view,
        index=index,
        rows=_axis_map(na, rows0 * f, zoom, c[a]),
        cols=_axis_map(nb, nb * f, zoom, c[b]),
    )


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

    Returns:
        (rows, cols) array, same dtype as ``array``.
    """
    p = plane(array.shape, view, index, spacing=spacing)
    return _cut(array, p)


def _cut(array: np.ndarray, p: Plane) -> np.ndarray:
    sl = np.take(array, p.index, axis=VIEW_AXIS[p.view])
    return sl[np.ix_(p.rows, p.cols)]


def display_factor(shape: tuple[int, ...], min_size: int) -> int:
    """Integer upscaling factor that brings a (rows, cols) slice's longer side to ``min_size``."""
    return max(1, int(min_size) // max(int(shape[0]), int(shape[1]), 1))


def window_to_grey(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``window`` and map it to uint8 grey, same shape."""
    lo, hi = window
    scaled = (np.asarray(hu, dtype=np.float32) - lo) * (255.0 / max(hi - lo, 1e-6))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2D bool mask that touch a background pixel or the image edge."""
    padded = np.pad(mask, 1)
    inner = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


@dataclass(frozen=True)
class Layer:
    """A mask drawn over the grey image.

    Attributes:
        mask: (D, H, W) bool.
        colour: RGB.
        fill: opacity of the fill in [0, 1] (0: outline only).
        outline: draw the solid outline.
    """

    mask: np.ndarray
    colour: tuple[int, int, int] = DEFAULT_COLOUR
    fill: float = 0.35
    outline: bool = True


def _draw(rgb: np.ndarray, cut: np.ndarray, layer: Layer) -> None:
    if not cut.any():
        return
    tint = np.asarray(layer.colour, dtype=np.float32)
    if layer.fill > 0:
        blended = rgb[cut].astype(np.float32) * (1.0 - layer.fill) + tint * layer.fill
        rgb[cut] = blended.astype(np.uint8)
    if layer.outline:
        rgb[_outline(cut)] = layer.colour


def _draw_cross(rgb: np.ndarray, at: tuple[float, float], arm: int = 12, gap: int = 5) -> None:
    r, c = int(round(at[0])), int(round(at[1]))
    h, w = rgb.shape[:2]
    for d in range(gap, gap + arm):
        for rr, cc in ((r - d, c), (r + d, c), (r, c - d), (r, c + d)):
            if 0 <= rr < h and 0 <= cc < w:
                rgb[rr, cc] = CURSOR_COLOUR


def render_plane(
    volume: np.ndarray,
    p: Plane,
    window: tuple[float, float],
    layers: list[Layer] | tuple[Layer, ...] = (),
    *,
    box: tuple[int, int, int, int] | None = None,
    cursor: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Render the frame ``p`` of ``volume`` with its layers.

    Args:
        volume: (D, H, W) float HU.
        p: from :func:`plane`.
        window: (low, high) HU.
        layers: masks drawn in order (later on top).
        box: (y0, y1, x0, x1) voxel rectangle (inclusive) outlined on axial frames.
        cursor: (z, y, x) voxel marked with a crosshair (when it is in view).

    Returns:
        (rows, cols, 3) uint8 RGB image.
    """
    grey = window_to_grey(_cut(volume, p), window)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for layer in layers:
        _draw(rgb, _cut(layer.mask, p).astype(bool), layer)
    if box is not None and p.view == "axial":
        y0, y1, x0, x1 = (int(v) for v in box)
        (y0, y1), (x0, x1) = sorted((y0, y1)), sorted((x0, x1))
        inside = ((p.rows >= y0) & (p.rows <= y1))[:, None] & ((p.cols >= x0) & (p.cols <= x1))
        rgb[_outline(inside)] = BOX_COLOUR
    if cursor is not None:
        at = p.pixel(cursor)
        if at is not None:
            _draw_cross(rgb, at)
    return rgb


def render_film(
    grey: np.ndarray,
    layers: list[Layer] | tuple[Layer, ...] = (),
    *,
    box: tuple[int, int, int, int] | None = None,
    marker: tuple[float, float] | None = None,
) -> np.ndarray:
    """Render a 2D film (a radiograph, already grey) with its layers.

    Args:
        grey: (H, W) uint8.
        layers: (H, W) masks drawn in order (later on top).
        box: (x0, y0, x1, y1) pixel rectangle (inclusive) outlined.
        marker: (row, col) marked with a crosshair.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    rgb = np.repeat(np.asarray(grey, dtype=np.uint8)[..., None], 3, axis=2)
    for layer in layers:
        _draw(rgb, np.asarray(layer.mask, dtype=bool), layer)
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        rows, cols = np.arange(rgb.shape[0]), np.arange(rgb.shape[1])
        inside = ((rows >= y0) & (rows <= y1))[:, None] & ((cols >= x0) & (cols <= x1))[None]
        rgb[_outline(inside)] = BOX_COLOUR
    if marker is not None:
        _draw_cross(rgb, marker, arm=8, gap=2)
    return rgb


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
    """Render one slice with an optional mask overlay and in-plane box (no zoom, no cursor).

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
        min_size: small slices are enlarged by an integer factor until their longer side
            reaches this many pixels.

    Returns:
        (rows, cols, 3) uint8 RGB image.
    """
    if isinstance(window, str):
        window = WINDOW_PRESETS[window]
    p = plane(volume.shape, view, index, spacing=spacing, min_size=min_size)
    layers = [] if mask is None else [Layer(mask, colour, alpha)]
    return render_plane(volume, p, window, layers, box=box)


def mask_centre(mask: np.ndarray, view: str) -> int | None:
    """Index of the slice through the middle of ``mask`` along ``view``'s axis, None if empty."""
    axis = VIEW_AXIS[view]
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(np.asarray(mask, dtype=bool).any(axis=other))
    if present.size == 0:
        return None
    return int((present[0] + present[-1]) // 2)


def largest_slices(mask: np.ndarray) -> tuple[int, int, int] | None:
    """(z, y, x): along each axis, the slice where ``mask`` has the most voxels; None if empty.

    Used to show a region where it is largest in all three planes (not at the volume's
    middle, where the lungs or pleura may be absent in the sagittal plane). Among slices
    within 1% of the largest, the middle one is taken.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = mask.sum(axis=other)
        near = np.flatnonzero(counts >= 0.99 * counts.max())
        out.append(int(near[len(near) // 2]))
    return out[0], out[1], out[2]


def mask_centroid(mask: np.ndarray) -> tuple[int, int, int] | None:
    """Rounded centre of mass (z, y, x) of a mask, None if empty."""
    idx = np.argwhere(np.asarray(mask, dtype=bool))
    if idx.size == 0:
        return None
    z, y, x = np.round(idx.mean(axis=0)).astype(int)
    return int(z), int(y), int(x)
