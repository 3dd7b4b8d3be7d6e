"""Reading the VinDr-CXR release: DICOM radiographs, per-reader boxes and image-level labels.

Layout (as released on PhysioNet, ``vindr-cxr/1.0.0``)::

    <root>/
      annotations/annotations_train.csv     image_id, rad_id, class_name, x_min, y_min, x_max, y_max
      annotations/annotations_test.csv      (one row per box and reader; a ``No finding`` row has
                                            empty coordinates)
      annotations/image_labels_train.csv    image_id, rad_id (or rad_ID), one 0/1 column per
      annotations/image_labels_test.csv     local and global label
      train/<image_id>.dicom                15,000 images, each read by 3 of 17 radiologists
      test/<image_id>.dicom                 3,000 images, the consensus of 5 radiologists

**Consensus-box fusion** (:func:`fuse_boxes`), per image and class, for the training split:
boxes drawn by *different* readers are linked when their IoU is >= :data:`FUSE_IOU` (0.4);
each linked group (connected component) becomes one box, the coordinate-wise median of its
boxes, kept when at least :data:`MIN_READERS` (2) distinct readers drew it; the box records that
reader count (``readers``). A box only one reader drew is dropped. Test rows are already the
consensus: each is kept as its own box (``readers`` = :data:`TEST_READERS`, ``consensus``).
Image-level labels: positive when a majority of the image's readers set them (the test split's
single row as it is).

Example::

    index = load_vindr(root, "train")
    image = index.images["000434271f63a181c1bb8c9a6c8f7e2b"]
    image.boxes[0]      # Box(class_name='Aortic enlargement', x_min=..., readers=3, ...)
    film = load_radiograph(image.path)
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rgct.data.cxr import Box, box_problem, dicom_header, iou, is_lateral, is_non_chest
from rgct.data.cxr_maps import VINDR_GLOBAL, VINDR_LOCAL, VINDR_NO_FINDING, canonical_class
from rgct.data.io import DataError
from rgct.data.records import Problem
from rgct.data.source_report import SourceReport, error

logger = logging.getLogger(__name__)

VINDR_SPLITS = ("train", "test")
ANNOTATIONS_FOLDER = "annotations"
BOX_FILE = "annotations_{split}.csv"
LABEL_FILE = "image_labels_{split}.csv"
IMAGE_SUFFIX = ".dicom"
BOX_COLUMNS = ("image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max")
FUSE_IOU = 0.4
MIN_READERS = 2
TEST_READERS = 5
"""Readers behind each test-split consensus box."""


def box_path(root: str | Path, split: str) -> Path:
    return Path(root) / ANNOTATIONS_FOLDER / BOX_FILE.format(split=split)


def label_path(root: str | Path, split: str) -> Path:
    return Path(root) / ANNOTATIONS_FOLDER / LABEL_FILE.format(split=split)


def image_path(root: str | Path, split: str, image_id: str) -> Path:
    return Path(root) / split / f"{image_id}{IMAGE_SUFFIX}"


def is_vindr(root: str | Path) -> bool:
    """True when ``root`` holds a VinDr-CXR box or label file."""
    return any(box_path(root, s).is_file() or label_path(root, s).is_file() for s in VINDR_SPLITS)


@dataclass(frozen=True)
class ReaderBox:
    """One reader's box row. ``line``: its line in the CSV (header = 1)."""

    image_id: str
    rad_id: str
    class_name: str
    coords: tuple[float, float, float, float]
    line: int


def _linked(group: list[ReaderBox], iou_threshold: float) -> list[list[ReaderBox]]:
    """Connected components of boxes linked by IoU >= ``iou_threshold`` across readers."""
    parent = list(range(len(group)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(group)):
        for j in range(i + 1, len(group)):
            if group[i].rad_id != group[j].rad_id:
                if iou(group[i].coords, group[j].coords) >= iou_threshold:
                    parent[find(i)] = find(j)
    clusters: dict[int, list[ReaderBox]] = defaultdict(list)
    for i, row in enumerate(group):
        clusters[find(i)].append(row)
    return list(clusters.values())


def fuse_boxes(
    rows: list[ReaderBox], iou_threshold: float = FUSE_IOU, min_readers: int = MIN_READERS
) -> list[Box]:
    """The consensus boxes of one image's reader boxes (rule in the module notes), sorted by
    class, then top-left corner."""
    out: list[Box] = []
    by_class: dict[str, list[ReaderBox]] = defaultdict(list)
    for row in rows:
        by_class[row.class_name].append(row)
    for class_name, group in sorted(by_class.items()):
        for members in _linked(group, iou_threshold):
            readers = len({m.rad_id for m in members})
            if readers < min_readers:
                continue
            coords = np.median(np.array([m.coords for m in members]), axis=0)
            out.append(Box(class_name, *(round(float(c), 2) for c in coords), readers=readers))
    return sorted(out, key=lambda b: (b.class_name, b.x_min, b.y_min))


@dataclass
class VindrImage:
    """One image of a split.

    Attributes:
        image_id: the release's id. split: 'train' or 'test'. path: its DICOM file.
        size: (width, height) from the DICOM header.
        boxes: the fused (train) or consensus (test) boxes.
        labels: image-level labels set by a majority of its readers (consensus row on test),
            in the file's column order; boxes' classes are added when the label file lacks them.
        view, body_part: from the DICOM header.
    """

    image_id: str
    split: str
    path: Path
    size: tuple[int, int]
    boxes: list[Box] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    view: str = ""
    body_part: str = ""


@dataclass
class VindrIndex:
    """What :func:`load_vindr` found for one split: usable images and every problem."""

    root: Path
    split: str
    images: dict[str, VindrImage] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _header(path: Path, problems: list[Problem], required: tuple[str, ...]) -> list[str] | None:
    """The CSV's header, lower-cased; None (and a ``bad_csv`` error) when a column is missing."""
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    names = [h.strip() for h in header]
    missing = [c for c in required if c not in [n.lower() for n in names]]
    if missing:
        error(problems, "bad_csv", str(path), f"malformed header {names}: missing {missing}")
        return None
    return names


def _read_boxes(index: VindrIndex, path: Path) -> dict[str, list[ReaderBox]]:
    """Rows of the box CSV per image, every bad row listed and left out."""
    rows: dict[str, list[ReaderBox]] = defaultdict(list)
    required = (
        BOX_COLUMNS if index.split == "train" else tuple(c for c in BOX_COLUMNS if c != "rad_id")
    )
    if _header(path, index.problems, required) is None:
        return rows
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        for line, raw in enumerate(reader, start=2):
            row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            where = f"{path}:{line}"
            image_id, class_name = row.get("image_id", ""), row.get("class_name", "")
            known = canonical_class(class_name, "vindr-cxr")
            if not image_id:
                error(index.problems, "bad_row", where, "empty image_id")
                continue
            if known is None or known in VINDR_GLOBAL and known != VINDR_NO_FINDING:
                error(
                    index.problems,
                    "unknown_class",
                    where,
                    f"image {image_id}: unknown class_name {class_name!r} (local labels: "
                    f"{', '.join(VINDR_LOCAL)}; or {VINDR_NO_FINDING!r})",
                )
                continue
            if known == VINDR_NO_FINDING:
                rows.setdefault(image_id, [])
                continue
            try:
                x1, y1, x2, y2 = (float(row[c]) for c in ("x_min", "y_min", "x_max", "y_max"))
            except (KeyError, ValueError):
                error(
                    index.problems, "bad_box", where, f"image {image_id}: coordinates not numbers"
                )
                continue
            reader = row.get("rad_id", "")
            rows[image_id].append(ReaderBox(image_id, reader, known, (x1, y1, x2, y2), line))
    return rows


def _read_labels(index: VindrIndex, path: Path) -> dict[str, list[str]]:
    """Image -> labels a majority of its reader rows set (every bad cell listed)."""
    names = _header(path, index.problems, ("image_id",))
    if names is None:
        return {}
    columns = []
    for name in names:
        if name.lower() in ("image_id", "rad_id"):
            continue
        known = canonical_class(name, "vindr-cxr")
        if known is None:
            error(index.problems, "unknown_class", str(path), f"unknown label column {name!r}")
        columns.append((name, known))
    votes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    readers: dict[str, int] = defaultdict(int)
    with path.open(newline="") as f:
        for line, raw in enumerate(csv.DictReader(f), start=2):
            image_id = (raw.get("image_id") or "").strip()
            readers[image_id] += 1
            for name, known in columns:
                value = (raw.get(name) or "").strip()
                if value not in ("0", "1", "0.0", "1.0"):
                    error(
                        index.problems, "bad_value", f"{path}:{line}", f"{name}={value!r}: not 0/1"
                    )
                elif value.startswith("1") and known is not None:
                    votes[image_id][known] += 1
    order = [k for _, k in columns if k is not None]
    return {
        image_id: [k for k in order if 2 * votes[image_id].get(k, 0) > count]
        for image_id, count in readers.items()
    }


def load_vindr(
    root: str | Path,
    split: str,
    *,
    max_images: int | None = None,
    image_ids: Collection[str] | None = None,
) -> VindrIndex:
    """Read and check one split: its CSVs, every row, and each image's DICOM header.

    Problems (each with its file and line): ``missing_csv``, ``bad_csv`` (malformed header),
    ``unknown_class``, ``bad_box``, ``zero_area_box``, ``box_outside``, ``bad_value``,
    ``missing_image``, ``unreadable_image``, ``lateral_view``, ``not_chest`` (errors; the image
    or row is left out). Pixels are not read here (:func:`check_vindr` reads them).

    Args:
        max_images: keep the first N usable images.
        image_ids: read only these images (all their rows are still checked).
    """
    if split not in VINDR_SPLITS:
        raise DataError(f"unknown VinDr-CXR split {split!r}; known: {VINDR_SPLITS}")
    root = Path(root)
    index = VindrIndex(root=root, split=split)
    boxes_csv, labels_csv = box_path(root, split), label_path(root, split)
    if not boxes_csv.is_file() and not labels_csv.is_file():
        return index
    for path in (boxes_csv, labels_csv):
        if not path.is_file():
            error(index.problems, "missing_csv", str(path), "missing")
    rows = _read_boxes(index, boxes_csv) if boxes_csv.is_file() else {}
    labels = _read_labels(index, labels_csv) if labels_csv.is_file() else {}
    ids = [i for i in dict.fromkeys([*rows, *labels]) if image_ids is None or i in image_ids]
    for image_id in tqdm(
        ids, desc=f"VinDr-CXR {split} headers", unit="img", disable=len(ids) < 2000
    ):
        if max_images is not None and len(index.images) >= max_images:
            break
        path = image_path(root, split, image_id)
        where = f"{boxes_csv}:{rows[image_id][0].line}" if rows.get(image_id) else str(labels_csv)
        if not path.is_file():
            error(index.problems, "missing_image", where, f"image {image_id}: no {path}")
            continue
        try:
            head = dicom_header(path)
        except DataError as e:
            error(index.problems, "unreadable_image", str(path), str(e))
            continue
        if is_lateral(head["view"]):
            error(
                index.problems,
                "lateral_view",
                str(path),
                f"ViewPosition {head['view']!r}: a lateral view",
            )
            continue
        if is_non_chest(head["body_part"]):
            error(
                index.problems,
                "not_chest",
                str(path),
                f"BodyPartExamined {head['body_part']!r}: not a chest image",
            )
            continue
        size = (head["columns"], head["rows"])
        good = []
        for row in rows.get(image_id, []):
            bad = box_problem(row.coords, *size)
            if bad:
                error(
                    index.problems,
                    bad[0],
                    f"{boxes_csv}:{row.line}",
                    f"image {image_id} {row.class_name}: {bad[1]}",
                )
            else:
                good.append(row)
        if split == "train":
            fused = fuse_boxes(good)
        else:
            fused = [
                Box(r.class_name, *r.coords, readers=TEST_READERS, consensus=True) for r in good
            ]
        image_labels = list(labels.get(image_id, []))
        image_labels += [b.class_name for b in fused if b.class_name not in image_labels]
        if any(lab != VINDR_NO_FINDING for lab in image_labels):
            image_labels = [lab for lab in image_labels if lab != VINDR_NO_FINDING]
        index.images[image_id] = VindrImage(
            image_id, split, path, size, fused, image_labels or [VINDR_NO_FINDING],
            head["view"], head["body_part"],
        )  # fmt: skip
    return index


def check_vindr(
    root: str | Path, *, deep: bool = True, max_volumes: int | None = None
) -> SourceReport:
    """Check a VinDr-CXR folder: both splits' CSVs, rows, headers and (``deep``) pixels.

    Args:
        max_volumes: check at most this many images per split.
    """
    from rgct.data.cxr import read_dicom_radiograph

    root = Path(root)
    report = SourceReport.start(root, "vindr-cxr")
    if report.problems:
        return report
    for split in VINDR_SPLITS:
        index = load_vindr(root, split, max_images=max_volumes)
        report.add(index.problems)
        if not index.images and not index.problems:
            continue
        no_spacing = 0
        if deep:
            images = index.images.values()
            for image in tqdm(
                images, desc=f"VinDr-CXR {split} pixels", unit="img", disable=len(images) < 200
            ):
                try:
                    film = read_dicom_radiograph(image.path)
                except DataError as e:
                    error(report.problems, "unreadable_image", str(image.path), str(e))
                    continue
                if film.spacing is None:
                    no_spacing += 1
                    msg = f"{image.path}: no PixelSpacing or ImagerPixelSpacing"
                    report.problems.append(
                        Problem("warning", "missing_spacing", str(image.path), msg)
                    )
        report.counts[split] = {
            "images": len(index.images),
            "boxes": sum(len(i.boxes) for i in index.images.values()),
            "images with boxes": sum(bool(i.boxes) for i in index.images.values()),
            "no finding": sum(i.labels == [VINDR_NO_FINDING] for i in index.images.values()),
            "no spacing": no_spacing,
        }
    if not report.counts and not report.problems:
        error(
            report.problems,
            "missing_csv",
            str(root / ANNOTATIONS_FOLDER),
            "no annotations_<split>.csv",
        )
    return report
