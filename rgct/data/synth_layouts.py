"""Phantoms in the RAD-ChestCT and DeepLesion layouts (``rgct synth --layout ...``; the
radiograph layouts VinDr-CXR and ChestX-ray14: :mod:`rgct.data.synth_cxr`).

The phantoms are the very volumes and findings ``rgct synth`` writes in the RadGenome layout for
the same seed and shape (:func:`rgct.data.synth.build_plan_phantom`); only the files differ.
``ground_truth.jsonl`` has one line per volume (RAD-ChestCT) or series (DeepLesion) with the
usual fields plus ``radgenome_volume``, the name of the same phantom in the RadGenome layout.

- RAD-ChestCT: ``<name>.npz`` (key ``ct``, int16 HU) under ``volumes/``, names ``trn00001`` /
  ``val00001``; the metadata CSV (``NoteAcc_DEID`` + ``z_spacing, y_spacing, x_spacing``); one
  label file per split with every SARLE ``abnormality*location`` column, set from the truth
  (:data:`PHANTOM_SARLE`); region and anatomy masks under ``masks/`` as ``rgct segment`` writes
  them, on the ``.npz`` grid.
- DeepLesion: each measured finding (:data:`~rgct.data.source_maps.PHANTOM_LESION_TYPES`) is a
  lesion row of ``DL_info.csv``: key slice at its centre, slice range +-15 mm, box and RECIST
  diameters from its size (the long axis along the painted lesion's longer in-plane extent);
  the series' slices as 16-bit PNGs (HU + 32768). Volumes without such a finding have no
  series. Every phantom lesion has its type (the real release gives none in
  its training split).

Example::

    write_layout_dataset("data/phantoms_rad", "rad-chestct", num_volumes=10, seed=0)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rgct.data.deeplesion import HU_OFFSET, IMAGES_FOLDER, INFO_COLUMNS, INFO_FILE, slice_path
from rgct.data.phantom import DEFAULT_SHAPE
from rgct.data.radchestct import MASKS_FOLDER, METADATA_FILE, NPZ_KEY, label_path
from rgct.data.source_maps import PHANTOM_LESION_TYPES, RADCHEST_ABNORMALITIES, RADCHEST_LOCATIONS
from rgct.data.synth import VolumePlan, build_plan_phantom, check_args, nifti_gz_bytes, plan_volumes
from rgct.data.truth import GROUND_TRUTH_FILE
from rgct.files import atomic_dir, write_bytes, write_text

logger = logging.getLogger(__name__)

PHANTOM_SARLE = {
    "nodule": "nodule",
    "ground_glass_opacity": "groundglass",
    "consolidation": "consolidation",
    "atelectasis": "atelectasis",
    "emphysema": "emphysema",
    "bronchiectasis": "bronchiectasis",
    "pleural_effusion": "pleural_effusion",
    "pericardial_effusion": "pericardial_effusion",
    "cardiomegaly": "cardiomegaly",
    "coronary_artery_wall_calcification": "coronary_artery_disease",
    "lymphadenopathy": "lymphadenopathy",
    "arterial_wall_calcification": "calcification",
    "hiatal_hernia": "hernia",
}
"""Phantom finding kind -> the SARLE abnormality its report sentence would give."""

_FIXED_LOCATION = {
    "pericardial_effusion": "heart",
    "cardiomegaly": "heart",
    "coronary_artery_wall_calcification": "heart",
    "lymphadenopathy": "mediastinum",
    "arterial_wall_calcification": "aorta",
    "hiatal_hernia": "diaphragm",
}
_LOBE_LOCATION = {
    f"{side} lung {lobe} lobe": f"{side}_{short}"
    for side in ("right", "left")
    for lobe, short in (("upper", "upper"), ("middle", "mid"), ("lower", "lower"))
}
RADCHEST_NAME_COLUMN = "NoteAcc_DEID"
CONTEXT_MM = 15.0
"""Slices within this distance of a lesion's key slice make its Slice_range (as DeepLesion)."""
LAYOUT_PREFIX = {"train": "trn", "valid": "val"}


def sarle_pairs(finding: dict) -> list[tuple[str, str]]:
    """The SARLE (abnormality, location) columns a phantom finding sets: its lobe, its side's
    lung and the lung for lung findings; a fixed location for the others."""
    abnormality = PHANTOM_SARLE[finding["kind"]]
    if finding["kind"] in _FIXED_LOCATION:
        return [(abnormality, _FIXED_LOCATION[finding["kind"]])]
    locations = []
    if finding.get("lobe") in _LOBE_LOCATION:
        locations.append(_LOBE_LOCATION[finding["lobe"]])
    if finding.get("side") in ("right", "left"):
        locations.append(f"{finding['side']}_lung")
    locations.append("lung")
    return [(abnormality, loc) for loc in locations]


def csv_text(header: list[str], rows: list[list]) -> str:
    """A header row and rows as CSV text (``\n`` line ends, quoted where needed)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def npz_bytes(array: np.ndarray) -> bytes:
    """A compressed ``.npz`` holding ``array`` under :data:`NPZ_KEY`, with a fixed timestamp."""
    npy = io.BytesIO()
    np.lib.format.write_array(npy, np.ascontiguousarray(array), allow_pickle=False)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        info = zipfile.ZipInfo(f"{NPZ_KEY}.npy", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, npy.getvalue(), compresslevel=1)
    return out.getvalue()


def _truth(plan: VolumePlan, ph, name: str) -> dict:
    return {
        "volume": name,
        "split": plan.split,
        "radgenome_volume": plan.name,
        "shape": list(ph.volume.shape),
        "spacing_mm": [round(s, 4) for s in ph.spacing_mm],
        "findings": [f.to_dict() for f in ph.findings],
    }


def _write_radchest(
    tmp: Path, plans: list[VolumePlan], seed: int, shape, progress: bool
) -> list[dict]:
    columns = [(a, loc) for a in RADCHEST_ABNORMALITIES for loc in RADCHEST_LOCATIONS]
    column_index = {c: i for i, c in enumerate(columns)}
    counters = {"train": 0, "valid": 0}
    rows: dict[str, list[list]] = {"train": [], "valid": []}
    metadata, truth = [], []
    for plan in tqdm(plans, desc="rgct synth (rad-chestct)", unit="vol", disable=not progress):
        ph, _ = build_plan_phantom(plan, seed, shape)
        counters[plan.split] += 1
        name = f"{LAYOUT_PREFIX[plan.split]}{counters[plan.split]:05d}"
        write_bytes(tmp / "volumes" / f"{name}.npz", npz_bytes(ph.volume.astype(np.int16)))
        dz, dy, dx = ph.spacing_mm
        affine = np.diag([dx, dy, dz, 1.0])  # the grid load_npz gives the .npz
        for folder, masks in (("region_mask", ph.region_masks), ("anatomy_mask", ph.anatomy_masks)):
            for structure, mask in masks.items():
                path = tmp / MASKS_FOLDER / folder / f"seg_{name}" / f"{structure}.nii.gz"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_bytes(path, nifti_gz_bytes(mask.astype(np.uint8), affine))
        values = [0] * len(columns)
        record = _truth(plan, ph, name)
        for finding in record["findings"]:
            for pair in sarle_pairs(finding):
                values[column_index[pair]] = 1
        rows[plan.split].append([name, *values])
        metadata.append([name, f"{dz:.6g}", f"{dy:.6g}", f"{dx:.6g}"])
        truth.append(record)
    header = [RADCHEST_NAME_COLUMN, *(f"{a}*{loc}" for a, loc in columns)]
    for split, split_rows in rows.items():
        write_text(label_path(tmp, split), csv_text(header, split_rows))
    meta_header = [RADCHEST_NAME_COLUMN, "z_spacing", "y_spacing", "x_spacing"]
    write_text(tmp / METADATA_FILE, csv_text(meta_header, metadata))
    return truth


def _size_mm(finding: dict) -> tuple[float, float]:
    sizes = [float(v) for v in re.findall(r"\d+(?:\.\d+)?", finding.get("size_text") or "")]
    if not sizes:
        sizes = [float(finding["size_mm"])]
    return max(sizes), min(sizes)


def _lesion_row(finding: dict, series: str, ph, plan: VolumePlan, patient: int) -> list:
    depth, height, width = ph.volume.shape
    dz, dy, dx = ph.spacing_mm
    cz, cy, cx = finding["center_voxel"]
    key = cz + 1  # slice numbers count from 1
    reach = math.ceil(CONTEXT_MM / dz)
    first, last = max(1, key - reach), min(depth, key + reach)
    long_mm, short_mm = _size_mm(finding)
    long_px, short_px = long_mm / dx, short_mm / dx
    px, py = width - 1 - cx + 0.5, height - 1 - cy + 0.5  # PNG pixel centre (both axes flipped)
    # the long axis lies along the painted lesion's longer in-plane extent (rows or columns),
    # so that the box and the RECIST end points surround the lesion drawn in the slices
    _, ry, rx = finding["radius_vox"]
    wide, tall = (short_px, long_px) if ry > rx else (long_px, short_px)
    x1, x2 = max(px - wide / 2, 0.0), min(px + wide / 2, float(width))
    y1, y2 = max(py - tall / 2, 0.0), min(py + tall / 2, float(height))
    ends = [x1, py, x2, py, px, y1, px, y2] if wide >= tall else [px, y1, px, y2, x1, py, x2, py]
    kind = PHANTOM_LESION_TYPES[finding["kind"]]

    def nums(values, digits: int = 3) -> str:
        return ", ".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") for v in values)

    return [
        f"{series}_{key:03d}.png",
        patient,
        1 + "ab".index(plan.scan),
        1,
        key,
        nums(ends),
        nums([x1, y1, x2, y2]),
        nums([long_px, short_px]),
        nums([px / width, py / height, (key - 1) / max(depth - 1, 1)]),
        kind,
        0,
        f"{first}, {last}",
        nums([dx, dy, dz], 6),
        f"{width}, {height}",
        "-1350, 150" if kind == 5 else "-175, 275",
        "MF"[plan.index % 2],
        40 + plan.index % 40,
        1 if plan.split == "train" else 2,
    ]


def _write_deeplesion(
    tmp: Path, plans: list[VolumePlan], seed: int, shape, progress: bool
) -> list[dict]:
    patients: dict[tuple[str, int], int] = {}
    rows, truth = [], []
    for plan in tqdm(plans, desc="rgct synth (deeplesion)", unit="vol", disable=not progress):
        ph, _ = build_plan_phantom(plan, seed, shape)
        patient = patients.setdefault((plan.split, plan.pid), len(patients) + 1)
        series = f"{patient:06d}_{1 + 'ab'.index(plan.scan):02d}_01"
        record = _truth(plan, ph, series)
        lesions = [f for f in record["findings"] if f["kind"] in PHANTOM_LESION_TYPES]
        if not lesions:
            continue
        slices: set[int] = set()
        record["lesions"] = []
        for finding in lesions:
            row = _lesion_row(finding, series, ph, plan, patient)
            rows.append(row)
            first, last = (int(v) for v in row[11].split(","))
            slices.update(range(first, last + 1))
            long_mm, short_mm = _size_mm(finding)
            record["lesions"].append(
                {"file_name": row[0], "kind": finding["kind"], "type": row[9],
                 "long_mm": long_mm, "short_mm": short_mm}
            )  # fmt: skip
        for number in sorted(slices):
            pixels = ph.volume[number - 1][::-1, ::-1].astype(np.int32) + HU_OFFSET
            buf = io.BytesIO()
            Image.fromarray(pixels.clip(0, 65535).astype(np.uint16)).save(buf, format="PNG")
            path = slice_path(tmp, series, number)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, buf.getvalue())
        truth.append(record)
    write_text(tmp / INFO_FILE, csv_text(list(INFO_COLUMNS), rows))
    (tmp / IMAGES_FOLDER).mkdir(exist_ok=True)
    return truth


def write_layout_dataset(
    out: str | Path,
    layout: str,
    num_volumes: int,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    valid_fraction: float = 0.2,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Write ``num_volumes`` phantoms in the ``layout`` ('rad-chestct', 'deeplesion', 'vindr-cxr' or
    'chestxray14', :mod:`rgct.data.synth_cxr`) to
    ``out`` (atomically, as a folder); same arguments as :func:`rgct.data.synth.write_dataset`.

    Returns:
        The ground-truth records written (one per volume, lesion series or radiograph).

    Raises:
        ValueError: bad arguments or layout. FileExistsError: ``out`` not empty, no ``overwrite``.
    """
    from rgct.data.synth_cxr import write_chestxray14, write_vindr

    writers = {
        "rad-chestct": _write_radchest,
        "deeplesion": _write_deeplesion,
        "vindr-cxr": write_vindr,
        "chestxray14": write_chestxray14,
    }
    if layout not in writers:
        raise ValueError(f"layout must be one of {sorted(writers)}, got {layout!r}")
    shape = tuple(int(s) for s in shape)
    check_args(num_volumes, shape, valid_fraction, 1)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    plans = plan_volumes(num_volumes, seed, valid_fraction)
    with atomic_dir(out) as tmp:
        truth = writers[layout](tmp, plans, seed, shape, progress)
        write_text(tmp / GROUND_TRUTH_FILE, "".join(json.dumps(r) + "\n" for r in truth))
    logger.info("wrote %d %s phantom volumes to %s", len(truth), layout, out)
    return truth
