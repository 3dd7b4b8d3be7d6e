"""Shared fixtures: offline environment, seeds, tiny configs, a phantom dataset, a tiny checkpoint."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "configs" / "model" / "tiny.yaml"
TINY_TRAIN = REPO / "configs" / "train" / "tiny.yaml"
PHANTOM_SHAPE = (24, 48, 48)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def seed() -> int:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return 0


@pytest.fixture(scope="session")
def rgct_cache(tmp_path_factory) -> Path:
    """Converted-LLM cache shared by the session (``RGCT_CACHE`` if the caller set it)."""
    if "RGCT_CACHE" in os.environ:
        return Path(os.environ["RGCT_CACHE"])
    path = tmp_path_factory.mktemp("rgct_cache")
    os.environ["RGCT_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small phantom dataset (8 volumes, 24x48x48) written once per test session."""
    from rgct.data.synth import write_dataset

    root = tmp_path_factory.mktemp("phantoms") / "ds"
    write_dataset(root, num_volumes=8, seed=3, shape=PHANTOM_SHAPE, valid_fraction=0.25, workers=1)
    return root


@pytest.fixture(scope="session")
def layout_phantoms(tmp_path_factory) -> dict[str, Path]:
    """Phantoms in the RAD-ChestCT (``rad``: 4 volumes) and DeepLesion (``dl``: 10 volumes)
    layouts, written once per test session."""
    from rgct.data.synth_layouts import write_layout_dataset

    base = tmp_path_factory.mktemp("layouts")
    rad, dl = base / "rad", base / "dl"
    write_layout_dataset(rad, "rad-chestct", 4, seed=4, shape=PHANTOM_SHAPE, progress=False)
    write_layout_dataset(dl, "deeplesion", 10, seed=1, shape=PHANTOM_SHAPE, progress=False)
    return {"rad": rad, "dl": dl}


@pytest.fixture(scope="session")
def cxr_phantoms(tmp_path_factory) -> dict[str, Path]:
    """Phantom radiographs in the VinDr-CXR (``vindr``) and ChestX-ray14 (``nih``) layouts, 7
    images each from the same phantoms (seed 6), written once per test session."""
    from rgct.data.synth_layouts import write_layout_dataset

    base = tmp_path_factory.mktemp("cxr")
    for key, layout in (("vindr", "vindr-cxr"), ("nih", "chestxray14")):
        write_layout_dataset(base / key, layout, 7, seed=6, shape=PHANTOM_SHAPE, progress=False)
    return {"vindr": base / "vindr", "nih": base / "nih"}


def tiny_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}",
        f"train.output_dir={out}",
        "data.cache_dir=" + str(out.parent / "cache"),
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_checkpoint(phantom_root, tmp_path_factory) -> Path:
    """A tiny-preset checkpoint trained for a few steps on the phantoms."""
    from rgct.config import load_config
    from rgct.train.loop import train

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    cfg = load_config(
        [TINY_MODEL, TINY_TRAIN],
        tiny_overrides(phantom_root, out, "train.max_steps=4", "train.eval_every=0"),
    )
    return train(cfg)


CXR_TINY_MODEL = REPO / "configs" / "model" / "cxr_tiny.yaml"
CXR_TRAIN = REPO / "configs" / "train" / "cxr.yaml"


def cxr_tiny_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    """A seconds-long radiograph run: the tiny 2D preset on CPU, a few small batches."""
    return [
        *tiny_overrides(root, out),
        "train.device=cpu",
        "train.batch_size=2",
        "train.warmup_steps=1",
        "train.log_every=1",
        "train.eval_batches=1",
        *extra,
    ]


@pytest.fixture(scope="session")
def cxr_checkpoint(cxr_phantoms, tmp_path_factory) -> Path:
    """A tiny radiograph checkpoint (``data.modality: cxr``) trained a few steps on the
    VinDr-CXR phantoms."""
    from rgct.config import load_config
    from rgct.train.loop import train

    out = tmp_path_factory.mktemp("cxr_run") / "run"
    cfg = load_config(
        [CXR_TINY_MODEL, CXR_TRAIN],
        cxr_tiny_overrides(cxr_phantoms["vindr"], out, "train.max_steps=3", "train.eval_every=0"),
    )
    return train(cfg)
