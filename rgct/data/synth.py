"""Write a synthetic phantom dataset in the RadGenome-Chest CT layout (``rgct synth``).

The dataset is written into a temporary folder beside ``<out>`` and renamed to ``<out>`` only
when complete (:func:`rgct.files.atomic_dir`).
Every volume draws from its own generator ``default_rng([seed, index])``, so the output is
byte-identical for a seed whatever the number of worker processes (gzip with mtime 0, rows in
volume order).

Example::

    write_dataset("data/phantoms", num_volumes=100, seed=0, workers=2)
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from rgct.constants import CSV_COLUMNS, CT_RATE_LABELS, REGIONS, SPLITS
from rgct.data.layout import anatomy_mask_path, csv_path, region_mask_path, volume_path
from rgct.data.phantom import DEFAULT_SHAPE, MIN_SIZE, Phantom, build_phantom
from rgct.data.phantom_text import disorders, label_vector, region_sentences, vqa_rows, whole_report
from rgct.data.truth import GROUND_TRUTH_FILE
from rgct.files import atomic_dir, write_text

logger = logging.getLogger(__name__)

LABELS_FOLDER = "multi_abnormality_labels"
GZIP_LEVEL = 1
TWO_SCAN_FRACTION = 0.3
"""Share of patients with a second scan ('b')."""


METADATA_FILE = "metadata/metadata.csv"
"""CT-RATE-style metadata table written with the header quirks (``data.metadata_csv``)."""
METADATA_COLUMNS = ("VolumeName", "XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept")
RAW_INTERCEPT = -1024.0
"""Raw-value volumes store HU - RAW_INTERCEPT (air near 0), the intercept only in the metadata."""


@dataclass(frozen=True)
class Variation:
    """Per-volume shape, spacing and header quirks (``rgct synth --ct-rate-like`` and friends).

    Attributes:
        ct_rate_like: draw each volume's grid as CT-RATE's: ``in_plane`` voxels of 0.6-0.9 mm
            (scaled by 512 / ``in_plane``) and 100-300 slices of 1-3 mm covering 250-350 mm.
        in_plane: in-plane size of those volumes (512 as CT-RATE; smaller for quick runs).
        blank_header_fraction: share of volumes written with a blank (identity) header, their
            spacing only in :data:`METADATA_FILE`.
        raw_values_fraction: share written as raw stored values (HU + 1024, uint16) whose
            intercept is only in the metadata table.
    """

    ct_rate_like: bool = False
    in_plane: int = 512
    blank_header_fraction: float = 0.0
    raw_values_fraction: float = 0.0

    @property
    def quirks(self) -> bool:
        return self.blank_header_fraction > 0 or self.raw_values_fraction > 0

    def draw(self, seed: int, index: int, shape: tuple[int, int, int]) -> dict:
        """This volume's ``shape``, ``spacing`` (None: the default) and quirks, from a stream of
        its own (the phantom's generator is untouched: default phantoms stay byte-identical)."""
        rng = np.random.default_rng([seed, index, 2])
        spacing = None
        if self.ct_rate_like:
            xy = float(rng.uniform(0.6, 0.9)) * 512 / self.in_plane
            z = float(rng.choice([1.0, 1.5, 2.0, 3.0]))
            slices = int(np.clip(round(float(rng.uniform(250, 350)) / z), 100, 300))
            shape, spacing = (slices, self.in_plane, self.in_plane), (z, xy, xy)
        return {
            "shape": shape,
            "spacing": spacing,
            "blank_header": bool(rng.random() < self.blank_header_fraction),
            "raw_values": bool(rng.random() < self.raw_values_fraction),
        }


@dataclass(frozen=True)
class VolumePlan:
    """Name and split of one volume; ``index`` seeds its generator."""

    index: int
    split: str
    pid: int
    scan: str

    @property
    def name(self) -> str:
        return f"{self.split}_{self.pid}_{self.scan}_1"


def plan_volumes(num_volumes: int, seed: int, valid_fraction: float = 0.2) -> list[VolumePlan]:
    """Group volumes into patients (1-2 scans) and split by patient.

    About ``valid_fraction`` of the volumes go to 'valid' (both scans of a patient stay
    together); patient ids count from 1 within each split.
    """
    rng = np.random.default_rng([seed, 2**31 - 1])
    sizes: list[int] = []
    left = num_volumes
    while left > 0:
        n = 2 if left >= 2 and rng.random() < TWO_SCAN_FRACTION else 1
        sizes.append(n)
        left -= n
    target = min(round(valid_fraction * num_volumes), num_volumes - 1) if num_volumes > 1 else 0
    valid = set()
    count = 0
    for p in rng.permutation(len(sizes)).tolist():
        if count + sizes[p] <= target:
            valid.add(p)
            count += sizes[p]
    plans, next_pid, index = [], {"train": 1, "valid": 1}, 0
    for p, n in enumerate(sizes):
        split = "valid" if p in valid else "train"
        pid = next_pid[split]
        next_pid[split] += 1
        for scan in "ab"[:n]:
            plans.append(VolumePlan(index, split, pid, scan))
            index += 1
    return plans


def nifti_gz_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A (D, H, W) array as the bytes of an (X, Y, Z) ``.nii.gz`` (gzip mtime 0: reproducible)."""
    img = nib.Nifti1Image(array.transpose(2, 1, 0), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def save_nifti_gz(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write a (D, H, W) array as an (X, Y, Z) NIfTI, gzip mtime 0 (into the dataset's
    temporary folder: the whole folder is renamed into place when complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(nifti_gz_bytes(array, affine))  # inside the temporary folder


def build_plan_phantom(
    plan: VolumePlan,
    seed: int,
    shape: tuple[int, int, int],
    variation: Variation | None = None,
) -> tuple[Phantom, dict]:
    """The phantom of one planned volume and its drawn grid and quirks: the same for every
    layout ``rgct synth`` writes (``default_rng([seed, plan.index])``)."""
    drawn = (variation or Variation()).draw(seed, plan.index, shape)
    rng = np.random.default_rng([seed, plan.index])
    return build_phantom(drawn["shape"], rng, drawn["spacing"]), drawn


def synth_volume(
    plan: VolumePlan,
    root: Path,
    seed: int,
    shape: tuple[int, int, int],
    variation: Variation | None = None,
) -> dict:
    """Build one phantom, write its volume and masks under ``root``; return its records.

    Returns:
        ``{"gt": ground-truth dict, "rows": {csv stem: [row tuples]}, "labels": [18 ints],
        "metadata": metadata row (with header quirks only)}``.
    """
    ph, drawn = build_plan_phantom(plan, seed, shape, variation)
    name = plan.name
    affine = np.eye(4) if drawn["blank_header"] else ph.affine
    volume = ph.volume
    if drawn["raw_values"]:
        volume = (volume.astype(np.int32) - int(RAW_INTERCEPT)).clip(0, 65535).astype(np.uint16)
    save_nifti_gz(volume_path(root, name), volume, affine)
    for region, mask in ph.region_masks.items():
        save_nifti_gz(region_mask_path(root, name, region), mask, affine)
    for anatomy, mask in ph.anatomy_masks.items():
        save_nifti_gz(anatomy_mask_path(root, name, anatomy), mask, affine)

    findings = [f.to_dict() for f in ph.findings]
    regions = [r for r in REGIONS if r in ph.region_masks]
    text_rng = np.random.default_rng([seed, plan.index, 1])
    sentences = region_sentences(findings, regions, text_rng)
    file = name + ".nii.gz"
    rows: dict[str, list[tuple]] = {
        "region_report": [(file, r, sentences[r]) for r in regions]
        + [(file, "", whole_report(sentences))],
        "case_disorders": [(file, disorders(findings))],
    }
    for stem, items in vqa_rows(findings, text_rng).items():
        rows[stem] = [(file, *item) for item in items]
    found = {f["region"] for f in findings}
    gt = {
        "volume": name,
        "split": plan.split,
        "shape": list(ph.volume.shape),
        "spacing_mm": [round(s, 4) for s in ph.spacing_mm],
        "findings": findings,
        "normal_regions": [r for r in regions if r not in found],
    }
    dz, dy, dx = ph.spacing_mm
    metadata = (
        f"{name}.nii.gz",
        f"[{dy:.6g}, {dx:.6g}]",
        f"{dz:.6g}",
        "1",
        f"{RAW_INTERCEPT:g}" if drawn["raw_values"] else "0",
    )
    if drawn["blank_header"] or drawn["raw_values"]:
        gt["quirks"] = [q for q in ("blank_header", "raw_values") if drawn[q]]
    return {"gt": gt, "rows": rows, "labels": label_vector(findings), "metadata": metadata}


def _work(args: tuple) -> dict:
    return synth_volume(*args)


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, buf.getvalue())


def _write_tables(root: Path, results: list[dict], metadata: bool = False) -> None:
    if metadata:
        _write_csv(root / METADATA_FILE, METADATA_COLUMNS, [r["metadata"] for r in results])
    for split in SPLITS:
        mine = [r for r in results if r["gt"]["split"] == split]
        for stem, header in CSV_COLUMNS.items():
            _write_csv(
                csv_path(root, split, stem), header, [row for r in mine for row in r["rows"][stem]]
            )
        _write_csv(
            root / LABELS_FOLDER / f"{split}_predicted_labels.csv",
            ("VolumeName", *CT_RATE_LABELS),
            [(r["gt"]["volume"] + ".nii.gz", *r["labels"]) for r in mine],
        )
    lines = "".join(json.dumps(r["gt"]) + "\n" for r in results)
    write_text(root / GROUND_TRUTH_FILE, lines)


def check_args(
    num_volumes: int, shape: tuple[int, ...], valid_fraction: float, workers: int
) -> None:
    """Raise ValueError with a clear message for arguments ``rgct synth`` refuses."""
    if num_volumes < 1:
        raise ValueError(f"--num-volumes must be >= 1, got {num_volumes}")
    if len(shape) != 3 or min(shape) < MIN_SIZE:
        raise ValueError(f"--shape must be 3 sizes D H W, each >= {MIN_SIZE}, got {list(shape)}")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"--valid-fraction must lie in [0, 1), got {valid_fraction}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")


def write_dataset(
    out: str | Path,
    num_volumes: int,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    valid_fraction: float = 0.2,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    variation: Variation | None = None,
) -> list[dict]:
    """Write ``num_volumes`` phantoms and their CSVs to ``out`` (atomically, as a folder).

    Args:
        out: dataset folder; must be absent or empty unless ``overwrite``.
        num_volumes: number of volumes (>= 1).
        seed: dataset seed; volume i uses ``default_rng([seed, i])``.
        shape: (D, H, W) voxels; the spacing is the field of view divided by it.
        valid_fraction: share of volumes in the 'valid' split, in [0, 1).
        workers: processes building volumes in parallel.
        overwrite: replace a non-empty ``out``.
        progress: show a progress bar.
        variation: per-volume shapes, spacings and header quirks (CT-RATE-like volumes, blank
            headers with spacing in ``metadata/metadata.csv``, raw stored values); None: every
            volume ``shape`` over the default field of view, byte-identical to earlier releases.

    Returns:
        The ground-truth records, in volume order.

    Raises:
        ValueError: bad arguments. FileExistsError: ``out`` is not empty and not ``overwrite``.
    """
    shape = tuple(int(s) for s in shape)
    check_args(num_volumes, shape, valid_fraction, workers)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    plans = plan_volumes(num_volumes, seed, valid_fraction)
    start = time.perf_counter()
    with atomic_dir(out) as tmp:  # the folder appears (or replaces the old one) when complete
        jobs = [(p, tmp, seed, shape, variation) for p in plans]
        bar = dict(total=len(jobs), desc="rgct synth", unit="vol", disable=not progress)
        if workers == 1:
            results = [_work(j) for j in tqdm(jobs, **bar)]
        else:
            with mp.get_context("fork").Pool(workers) as pool:
                results = list(tqdm(pool.imap(_work, jobs, chunksize=1), **bar))
        _write_tables(tmp, results, metadata=variation is not None and variation.quirks)
    elapsed = time.perf_counter() - start
    logger.info(
        "wrote %d volumes to %s in %.1f s (%.2f s/volume)",
        len(plans),
        out,
        elapsed,
        elapsed / len(plans),
    )
    return [r["gt"] for r in results]
