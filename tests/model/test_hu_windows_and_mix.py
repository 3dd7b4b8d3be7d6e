"""Multi-window image input (one channel per HU window) and oversampled abnormal regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAIN, tiny_overrides

from rgct.config import ConfigError, DataConfig, load_config
from rgct.constants import RADGENOME_TASKS
from rgct.data.dataset import RGCTDataset
from rgct.data.io import Volume, box_mask
from rgct.data.records import build_samples, load_split, mix_samples
from rgct.data.transforms import TransformCache, preprocess

WINDOWS = "data.extra_hu_windows=[[-1000,-500],[0,1000]]"


def _volume() -> Volume:
    arr = np.full((8, 8, 8), -1000.0, np.float32)
    arr[:, :, 4:] = 600.0  # "calcium": clipped by the default window, halfway up the calcium one
    arr[:, 4:, :4] = -750.0  # "emphysema-like" lung, halfway up the lung window
    return Volume(arr, np.eye(4), (1.0, 1.0, 1.0), "mem")


def test_extra_windows_add_one_scaled_channel_each() -> None:
    cfg = DataConfig(input_shape=(8, 8, 8), extra_hu_windows=((-1000, -500), (0, 1000)))
    assert cfg.in_channels == 3 and cfg.hu_windows[1] == (-1000.0, -500.0)
    image, masks = preprocess(_volume(), {"box": box_mask((8, 8, 8), 0, 8, 0, 4, 0, 4)}, cfg)
    assert image.shape == (3, 8, 8, 8) and masks["box"].shape == (1, 8, 8, 8)
    calcium, lung = (0, 0, 7), (0, 7, 0)
    assert float(image[(0, *calcium)]) == 1.0  # default window clips it
    assert float(image[(2, *calcium)]) == pytest.approx(0.6)  # calcium window resolves it
    assert float(image[(1, *lung)]) == pytest.approx(0.5)
    assert float(image[(0, *lung)]) == pytest.approx(250 / 1200)
    # one window only: the single-channel path is unchanged
    single, _ = preprocess(_volume(), None, DataConfig(input_shape=(8, 8, 8)))
    assert torch.equal(single[0], image[0])


@pytest.mark.parametrize("value", ["[[0,0]]", "[[100,-100]]", "[[1,2,3]]", "[5]"])
def test_bad_extra_window_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match="extra_hu_windows"):
        load_config(overrides=[f"data.extra_hu_windows={value}"])


def test_cache_keys_include_the_windows(phantom_root: Path, tmp_path: Path) -> None:
    image = next((phantom_root / "train_preprocessed").rglob("*.nii.gz"))
    one = DataConfig(root=str(phantom_root), input_shape=(8, 16, 16), cache_dir=str(tmp_path))
    three = DataConfig(
        root=str(phantom_root),
        input_shape=(8, 16, 16),
        cache_dir=str(tmp_path),
        extra_hu_windows=((-1000, -500), (0, 1000)),
    )
    assert TransformCache(one, tmp_path).image(image).shape[0] == 1
    cache = TransformCache(three, tmp_path)
    assert cache.image(image).shape[0] == 3 and cache.misses == 1
    assert cache.image(image).shape[0] == 3 and cache.hits == 1


def test_tiny_run_with_windows_trains_saves_and_predicts(phantom_root: Path, tmp_path: Path):
    from rgct.inference import Predictor
    from rgct.model.checkpoint import load_checkpoint
    from rgct.train.loop import train

    cfg = load_config(
        [TINY_MODEL, TINY_TRAIN],
        tiny_overrides(
            phantom_root, tmp_path / "run", "train.max_steps=2", "train.eval_every=0", WINDOWS
        ),
    )
    final = train(cfg)
    model, saved = load_checkpoint(final)
    assert saved.data.in_channels == 3 and model.in_channels == 3
    with pytest.raises(ValueError, match="extra_hu_windows"):
        model.encode_image(torch.zeros(1, 1, *model.input_shape))
    predictor = Predictor(model, saved, torch.device("cpu"))
    volume = np.full((24, 48, 48), -800.0, np.float32)
    probs = predictor.detect(volume, box_mask((24, 48, 48), 4, 20, 8, 40, 8, 24))
    assert len(probs) == 18 and all(0.0 <= p <= 1.0 for p in probs.values())


# -- oversampling regions with findings -----------------------------------------------------------
def _abnormal_share(samples) -> float:
    labelled = [s for s in samples if s.labels is not None]
    return sum(any(s.labels) for s in labelled) / len(labelled)


def test_abnormal_fraction_oversamples_regions_with_findings(phantom_root: Path) -> None:
    by = build_samples(load_split(phantom_root, "train"), list(RADGENOME_TASKS), seed=0)
    weights = {"region_report": 1.0, "presence": 1.0}
    natural = mix_samples(by, weights, 2000, seed=0)
    boosted = mix_samples(by, weights, 2000, seed=0, abnormal_fraction=0.6)
    assert _abnormal_share(natural) < 0.5
    assert 0.55 < _abnormal_share(boosted) < 0.65
    # task weights are kept; the same arguments give the same list
    assert 0.45 < sum(s.task == "presence" for s in boosted) / 2000 < 0.55
    again = mix_samples(by, weights, 2000, seed=0, abnormal_fraction=0.6)
    assert [(s.volume, s.prompt) for s in again] == [(s.volume, s.prompt) for s in boosted]
    # "at least": a fraction below the natural one leaves the natural mix alone
    low = mix_samples(by, weights, 2000, seed=0, abnormal_fraction=0.0)
    assert abs(_abnormal_share(low) - _abnormal_share(natural)) < 0.05
    with pytest.raises(ValueError, match="abnormal_fraction"):
        mix_samples(by, weights, 10, seed=0, abnormal_fraction=1.5)


def test_abnormal_fraction_applies_to_the_training_mix_only(phantom_root: Path, tmp_path: Path):
    cfg = DataConfig(
        root=str(phantom_root),
        input_shape=(8, 16, 16),
        cache_dir=str(tmp_path),
        tasks={"region_report": 1.0},
        abnormal_fraction=0.9,
    )
    train_ds = RGCTDataset(cfg, "train", train=True, num_samples=400, seed=0)
    eval_ds = RGCTDataset(cfg, "train", train=False, num_samples=400, seed=0)
    assert _abnormal_share(train_ds.samples) > 0.85
    assert _abnormal_share(eval_ds.samples) < 0.6
    with pytest.raises(ConfigError, match="abnormal_fraction"):
        load_config(overrides=["data.abnormal_fraction=2"])


def test_a_one_window_encoder_widens_to_more_windows_unchanged(phantom_root, tmp_path, seed):
    """train.init from a 1-channel checkpoint: the new window channels start at zero, so the widened
    encoder gives the same grid on an image whose extra channels hold anything."""
    from rgct.model.builder import build_model
    from rgct.model.checkpoint import load_checkpoint, load_parts
    from rgct.train.loop import train

    one = train(
        load_config(
            [TINY_MODEL, TINY_TRAIN],
            tiny_overrides(
                phantom_root, tmp_path / "one", "train.max_steps=1", "train.eval_every=0"
            ),
        )
    )
    old, _ = load_checkpoint(one)
    wide = build_model(load_config([TINY_MODEL, TINY_TRAIN], [WINDOWS]))
    load_parts(wide, one, ["encoder", "pooler"])
    image = torch.rand(1, 3, *wide.input_shape)
    with torch.no_grad():
        assert torch.allclose(wide.encode_image(image), old.encode_image(image[:, :1]), atol=1e-5)
    # a real shape mismatch still fails with the checkpoint named
    other = build_model(load_config([TINY_MODEL, TINY_TRAIN], ["model.encoder.feature_size=16"]))
    with pytest.raises(ValueError, match="encoder weights do not fit"):
        load_parts(other, one, ["encoder"])
