"""Reading the DeepLesion (NIH) release: 16-bit PNG slices and ``DL_info.csv``.

Layout (as released)::

    <root>/
      DL_info.csv                              one row per lesion (columns: INFO_COLUMNS)
      Images_png/<patient>_<study>_<series>/<slice>.png     e.g. Images_png/000001_01_01/109.png
                                               16-bit, HU = value - 32768; slice numbers as in
                                               Key_slice_index and Slice_range (3 digits)

A lesion's volume is its series' slices ``Slice_range`` (inclusive) stacked in slice order with
``Spacing_mm_px_`` (x, y, z mm); its mask is its box on the key slice. PNG rows run anterior ->
posterior and columns patient right -> left (the DICOM display); :func:`load_lesion_volume`
flips both so arrays follow rgct's canonical RAS convention (:mod:`rgct.data.io`), and boxes
are flipped with them. Coarse lesion types map to words and regions in
:mod:`rgct.data.source_maps`.

The training pipeline reads NIfTI: :func:`materialise` writes each lesion's volume and box mask
once into a cache folder (never into the release).

Example::

    index = load_deeplesion(root)
    lesion = index.lesions[0]
    volume = load_lesion_volume(root, lesion)        # Volume (D, H, W) HU
    mask = lesion_mask(lesion, volume.shape)          # bool (D, H, W), the box on the key slice
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from rgct.data.io import DataError, Volume, VolumeReadError
from rgct.data.records import Problem
from rgct.data.source_maps import DEEPLESION_TYPES, UNKNOWN_LESION_TYPE
from rgct.data.source_report import SourceReport, error

logger = logging.getLogger(__name__)

INFO_FILE = "DL_info.csv"
IMAGES_FOLDER = "Images_png"
HU_OFFSET = 32768
"""HU = stored PNG value - HU_OFFSET."""
INFO_COLUMNS = (
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
    "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
    "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
    "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age",
    "Train_Val_Test",
)  # fmt: skip
SPLIT_CODES = {1: "train", 2: "valid", 3: "test"}
"""``Train_Val_Test`` -> split."""


class LesionRowError(DataError):
    """A ``DL_info.csv`` row that cannot be used; ``kind`` says why (bad_field, bad_box ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Lesion:
    """One ``DL_info.csv`` row, parsed. Pixel coordinates are the PNG's (x = column, y = row).

    Attributes:
        line: its line in ``DL_info.csv`` (header = 1).
        file_name: ``<series>_<key slice>.png``.
        series: the series folder under ``Images_png``.
        key_slice: slice number of the key slice.
        box: (x1, y1, x2, y2) pixels on the key slice.
        diameters_px: (long, short) pixels.
        measurement: the 8 RECIST end-point coordinates (long axis, then short axis).
        location: normalised (x, y, z) position in the body, each in [0, 1].
        lesion_type: coarse type 1-8, or -1 unknown.
        noisy: the release's ``Possibly_noisy`` flag.
        slice_range: (first, last) slice numbers, inclusive.
        spacing: (x, y, z) mm.
        image_size: (width, height) pixels.
        windows: (low, high) HU of the DICOM window.
        gender, age: as released ('' / -1 when blank).
        split: 'train', 'valid' or 'test'.
    """

    line: int
    file_name: str
    series: str
    key_slice: int
    box: tuple[float, float, float, float]
    diameters_px: tuple[float, float]
    measurement: tuple[float, ...]
    location: tuple[float, float, float]
    lesion_type: int
    noisy: bool
    slice_range: tuple[int, int]
    spacing: tuple[float, float, float]
    image_size: tuple[int, int]
    windows: tuple[float, float]
    gender: str
    age: int
    split: str

    @property
    def name(self) -> str:
        """A name for the lesion: ``<file name stem>_<line>`` (a key slice may hold several)."""
        return f"{Path(self.file_name).stem}_{self.line}"

    @property
    def volume_name(self) -> str:
        """The lesion's volume: ``<series>_<first>-<last>``."""
        return f"{self.series}_{self.slice_range[0]:03d}-{self.slice_range[1]:03d}"

    @property
    def diameters_mm(self) -> tuple[float, float]:
        """(long, short) in mm (pixels times the in-plane spacing)."""
        return self.diameters_px[0] * self.spacing[0], self.diameters_px[1] * self.spacing[0]

    @property
    def type_known(self) -> bool:
        return self.lesion_type in DEEPLESION_TYPES


def is_deeplesion(root: str | Path) -> bool:
    """True when ``root`` holds a ``DL_info.csv``."""
    return (Path(root) / INFO_FILE).is_file()


def slice_path(root: str | Path, series: str, number: int) -> Path:
    """``<root>/Images_png/<series>/<number:03d>.png``."""
    return Path(root) / IMAGES_FOLDER / series / f"{number:03d}.png"


def _numbers(row: dict[str, str], column: str, count: int) -> list[float]:
    text = row.get(column, "")
    try:
        values = [float(t) for t in text.replace(",", " ").split()]
    except ValueError:
        values = []
    if len(values) != count or not all(np.isfinite(values)):
        raise LesionRowError("bad_field", f"{column}={text!r}: expected {count} numbers")
    return values


def parse_lesion(row: dict[str, str], line: int) -> Lesion:
    """One ``DL_info.csv`` row as a :class:`Lesion` (no file is opened).

    Raises:
        LesionRowError: unreadable fields (``bad_field``), spacing not positive
            (``bad_spacing``), a box outside the image or empty (``bad_box``), a key slice
            outside its range (``bad_slice_range``), an unknown type or split.
    """
    file_name = row.get("File_name", "").strip()
    if "_" not in file_name:
        raise LesionRowError("bad_field", f"File_name={file_name!r}: expected <series>_<slice>.png")
    series = file_name.rsplit("_", 1)[0]
    (key,) = _numbers(row, "Key_slice_index", 1)
    first, last = _numbers(row, "Slice_range", 2)
    spacing = tuple(_numbers(row, "Spacing_mm_px_", 3))
    width, height = _numbers(row, "Image_size", 2)
    box = tuple(_numbers(row, "Bounding_boxes", 4))
    diameters = tuple(_numbers(row, "Lesion_diameters_Pixel_", 2))
    (kind,) = _numbers(row, "Coarse_lesion_type", 1)
    (split_code,) = _numbers(row, "Train_Val_Test", 1)
    if not all(s > 0 for s in spacing):
        raise LesionRowError("bad_spacing", f"Spacing_mm_px_={list(spacing)}: must be > 0 mm")
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise LesionRowError(
            "bad_box", f"Bounding_boxes={list(box)} outside the {int(width)}x{int(height)} image"
        )
    if not first <= key <= last or first < 0:
        raise LesionRowError(
            "bad_slice_range",
            f"Key_slice_index={int(key)} outside Slice_range={[int(first), int(last)]}",
        )
    if int(kind) != UNKNOWN_LESION_TYPE and int(kind) not in DEEPLESION_TYPES:
        raise LesionRowError("bad_field", f"Coarse_lesion_type={int(kind)}: expected 1-8 or -1")
    if int(split_code) not in SPLIT_CODES:
        raise LesionRowError("bad_field", f"Train_Val_Test={int(split_code)}: expected 1, 2 or 3")
    noisy = row.get("Possibly_noisy", "0").strip() not in ("", "0")
    age = row.get("Patient_age", "").strip()
    return Lesion(
        line=line,
        file_name=file_name,
        series=series,
        key_slice=int(key),
        box=box,  # type: ignore[arg-type]
        diameters_px=diameters,  # type: ignore[arg-type]
        measurement=tuple(_numbers(row, "Measurement_coordinates", 8)),
        location=tuple(_numbers(row, "Normalized_lesion_location", 3)),  # type: ignore[arg-type]
        lesion_type=int(kind),
        noisy=noisy,
        slice_range=(int(first), int(last)),
        spacing=spacing,  # type: ignore[arg-type]
        image_size=(int(width), int(height)),
        windows=tuple(_numbers(row, "DICOM_windows", 2)),  # type: ignore[arg-type]
        gender=row.get("Patient_gender", "").strip(),
        age=int(float(age)) if age.lstrip("-").replace(".", "", 1).isdigit() else -1,
        split=SPLIT_CODES[int(split_code)],
    )


def missing_slices(root: str | Path, lesion: Lesion) -> list[int]:
    """Slice numbers of the lesion's range without a PNG file."""
    first, last = lesion.slice_range
    return [i for i in range(first, last + 1) if not slice_path(root, lesion.series, i).is_file()]


@dataclass
class DeepLesionIndex:
    """What :func:`load_deeplesion` found.

    Attributes:
        root: dataset folder.
        lesions: usable lesions (fields valid, every slice of the range present), file order.
        problems: every row left out, with its line and why.
    """

    root: Path
    lesions: list[Lesion] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def split(self, split: str) -> list[Lesion]:
        """The lesions of one split ('train', 'valid', 'test')."""
        return [les for les in self.lesions if les.split == split]


def load_deeplesion(root: str | Path, *, max_lesions: int | None = None) -> DeepLesionIndex:
    """Read and check ``DL_info.csv``; every bad row is listed in ``problems`` and left out.

    Args:
        root: dataset folder.
        max_lesions: keep the first N usable lesions.
    """
    root = Path(root)
    index = DeepLesionIndex(root=root)
    path = root / INFO_FILE
    if not path.is_file():
        error(index.problems, "missing_csv", str(path), "missing")
        return index
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in INFO_COLUMNS if c not in header]
        if missing:
            error(index.problems, "bad_csv", str(path), f"missing column(s) {missing}")
            return index
        for line, raw in enumerate(reader, start=2):
            row = {str(k).strip(): (v or "").strip() for k, v in raw.items() if k}
            where = f"{path}:{line}"
            try:
                lesion = parse_lesion(row, line)
            except LesionRowError as e:
                error(index.problems, e.kind, where, f"{row.get('File_name', '')}: {e}")
                continue
            gone = missing_slices(root, lesion)
            if gone:
                folder = root / IMAGES_FOLDER / lesion.series
                shown = ", ".join(str(i) for i in gone[:10]) + (" ..." if len(gone) > 10 else "")
                error(
                    index.problems,
                    "missing_slice",
                    where,
                    f"{lesion.file_name}: {len(gone)} slice(s) of Slice_range "
                    f"{list(lesion.slice_range)} missing in {folder}: {shown}",
                )
                continue
            if max_lesions is None or len(index.lesions) < max_lesions:
                index.lesions.append(lesion)
    return index


def png_to_canonical(pixels: np.ndarray) -> np.ndarray:
    """A PNG slice (rows anterior -> posterior, columns right -> left) in the canonical (y, x)
    order (y posterior -> anterior, x left -> right): both axes flipped."""
    return pixels[::-1, ::-1]


def canonical_box(lesion: Lesion) -> tuple[int, int, int, int]:
    """The lesion's box as canonical (y0, y1, x0, x1) pixel slices (half-open, flipped like
    :func:`png_to_canonical`, widened to whole pixels)."""
    width, height = lesion.image_size
    x1, y1, x2, y2 = lesion.box
    y0, y1i = height - int(np.ceil(y2)), height - int(np.floor(y1))
    x0, x1i = width - int(np.ceil(x2)), width - int(np.floor(x1))
    return max(y0, 0), min(y1i, height), max(x0, 0), min(x1i, width)


def read_slice(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One PNG slice as float32 HU, canonical (y, x).

    Raises:
        VolumeReadError: unreadable, not 16-bit grey, or not ``size`` (width, height).
    """
    try:
        with Image.open(path) as img:
            img.load()
            pixels = np.asarray(img)
    except (OSError, ValueError) as e:
        raise VolumeReadError(f"{path}: cannot read PNG ({e})") from e
    if pixels.ndim != 2 or pixels.dtype.kind not in "ui" or pixels.dtype.itemsize < 2:
        raise VolumeReadError(
            f"{path}: expected a 16-bit grey PNG, got {pixels.dtype} {pixels.shape}"
        )
    if pixels.shape != (size[1], size[0]):
        raise VolumeReadError(
            f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]}, DL_info says {size[0]}x{size[1]}"
        )
    return png_to_canonical(pixels.astype(np.float32) - HU_OFFSET)


def load_lesion_volume(root: str | Path, lesion: Lesion) -> Volume:
    """The slices of the lesion's ``Slice_range`` as a :class:`Volume` (D, H, W) HU.

    Raises:
        VolumeReadError: a slice missing or unreadable (named).
    """
    first, last = lesion.slice_range
    slices = []
    for number in range(first, last + 1):
        path = slice_path(root, lesion.series, number)
        if not path.is_file():
            raise VolumeReadError(f"{path}: slice {number} of {lesion.file_name} missing")
        slices.append(read_slice(path, lesion.image_size))
    sx, sy, sz = lesion.spacing
    array = np.ascontiguousarray(np.stack(slices))
    source = str(Path(root) / IMAGES_FOLDER / lesion.series)
    return Volume(array, np.diag([sx, sy, sz, 1.0]), (sz, sy, sx), source)


def lesion_mask(lesion: Lesion, shape: tuple[int, int, int]) -> np.ndarray:
    """bool (D, H, W): the lesion's box on its key slice."""
    mask = np.zeros(shape, dtype=bool)
    y0, y1, x0, x1 = canonical_box(lesion)
    mask[lesion.key_slice - lesion.slice_range[0], y0:y1, x0:x1] = True
    return mask


def materialise(root: str | Path, lesion: Lesion, out_dir: str | Path) -> tuple[Path, Path]:
    """Write the lesion's volume and box mask as NIfTI under ``out_dir`` (once; kept if there).

    Returns:
        (volume file ``volumes/<volume_name>.nii.gz``, mask file ``masks/<name>.nii.gz``).
    """
    from rgct.data.synth import nifti_gz_bytes
    from rgct.files import write_bytes

    out_dir = Path(out_dir)
    image_path = out_dir / "volumes" / f"{lesion.volume_name}.nii.gz"
    mask_path = out_dir / "masks" / f"{lesion.name}.nii.gz"
    if image_path.is_file() and mask_path.is_file():
        return image_path, mask_path
    volume = load_lesion_volume(root, lesion)
    affine = volume.affine
    if not image_path.is_file():
        image_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(image_path, nifti_gz_bytes(volume.array.astype(np.int16), affine))
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    mask = lesion_mask(lesion, volume.shape).astype(np.uint8)
    write_bytes(mask_path, nifti_gz_bytes(mask, affine))
    return image_path, mask_path


def check_deeplesion(
    root: str | Path, *, deep: bool = True, max_volumes: int | None = None
) -> SourceReport:
    """Check a DeepLesion folder: every ``DL_info.csv`` row, its slices and (``deep``) their
    pixels. ``max_volumes`` limits the lesions whose PNGs are opened."""
    root = Path(root)
    report = SourceReport.start(root, "deeplesion")
    if report.problems:
        return report
    index = load_deeplesion(root)
    report.add(index.problems)
    usable = list(index.lesions)
    if deep:
        checked: set[tuple[str, int]] = set()
        for lesion in usable[:max_volumes]:
            first, last = lesion.slice_range
            for number in range(first, last + 1):
                if (lesion.series, number) in checked:
                    continue
                checked.add((lesion.series, number))
                try:
                    read_slice(slice_path(root, lesion.series, number), lesion.image_size)
                except DataError as e:
                    error(
                        report.problems,
                        "unreadable_slice",
                        f"{root / INFO_FILE}:{lesion.line}",
                        str(e),
                    )
    for split in SPLIT_CODES.values():
        mine = index.split(split)
        if not mine:
            continue
        report.counts[split] = {
            "lesions": len(mine),
            "series": len({les.series for les in mine}),
            "typed lesions": sum(les.type_known for les in mine),
            "possibly noisy": sum(les.noisy for les in mine),
        }
    return report
