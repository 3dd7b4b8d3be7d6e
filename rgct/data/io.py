"""Reading CT volumes and binary masks into one canonical array convention.

Every loader returns a :class:`Volume` whose ``array`` is float32 Hounsfield units shaped
(D, H, W). The convention is the one of a NIfTI image reoriented to RAS with
``nibabel.as_closest_canonical`` and transposed from (X, Y, Z) to (Z, Y, X)::

    Volume.array[z, y, x] == canonical_nifti_data[x, y, z]

``Volume.affine`` is the canonical NIfTI affine: it maps the voxel index ``(x, y, z, 1)``
(note the order) to RAS millimetres. DICOM series are put through the same reorientation, so
all sources agree. ``Volume.spacing`` is (d, h, w) in millimetres.

All errors raised here subclass :class:`DataError` (a ``ValueError``) and name the file.
"""

from __future__ import annotations

import csv
import functools
import io as _io
import logging
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

logger = logging.getLogger(__name__)

AFFINE_TOLERANCE_MM = 0.05
"""Largest allowed difference between a mask's and its volume's affine entries (mm)."""

BINARY_TOLERANCE = 1e-3
"""Mask values within this distance of 0 or 1 count as binary."""


class DataError(ValueError):
    """Base class of every data problem (bad file, bad mask, bad CSV row)."""


class VolumeReadError(DataError):
    """A volume or mask file cannot be read (corrupt, truncated, not the expected format)."""


class MixedSeriesError(DataError):
    """A DICOM folder holds slices from more than one series."""


class MaskError(DataError):
    """A mask does not fit its volume."""


class MaskShapeError(MaskError):
    """The mask's shape differs from the volume's."""


class MaskAffineError(MaskError):
    """The mask's affine differs from the volume's beyond tolerance."""


class NonBinaryMaskError(MaskError):
    """The mask holds values other than 0 and 1."""


class EmptyMaskError(MaskError):
    """The mask has no foreground voxel."""


@dataclass
class Volume:
    """A CT volume in the canonical convention.

    Attributes:
        array: float32 Hounsfield units, shape (D, H, W) = canonical (Z, Y, X).
        affine: (4, 4) canonical NIfTI affine, voxel (x, y, z, 1) -> RAS mm.
        spacing: voxel size (d, h, w) in mm.
        source: the file or folder it was read from.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """(D, H, W)."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]


# --- NIfTI ----------------------------------------------------------------------------------------

_READ_ERRORS = (
    nib.filebasedimages.ImageFileError,
    OSError,
    EOFError,
    zlib.error,
    ValueError,
    MemoryError,
)


def is_nifti(path: str | Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` names."""
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _open_nifti(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise VolumeReadError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
    except _READ_ERRORS as e:
        raise VolumeReadError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeReadError(f"{path}: expected a NIfTI image, got {type(img).__name__}")
    return img


def _spatial_shape(img: nib.Nifti1Image, path: Path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise VolumeReadError(f"{path}: expected a 3D image, got shape {img.shape}")
    return shape  # type: ignore[return-value]


def canonical_geometry(
    shape: tuple[int, ...], affine: np.ndarray
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape (D, H, W) and canonical affine of a stored (X, Y, Z) grid with ``affine``.

    What :func:`load_nifti` would report for an image of that stored shape and affine, without
    its voxels: lets two grids stored in different orientations be compared.
    """
    shape3 = tuple(int(s) for s in shape[:3])
    ornt = io_orientation(affine)
    canon_affine = np.asarray(affine) @ inv_ornt_aff(ornt, shape3)
    canon = [0, 0, 0]
    for src, (dst, _) in enumerate(ornt):
        canon[int(dst)] = shape3[src]
    return (canon[2], canon[1], canon[0]), canon_affine


def canonical_header(path: str | Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape (D, H, W) and canonical affine of a NIfTI file, reading only its header.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.

    Returns:
        ``(shape, affine)`` exactly as :func:`load_nifti` would report them.
    """
    path = Path(path)
    img = _open_nifti(path)
    return canonical_geometry(_spatial_shape(img, path), img.affine)


def read_canonical(
    path: str | Path, dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Voxels of a NIfTI file in the canonical convention.

    Returns:
        ``(array (D, H, W) of dtype, canonical affine (4, 4), zooms (x, y, z) mm)``.

    Raises:
        VolumeReadError: missing, corrupt, truncated or non-NIfTI file.
    """
    path = Path(path)
    img = _open_nifti(path)
    shape = _spatial_shape(img, path)
    try:
        data = np.asarray(img.dataobj, dtype=dtype)
    except _READ_ERRORS as e:
        raise VolumeReadError(
            f"{path}: cannot read the voxel data, file corrupt or truncated "
            f"({type(e).__name__}: {e})"
        ) from e
    data = data.reshape(shape)
    ornt = io_orientation(img.affine)
    data = apply_orientation(data, ornt)
    affine = img.affine @ inv_ornt_aff(ornt, shape)
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    return array, affine, zooms


def _header_is_blank(affine: np.ndarray, zooms: tuple) -> bool:
    return any(z <= 0 for z in zooms) or np.allclose(affine, np.eye(4))


def _with_spacing(affine: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Rescale the affine's columns so voxel sizes are ``spacing`` (d, h, w)."""
    out = affine.copy()
    target = (spacing[2], spacing[1], spacing[0])  # (x, y, z)
    for i in range(3):
        norm = float(np.linalg.norm(out[:3, i]))
        out[:3, i] = out[:3, i] / norm * target[i] if norm > 0 else 0.0
        if norm <= 0:
            out[i, i] = target[i]
    return out


def load_nifti(
    path: str | Path,
    *,
    spacing: tuple[float, float, float] | None = None,
    metadata_csv: str | Path | None = None,
) -> Volume:
    """Read a NIfTI CT volume, reoriented to RAS and transposed to (D, H, W).

    Args:
        path: ``.nii`` or ``.nii.gz`` file holding HU (scl_slope/inter are applied).
        spacing: (d, h, w) mm overriding the header (for releases with blank headers).
        metadata_csv: CT-RATE style metadata table (``VolumeName, XYSpacing, ZSpacing``,
            ``RescaleSlope, RescaleIntercept``): spacing when ``spacing`` is not given, and the
            slope/intercept for stored values that are still raw (:func:`rescale_raw_values`).

    Returns:
        The :class:`Volume`; ``array`` shape (D, H, W) float32.

    Raises:
        VolumeReadError: missing, corrupt, truncated or non-NIfTI file.
        DataError: ``metadata_csv`` missing, without a row for the volume, or unreadable there.
    """
    path = Path(path)
    array, affine, zooms = read_canonical(path, np.float32)
    if metadata_csv is not None:
        row = metadata_row(metadata_csv, _stem(path))
        if spacing is None:
            spacing = _row_spacing(row, metadata_csv, _stem(path))
        rescale = _row_rescale(row, metadata_csv, _stem(path))
        if rescale is not None:
            array = rescale_raw_values(array, *rescale, source=str(path))
    if spacing is not None:
        affine = _with_spacing(affine, tuple(float(s) for s in spacing))
    elif _header_is_blank(affine, zooms):
        logger.warning("%s: blank NIfTI header spacing; pass spacing= or a metadata CSV", path)
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(array, affine, (zooms[2], zooms[1], zooms[0]), str(path))


# --- spacing and rescale from a metadata table ------------------------------------------------

_NAME_COLUMNS = ("VolumeName", "Volumename", "volume", "name", "filename", "NoteAcc_DEID", "id")

AIR_BAND_HU = (-1100.0, -900.0)
"""Hounsfield range of air; a chest CT in HU has a good share of its voxels here."""

AIR_FRACTION = 0.01
"""Share of voxels in :data:`AIR_BAND_HU` above which values are taken as HU already."""


def _stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".npz", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _floats(text: str) -> list[float]:
    cleaned = text.replace("[", " ").replace("]", " ").replace(",", " ").replace("\\", " ")
    return [float(t) for t in cleaned.split()]


@functools.lru_cache(maxsize=4)
def _metadata_index(csv_file: str, mtime_ns: int, size: int) -> dict[str, dict[str, str]]:
    """Volume stem -> row with lower-cased column names (cached per file version)."""
    path = Path(csv_file)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.lower(): c for c in reader.fieldnames or []}
        name_col = next((cols[c.lower()] for c in _NAME_COLUMNS if c.lower() in cols), None)
        if name_col is None:
            raise DataError(f"{path}: no volume-name column (one of {_NAME_COLUMNS})")
        index: dict[str, dict[str, str]] = {}
        for row in reader:
            key = _stem((row.get(name_col) or "").strip())
            index.setdefault(key, {k.lower(): (v or "") for k, v in row.items() if k})
    return index


def metadata_row(csv_file: str | Path, name: str) -> dict[str, str]:
    """The metadata row of volume ``name`` (lower-cased column names).

    The row is the one whose name column (``VolumeName``, ``NoteAcc_DEID``, ``name`` ...)
    equals ``name`` with or without a file suffix. The table is read once per file version.

    Raises:
        DataError: file missing, no name column, or no row for ``name``.
    """
    csv_file = Path(csv_file)
    if not csv_file.is_file():
        raise DataError(f"{csv_file}: metadata CSV not found")
    stat = csv_file.stat()
    index = _metadata_index(str(csv_file.resolve()), stat.st_mtime_ns, stat.st_size)
    if name not in index:
        raise DataError(f"{csv_file}: no row for volume {name!r}")
    return index[name]


def _row_spacing(
    row: dict[str, str], csv_file: str | Path, name: str
) -> tuple[float, float, float]:
    try:
        if "xyspacing" in row and "zspacing" in row:
            xy = _floats(row["xyspacing"])
            return float(row["zspacing"]), xy[0], xy[-1]
        for keys in (
            ("spacing_d", "spacing_h", "spacing_w"),
            ("z_spacing", "y_spacing", "x_spacing"),
        ):
            if all(k in row for k in keys):
                return tuple(float(row[k]) for k in keys)  # type: ignore[return-value]
    except (ValueError, IndexError) as e:
        raise DataError(f"{csv_file}: unreadable spacing for {name!r}: {e}") from e
    raise DataError(f"{csv_file}: no spacing columns (XYSpacing+ZSpacing or spacing_d/h/w)")


def _row_rescale(
    row: dict[str, str], csv_file: str | Path, name: str
) -> tuple[float, float] | None:
    if "rescaleslope" not in row and "rescaleintercept" not in row:
        return None
    try:
        slope = float(row.get("rescaleslope") or 1.0)
        intercept = float(row.get("rescaleintercept") or 0.0)
    except ValueError as e:
        raise DataError(
            f"{csv_file}: unreadable RescaleSlope/RescaleIntercept for {name!r}: {e}"
        ) from e
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise DataError(
            f"{csv_file}: bad RescaleSlope/RescaleIntercept for {name!r}: {slope}, {intercept}"
        )
    return slope, intercept


def spacing_from_metadata(csv_file: str | Path, name: str) -> tuple[float, float, float]:
    """Look up (d, h, w) mm spacing of volume ``name`` in a metadata CSV.

    Spacing columns understood: CT-RATE's ``XYSpacing`` ("[0.75, 0.75]") + ``ZSpacing``, or
    ``spacing_d/h/w``, or ``z_spacing/y_spacing/x_spacing``.

    Raises:
        DataError: file missing, no row for ``name``, or no spacing columns.
    """
    return _row_spacing(metadata_row(csv_file, name), csv_file, name)


def rescale_from_metadata(csv_file: str | Path, name: str) -> tuple[float, float] | None:
    """(RescaleSlope, RescaleIntercept) of volume ``name``; None when the table has neither.

    Raises:
        DataError: file missing, no row for ``name``, unreadable or zero slope.
    """
    return _row_rescale(metadata_row(csv_file, name), csv_file, name)


def _air_fraction(sample: np.ndarray) -> float:
    lo, hi = AIR_BAND_HU
    return float(np.count_nonzero((sample >= lo) & (sample <= hi))) / max(sample.size, 1)


def rescale_raw_values(
    array: np.ndarray, slope: float, intercept: float, *, source: str = "volume"
) -> np.ndarray:
    """Apply a metadata slope/intercept to a volume whose stored values are still raw.

    Some CT-RATE files hold the scanner's stored values (e.g. 0..4095, air near 0) and leave
    ``RescaleSlope``/``RescaleIntercept`` to the metadata CSV; most hold HU already (their
    header's own scl_slope/inter, if any, has been applied on reading). The rule: a chest CT in
    HU always has air, so the values are taken as HU when at least :data:`AIR_FRACTION` of the
    voxels lie in :data:`AIR_BAND_HU`; otherwise, when ``value * slope + intercept`` puts that
    share of voxels there, they are raw and that transform is applied. When neither reading
    shows air the values are left as they are, with a warning. Identity transforms do nothing.

    Args:
        array: the volume's values (any shape).
        slope, intercept: from the metadata row.
        source: the file, for messages.

    Returns:
        float32 HU (the input itself when nothing is applied).
    """
    if slope == 1.0 and intercept == 0.0:
        return array
    sample = np.asarray(array[tuple(slice(None, None, 2) for _ in range(array.ndim))], np.float32)
    if _air_fraction(sample) >= AIR_FRACTION:
        return array
    if _air_fraction(sample * slope + intercept) >= AIR_FRACTION:
        logger.info(
            "%s: stored values are raw; applying metadata slope %g, intercept %g",
            source,
            slope,
            intercept,
        )
        return (np.asarray(array, np.float32) * np.float32(slope) + np.float32(intercept)).astype(
            np.float32
        )
    logger.warning(
        "%s: no air in the values with or without the metadata slope %g / intercept %g; "
        "left as stored",
        source,
        slope,
        intercept,
    )
    return array


# --- DICOM ----------------------------------------------------------------------------------------


def is_dicom_file(path: str | Path) -> bool:
    """True for a file with the DICOM preamble ('DICM' at byte 128) or a .dcm name."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with path.open("rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def _read_dicom_datasets(path: Path) -> list:
    import pydicom
    from pydicom.errors import InvalidDicomError

    sources: list[tuple[str, object]] = []
    if path.is_dir():
        sources = [(str(p), p) for p in sorted(path.rglob("*")) if p.is_file()]
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                sources = [
                    (f"{path}!{info.filename}", _io.BytesIO(zf.read(info)))
                    for info in zf.infolist()
                    if not info.is_dir()
                ]
        except (zipfile.BadZipFile, OSError, zlib.error) as e:
            raise VolumeReadError(f"{path}: corrupt zip archive ({e})") from e
    elif is_dicom_file(path):
        sources = [(str(path), path)]
    else:
        raise VolumeReadError(f"{path}: not a DICOM file, folder or zip archive")
    datasets = []
    for name, src in sources:
        try:
            ds = pydicom.dcmread(src)
        except (InvalidDicomError, OSError, EOFError, ValueError) as e:
            logger.debug("%s: skipped, not DICOM (%s)", name, e)
            continue
        if "PixelData" not in ds:
            logger.debug("%s: skipped, no pixel data", name)
            continue
        datasets.append((name, ds))
    if not datasets:
        raise VolumeReadError(f"{path}: no DICOM image slices found")
    return datasets


ENHANCED_CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2.1"
"""Enhanced CT Image Storage: one file, many frames, geometry in functional groups."""

ORIENTATION_TOLERANCE = 1e-3
"""Largest allowed difference between two frames' ImageOrientationPatient cosines."""


@dataclass
class _Frame:
    """One 2D image of a series: a classic single-frame file or one frame of an enhanced file."""

    name: str
    ds: object
    index: int | None  # frame index inside a multi-frame dataset; None for a single frame
    position: np.ndarray  # ImagePositionPatient (LPS mm)
    orientation: np.ndarray  # ImageOrientationPatient (row cosines, column cosines)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    slope: float
    intercept: float
    thickness: float | None


def _floats_of(value: object) -> np.ndarray:
    return np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]


def _classic_frame(name: str, ds) -> _Frame:
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise VolumeReadError(
            f"{name}: {ds.NumberOfFrames} frames but no Per-frame/Shared Functional Groups "
            "Sequence: the frames' positions are unknown"
        )
    try:
        return _Frame(
            name,
            ds,
            None,
            _floats_of(ds.ImagePositionPatient),
            _floats_of(ds.ImageOrientationPatient),
            tuple(float(v) for v in ds.PixelSpacing),  # type: ignore[arg-type]
            float(getattr(ds, "RescaleSlope", 1.0)),
            float(getattr(ds, "RescaleIntercept", 0.0)),
            float(ds.SliceThickness) if getattr(ds, "SliceThickness", None) else None,
        )
    except AttributeError as e:
        raise VolumeReadError(f"{name}: DICOM slice lacks geometry tags ({e})") from e


def _is_multiframe(ds) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


_REQUIRED = object()


def _group_value(
    name: str, frame: int, groups: list, sequence: str, attribute: str, default=_REQUIRED
):
    """``attribute`` of the first item of ``sequence``, per-frame group first, then shared.

    Returns ``default`` when neither group has it; without a default that is an error.
    """
    for group in groups:
        items = getattr(group, sequence, None) if group is not None else None
        if items:
            value = getattr(items[0], attribute, None)
            if value not in (None, ""):
                return value
    if default is not _REQUIRED:
        return default
    raise VolumeReadError(
        f"{name}: enhanced CT frame {frame + 1} has no {sequence} > {attribute} in its "
        "per-frame or shared functional groups"
    )


def _enhanced_frames(name: str, ds) -> list[_Frame]:
    """The frames of an Enhanced CT (multi-frame) dataset with their own geometry."""
    try:
        n = int(ds.NumberOfFrames)
    except (AttributeError, TypeError, ValueError) as e:
        raise VolumeReadError(f"{name}: multi-frame DICOM without a NumberOfFrames") from e
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if len(per_frame) != n:
        raise VolumeReadError(
            f"{name}: NumberOfFrames is {n} but the PerFrameFunctionalGroupsSequence has "
            f"{len(per_frame)} items"
        )
    shared_seq = ds.get("SharedFunctionalGroupsSequence", [])
    shared = shared_seq[0] if len(shared_seq) else None
    top_rescale = (
        float(getattr(ds, "RescaleSlope", 1.0)),
        float(getattr(ds, "RescaleIntercept", 0.0)),
    )
    frames, without_rescale = [], []
    for k, item in enumerate(per_frame):
        groups = [item, shared]
        slope = _group_value(
            name, k, groups, "PixelValueTransformationSequence", "RescaleSlope", None
        )
        intercept = _group_value(
            name, k, groups, "PixelValueTransformationSequence", "RescaleIntercept", None
        )
        if slope is None or intercept is None:
            without_rescale.append(k)
            slope, intercept = top_rescale
        thickness = _group_value(name, k, groups, "PixelMeasuresSequence", "SliceThickness", None)
        spacing = _floats_of(_group_value(name, k, groups, "PixelMeasuresSequence", "PixelSpacing"))
        position = _group_value(name, k, groups, "PlanePositionSequence", "ImagePositionPatient")
        iop = _group_value(name, k, groups, "PlaneOrientationSequence", "ImageOrientationPatient")
        frames.append(
            _Frame(
                f"{name} (frame {k + 1})",
                ds,
                k,
                _floats_of(position),
                _floats_of(iop),
                (float(spacing[0]), float(spacing[1])),
                float(slope),
                float(intercept),
                float(thickness) if thickness is not None else None,
            )
        )
    if without_rescale and len(without_rescale) < len(frames):
        raise VolumeReadError(
            f"{name}: enhanced CT frame {without_rescale[0] + 1} has no "
            "PixelValueTransformationSequence > RescaleSlope/RescaleIntercept while other "
            "frames have one"
        )
    if without_rescale:
        logger.warning(
            "%s: no PixelValueTransformationSequence; using RescaleSlope %g, RescaleIntercept %g",
            name,
            *top_rescale,
        )
    return frames


def _frame_pixels(frame: _Frame, decoded: dict[int, np.ndarray]) -> np.ndarray:
    key = id(frame.ds)
    if key not in decoded:
        try:
            decoded[key] = frame.ds.pixel_array  # type: ignore[attr-defined]
        except (ValueError, AttributeError, RuntimeError) as e:
            raise VolumeReadError(f"{frame.name}: cannot decode pixel data ({e})") from e
    pixels = decoded[key]
    if frame.index is not None and pixels.ndim == 3:
        pixels = pixels[frame.index]
    return pixels.astype(np.float32)


def load_dicom_series(path: str | Path) -> Volume:
    """Read one DICOM CT series from a folder (searched recursively), a ``.zip`` or one file.

    Classic series (one slice per file) and Enhanced CT (one file, many frames) are both
    read. An enhanced frame's geometry comes from its functional groups, the per-frame group
    first, then the shared one: PlanePositionSequence (ImagePositionPatient),
    PlaneOrientationSequence (ImageOrientationPatient), PixelMeasuresSequence (PixelSpacing,
    SliceThickness) and PixelValueTransformationSequence (RescaleSlope/Intercept).

    Slices are sorted by ImagePositionPatient projected on the slice normal; HU come from
    RescaleSlope/RescaleIntercept; spacing from PixelSpacing and the slice positions. The
    result is reoriented exactly like a NIfTI file (see the module docstring).

    Raises:
        MixedSeriesError: slices from more than one SeriesInstanceUID (all are named).
        VolumeReadError: no slices, missing geometry tags or functional groups (the file and
            frame are named), frames of differing orientation or size.
    """
    path = Path(path)
    datasets = _read_dicom_datasets(path)
    series = Counter(str(getattr(ds, "SeriesInstanceUID", "<none>")) for _, ds in datasets)
    if len(series) > 1:
        found = ", ".join(f"{uid} ({n} slices)" for uid, n in series.items())
        raise MixedSeriesError(
            f"{path}: holds {len(series)} DICOM series: {found}; pass one series"
        )
    frames: list[_Frame] = []
    for name, ds in datasets:
        frames.extend(
            _enhanced_frames(name, ds) if _is_multiframe(ds) else [_classic_frame(name, ds)]
        )
    first = frames[0]
    for frame in frames[1:]:
        if np.abs(frame.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise VolumeReadError(
                f"{frame.name}: ImageOrientationPatient {frame.orientation.tolist()} differs "
                f"from {first.name}'s {first.orientation.tolist()}"
            )
        if np.abs(np.subtract(frame.pixel_spacing, first.pixel_spacing)).max() > 1e-3:
            raise VolumeReadError(
                f"{frame.name}: PixelSpacing {list(frame.pixel_spacing)} differs from "
                f"{first.name}'s {list(first.pixel_spacing)}"
            )
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_dir, col_dir)
    frames.sort(key=lambda f: float(f.position @ normal))
    positions = np.array([float(f.position @ normal) for f in frames])
    if len(frames) > 1 and np.any(np.diff(positions) < 1e-4):
        k = int(np.argmin(np.diff(positions)))
        raise VolumeReadError(
            f"{path}: two slices share one ImagePositionPatient "
            f"({frames[k].name} and {frames[k + 1].name})"
        )
    decoded: dict[int, np.ndarray] = {}
    slices = []
    for frame in frames:
        pixels = _frame_pixels(frame, decoded)
        if slices and pixels.shape != slices[0].shape:
            raise VolumeReadError(f"{frame.name}: slice shape {pixels.shape} != {slices[0].shape}")
        slices.append(pixels * frame.slope + frame.intercept)
    data_krc = np.stack(slices)  # (K, rows, cols)
    if len(frames) > 1:
        step = (frames[-1].position - frames[0].position) / (len(frames) - 1)
    else:
        step = normal * (first.thickness or 1.0)
    row_spacing, col_spacing = first.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # index 0 = column (moves along a row)
    lps[:3, 1] = col_dir * row_spacing  # index 1 = row
    lps[:3, 2] = step
    lps[:3, 3] = frames[0].position
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    img = nib.Nifti1Image(data_krc.transpose(2, 1, 0), ras)
    canon = nib.as_closest_canonical(img)
    array = np.ascontiguousarray(np.asarray(canon.dataobj, dtype=np.float32).transpose(2, 1, 0))
    zooms = np.sqrt((canon.affine[:3, :3] ** 2).sum(axis=0))
    return Volume(
        array, canon.affine, (float(zooms[2]), float(zooms[1]), float(zooms[0])), str(path)
    )


# --- RAD-ChestCT npz ------------------------------------------------------------------------------


def load_npz(
    path: str | Path,
    *,
    npz_key: str = "ct",
    spacing: tuple[float, float, float] | None = None,
    metadata_csv: str | Path | None = None,
) -> Volume:
    """Read a RAD-ChestCT ``.npz`` (int16 HU shaped [slices, H, W] under ``npz_key``).

    The array is taken as (D, H, W) as stored. Spacing: ``spacing`` if given, else the
    ``metadata_csv`` row for the file's stem, else 1 mm with a warning.

    Raises:
        VolumeReadError: unreadable archive, missing key, or not a 3D array.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if npz_key not in npz.files:
                raise VolumeReadError(f"{path}: no array {npz_key!r} (has {npz.files})")
            array = np.asarray(npz[npz_key], dtype=np.float32)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise VolumeReadError(f"{path}: cannot read npz ({type(e).__name__}: {e})") from e
    if array.ndim != 3:
        raise VolumeReadError(f"{path}: expected a 3D array [slices, H, W], got {array.shape}")
    if spacing is None and metadata_csv is not None:
        spacing = spacing_from_metadata(metadata_csv, _stem(path))
    if spacing is None:
        logger.warning("%s: no spacing given; assuming 1 mm isotropic", path)
        spacing = (1.0, 1.0, 1.0)
    d, h, w = (float(s) for s in spacing)
    return Volume(np.ascontiguousarray(array), np.diag([w, h, d, 1.0]), (d, h, w), str(path))


def load_volume(
    path: str | Path,
    *,
    npz_key: str = "ct",
    spacing: tuple[float, float, float] | None = None,
    metadata_csv: str | Path | None = None,
) -> Volume:
    """Read a CT volume from NIfTI, DICOM (folder, ``.zip`` or one multi-frame file), or ``.npz``.

    Args:
        path: the file or folder.
        npz_key: array key inside an ``.npz``.
        spacing: (d, h, w) mm overriding the file's own (NIfTI, npz).
        metadata_csv: table to take spacing from (CT-RATE or RAD-ChestCT metadata).

    Returns:
        :class:`Volume` with ``array`` (D, H, W) float32 HU.
    """
    path = Path(path)
    name = path.name.lower()
    if is_nifti(name):
        return load_nifti(path, spacing=spacing, metadata_csv=metadata_csv)
    if name.endswith(".npz"):
        return load_npz(path, npz_key=npz_key, spacing=spacing, metadata_csv=metadata_csv)
    if path.is_dir() or name.endswith(".zip"):
        return load_dicom_series(path)
    if not path.exists():
        raise VolumeReadError(f"{path}: file not found")
    if is_dicom_file(path):
        return load_dicom_series(path)
    raise VolumeReadError(
        f"{path}: unsupported input; expected .nii/.nii.gz, .npz, a DICOM file (e.g. one "
        "enhanced multi-frame CT), a DICOM folder or .zip"
    )


# --- masks ----------------------------------------------------------------------------------------


def check_mask(
    mask: np.ndarray,
    shape: tuple[int, ...],
    *,
    source: str,
    affine: np.ndarray | None = None,
    ref_affine: np.ndarray | None = None,
    ref_source: str = "the volume",
) -> np.ndarray:
    """Validate a mask array against a volume's shape (and affine); return it as bool.

    Args:
        mask: array (D, H, W).
        shape: the volume's (D, H, W).
        source: the mask's name for messages.
        affine, ref_affine: canonical affines to compare when both are given.

    Raises:
        MaskShapeError, MaskAffineError, NonBinaryMaskError, EmptyMaskError.
    """
    if tuple(mask.shape) != tuple(shape):
        raise MaskShapeError(
            f"{source}: mask shape {tuple(mask.shape)} != volume shape {tuple(shape)} ({ref_source})"
        )
    if affine is not None and ref_affine is not None:
        diff = float(np.abs(np.asarray(affine) - np.asarray(ref_affine)).max())
        if diff > AFFINE_TOLERANCE_MM:
            raise MaskAffineError(
                f"{source}: mask affine differs from {ref_source} by {diff:.3g} "
                f"(tolerance {AFFINE_TOLERANCE_MM})"
            )
    if mask.dtype == bool:
        out = mask
    else:
        m = np.asarray(mask, dtype=np.float32)
        near0 = np.abs(m) <= BINARY_TOLERANCE
        near1 = np.abs(m - 1.0) <= BINARY_TOLERANCE
        if not np.all(near0 | near1):
            bad = np.unique(m[~(near0 | near1)])[:5].tolist()
            raise NonBinaryMaskError(f"{source}: mask is not binary (values such as {bad})")
        out = near1
    if not out.any():
        raise EmptyMaskError(f"{source}: mask is empty (no foreground voxel)")
    return out


def load_mask(path_or_array: str | Path | np.ndarray, like: Volume) -> np.ndarray:
    """Read a binary mask that must fit ``like``.

    Args:
        path_or_array: NIfTI mask file (reoriented like volumes) or an array (D, H, W)
            already in the canonical convention.
        like: the volume the mask belongs to.

    Returns:
        bool array (D, H, W).

    Raises:
        VolumeReadError: unreadable file. MaskShapeError / MaskAffineError /
        NonBinaryMaskError / EmptyMaskError: the mask does not fit.
    """
    if isinstance(path_or_array, np.ndarray):
        return check_mask(path_or_array, like.shape, source="mask array", ref_source=like.source)
    path = Path(path_or_array)
    array, affine, _ = read_canonical(path, np.float32)
    return check_mask(
        array,
        like.shape,
        source=str(path),
        affine=affine,
        ref_affine=like.affine,
        ref_source=like.source,
    )


def load_mask_for(
    path: str | Path, ref_path: str | Path, *, metadata_csv: str | Path | None = None
) -> np.ndarray:
    """Read a mask NIfTI and check it against the header of NIfTI volume ``ref_path``.

    Cheaper than :func:`load_mask` because the volume's voxels are not read. A reference that is
    not NIfTI (a RAD-ChestCT ``.npz``, spacing from ``metadata_csv``) is read whole.

    Returns:
        bool array (D, H, W).
    """
    path = Path(path)
    if not is_nifti(ref_path):
        return load_mask(path, load_volume(ref_path, metadata_csv=metadata_csv))
    shape, ref_affine = canonical_header(ref_path)
    array, affine, _ = read_canonical(path, np.float32)
    return check_mask(
        array,
        shape,
        source=str(path),
        affine=affine,
        ref_affine=ref_affine,
        ref_source=str(ref_path),
    )


def box_mask(
    shape: tuple[int, int, int], z0: int, z1: int, y0: int, y1: int, x0: int, x1: int
) -> np.ndarray:
    """A bool (D, H, W) mask that is True on ``[z0:z1, y0:y1, x0:x1]``."""
    mask = np.zeros(shape, dtype=bool)
    mask[z0:z1, y0:y1, x0:x1] = True
    return mask
