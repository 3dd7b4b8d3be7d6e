"""`rgct data check` lists every problem of a dataset folder; `rgct data show` delegates."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rgct.cli import main
from rgct.data.check import check_dataset

MINI = Path(__file__).parents[1] / "fixtures" / "mini_radgenome"


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    dst = tmp_path / "mini"
    shutil.copytree(MINI, dst)
    return dst


def _drop_missing_volume_row(root: Path) -> None:
    csv = root / "radgenome_files" / "train_region_report.csv"
    csv.write_text("".join(ln for ln in csv.open() if "train_99_a_1" not in ln))


def test_clean_copy_passes(mini: Path, capsys) -> None:
    _drop_missing_volume_row(mini)
    assert main(["data", "check", str(mini)]) == 0
    out = capsys.readouterr().out
    assert "0 error(s)" in out and "volumes" in out


def test_fixture_reports_its_missing_volume_row(tmp_path: Path) -> None:
    report = check_dataset(MINI)
    assert [p.kind for p in report.errors] == ["missing_volume"]
    assert report.splits["train"].volumes == 2
    assert report.splits["train"].csv_rows["region_report"] == 8
    assert report.splits["train"].region_masks == {
        "heart": 1,
        "lung": 2,
        "pleura": 1,
        "trachea and bronchie": 1,
    }


def test_all_problems_listed(mini: Path, tmp_path: Path, capsys) -> None:
    seg1 = mini / "train_region_mask" / "seg_train_1_a_1"
    affine1 = nib.load(seg1 / "lung.nii.gz").affine
    # wrong-shape mask and empty mask
    nib.save(nib.Nifti1Image(np.ones((16, 14, 9), np.uint8), affine1), seg1 / "heart.nii.gz")
    nib.save(
        nib.Nifti1Image(np.zeros((16, 14, 10), np.uint8), affine1),
        seg1 / "trachea and bronchie.nii.gz",
    )
    # truncated gz mask
    pleura = mini / "train_region_mask" / "seg_train_2_a_1" / "pleura.nii.gz"
    raw = gzip.compress(gzip.decompress(pleura.read_bytes()))
    pleura.write_bytes(raw[: len(raw) // 2])
    # corrupt volume
    vdir = mini / "train_preprocessed" / "train_3" / "train_3a"
    vdir.mkdir(parents=True)
    (vdir / "train_3_a_1.nii.gz").write_bytes(b"not a nifti at all" * 20)
    # unknown region, bad CSV columns
    with (mini / "radgenome_files" / "train_vqa_presence.csv").open("a") as f:
        f.write("train_2_a_1.nii.gz,spleenish,mass,No.\n")
    (mini / "radgenome_files" / "train_vqa_size.csv").write_text("Volume,Anatomy,Size\nx,y,z\n")

    out_json = tmp_path / "report.json"
    assert main(["data", "check", str(mini), "--json", str(out_json)]) == 1
    text = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert data["ok"] is False
    by_kind = {}
    for p in data["problems"]:
        by_kind.setdefault(p["kind"], []).append(p)
    expected = {
        "mask_shape": "heart.nii.gz",
        "empty_mask": "trachea and bronchie.nii.gz",
        "unreadable_mask": "pleura.nii.gz",
        "unreadable_volume": "train_3_a_1.nii.gz",
        "unknown_region": "train_vqa_presence.csv",
        "bad_csv": "train_vqa_size.csv",
        "missing_volume": "train_region_report.csv",
    }
    for kind, name in expected.items():
        assert kind in by_kind, f"{kind} not reported; got {sorted(by_kind)}"
        assert name in by_kind[kind][0]["message"], by_kind[kind][0]
        assert kind in text
    assert "(9, 14, 16)" in by_kind["mask_shape"][0]["message"]
    assert "spleenish" in by_kind["unknown_region"][0]["message"]
    n_errors = sum(p["severity"] == "error" for p in data["problems"])
    assert n_errors == len(expected) and f"{n_errors} error(s)" in text


def test_missing_required_folder(mini: Path) -> None:
    shutil.rmtree(mini / "train_region_mask")
    shutil.rmtree(mini / "radgenome_files")
    report = check_dataset(mini)
    missing = {Path(p.path).name for p in report.errors if p.kind == "missing_folder"}
    assert missing == {"train_region_mask", "radgenome_files"}
    assert check_dataset(mini / "nope").errors[0].kind == "missing_folder"


def test_headers_only_skips_truncation_but_still_reads_csvs(mini: Path) -> None:
    vol = mini / "train_preprocessed/train_2/train_2a/train_2_a_1.nii.gz"
    raw = gzip.compress(gzip.decompress(vol.read_bytes()))
    vol.write_bytes(raw[: int(len(raw) * 0.8)])
    deep = check_dataset(mini)
    assert "unreadable_volume" in [p.kind for p in deep.errors]
    assert "train_2_a_1" in next(p.message for p in deep.errors if p.kind == "unreadable_volume")
    shallow = check_dataset(mini, deep=False)
    assert "unreadable_volume" not in [p.kind for p in shallow.errors]


def test_show_calls_montage(monkeypatch, tmp_path: Path, capsys) -> None:
    calls = []
    fake = types.ModuleType("rgct.data.montage")
    fake.save_montage = lambda root, volume, out_png, split=None: calls.append(
        (root, volume, out_png, split)
    )
    monkeypatch.setitem(sys.modules, "rgct.data.montage", fake)
    out = str(tmp_path / "m.png")
    assert main(["data", "show", str(MINI), "--volume", "train_1_a_1", "--out", out]) == 0
    assert calls == [(str(MINI), "train_1_a_1", out, None)]


SYNTH_MISSING = importlib.util.find_spec("rgct.data.synth") is None


@pytest.mark.skipif(SYNTH_MISSING, reason="rgct.data.synth missing")
def test_synth_dataset_reads(tmp_path: Path) -> None:
    from rgct.config import DataConfig
    from rgct.data.dataset import RGCTDataset
    from rgct.data.records import build_samples, load_split
    from rgct.data.synth import write_dataset

    root = tmp_path / "synth"
    write_dataset(root, num_volumes=3, seed=0, shape=(16, 32, 32), valid_fraction=0.34, workers=1)
    report = check_dataset(root)
    assert report.errors == [], [p.message for p in report.errors]
    index = load_split(root, "train")
    assert index.volumes and index.ground_truth is not None
    by_task = build_samples(index, ["region_report", "abnormality", "disorders"])
    assert by_task["region_report"] and all(s.labels is not None for s in by_task["region_report"])
    cfg = DataConfig(root=str(root), input_shape=(16, 32, 32), cache_dir=str(tmp_path / "cache"))
    ds = RGCTDataset(cfg, "train", train=True, num_samples=4)
    item = ds[0]
    assert item["image"].shape == (1, 16, 32, 32) and item["has_labels"]
