"""Reading the NIH ChestX-ray14 release: PNG radiographs, ``Data_Entry_2017.csv``, boxes.

Layout (as released; the PNGs may sit in any sub-folder, e.g. ``images_001/images/``)::

    <root>/
      Data_Entry_2017.csv       Image Index, Finding Labels ('|'-joined, or 'No Finding'),
                                Follow-up #, Patient ID, Patient Age, Patient Gender,
                                View Position, OriginalImage[Width,Height],
                                OriginalImagePixelSpacing[x,y]  (the bracketed pairs are two
                                columns each: the header's commas split them)
      BBox_List_2017.csv        Image Index, Finding Label, Bbox [x,y,w,h] (four columns),
                                about 1,000 images; ``Infiltrate`` means Infiltration
      train_val_list.txt        the official split: one image name a line (optional; without
      test_list.txt             them every image is 'train')
      **/<Image Index>.png      8-bit grey (a few RGBA), 1024 x 1024

Boxes are in PNG pixels. Pixel spacing is the table's original spacing scaled by the original
size over the PNG size (the PNGs were resized from the originals).

Example::

    index = load_chestxray14(root)
    image = index.images["00013118_008.png"]
    image.labels, image.boxes, image.spacing
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from rgct.data.cxr import Box, box_problem, is_lateral, png_size
from rgct.data.cxr_maps import CXR14_LABELS, CXR14_NO_FINDING, canonical_class
from rgct.data.io import DataError
from rgct.data.records import Problem
from rgct.data.source_report import SourceReport, error

logger = logging.getLogger(__name__)

ENTRY_FILES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
BOX_FILE = "BBox_List_2017.csv"
SPLIT_FILES = {"train": "train_val_list.txt", "test": "test_list.txt"}
CXR14_SPLITS = tuple(SPLIT_FILES)
ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
SIZE_COLUMN = "OriginalImage[Width"
SPACING_COLUMN = "OriginalImagePixelSpacing[x"
BOX_COLUMNS = ("Image Index", "Finding Label", "Bbox [x")
CACHE_FOLDER = ".rgct_cache"


def entry_path(root: str | Path) -> Path | None:
    """The release's data-entry table (2017, or its 2020 revision); None when absent."""
    for name in ENTRY_FILES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def is_chestxray14(root: str | Path) -> bool:
    return entry_path(root) is not None


def find_pngs(root: str | Path) -> dict[str, Path]:
    """PNG name -> path, searched under ``root`` recursively (rgct's cache folder left out)."""
    return {p.name: p for p in sorted(Path(root).rglob("*.png")) if CACHE_FOLDER not in p.parts}


@dataclass
class Cxr14Image:
    """One image of the table.

    Attributes:
        name: ``Image Index``. path: its PNG. split: 'train' or 'test'.
        labels: its labels (``['No Finding']`` when none). boxes: its boxes (consensus, readers
            unknown: 0). size: (width, height) of the PNG.
        spacing: (row, column) mm of the PNG pixels, None when the table gives none.
        view: ``View Position``. patient: ``Patient ID``.
    """

    name: str
    path: Path
    split: str
    labels: list[str]
    size: tuple[int, int]
    spacing: tuple[float, float] | None
    view: str
    patient: str
    boxes: list[Box] = field(default_factory=list)


@dataclass
class Cxr14Index:
    """What :func:`load_chestxray14` found: usable images and every problem."""

    root: Path
    images: dict[str, Cxr14Image] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def split(self, split: str) -> list[Cxr14Image]:
        return [i for i in self.images.values() if i.split == split]


def _rows(path: Path, required: tuple[str, ...], problems: list[Problem]):
    """(header, rows with their line numbers) of a CSV; None and ``bad_csv`` on a bad header."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            error(problems, "bad_csv", str(path), f"malformed header {header}: missing {missing}")
            return None
        return header, [(line, row) for line, row in enumerate(reader, start=2) if any(row)]


def _pair(row: list[str], header: list[str], first: str) -> tuple[float, float] | None:
    """The two numbers of a bracketed pair column (``first`` and the column after it)."""
    if first not in header:
        return None
    i = header.index(first)
    try:
        a, b = float(row[i]), float(row[i + 1])
    except (IndexError, ValueError):
        return None
    return (a, b) if a > 0 and b > 0 else None


def _splits(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for split, name in SPLIT_FILES.items():
        path = root / name
        if path.is_file():
            out.update({n.strip(): split for n in path.read_text().splitlines() if n.strip()})
    return out


def load_chestxray14(
    root: str | Path, *, max_images: int | None = None, names: Collection[str] | None = None
) -> Cxr14Index:
    """Read and check the data-entry table, the box list and the PNG headers.

    Problems (each with its file and line): ``missing_csv``, ``bad_csv`` (malformed header),
    ``unknown_class``, ``missing_image``, ``unreadable_image``, ``lateral_view`` (errors: the
    image is left out), ``bad_box``, ``zero_area_box``, ``box_outside``, ``unknown_image``
    (a box of an image not in the table) (errors: the box is left out), ``missing_spacing``
    (warning).

    Args:
        max_images: keep the first N usable images.
        names: read only these images (``Image Index``; every table row is still checked).
    """
    root = Path(root)
    index = Cxr14Index(root=root)
    entry = entry_path(root)
    if entry is None:
        error(index.problems, "missing_csv", str(root / ENTRY_FILES[0]), "missing")
        return index
    table = _rows(entry, ENTRY_COLUMNS, index.problems)
    if table is None:
        return index
    header, rows = table
    pngs, splits = find_pngs(root), _splits(root)
    col = {c: header.index(c) for c in ENTRY_COLUMNS}
    for line, row in rows:
        where = f"{entry}:{line}"
        cell = {c: (row[i].strip() if i < len(row) else "") for c, i in col.items()}
        name = cell["Image Index"]
        labels = []
        for text in cell["Finding Labels"].split("|"):
            known = canonical_class(text, "chestxray14")
            if known is None:
                error(
                    index.problems,
                    "unknown_class",
                    where,
                    f"{name}: unknown label {text.strip()!r} "
                    f"(known: {', '.join(CXR14_LABELS)}, {CXR14_NO_FINDING})",
                )
            elif known != CXR14_NO_FINDING:
                labels.append(known)
        if is_lateral(cell["View Position"]):
            error(
                index.problems,
                "lateral_view",
                where,
                f"{name}: View Position {cell['View Position']!r}: a lateral view",
            )
            continue
        if name not in pngs:
            error(index.problems, "missing_image", where, f"{name}: no such PNG under {root}")
            continue
        if max_images is not None and len(index.images) >= max_images:
            continue
        if names is not None and name not in names:
            continue
        try:
            width, height = png_size(pngs[name])
        except DataError as e:
            error(index.problems, "unreadable_image", where, str(e))
            continue
        spacing = None
        original, original_spacing = (
            _pair(row, header, SIZE_COLUMN),
            _pair(row, header, SPACING_COLUMN),
        )
        if original and original_spacing:
            spacing = (
                round(original_spacing[1] * original[1] / height, 6),
                round(original_spacing[0] * original[0] / width, 6),
            )
        else:
            msg = f"{where}: {name}: no OriginalImage size and pixel spacing"
            index.problems.append(Problem("warning", "missing_spacing", where, msg))
        index.images[name] = Cxr14Image(
            name, pngs[name], splits.get(name, "train"), labels or [CXR14_NO_FINDING],
            (width, height), spacing, cell["View Position"], cell["Patient ID"],
        )  # fmt: skip
    _read_boxes(index, {row[col["Image Index"]].strip() for _, row in rows if row})
    return index


def _read_boxes(index: Cxr14Index, listed: set[str]) -> None:
    """Add the box list's boxes to their images; boxes of images the table lists but the index
    left out (their problem is already named) are skipped, those of unlisted images named."""
    path = index.root / BOX_FILE
    if not path.is_file():
        index.problems.append(
            Problem("warning", "missing_csv", str(path), f"{path}: missing (no boxes)")
        )
        return
    table = _rows(path, BOX_COLUMNS, index.problems)
    if table is None:
        return
    header, rows = table
    at = header.index("Bbox [x")
    for line, row in rows:
        where = f"{path}:{line}"
        name = row[0].strip()
        known = canonical_class(row[1] if len(row) > 1 else "", "chestxray14")
        if known is None or known == CXR14_NO_FINDING:
            error(
                index.problems, "unknown_class", where, f"{name}: unknown Finding Label {row[1:2]}"
            )
            continue
        try:
            x, y, w, h = (float(v) for v in row[at : at + 4])
        except ValueError:
            error(
                index.problems,
                "bad_box",
                where,
                f"{name}: Bbox {row[at : at + 4]} is not 4 numbers",
            )
            continue
        image = index.images.get(name)
        if image is None:
            if name not in listed:
                error(
                    index.problems,
                    "unknown_image",
                    where,
                    f"{name}: a box of an image not in {ENTRY_FILES[0]}",
                )
            continue
        bad = box_problem((x, y, x + w, y + h), *image.size)
        if bad:
            error(index.problems, bad[0], where, f"{name} {known}: {bad[1]}")
            continue
        image.boxes.append(Box(known, x, y, x + w, y + h, readers=0, consensus=True))


def check_chestxray14(
    root: str | Path, *, deep: bool = True, max_volumes: int | None = None
) -> SourceReport:
    """Check a ChestX-ray14 folder: tables, rows, boxes and (``deep``) every PNG's pixels."""
    from rgct.data.cxr import read_png_radiograph

    root = Path(root)
    report = SourceReport.start(root, "chestxray14")
    if report.problems:
        return report
    index = load_chestxray14(root, max_images=max_volumes)
    report.add(index.problems)
    if deep:
        images = index.images.values()
        for image in tqdm(
            images, desc="ChestX-ray14 pixels", unit="img", disable=len(images) < 200
        ):
            try:
                read_png_radiograph(image.path)
            except DataError as e:
                error(report.problems, "unreadable_image", str(image.path), str(e))
    for split in CXR14_SPLITS:
        mine = index.split(split)
        if mine:
            report.counts[split] = {
                "images": len(mine),
                "boxes": sum(len(i.boxes) for i in mine),
                "images with boxes": sum(bool(i.boxes) for i in mine),
                "no finding": sum(i.labels == [CXR14_NO_FINDING] for i in mine),
                "patients": len({i.patient for i in mine}),
            }
    return report
