"""Bad input in a training run: a split without one task's rows, an empty split, bad volumes."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from rgct.config import DataConfig, load_config
from rgct.data.dataset import RGCTDataset, collate
from rgct.data.io import DataError
from rgct.data.layout import csv_path

MINI = Path(__file__).parents[1] / "fixtures" / "mini_radgenome"
CSVS = MINI / "radgenome_files"


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    dst = tmp_path / "mini"
    shutil.copytree(MINI, dst)
    return dst


def _cfg(root: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(
        root=str(root), input_shape=(8, 16, 16), cache_dir=str(tmp_path / "cache"), **kw
    )


def _header_only(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0] + "\n")


def test_split_without_one_tasks_rows_warns_and_leaves_it_out(mini, tmp_path, caplog) -> None:
    size_csv = mini / "radgenome_files/train_vqa_size.csv"
    _header_only(size_csv)
    cfg = _cfg(mini, tmp_path, augment=False)
    with caplog.at_level(logging.WARNING, logger="rgct.data.dataset"):
        mixed = RGCTDataset(cfg, "train", train=True, num_samples=12, seed=0)
    assert len(mixed) == 12 and "size" not in {s.task for s in mixed.samples}
    assert mixed.missing_tasks == ["size"]
    warned = [r.getMessage() for r in caplog.records if "no rows for task 'size'" in r.getMessage()]
    assert warned and "'train'" in warned[0] and str(size_csv) in warned[0]
    # the per-task evaluation set of the missing task is empty (the loop skips it), not an error
    only = RGCTDataset(cfg, "train", train=False, tasks=["size"], num_samples=4)
    assert len(only) == 0 and only.missing_tasks == ["size"]
    # a training set with none of its tasks cannot train
    with pytest.raises(DataError, match="no rows for any training task"):
        RGCTDataset(cfg, "train", train=True, tasks=["size"], num_samples=4)


def test_split_with_no_rows_at_all_is_an_error(mini, tmp_path) -> None:
    for csv in (mini / "radgenome_files").glob("*.csv"):
        _header_only(csv)
    with pytest.raises(DataError, match="has no rows at all"):
        RGCTDataset(_cfg(mini, tmp_path), "train", train=False)


def _corrupt_volume(root: Path, name: str) -> Path:
    path = next(root.glob(f"*_preprocessed/*/*/{name}.nii.gz"))
    path.write_bytes(b"not a NIfTI file")
    return path


def test_bad_volumes_are_counted_across_loader_workers(mini, tmp_path) -> None:
    _corrupt_volume(mini, "train_2_a_1")
    cfg = _cfg(mini, tmp_path, augment=False, skip_bad_samples=True)
    ds = RGCTDataset(cfg, "train", train=False)
    bad = sum(s.volume == "train_2_a_1" for s in ds.samples)
    assert 0 < bad < len(ds)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    kept = sum(len(b["prompt"]) for b in loader if b)
    assert ds.num_skipped == bad  # counted in the workers, read in this process
    assert kept == len(ds) - bad


def _tiny_config(root: Path, tmp_path: Path, *overrides: str):
    """The tiny model and training presets on ``root`` (the issue's command), outputs in tmp."""
    configs = Path(__file__).parents[2] / "configs"
    return load_config(
        [configs / "model/tiny.yaml", configs / "train/tiny.yaml"],
        [
            f"data.root={root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"train.output_dir={tmp_path / 'run'}",
            *overrides,
        ],
    )


def test_training_run_logs_how_many_samples_were_skipped(phantom_root, tmp_path, caplog) -> None:
    from rgct.train.loop import train

    root = tmp_path / "ds"
    shutil.copytree(phantom_root, root)
    broken = _corrupt_volume(root, "train_1_a_1")
    cfg = _tiny_config(
        root,
        tmp_path,
        "data.skip_bad_samples=true",
        "data.augment=false",
        "train.max_steps=3",
        "train.eval_every=0",
        "train.save_every=100",
    )
    with caplog.at_level(logging.WARNING):
        train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    skipped = rows[-1]["skipped_samples"]
    assert skipped > 0
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{skipped} bad training samples were skipped" in m for m in messages)
    assert any(str(broken) in m and "skipping bad" in m for m in messages)
    assert torch.isfinite(torch.tensor(rows[-1]["loss"]))


def test_validation_split_without_one_tasks_rows_builds_its_loaders(
    phantom_root, tmp_path, caplog
) -> None:
    """The issue's case: tiny configs on 8 phantoms whose validation split has no size rows."""
    from rgct.train.loop import build_data

    root = tmp_path / "ds"
    shutil.copytree(phantom_root, root)
    _header_only(csv_path(root, "valid", "vqa_size"))
    cfg = _tiny_config(root, tmp_path, "train.max_steps=2")
    with caplog.at_level(logging.WARNING, logger="rgct.data.dataset"):
        data = build_data(cfg, world=1)
    wanted = {t for t, w in cfg.data.tasks.items() if w > 0}
    assert set(data.eval_loaders) == wanted - {"size"} and "size" in wanted
    warned = [r.getMessage() for r in caplog.records if "no rows for task 'size'" in r.getMessage()]
    assert warned and all("'valid'" in m for m in warned)
