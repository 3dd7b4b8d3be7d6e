"""TotalSegmentator output -> RadGenome-Chest CT region and anatomy masks.

TotalSegmentator (v2) writes one binary ``<class>.nii.gz`` per class into a folder, or with
``--ml`` one multilabel NIfTI whose label names sit in its extended header. This module turns
either (or several of them: the ``total`` task plus the extra tasks) into the mask files of the
RadGenome layout, following one table, :data:`TARGETS`: each RadGenome region or anatomy mask
is the union of the TotalSegmentator classes listed for it.

Rules beyond the union, all stated in the table or here:

* Lung lobes have the ``pleural_effusion`` class removed before any union, where that class
  is given (TotalSegmentator's own note: lobe masks often include the effusion).
* ``bronchie`` is the airway tree minus ``trachea``; ``pleura`` is the pleural classes minus the
  lobes, plus the one-voxel shell around the lobes (the phantom generator's convention).
* ``left breast`` / ``right breast`` split the two-sided ``breast`` class at the body midline
  (the centroid of the sternum, thoracic vertebrae, trachea, esophagus given).
* A target with ``requires`` is written only when one of those classes is given; the other
  classes only add to it (the great vessels do not make a mediastinum on their own).
* A target that no given file covers, or whose files are empty, is listed as missing (in the
  result, the log and ``mask_source.json``), never written as an all-ones mask.

Output, on the input's own grid and affine (masks are uint8 0/1)::

    <out>/<split>_region_mask/seg_<volume>/<region>.nii.gz     for a CT-RATE volume name
    <out>/<split>_anatomy_mask/seg_<volume>/<anatomy>.nii.gz   (train_1_a_1: split 'train')
    <out>/region_mask/seg_<volume>/...  and  <out>/anatomy_mask/seg_<volume>/...  otherwise
    <out>/.../seg_<volume>/mask_source.json                    what was written and what is missing

so that, for a CT-RATE name, ``<out>`` reads as a dataset root
(:func:`rgct.data.layout.resolve_mask` finds its masks).

Example::

    result = masks_from_totalsegmentator("ts_out/", "masks/", volume_name="train_1_a_1")
    result.regions["lung"]     # Path of the lung region mask
    result.missing_regions     # {'mediastinum': 'no input holds mediastinum (...)', ...}
"""

from __future__ import annotations

import csv
import json
import logging
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from rgct.constants import LUNG_LOBES, LUNG_SIDES
from rgct.data.io import (
    AFFINE_TOLERANCE_MM,
    DataError,
    canonical_geometry,
    is_nifti,
    load_volume,
)
from rgct.data.layout import VolumeNameError, parse_volume_name
from rgct.files import atomic_path, write_json

logger = logging.getLogger(__name__)

SUMMARY_FILE = "mask_source.json"
"""Written beside the region masks: inputs, files written, missing masks and warnings."""


class TotalSegmentatorError(DataError):
    """A TotalSegmentator output cannot be converted (names the files and the problem)."""


class TotalSegmentatorNotInstalled(RuntimeError):
    """The ``totalsegmentator`` package is not importable."""


# --- the mapping table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One RadGenome mask and the TotalSegmentator classes it is made of.

    Attributes:
        name: the RadGenome file name without ``.nii.gz`` (region or anatomy name).
        kind: ``"region"`` (``*_region_mask``) or ``"anatomy"`` (``*_anatomy_mask``).
        classes: TotalSegmentator classes whose union is the mask.
        requires: when not empty, the mask is written only if one of these is given.
        minus: classes removed from the union.
        lung_shell: add the one-voxel shell around the lung lobes.
        side: ``"left"`` or ``"right"``: keep the patient's side of the body midline (the
            centroid of :data:`MIDLINE_CLASSES`), for classes that hold both sides.
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    requires: tuple[str, ...] = ()
    minus: tuple[str, ...] = ()
    lung_shell: bool = False
    side: str | None = None


LOBE_CLASSES: dict[str, str] = dict(
    zip(
        LUNG_LOBES,  # right upper, middle, lower; left upper, lower
        (
            "lung_upper_lobe_right",
            "lung_middle_lobe_right",
            "lung_lower_lobe_right",
            "lung_upper_lobe_left",
            "lung_lower_lobe_left",
        ),
        strict=True,
    )
)
"""RadGenome lobe anatomy name -> TotalSegmentator class."""

_LOBES = tuple(LOBE_CLASSES.values())
_AIRWAYS = ("lung_airways", "lung_trachea_bronchia")  # task lung_vessels (new / legacy name)
_RIBS_LEFT = tuple(f"rib_left_{i}" for i in range(1, 13))
_RIBS_RIGHT = tuple(f"rib_right_{i}" for i in range(1, 13))
_THORACIC = tuple(f"vertebrae_T{i}" for i in range(1, 13))
_VERTEBRAE = (
    tuple(f"vertebrae_C{i}" for i in range(1, 8))
    + _THORACIC
    + tuple(f"vertebrae_L{i}" for i in range(1, 6))
)
_SHOULDER = ("clavicula_left", "clavicula_right", "scapula_left", "scapula_right")
_BONE = (
    _VERTEBRAE
    + _RIBS_LEFT
    + _RIBS_RIGHT
    + ("sternum", "costal_cartilages")
    + _SHOULDER
    + ("humerus_left", "humerus_right")
)
# fmt: off
_ABDOMEN = (
    "liver", "spleen", "kidney_left", "kidney_right", "stomach", "pancreas", "gallbladder",
    "adrenal_gland_left", "adrenal_gland_right", "duodenum", "small_bowel", "colon",
    "portal_vein_and_splenic_vein", "inferior_vena_cava",
    "abdominal_cavity",  # task trunk_cavities
)
_GREAT_VESSELS = (
    "aorta", "pulmonary_artery", "superior_vena_cava", "brachiocephalic_trunk",
    "brachiocephalic_vein_left", "brachiocephalic_vein_right",
)
# fmt: on

TARGETS: tuple[Target, ...] = (
    # the ten regions
    Target("lung", "region", _LOBES),
    Target("trachea and bronchie", "region", ("trachea", *_AIRWAYS)),
    Target("esophagus", "region", ("esophagus",)),
    Target("thyroid", "region", ("thyroid_gland",)),
    Target(
        "heart",
        "region",
        ("heart", "atrial_appendage_left", "pericardium", "pericardial_effusion"),
        requires=("heart", "pericardium"),
    ),
    Target("mediastinum", "region", ("mediastinum", *_GREAT_VESSELS), requires=("mediastinum",)),
    Target(
        "pleura",
        "region",
        ("lung_pleural", "pleural_effusion"),
        minus=_LOBES,
        lung_shell=True,
    ),
    Target("breast", "region", ("breast",)),
    Target("bone", "region", _BONE),
    Target("abdomen", "region", _ABDOMEN),
    # anatomy masks (names as RadGenome and the phantom generator spell them)
    *(Target(name, "anatomy", (cls,)) for name, cls in LOBE_CLASSES.items()),
    *(
        Target(side, "anatomy", tuple(LOBE_CLASSES[lobe] for lobe in lobes))
        for side, lobes in LUNG_SIDES.items()
    ),
    Target("trachea", "anatomy", ("trachea",)),
    Target("bronchie", "anatomy", _AIRWAYS, minus=("trachea",)),
    Target("heart tissue", "anatomy", ("heart", "atrial_appendage_left")),
    Target("aorta", "anatomy", ("aorta",)),
    Target("pulmonary artery", "anatomy", ("pulmonary_artery",)),
    Target("superior vena cava", "anatomy", ("superior_vena_cava",)),
    Target("mediastinal tissue", "anatomy", ("mediastinum",)),
    Target("esophagus", "anatomy", ("esophagus",)),
    Target("thyroid gland", "anatomy", ("thyroid_gland",)),
    Target("thoracic vertebrae", "anatomy", _THORACIC),
    Target("ribs left", "anatomy", _RIBS_LEFT),
    Target("ribs right", "anatomy", _RIBS_RIGHT),
    Target("sternum", "anatomy", ("sternum",)),
    Target("clavicle", "anatomy", ("clavicula_left", "clavicula_right")),
    Target("scapula", "anatomy", ("scapula_left", "scapula_right")),
    Target("liver", "anatomy", ("liver",)),
    Target("stomach", "anatomy", ("stomach",)),
    Target("spleen", "anatomy", ("spleen",)),
    Target("gallbladder", "anatomy", ("gallbladder",)),
    Target("kidney", "anatomy", ("kidney_left", "kidney_right")),
    Target("pancreas", "anatomy", ("pancreas",)),
    Target("left breast", "anatomy", ("breast",), side="left"),
    Target("right breast", "anatomy", ("breast",), side="right"),
    Target("left adrenal gland", "anatomy", ("adrenal_gland_left",)),
    Target("right adrenal gland", "anatomy", ("adrenal_gland_right",)),
)
"""The one mapping from TotalSegmentator classes to RadGenome masks."""

MIDLINE_CLASSES = ("sternum", *_THORACIC, "trachea", "esophagus", "spinal_cord")
"""Structures on the body midline: their centroid splits a two-sided class into left and right."""

SUBTRACT_BEFORE_UNION: dict[str, tuple[str, ...]] = {lobe: ("pleural_effusion",) for lobe in _LOBES}
"""Class -> classes removed from it as soon as it is read (effusion out of the lobes)."""

CLASS_TASK: dict[str, str] = {
    "lung_airways": "lung_vessels",
    "lung_trachea_bronchia": "lung_vessels (older TotalSegmentator)",
    "pulmonary_artery": "heartchambers_highres",
    "mediastinum": "trunk_cavities",
    "pericardium": "trunk_cavities",
    "abdominal_cavity": "trunk_cavities",
    "lung_pleural": "pleural_pericard_effusion",
    "pleural_effusion": "pleural_pericard_effusion",
    "pericardial_effusion": "pleural_pericard_effusion",
    "breast": "breasts",
}
"""The TotalSegmentator task of each class not in the default ``total`` task."""

EXTRA_TASKS = ("lung_vessels", "pleural_pericard_effusion", "trunk_cavities", "breasts")
"""Tasks beyond ``total`` that add RadGenome masks (bronchi, pleura, mediastinum, breast)."""

KNOWN_CLASSES: frozenset[str] = (
    frozenset(c for t in TARGETS for c in (*t.classes, *t.requires, *t.minus))
    | frozenset(c for cs in SUBTRACT_BEFORE_UNION.values() for c in cs)
    | frozenset(MIDLINE_CLASSES)
)
"""Every TotalSegmentator class the table reads."""


def task_of(cls: str) -> str:
    """The TotalSegmentator task that produces class ``cls``."""
    return CLASS_TASK.get(cls, "total")


# --- reading TotalSegmentator output ---------------------------------------------------------


@dataclass
class _Grid:
    shape: tuple[int, ...]
    affine: np.ndarray
    source: str


class _ClassFiles:
    """A folder of ``<class>.nii.gz`` files (one binary mask per class)."""

    def __init__(self, folder: Path) -> None:
        self.origin = str(folder)
        self.files: dict[str, Path] = {}
        self.ignored: list[str] = []
        for path in sorted(folder.iterdir()):
            if not path.is_file() or not is_nifti(path.name):
                continue
            cls = _nifti_stem(path.name)
            if cls in KNOWN_CLASSES:
                self.files[cls] = path
            else:
                self.ignored.append(path.name)

    def classes(self) -> dict[str, str]:
        return {cls: str(path) for cls, path in self.files.items()}

    def grids(self) -> list[_Grid]:
        out = []
        for path in self.files.values():
            img = _open(path)
            out.append(_Grid(_shape3(img, path), img.affine, str(path)))
        return out

    def read(self, cls: str) -> np.ndarray:
        path = self.files[cls]
        img = _open(path)
        data = _voxels(img, path)
        if data.dtype == np.uint8 and data.max(initial=0) <= 1:
            return data.view(bool)  # TotalSegmentator's own files: 0/1 bytes, no copy
        mask = data == 1
        if not np.all(mask | (data == 0)):
            values = np.unique(data[~mask & (data != 0)])[:6].tolist()
            raise TotalSegmentatorError(
                f"{path}: not a binary mask (values such as {values}); "
                "a multilabel file is passed as SRC itself, with its class map"
            )
        return mask


class _Multilabel:
    """One multilabel NIfTI and its ``{label id: class}`` map."""

    def __init__(self, path: Path, class_map: dict[int, str] | None) -> None:
        self.origin = str(path)
        self.path = path
        img = _open(path)
        if class_map is None:
            class_map = read_label_map(img, path)
        self.img = img
        self.all_ids = set(class_map)
        self.ids = {name: i for i, name in class_map.items() if name in KNOWN_CLASSES}
        self.ignored = sorted(name for name in class_map.values() if name not in KNOWN_CLASSES)
        self._labels: np.ndarray | None = None
        self.unmapped: list[int] = []

    def labels(self) -> np.ndarray:
        if self._labels is None:
            data = _voxels(self.img, self.path)
            if not np.issubdtype(data.dtype, np.integer):
                if not np.array_equal(data, np.round(data)):
                    raise TotalSegmentatorError(f"{self.path}: label values are not integers")
                data = data.astype(np.int32)
            self._labels = data
            known = self.all_ids | {0}
            self.unmapped = sorted(int(v) for v in np.unique(self._labels) if int(v) not in known)
        return self._labels

    def classes(self) -> dict[str, str]:
        return {cls: f"{self.path} (label {i})" for cls, i in self.ids.items()}

    def grids(self) -> list[_Grid]:
        return [_Grid(_shape3(self.img, self.path), self.img.affine, str(self.path))]

    def read(self, cls: str) -> np.ndarray:
        return self.labels() == self.ids[cls]


def read_label_map(img: nib.Nifti1Image, path: str | Path) -> dict[int, str]:
    """The ``{label id: class name}`` map TotalSegmentator stores in a NIfTI extension.

    TotalSegmentator writes an XML ``LabelTable`` (``<Label Key="5">liver</Label>``) as a
    NIfTI-1 header extension of a multilabel file.

    Raises:
        TotalSegmentatorError: no such extension, or one that cannot be parsed.
    """
    for ext in img.header.extensions:
        raw = ext.get_content()
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if "LabelTable" not in text:
            continue
        try:
            root = ET.fromstring(text.strip())
        except ET.ParseError as e:
            raise TotalSegmentatorError(f"{path}: unreadable label table in header ({e})") from e
        out: dict[int, str] = {}
        for label in root.iter("Label"):
            try:
                out[int(label.get("Key", ""))] = (label.text or "").strip()
            except ValueError as e:
                raise TotalSegmentatorError(f"{path}: label table key not an integer ({e})") from e
        if out:
            return out
    raise TotalSegmentatorError(
        f"{path}: no TotalSegmentator label table in the NIfTI header; pass the class map "
        "(JSON {id: name} or CSV id,name) with --class-map"
    )


def read_class_map(path: str | Path) -> dict[int, str]:
    """Read an explicit class map: JSON ``{"1": "spleen", ...}`` / ``["spleen", ...]``
    (ids from 1) / ``{"spleen": 1}``, or CSV rows ``id,name`` (an optional header row).

    Raises:
        TotalSegmentatorError: missing file, unknown format, or a row without an integer id.
    """
    path = Path(path)
    if not path.is_file():
        raise TotalSegmentatorError(f"{path}: class map not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TotalSegmentatorError(f"{path}: not valid JSON ({e})") from e
        if isinstance(data, list):
            return {i + 1: str(name) for i, name in enumerate(data)}
        if isinstance(data, dict):
            items = list(data.items())
            try:
                if all(_is_int(k) for k, _ in items):
                    return {int(k): str(v) for k, v in items}
                if all(_is_int(v) for _, v in items):
                    return {int(v): str(k) for k, v in items}
            except (TypeError, ValueError):
                pass
        raise TotalSegmentatorError(
            f"{path}: expected a JSON object {{id: name}} or {{name: id}}, or a list of names"
        )
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        out: dict[int, str] = {}
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with path.open(newline="") as f:
            for n, row in enumerate(csv.reader(f, delimiter=delimiter), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 2 or not _is_int(row[0]):
                    if n == 1:
                        continue  # header
                    raise TotalSegmentatorError(f"{path}: row {n} is not 'id,name': {row}")
                out[int(row[0])] = row[1].strip()
        if not out:
            raise TotalSegmentatorError(f"{path}: no 'id,name' rows")
        return out
    raise TotalSegmentatorError(f"{path}: class map must be .json or .csv")


def _is_int(value: object) -> bool:
    try:
        return float(str(value).strip()) == int(str(value).strip())
    except ValueError:
        return False


def _nifti_stem(name: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _open(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many kinds for a bad file
        raise TotalSegmentatorError(f"{path}: not a readable NIfTI file ({e})") from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise TotalSegmentatorError(f"{path}: expected NIfTI, got {type(img).__name__}")
    return img


def _shape3(img: nib.Nifti1Image, path: Path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise TotalSegmentatorError(f"{path}: expected a 3D mask, got shape {img.shape}")
    return shape  # type: ignore[return-value]


def _voxels(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # truncated gzip, short file
        raise TotalSegmentatorError(f"{path}: cannot read the voxel data ({e})") from e
    return np.asarray(data).reshape(_shape3(img, path))


# --- geometry checks -------------------------------------------------------------------------


def _check_grids(grids: list[_Grid], reference: str | Path | None) -> _Grid:
    """All masks on one grid (and on the reference volume's, when given); return that grid."""

    def key(g: _Grid) -> tuple:
        return g.shape, tuple(np.round(g.affine, 2).ravel())

    if reference is not None:
        ref_shape, ref_affine = _reference_geometry(Path(reference))
        bad = []
        for g in grids:
            shape, affine = canonical_geometry(g.shape, g.affine)
            diff = float(np.abs(affine - ref_affine).max())
            if shape != ref_shape or diff > AFFINE_TOLERANCE_MM:
                bad.append(f"{g.source} (shape {shape}, affine differs by {diff:.3g} mm)")
        if bad:
            raise TotalSegmentatorError(
                f"{len(bad)} mask(s) not on the grid of {reference} (shape {ref_shape}): "
                + "; ".join(bad)
            )
    counts = Counter(key(g) for g in grids)
    common, _ = counts.most_common(1)[0]
    first = next(g for g in grids if key(g) == common)
    bad = []
    for g in grids:
        diff = float(np.abs(g.affine - first.affine).max())
        if g.shape != first.shape or diff > AFFINE_TOLERANCE_MM:
            bad.append(f"{g.source} (shape {g.shape}, affine differs by {diff:.3g} mm)")
    if bad:
        raise TotalSegmentatorError(
            f"masks disagree in shape/affine with {first.source} (shape {first.shape}): "
            + "; ".join(bad)
        )
    return first


def _reference_geometry(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    if is_nifti(path.name):
        img = _open(path)
        return canonical_geometry(_shape3(img, path), img.affine)
    vol = load_volume(path)
    return vol.shape, vol.affine


# --- conversion --------------------------------------------------------------------------------


@dataclass
class ConversionResult:
    """What :func:`masks_from_totalsegmentator` wrote and what it could not.

    Attributes:
        volume_name: the ``<volume>`` of ``seg_<volume>``.
        region_dir: folder of the region masks.
        anatomy_dir: folder of the anatomy masks.
        regions: region -> file written.
        anatomy: anatomy name -> file written.
        missing_regions: region -> why it was not written (no input covers it, or empty).
        missing_anatomy: anatomy name -> why it was not written.
        warnings: everything else worth a look (ignored files, unmapped label values ...).
        summary_path: the ``mask_source.json`` written beside the region masks.
    """

    volume_name: str
    region_dir: Path
    anatomy_dir: Path
    regions: dict[str, Path] = field(default_factory=dict)
    anatomy: dict[str, Path] = field(default_factory=dict)
    missing_regions: dict[str, str] = field(default_factory=dict)
    missing_anatomy: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    summary_path: Path | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary (paths as strings)."""
        return {
            "mask_source": "totalsegmentator",
            "volume": self.volume_name,
            "region_dir": str(self.region_dir),
            "anatomy_dir": str(self.anatomy_dir),
            "regions": {k: str(v) for k, v in self.regions.items()},
            "anatomy": {k: str(v) for k, v in self.anatomy.items()},
            "missing_regions": dict(self.missing_regions),
            "missing_anatomy": dict(self.missing_anatomy),
            "warnings": list(self.warnings),
        }


def output_dirs(out_dir: str | Path, volume_name: str) -> tuple[Path, Path]:
    """(region folder, anatomy folder) of ``volume_name`` under ``out_dir`` (see module doc)."""
    out_dir = Path(out_dir)
    try:
        prefix = parse_volume_name(volume_name).split + "_"
    except VolumeNameError:
        prefix = ""
    return (
        out_dir / f"{prefix}region_mask" / f"seg_{volume_name}",
        out_dir / f"{prefix}anatomy_mask" / f"seg_{volume_name}",
    )


def default_volume_name(src: str | Path, reference: str | Path | None = None) -> str:
    """The reference volume's file stem, else the source file's stem or folder name."""
    path = Path(reference if reference is not None else src)
    return _nifti_stem(path.name) if path.name else "volume"


def _open_sources(
    srcs: Sequence[Path], class_map: str | Path | None
) -> list[_ClassFiles | _Multilabel]:
    multilabel = [p for p in srcs if p.is_file()]
    if class_map is not None and len(multilabel) != 1:
        raise TotalSegmentatorError(
            f"--class-map applies to exactly one multilabel file; got {len(multilabel)} "
            f"({', '.join(map(str, multilabel)) or 'none'})"
        )
    explicit = read_class_map(class_map) if class_map is not None else None
    sources: list[_ClassFiles | _Multilabel] = []
    for src in srcs:
        if src.is_dir():
            sources.append(_ClassFiles(src))
        elif src.is_file():
            if not is_nifti(src.name):
                raise TotalSegmentatorError(f"{src}: expected a folder or a .nii/.nii.gz file")
            sources.append(_Multilabel(src, explicit))
        else:
            raise TotalSegmentatorError(f"{src}: not found")
    return sources


def _class_index(sources: list[_ClassFiles | _Multilabel]) -> dict[str, _ClassFiles | _Multilabel]:
    where: dict[str, _ClassFiles | _Multilabel] = {}
    for source in sources:
        for cls, origin in source.classes().items():
            if cls in where:
                raise TotalSegmentatorError(
                    f"class {cls!r} is given twice: {where[cls].classes()[cls]} and {origin}"
                )
            where[cls] = source
    return where


def _shell(mask: np.ndarray) -> np.ndarray:
    """Voxels 6-adjacent to ``mask`` but outside it (a one-voxel outer shell)."""
    grown = mask.copy()
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        grown[tuple(hi)] |= mask[tuple(lo)]  # neighbour below
        grown[tuple(lo)] |= mask[tuple(hi)]  # neighbour above
    return grown & ~mask


class _Masks:
    """Reads each class once, keeps every mask as packed bits (1 bit per voxel)."""

    def __init__(
        self,
        where: dict[str, _ClassFiles | _Multilabel],
        shape: tuple[int, ...],
        affine: np.ndarray,
    ):
        self.where = where
        self.shape = shape
        self.affine = affine
        self.size = int(np.prod(shape))
        self.packed: dict[str, np.ndarray] = {}
        self.empty: set[str] = set()

    def load_all(self) -> None:
        first = sorted(c for cs in SUBTRACT_BEFORE_UNION.values() for c in cs if c in self.where)
        for cls in first + sorted(set(self.where) - set(first)):
            mask = self.where[cls].read(cls)
            for other in SUBTRACT_BEFORE_UNION.get(cls, ()):
                if other in self.packed:
                    mask = mask & ~self.unpack(self.packed[other])  # never in place: may be a view
            if not mask.any():
                self.empty.add(cls)
            self.packed[cls] = np.packbits(mask.ravel(order="F"))

    def unpack(self, bits: np.ndarray) -> np.ndarray:
        # Fortran order throughout: NIfTI voxels arrive and are written that way (no copies)
        return np.unpackbits(bits, count=self.size).view(bool).reshape(self.shape, order="F")

    def union(self, classes: Iterable[str]) -> np.ndarray | None:
        bits = [self.packed[c] for c in classes if c in self.packed]
        if not bits:
            return None
        out = bits[0].copy()
        for b in bits[1:]:
            out |= b
        return out


def _build_target(target: Target, masks: _Masks) -> tuple[np.ndarray | None, str]:
    """(mask, '') or (None, why it is missing)."""
    given = [c for c in target.classes if c in masks.packed]
    needed = target.requires or target.classes
    if not any(c in masks.packed for c in needed):
        tasks = sorted({task_of(c) for c in needed})
        shown = ", ".join(needed[:4]) + (", ..." if len(needed) > 4 else "")
        return None, f"no input holds {shown} (TotalSegmentator task {' or '.join(tasks)})"
    bits = masks.union(given)
    assert bits is not None
    minus = masks.union(target.minus)
    if minus is not None:
        bits &= ~minus
    mask = masks.unpack(bits)
    if target.lung_shell:
        lobes = masks.union(_LOBES)
        if lobes is not None:
            mask |= _shell(masks.unpack(lobes))
    if target.side is not None:
        midline = masks.union(MIDLINE_CLASSES)
        if midline is None or not np.any(midline):
            return (
                None,
                f"no midline structure ({', '.join(MIDLINE_CLASSES[:4])} ...) to split sides",
            )
        mask = _side_of(mask, masks.unpack(midline), masks.affine, target.side)
    if not mask.any():
        return None, f"empty: no voxel in {', '.join(given)}"
    return mask, ""


def _side_of(mask: np.ndarray, midline: np.ndarray, affine: np.ndarray, side: str) -> np.ndarray:
    """The voxels of ``mask`` on the patient's ``side``: RAS x below (left) or above (right)
    the world x of ``midline``'s centroid."""
    total = float(np.count_nonzero(midline))
    centroid = [
        float((np.arange(n) * midline.sum(axis=tuple(b for b in range(3) if b != a))).sum()) / total
        for a, n in enumerate(midline.shape)
    ]  # voxel (i, j, k) of the centroid, without listing the voxels
    centre_x = (affine @ np.array([*centroid, 1.0]))[0]
    ijk = np.array(np.nonzero(mask))  # (3, N) voxel indices
    x = affine[0, :3] @ ijk + affine[0, 3]  # (N,) RAS x in mm
    keep = x < centre_x if side == "left" else x > centre_x
    out = np.zeros_like(mask)
    out[tuple(ijk[:, keep])] = True
    return out


def _save_mask(path: Path, mask: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(img, str(tmp))
    return path


def masks_from_totalsegmentator(
    src: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    reference: str | Path | None = None,
    *,
    volume_name: str | None = None,
    class_map: str | Path | None = None,
) -> ConversionResult:
    """Convert TotalSegmentator output into RadGenome region and anatomy mask files.

    Args:
        src: a folder of ``<class>.nii.gz`` files, a multilabel NIfTI, or a list of these (the
            ``total`` task plus extra tasks such as ``pleural_pericard_effusion``).
        out_dir: where the layout of the module docstring is written.
        reference: the CT volume the masks belong to; every mask must lie on its grid.
        volume_name: the ``<volume>`` in ``seg_<volume>`` (default: the reference's or the
            source's stem).
        class_map: ``{id: name}`` JSON or ``id,name`` CSV for a multilabel file whose header
            has no label table.

    Returns:
        The :class:`ConversionResult`; ``mask_source.json`` holds the same.

    Raises:
        TotalSegmentatorError: a missing or unreadable input, masks that disagree in shape or
            affine (or with the reference), no needed class at all, a class given twice.
    """
    srcs = [Path(s) for s in ([src] if isinstance(src, (str, Path)) else src)]
    if not srcs:
        raise TotalSegmentatorError("no TotalSegmentator output given")
    name = volume_name or default_volume_name(srcs[0], reference)
    if not name or "/" in name or "\\" in name:
        raise TotalSegmentatorError(f"volume name {name!r} must be a plain file name")
    sources = _open_sources(srcs, class_map)
    where = _class_index(sources)
    if not where:
        seen = [f for s in sources for f in s.ignored]
        raise TotalSegmentatorError(
            f"{', '.join(map(str, srcs))}: none of the TotalSegmentator classes rgct maps "
            f"(e.g. lung_upper_lobe_left, trachea, heart); found: "
            f"{', '.join(seen[:10]) or 'no NIfTI files'}{' ...' if len(seen) > 10 else ''}"
        )
    used = {id(s): s for s in where.values()}.values()
    grid = _check_grids([g for s in used for g in s.grids()], reference)

    region_dir, anatomy_dir = output_dirs(out_dir, name)
    result = ConversionResult(name, region_dir, anatomy_dir)
    for s in sources:
        if s.ignored:
            logger.debug("%s: not used by the mapping: %s", s.origin, ", ".join(s.ignored))
    masks = _Masks(where, grid.shape, grid.affine)
    masks.load_all()
    for s in used:
        if isinstance(s, _Multilabel) and s.unmapped:
            result.warnings.append(f"{s.origin}: label values without a class name: {s.unmapped}")
    if "pleural_effusion" in masks.packed and "pleural_effusion" not in masks.empty:
        logger.info("pleural effusion removed from the lung lobes")

    for target in TARGETS:  # every input is read by now: build and write one mask at a time
        mask, why = _build_target(target, masks)
        is_region = target.kind == "region"
        if mask is None:
            (result.missing_regions if is_region else result.missing_anatomy)[target.name] = why
            continue
        path = (region_dir if is_region else anatomy_dir) / f"{target.name}.nii.gz"
        (result.regions if is_region else result.anatomy)[target.name] = _save_mask(
            path, mask, grid.affine
        )
    for region, why in result.missing_regions.items():
        logger.warning("%s: region %r not written: %s", name, region, why)
    summary = result.to_dict()
    summary["inputs"] = [str(s) for s in srcs]
    summary["reference"] = str(reference) if reference is not None else None
    summary["mapping"] = {
        t.name: [c for c in t.classes if c in where and c not in masks.empty]
        for t in TARGETS
        if t.name in result.regions or t.name in result.anatomy
    }
    result.summary_path = write_json(region_dir / SUMMARY_FILE, summary)
    return result


# --- running TotalSegmentator ----------------------------------------------------------------

INSTALL_HINT = (
    "TotalSegmentator is not installed: `pip install TotalSegmentator`, then on a host without "
    "network fetch its weights ahead with `totalseg_download_weights -t total` (and -t for each "
    f"extra task: {', '.join(EXTRA_TASKS)})"
)


def run_totalsegmentator(
    volume_path: str | Path,
    out_dir: str | Path,
    fast: bool = False,
    *,
    tasks: Sequence[str] = ("total",),
) -> Path:
    """Run TotalSegmentator's Python API on a CT volume; return its folder of class files.

    Each task writes its ``<class>.nii.gz`` files into ``out_dir``; pass the folder to
    :func:`masks_from_totalsegmentator`. ``fast`` (3 mm model) applies to the ``total`` task.

    Args:
        volume_path: NIfTI file or DICOM folder/zip.
        out_dir: folder for the class files.
        fast: use TotalSegmentator's fast model.
        tasks: ``total`` and any of :data:`EXTRA_TASKS`.

    Raises:
        TotalSegmentatorNotInstalled: the package is missing (the message says what to install).
        FileNotFoundError: no such volume.
    """
    volume_path = Path(volume_path)
    if not volume_path.exists():
        raise FileNotFoundError(f"{volume_path}: no such volume")
    try:
        from totalsegmentator.python_api import totalsegmentator
    except ImportError as e:
        raise TotalSegmentatorNotInstalled(INSTALL_HINT) from e
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        logger.info("TotalSegmentator task %s on %s", task, volume_path)
        totalsegmentator(
            volume_path, out_dir, ml=False, task=task, fast=fast and task == "total", quiet=True
        )
    return out_dir
