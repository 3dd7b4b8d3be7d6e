"""rgct synth at CT-RATE-like shapes with header quirks, read back through the geometry path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rgct.cli import main as rgct_main
from rgct.config import DataConfig
from rgct.data.compact import expand_batch
from rgct.data.dataset import RGCTDataset
from rgct.data.io import load_volume
from rgct.data.synth import METADATA_FILE, Variation, write_dataset


@pytest.fixture(scope="module")
def ct_rate_like(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ctr") / "ds"
    variation = Variation(
        ct_rate_like=True, in_plane=48, blank_header_fraction=0.5, raw_values_fraction=0.5
    )
    write_dataset(root, 4, seed=2, valid_fraction=0.25, progress=False, variation=variation)
    return root


def test_shapes_spacings_and_quirks_vary_per_volume(ct_rate_like: Path) -> None:
    records = [json.loads(line) for line in (ct_rate_like / "ground_truth.jsonl").open()]
    for r in records:
        d, h, w = r["shape"]
        dz, dy, dx = r["spacing_mm"]
        assert 100 <= d <= 300 and h == w == 48 and dz in (1.0, 1.5, 2.0, 3.0)
        assert 0.6 * 512 / 48 <= dy == dx <= 0.9 * 512 / 48  # CT-RATE's 0.6-0.9 mm at 512
    assert len({tuple(r["spacing_mm"]) for r in records}) == len(records)
    with open(ct_rate_like / METADATA_FILE) as f:
        rows = {row["VolumeName"]: row for row in csv.DictReader(f)}
    assert set(rows) == {r["volume"] + ".nii.gz" for r in records}
    quirks = {q for r in records for q in r.get("quirks", [])}
    assert quirks == {"blank_header", "raw_values"}
    for r in records:
        path = next(ct_rate_like.glob(f"*_preprocessed/*/*/{r['volume']}.nii.gz"))
        img = nib.load(path)
        blank = "blank_header" in r.get("quirks", [])
        assert np.allclose(img.affine, np.eye(4)) == blank
        assert (img.get_data_dtype() == np.uint16) == ("raw_values" in r.get("quirks", []))
        if "raw_values" in r.get("quirks", []):
            assert rows[r["volume"] + ".nii.gz"]["RescaleIntercept"] == "-1024"


def _span(row) -> int:
    """Voxels from the first to the last True of a 1-D mask (chest wall to chest wall)."""
    hits = np.flatnonzero(np.asarray(row))
    return int(hits[-1] - hits[0] + 1) if len(hits) else 0


def test_the_geometry_path_reads_them_in_millimetres(ct_rate_like: Path, tmp_path) -> None:
    cfg = DataConfig(
        root=str(ct_rate_like),
        input_shape=(32, 48, 48),
        spacing=(10.0, 8.0, 8.0),
        crop_foreground=True,
        fit="pad_crop",
        metadata_csv=str(ct_rate_like / METADATA_FILE),
        cache_dir=str(tmp_path / "cache"),
        augment=False,
    )
    ds = RGCTDataset(cfg, "train", train=False, tasks=["report"])
    assert len(ds) == 3
    for i in range(len(ds)):
        image = expand_batch(ds[i])["image"][0]
        assert image.shape == (32, 48, 48) and float(image[:, 0, 0].max()) == 0.0  # air padding
        # the chest's width along the centre row, in mm: on the model grid (8 mm voxels) as in
        # the native volume (its own spacing, from the header or the metadata table)
        width_mm = 8.0 * _span(image[16, 24] > (-300 + 1000) / 1200)  # above -300 HU
        native = load_volume(ds.samples[i].image_path, metadata_csv=cfg.metadata_csv)
        d, h, _ = native.shape
        assert float(np.percentile(native.array, 1)) < -900  # HU, raw values rescaled
        native_mm = native.spacing[2] * _span(native.array[d // 2, h // 2] > -300)
        assert abs(width_mm - native_mm) <= 24, (width_mm, native_mm)


def test_cli_options_and_their_errors(tmp_path, capsys) -> None:
    out = tmp_path / "one"
    args = ["synth", "--out", str(out), "--num-volumes", "1", "--no-progress"]
    assert rgct_main([*args, "--ct-rate-like", "--in-plane", "32"]) == 0
    shape = json.loads((out / "ground_truth.jsonl").read_text())["shape"]
    assert shape[1:] == [32, 32] and not (out / METADATA_FILE).exists()
    assert rgct_main([*args, "--overwrite", "--blank-header-fraction", "1.5"]) == 2
    assert "--blank-header-fraction must lie in [0, 1]" in capsys.readouterr().err
