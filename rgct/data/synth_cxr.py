"""Phantom radiographs in the VinDr-CXR and ChestX-ray14 layouts (``rgct synth --layout ...``).

Each film is the PA projection (:func:`rgct.data.drr.project_phantom`) of the very phantom
``rgct synth`` writes in the RadGenome layout for the same seed and shape; each finding's box is
its 3D extent projected, its class from :data:`rgct.data.cxr_maps.PHANTOM_CXR` (findings without
a class in the dataset get no box). ``ground_truth.jsonl`` has one line per image: the usual
fields plus ``radgenome_volume``, ``image_size`` (H, W), ``pixel_spacing_mm``, ``lung_rows``,
``display`` (how the file stores the film) and ``cxr_findings`` (per finding: ``kind``,
``class_name``, ``box``, ``side``, ``zone``, ``footprint_pixels``).

- VinDr-CXR: ``train/<id>.dicom`` (the RadGenome 'train' volumes) and ``test/<id>.dicom``
  ('valid'), 12-bit DX files in turn: ``plain`` (MONOCHROME2), ``monochrome1-window``
  (MONOCHROME1, stored values inside a LINEAR_EXACT window, the lead marker below it, spacing
  as ImagerPixelSpacing) and ``voi-lut`` (MONOCHROME2 stored as the square root of the film,
  a VOI LUT sequence squaring it back). Training images are read by three of 17 readers
  (``R1``..``R17``): two always draw each box, the third most of the time, each with edges
  jittered by up to :data:`JITTER` of the box size; a fifth of the images get one stray box
  from one reader (fusion drops it); a reader who drew nothing writes a ``No finding`` row.
  Test images get one consensus row per box (``rad_id`` 'consensus') and one label row.
- ChestX-ray14: ``images/<patient>_<follow-up>.png`` (8-bit), ``Data_Entry_2017.csv`` (original
  size twice the PNG's, spacing half: the reader scales it back), ``BBox_List_2017.csv`` (every
  boxed finding), ``train_val_list.txt`` / ``test_list.txt``.

Example::

    write_layout_dataset("data/phantoms_vindr", "vindr-cxr", num_volumes=10, seed=0)
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rgct.data.chestxray14 import BOX_FILE, ENTRY_FILES, SPLIT_FILES
from rgct.data.cxr_maps import (
    CXR14_NO_FINDING,
    PHANTOM_CXR,
    PHANTOM_VINDR_GLOBAL,
    VINDR_GLOBAL,
    VINDR_LOCAL,
    VINDR_NO_FINDING,
)
from rgct.data.drr import ProjectedFilm, project_phantom
from rgct.data.synth import VolumePlan, build_plan_phantom
from rgct.data.synth_layouts import csv_text
from rgct.data.vindr import BOX_COLUMNS, box_path, image_path, label_path
from rgct.files import write_bytes, write_text

BITS = 12
TOP = 2**BITS - 1
WINDOW = (1000.0, 3000.0)
"""Stored range of the ``monochrome1-window`` films (the window's LINEAR_EXACT edges)."""
DISPLAYS = ("plain", "monochrome1-window", "voi-lut")
JITTER = 0.04
READERS = tuple(f"R{i}" for i in range(1, 18))
VINDR_SPLIT = {"train": "train", "valid": "test"}
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
"""Digital X-Ray Image Storage - For Presentation."""


def _csv_text(header: list[str], rows: list[list], trailing: int = 0) -> str:
    """CSV text; ``trailing`` empty columns on every line (as the ChestX-ray14 tables end)."""
    return csv_text(header + [""] * trailing, [r + [""] * trailing for r in rows])


def _film(plan: VolumePlan, seed: int, shape, layout: str) -> tuple[ProjectedFilm, dict]:
    """The plan's phantom as a film, and its truth record (``volume`` set by the caller)."""
    ph, _ = build_plan_phantom(plan, seed, shape)
    film = project_phantom(ph)
    cxr = [
        {
            "kind": f["kind"],
            "class_name": PHANTOM_CXR[f["kind"]].for_layout(layout),
            "box": f["box"],
            "side": f["side"],
            "zone": f["zone"],
            "footprint_pixels": f["footprint_pixels"],
        }
        for f in film.findings
    ]
    record = {
        "split": plan.split,
        "radgenome_volume": plan.name,
        "shape": list(ph.volume.shape),
        "spacing_mm": [round(s, 4) for s in ph.spacing_mm],
        "image_size": list(film.image.shape),
        "pixel_spacing_mm": [round(s, 4) for s in film.spacing],
        "lung_rows": list(film.lung_rows),
        "findings": [f.to_dict() for f in ph.findings],
        "cxr_findings": cxr,
    }
    return film, record


# --- VinDr-CXR --------------------------------------------------------------------------------


def radiograph_dicom_bytes(
    image: np.ndarray,
    spacing: tuple[float, float],
    image_id: str,
    display: str = "plain",
    *,
    view: str = "PA",
    body_part: str = "CHEST",
) -> bytes:
    """A 12-bit DX file of a [0, 1] film (bright = attenuating), stored the ``display`` way
    (one of :data:`DISPLAYS`); UIDs derived from ``image_id`` (same input, same bytes)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    v = np.asarray(image, dtype=np.float64)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[image_id, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[image_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[image_id, "series"])
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", body_part, view
    ds.Rows, ds.Columns = v.shape
    ds.SamplesPerPixel = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS, BITS - 1, 0
    spacing_text = [f"{s:.4f}" for s in spacing]
    ds.PhotometricInterpretation = "MONOCHROME2"
    if display == "plain":
        ds.PixelSpacing = spacing_text
        stored = np.rint(TOP * v)
    elif display == "monochrome1-window":
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.ImagerPixelSpacing = spacing_text
        low, high = WINDOW
        stored = np.rint(low + (high - low) * (1.0 - v))
        stored[v >= 1.0] = 0.0  # the lead marker (and any saturated pixel) below the window
        ds.WindowCenter, ds.WindowWidth = (low + high) / 2, high - low
        ds.VOILUTFunction = "LINEAR_EXACT"
    elif display == "voi-lut":
        ds.PixelSpacing = spacing_text
        stored = np.rint(TOP * np.sqrt(v))
        item = Dataset()
        item.LUTDescriptor = [TOP + 1, 0, BITS]
        item.add_new(0x00283006, "US", [int(round(TOP * (i / TOP) ** 2)) for i in range(TOP + 1)])
        item.LUTExplanation = "square"
        ds.VOILUTSequence = [item]
    else:
        raise ValueError(f"display must be one of {DISPLAYS}, got {display!r}")
    ds.PixelData = stored.clip(0, TOP).astype(np.uint16).tobytes()
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _jittered(box: list[float], rng: np.random.Generator, size: tuple[int, int]) -> list[float]:
    height, width = size
    x1, y1, x2, y2 = box
    dx, dy = JITTER * (x2 - x1), JITTER * (y2 - y1)
    j = rng.uniform(-1.0, 1.0, 4)
    out = [
        min(max(x1 + dx * j[0], 0.0), x2 - 0.5 * (x2 - x1)),
        min(max(y1 + dy * j[1], 0.0), y2 - 0.5 * (y2 - y1)),
        max(min(x2 + dx * j[2], float(width)), x1 + 0.5 * (x2 - x1)),
        max(min(y2 + dy * j[3], float(height)), y1 + 0.5 * (y2 - y1)),
    ]
    return [round(v, 2) for v in out]


def _reader_rows(image_id: str, record: dict, rng: np.random.Generator):
    """Box rows and label rows of one training image's three readers."""
    size = tuple(record["image_size"])
    boxed = [f for f in record["cxr_findings"] if f["class_name"]]
    global_labels = _global_labels(record)
    readers = [READERS[i] for i in sorted(rng.choice(len(READERS), 3, replace=False))]
    drawn: dict[str, list[tuple[str, list[float]]]] = {r: [] for r in readers}
    for f in boxed:
        for k, reader in enumerate(readers):
            if k < 2 or rng.random() < 0.75:
                drawn[reader].append((f["class_name"], _jittered(f["box"], rng, size)))
    if rng.random() < 0.2:  # one reader's stray box, which fusion drops
        h, w = size
        x, y = float(rng.uniform(0.2, 0.7) * w), float(rng.uniform(0.2, 0.6) * h)
        drawn[readers[2]].append(
            (
                "Nodule/Mass",
                [round(x, 2), round(y, 2), round(x + 0.06 * w, 2), round(y + 0.06 * h, 2)],
            )
        )
    box_rows, label_rows = [], []
    for reader in readers:
        for class_name, box in drawn[reader]:
            box_rows.append([image_id, reader, class_name, *box])
        if not drawn[reader]:
            box_rows.append([image_id, reader, VINDR_NO_FINDING, "", "", "", ""])
        classes = {c for c, _ in drawn[reader]} | global_labels
        label_rows.append([image_id, reader, *_label_cells(classes)])
    return box_rows, label_rows


def _global_labels(record: dict) -> set[str]:
    """The VinDr-CXR global labels a phantom's findings set (:data:`PHANTOM_VINDR_GLOBAL`)."""
    return {
        PHANTOM_VINDR_GLOBAL[f["kind"]]
        for f in record["findings"]
        if f["kind"] in PHANTOM_VINDR_GLOBAL
    }


def _label_cells(classes: set[str]) -> list[int]:
    """One label-file row's 0/1 cells (local, then global labels; No finding when none)."""
    cells = [int(c in classes) for c in (*VINDR_LOCAL, *VINDR_GLOBAL)]
    cells[-1] = int(not classes)  # No finding
    return cells


def write_vindr(tmp: Path, plans: list[VolumePlan], seed: int, shape, progress: bool) -> list[dict]:
    """Write VinDr-CXR phantoms into ``tmp``; return their truth records."""
    assert VINDR_GLOBAL[-1] == VINDR_NO_FINDING
    boxes: dict[str, list[list]] = {"train": [], "test": []}
    labels: dict[str, list[list]] = {"train": [], "test": []}
    truth = []
    for number, plan in enumerate(
        tqdm(plans, desc="rgct synth (vindr-cxr)", unit="img", disable=not progress)
    ):
        split = VINDR_SPLIT[plan.split]
        image_id = hashlib.md5(f"rgct-phantom-{seed}-{plan.name}".encode()).hexdigest()
        film, record = _film(plan, seed, shape, "vindr-cxr")
        display = DISPLAYS[number % len(DISPLAYS)]
        record = {"volume": image_id, **record, "display": display}
        write_bytes(
            image_path(tmp, split, image_id),
            radiograph_dicom_bytes(film.image, film.spacing, image_id, display),
        )
        if split == "train":
            rng = np.random.default_rng([seed, plan.index, 7])
            box_rows, label_rows = _reader_rows(image_id, record, rng)
        else:
            boxed = [f for f in record["cxr_findings"] if f["class_name"]]
            box_rows = [[image_id, "consensus", f["class_name"], *f["box"]] for f in boxed]
            box_rows = box_rows or [[image_id, "consensus", VINDR_NO_FINDING, "", "", "", ""]]
            classes = {f["class_name"] for f in boxed} | _global_labels(record)
            label_rows = [[image_id, "consensus", *_label_cells(classes)]]
        boxes[split] += box_rows
        labels[split] += label_rows
        truth.append(record)
    for split in ("train", "test"):
        write_text(box_path(tmp, split), _csv_text(list(BOX_COLUMNS), boxes[split]))
        header = ["image_id", "rad_id", *VINDR_LOCAL, *VINDR_GLOBAL]
        write_text(label_path(tmp, split), _csv_text(header, labels[split]))
        (tmp / split).mkdir(exist_ok=True)
    return truth


# --- ChestX-ray14 ------------------------------------------------------------------------------

ENTRY_HEADER = [
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
]  # fmt: skip
BOX_HEADER = ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
ORIGINAL_SCALE = 2
"""The table's original image is this many times the PNG (as the release's 1024 PNGs are
smaller than the originals): the reader scales the spacing back."""


def write_chestxray14(
    tmp: Path, plans: list[VolumePlan], seed: int, shape, progress: bool
) -> list[dict]:
    """Write ChestX-ray14 phantoms into ``tmp``; return their truth records."""
    patients: dict[tuple[str, int], int] = {}
    entries, bboxes, truth = [], [], []
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for plan in tqdm(plans, desc="rgct synth (chestxray14)", unit="img", disable=not progress):
        patient = patients.setdefault((plan.split, plan.pid), len(patients) + 1)
        name = f"{patient:08d}_{'ab'.index(plan.scan):03d}.png"
        film, record = _film(plan, seed, shape, "chestxray14")
        record = {"volume": name, **record, "display": "png8"}
        buf = io.BytesIO()
        Image.fromarray(np.rint(255 * film.image).astype(np.uint8)).save(buf, format="PNG")
        write_bytes(tmp / "images" / name, buf.getvalue())
        boxed = [f for f in record["cxr_findings"] if f["class_name"]]
        found = sorted({f["class_name"] for f in boxed})
        height, width = film.image.shape
        px = film.spacing[1] / ORIGINAL_SCALE
        entries.append([
            name, "|".join(found) or CXR14_NO_FINDING, "ab".index(plan.scan), patient,
            40 + plan.index % 40, "MF"[plan.index % 2], "PA", width * ORIGINAL_SCALE,
            height * ORIGINAL_SCALE, f"{px:.4f}", f"{px:.4f}",
        ])  # fmt: skip
        for f in boxed:
            x1, y1, x2, y2 = f["box"]
            bboxes.append([name, f["class_name"], x1, y1, round(x2 - x1, 4), round(y2 - y1, 4)])
        lists["train" if plan.split == "train" else "test"].append(name)
        truth.append(record)
    write_text(tmp / ENTRY_FILES[0], _csv_text(ENTRY_HEADER, entries, trailing=1))
    write_text(tmp / BOX_FILE, _csv_text(BOX_HEADER, bboxes, trailing=3))
    for split, names in lists.items():
        write_text(tmp / SPLIT_FILES[split], "".join(n + "\n" for n in names))
    return truth
