"""Chest radiographs: reading one (DICOM or PNG) for display, boxes, box masks and box locations.

One home for what the VinDr-CXR (:mod:`rgct.data.vindr`) and ChestX-ray14
(:mod:`rgct.data.chestxray14`) readers share.

Display convention: a :class:`Radiograph` holds float32 (H, W) in [0, 1], rows top (head) ->
bottom (feet), columns image left -> right as a PA film is hung (image left = patient right),
and **bright = attenuating**: lungs dark, bone bright, whatever the file's photometric
interpretation. A DICOM goes through its modality LUT (rescale) and VOI LUT or window
(pydicom's ``apply_modality_lut`` / ``apply_voi_lut``); a VOI output is scaled by the VOI's
output range, an image without VOI by its own min and max; ``MONOCHROME1`` is then inverted.

Boxes are pixel coordinates ``(x_min, y_min, x_max, y_max)`` as both releases give them (x =
column, y = row, edges in pixel units); a box's mask is every pixel the box touches.

Locations: side from the box centre against the image's vertical midline (``right`` on the
image's left half, a PA view), ``central`` when at least a quarter of the box lies on each side;
zone from the box centre's row in thirds of the lung band (``upper``/``middle``/``lower``), by
default rows :data:`LUNG_BAND` of the image height (a typical PA film: apices near 10%,
costophrenic angles near 75%); phantoms give their own band.

Example::

    image = load_radiograph("train/000434271f63a181c1bb8c9a6c8f7e2b.dicom")
    mask = box_mask(box, image.shape)                 # bool (H, W)
    side, zone = box_location(box, image.shape)       # ('right', 'lower')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rgct.data.io import VolumeReadError

DICOM_SUFFIXES = (".dicom", ".dcm")
LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LAT", "LLAT", "RLAT")
"""``ViewPosition`` / ``View Position`` values of a lateral film (flagged by ``data check``)."""
CHEST_PARTS = ("CHEST", "THORAX", "LUNG", "RIB")
"""``BodyPartExamined`` words of a chest image; a header naming none of them is flagged."""
LUNG_BAND = (0.10, 0.75)
"""Default lung band (top, bottom) as fractions of the image height, for zones."""
ZONES = ("upper", "middle", "lower")
CENTRAL_SHARE = 0.25
"""A box with at least this share of its width on each side of the midline is ``central``."""


@dataclass
class Radiograph:
    """One radiograph, ready to display (see the module notes for the convention).

    Attributes:
        array: float32 (H, W) in [0, 1], bright = attenuating.
        spacing: (row, column) mm per pixel, or None when the file gives none.
        source: the file.
        view: the view position the file gives ('PA', 'AP', 'LL' ...), '' when none.
        body_part: ``BodyPartExamined`` ('' when none or not DICOM).
    """

    array: np.ndarray
    spacing: tuple[float, float] | None
    source: str
    view: str = ""
    body_part: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape  # type: ignore[return-value]


@dataclass(frozen=True)
class Box:
    """One finding box on a radiograph.

    Attributes:
        class_name: the dataset's class name.
        x_min, y_min, x_max, y_max: pixels (x = column, y = row).
        readers: readers who drew it (a VinDr-CXR fused box: its reader agreement; a consensus
            or ChestX-ray14 box: the readers behind the release's one box, 0 when unknown).
        consensus: the release's own reference box (VinDr-CXR test rows, ChestX-ray14 boxes).
    """

    class_name: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    readers: int = 1
    consensus: bool = False

    @property
    def coords(self) -> tuple[float, float, float, float]:
        return self.x_min, self.y_min, self.x_max, self.y_max

    @property
    def area(self) -> float:
        return max(self.x_max - self.x_min, 0.0) * max(self.y_max - self.y_min, 0.0)


def is_lateral(view: str) -> bool:
    return view.strip().upper() in LATERAL_VIEWS


def is_non_chest(body_part: str) -> bool:
    """True when the header names a body part and it is not the chest."""
    part = body_part.strip().upper()
    return bool(part) and not any(word in part for word in CHEST_PARTS)


def box_problem(coords: tuple[float, ...], width: int, height: int) -> tuple[str, str] | None:
    """('zero_area_box' | 'box_outside', why) for a box that cannot be used, else None."""
    x1, y1, x2, y2 = coords
    if not all(np.isfinite(coords)):
        return "bad_box", f"box {list(coords)} is not 4 numbers"
    if x2 <= x1 or y2 <= y1:
        return "zero_area_box", f"box {list(coords)} has no area (x_max <= x_min or y_max <= y_min)"
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        return "box_outside", f"box {list(coords)} outside the {width}x{height} image"
    return None


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x_min, y_min, x_max, y_max) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def box_mask(coords: tuple[float, ...], shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W): every pixel the box touches (edges widened to whole pixels, clipped)."""
    height, width = shape
    x1, y1, x2, y2 = coords
    mask = np.zeros(shape, dtype=bool)
    r0, r1 = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), height)
    c0, c1 = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), width)
    mask[r0:r1, c0:c1] = True
    return mask


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x_min, y_min, x_max, y_max) in pixels of the pixels a (H, W) mask holds: the inverse of
    :func:`box_mask` for a box on whole-pixel edges (a fractional box comes back widened to them).

    Raises:
        ValueError: an empty mask.
    """
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    cols = np.flatnonzero(np.asarray(mask).any(axis=0))
    if not len(rows):
        raise ValueError("an empty mask has no box")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_location(
    coords: tuple[float, ...],
    shape: tuple[int, int],
    lung_rows: tuple[float, float] | None = None,
) -> tuple[str, str]:
    """(side, zone) of a box on a PA radiograph (rules in the module notes).

    Args:
        shape: (H, W) of the image.
        lung_rows: (top, bottom) rows of the lung band; None: :data:`LUNG_BAND` of H.
    """
    height, width = shape
    x1, y1, x2, y2 = coords
    mid = width / 2.0
    share = max(CENTRAL_SHARE * (x2 - x1), 1e-9)
    if x1 <= mid - share and x2 >= mid + share:
        side = "central"
    else:
        side = "right" if (x1 + x2) / 2.0 < mid else "left"
    top, bottom = lung_rows if lung_rows else (LUNG_BAND[0] * height, LUNG_BAND[1] * height)
    third = (bottom - top) / 3.0
    row = (y1 + y2) / 2.0
    zone = ZONES[0] if row < top + third else ZONES[1] if row < top + 2 * third else ZONES[2]
    return side, zone


def location_words(side: str, zone: str) -> str:
    """``'right upper zone'``, ``'central lower zone'``."""
    return f"{side} {zone} zone"


SIDES = ("right", "central", "left")
PLACES = tuple(location_words(side, zone) for side in SIDES for zone in ZONES)
"""The nine places a box can be named by, in :func:`zone_masks` order."""
CENTRAL_BAND = 0.25
"""The central zones span the film's midline +- this fraction of its width: the centre of any
box :func:`box_location` calls central lies there (at least a quarter of its width on each
side of the midline)."""


def zone_masks(
    shape: tuple[int, int], lung_rows: tuple[float, float] | None = None
) -> tuple[list[str], np.ndarray]:
    """The nine places :func:`box_location` names, as masks of an (H, W) film.

    Rows: ``upper`` from the top of the film to the first third of the lung band, ``middle``
    the second third, ``lower`` the rest down to the bottom (so a box's centre row falls in
    the zone it is named by); columns: ``right`` the image's left half (a PA film), ``left``
    the right half, ``central`` the midline +- :data:`CENTRAL_BAND` of the width.

    Returns:
        (``["right upper zone", ...]`` side-major, bool (9, H, W)).
    """
    height, width = shape
    top, bottom = lung_rows if lung_rows else (LUNG_BAND[0] * height, LUNG_BAND[1] * height)
    third = (bottom - top) / 3.0
    rows = [0.0, top + third, top + 2 * third, float(height)]
    mid = width / 2.0
    cols = {
        "right": (0.0, mid),
        "central": (mid - CENTRAL_BAND * width, mid + CENTRAL_BAND * width),
        "left": (mid, float(width)),
    }
    masks = []
    for side in SIDES:  # every pixel a part of the zone's span touches (neighbours share one)
        c0, c1 = cols[side]
        for z in range(len(ZONES)):
            mask = np.zeros(shape, dtype=bool)
            mask[int(np.floor(rows[z])) : int(np.ceil(rows[z + 1])), int(c0) : int(np.ceil(c1))] = 1
            masks.append(mask)
    return list(PLACES), np.stack(masks)


def _voi_range(ds) -> tuple[float, float] | None:
    """Output range of the file's VOI (LUT sequence or window) after its modality LUT."""
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    bits = int(ds.BitsStored)
    lo, hi = (
        (0, 2**bits - 1)
        if int(ds.PixelRepresentation) == 0
        else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    return lo * slope + intercept, hi * slope + intercept


def _spacing(ds) -> tuple[float, float] | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return float(value[0]), float(value[1])
    return None


def read_dicom_radiograph(path: str | Path) -> Radiograph:
    """A DICOM radiograph for display: modality LUT, VOI LUT or window, MONOCHROME1 inverted.

    Raises:
        VolumeReadError: not readable, no pixels, not one grey 2D frame.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, KeyError) as e:
        raise VolumeReadError(f"{path}: cannot read DICOM radiograph ({e})") from e
    except (RuntimeError, NotImplementedError) as e:  # a compressed transfer syntax, no decoder
        raise VolumeReadError(
            f"{path}: cannot decode its pixels ({e}); compressed DICOMs need a pydicom decoder "
            "plugin (e.g. pip install pylibjpeg pylibjpeg-openjpeg)"
        ) from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if stored.ndim != 2 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise VolumeReadError(f"{path}: expected one grey frame, got {stored.shape} {photometric}")
    values = apply_voi_lut(apply_modality_lut(stored, ds), ds).astype(np.float64)
    span = _voi_range(ds) or (float(values.min()), float(values.max()))
    array = (values - span[0]) / max(span[1] - span[0], 1e-9)
    if photometric == "MONOCHROME1":
        array = 1.0 - array
    return Radiograph(
        np.clip(array, 0.0, 1.0).astype(np.float32),
        _spacing(ds),
        str(path),
        view=str(ds.get("ViewPosition", "") or ""),
        body_part=str(ds.get("BodyPartExamined", "") or ""),
    )


def read_png_radiograph(path: str | Path, spacing: tuple[float, float] | None = None) -> Radiograph:
    """An 8- or 16-bit PNG radiograph (grey, or RGB(A) as a few ChestX-ray14 files are) scaled
    by its bit depth to [0, 1].

    Raises:
        VolumeReadError: not a readable image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA", "LA", "P"):
                img = img.convert("L")
            pixels = np.asarray(img)
    except (OSError, ValueError) as e:
        raise VolumeReadError(f"{path}: cannot read PNG ({e})") from e
    if pixels.ndim != 2:
        raise VolumeReadError(f"{path}: expected a grey image, got shape {pixels.shape}")
    top = 255.0 if pixels.dtype == np.uint8 else 65535.0
    return Radiograph((pixels.astype(np.float32) / top), spacing, str(path))


def load_radiograph(path: str | Path, spacing: tuple[float, float] | None = None) -> Radiograph:
    """A ``.dicom``/``.dcm`` or ``.png`` radiograph (``spacing``: for a PNG, from its table)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return read_dicom_radiograph(path)
    if path.suffix.lower() == ".png":
        return read_png_radiograph(path, spacing)
    raise VolumeReadError(f"{path}: unsupported radiograph; expected .dicom, .dcm or .png")


def dicom_header(path: str | Path) -> dict:
    """``{"rows", "columns", "view", "body_part"}`` from a DICOM header (pixels not read).

    Raises:
        VolumeReadError: unreadable, or no Rows/Columns.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return {
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
            "view": str(ds.get("ViewPosition", "") or ""),
            "body_part": str(ds.get("BodyPartExamined", "") or ""),
        }
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, TypeError) as e:
        raise VolumeReadError(f"{path}: cannot read DICOM header ({e})") from e


def png_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a PNG from its header.

    Raises:
        VolumeReadError: unreadable.
    """
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError) as e:
        raise VolumeReadError(f"{path}: cannot read PNG ({e})") from e
