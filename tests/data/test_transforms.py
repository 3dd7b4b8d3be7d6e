"""MONAI pipeline: shapes, mask alignment under augmentation, the disk cache, the dataset."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from rgct.config import DataConfig
from rgct.data.dataset import RGCTDataset, collate
from rgct.data.io import DataError, Volume, box_mask, load_volume
from rgct.data.transforms import (
    IMAGE_CACHE_TOLERANCE,
    TransformCache,
    build_deterministic_transforms,
    build_random_transforms,
    preprocess,
)

MINI = Path(__file__).parents[1] / "fixtures" / "mini_radgenome"
VOL = MINI / "train_preprocessed/train_1/train_1a/train_1_a_1.nii.gz"
LUNG = MINI / "train_region_mask/seg_train_1_a_1/lung.nii.gz"
SHAPE = (16, 24, 24)


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    dst = tmp_path / "mini"
    shutil.copytree(MINI, dst)
    return dst


def _cfg(root: Path | None, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(
        root=str(root) if root else None, input_shape=SHAPE, cache_dir=str(tmp_path / "cache"), **kw
    )


def test_deterministic_shapes_and_range(tmp_path: Path) -> None:
    det = build_deterministic_transforms(_cfg(None, tmp_path))
    out = det({"image": str(VOL), "mask": str(LUNG)})
    assert out["image"].shape == (1, *SHAPE) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (1, *SHAPE)
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    assert set(out["mask"].unique().tolist()) == {0.0, 1.0}
    assert not isinstance(out["image"], type(None)) and type(out["image"]) is torch.Tensor


def test_hu_window_scaling(tmp_path: Path) -> None:
    arr = np.full((8, 8, 8), -2000.0, np.float32)
    arr[:, :, 4:] = 200.0
    arr[:, 4:, :4] = -400.0
    vol = Volume(arr, np.eye(4), (1.0, 1.0, 1.0), "mem")
    cfg = DataConfig(input_shape=(8, 8, 8))
    image, masks = preprocess(vol, {"box": box_mask((8, 8, 8), 0, 8, 0, 4, 0, 4)}, cfg)
    assert image.shape == (1, 8, 8, 8)
    assert float(image[0, 0, 0, 0]) == 0.0 and float(image[0, 0, 0, 7]) == 1.0
    assert float(image[0, 0, 7, 0]) == pytest.approx(0.5)
    assert masks["box"].shape == (1, 8, 8, 8) and masks["box"].sum() == 8 * 4 * 4


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_augmentation_keeps_mask_aligned(flip_prob: float) -> None:
    shape = (24, 32, 32)
    image = torch.zeros(1, *shape)
    mask = torch.zeros(1, *shape)
    image[0, 6:14, 10:20, 16:26] = 1.0  # bright cube, off-centre so flips/shifts move it
    mask[0, 6:14, 10:20, 16:26] = 1.0
    cfg = DataConfig(input_shape=shape)
    rand = build_random_transforms(cfg, flip_prob=flip_prob)
    moved = 0
    for seed in range(6):
        rand.set_random_state(seed=seed)
        out = rand({"image": image.clone(), "mask": mask.clone()})
        img, m = out["image"][0], out["mask"][0]
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        bright = img > 0.6
        inside = (bright & (m > 0)).sum() / bright.sum()
        assert inside > 0.9, f"seed {seed}: only {inside:.2f} of bright voxels under the mask"
        assert (img[m > 0] > 0.3).float().mean() > 0.9
        moved += int(not torch.equal(m, mask[0]))
    assert moved >= 3  # the augmentation really did something


def test_cached_equals_cold_and_skips_nifti(tmp_path: Path, monkeypatch) -> None:
    cfg = _cfg(None, tmp_path)
    cold = build_deterministic_transforms(cfg)({"image": str(VOL), "mask": str(LUNG)})
    cache = TransformCache(cfg, tmp_path / "cache")
    first = cache.image(VOL), cache.mask(LUNG, VOL)
    assert cache.misses == 2 and cache.hits == 0
    torch.testing.assert_close(first[0], cold["image"])
    torch.testing.assert_close(first[1], cold["mask"])

    opened = []
    real_load = nib.load

    def counting_load(*a, **k):
        opened.append(a[0])
        return real_load(*a, **k)

    monkeypatch.setattr(nib, "load", counting_load)
    second = TransformCache(cfg, tmp_path / "cache")
    again = second.image(VOL), second.mask(LUNG, VOL)
    assert opened == [] and second.hits == 2 and second.misses == 0
    torch.testing.assert_close(again[0], first[0], rtol=0, atol=0)  # warm reads = cold reads
    # uint16 cache: within IMAGE_CACHE_TOLERANCE of the float32 pipeline
    torch.testing.assert_close(again[0], cold["image"], rtol=0, atol=IMAGE_CACHE_TOLERANCE)
    torch.testing.assert_close(again[1], cold["mask"], rtol=0, atol=0)
    # another input shape is another cache entry
    other = TransformCache(DataConfig(input_shape=(8, 8, 8)), tmp_path / "cache")
    assert other.image(VOL).shape == (1, 8, 8, 8) and len(opened) == 1


def test_preprocess_matches_training_path(tmp_path: Path) -> None:
    cfg = _cfg(None, tmp_path)
    vol = load_volume(VOL)
    lung = np.asarray(nib.as_closest_canonical(nib.load(LUNG)).dataobj).transpose(2, 1, 0) > 0
    image, masks = preprocess(vol, {"lung": lung}, cfg)
    cache = TransformCache(cfg, tmp_path / "cache")
    torch.testing.assert_close(image, cache.image(VOL))
    torch.testing.assert_close(masks["lung"], cache.mask(LUNG, VOL))


def test_dataset_items_and_collate(mini: Path, tmp_path: Path) -> None:
    cfg = _cfg(mini, tmp_path, augment=False)
    ds = RGCTDataset(cfg, "train", train=True, tasks=["region_report", "location", "presence"])
    assert len(ds) == 6 + 2 + 3
    item = ds[0]
    assert item["image"].shape == (1, *SHAPE) and item["mask"].shape == (1, *SHAPE)
    assert item["labels"].shape == (18,) and item["has_labels"] is True
    loc = next(ds[i] for i in range(len(ds)) if ds.samples[i].task == "location")
    assert torch.all(loc["mask"] == 1) and loc["region"] == "whole scan" and loc["anatomy"] is None
    batch = collate([ds[0], None, ds[1]])
    assert batch["image"].shape == (2, 1, *SHAPE) and batch["labels"].shape == (2, 18)
    assert batch["has_labels"].dtype == torch.bool and len(batch["prompt"]) == 2
    assert collate([None]) == {}
    # cached items are fast
    t = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    assert (time.perf_counter() - t) / len(ds) < 0.05


def test_dataset_mixture_and_augmented_determinism(mini: Path, tmp_path: Path) -> None:
    cfg = _cfg(mini, tmp_path)
    ds = RGCTDataset(cfg, "train", train=True, num_samples=20, seed=1)
    assert len(ds) == 20
    a, b = ds[3], ds[3]
    torch.testing.assert_close(a["image"], b["image"])
    again = RGCTDataset(cfg, "train", train=True, num_samples=20, seed=1)
    assert all(torch.equal(ds[i]["image"], again[i]["image"]) for i in range(3))  # same draw
    other = RGCTDataset(cfg, "train", train=True, num_samples=20, seed=2)
    assert any(not torch.equal(ds[i]["image"], other[i]["image"]) for i in range(8))
    evald = RGCTDataset(cfg, "train", train=False, num_samples=20, seed=1)
    assert [s.prompt for s in evald.samples] == [s.prompt for s in ds.samples]


def test_bad_sample_raises_or_is_skipped(mini: Path, tmp_path: Path) -> None:
    bad = mini / "train_region_mask/seg_train_2_a_1/lung.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 8), np.uint8), np.diag([1.0, 1.0, 2.0, 1.0])), bad)
    tasks = ["region_report"]
    ds = RGCTDataset(_cfg(mini, tmp_path, augment=False), "train", train=False, tasks=tasks)
    idx = next(i for i, s in enumerate(ds.samples) if s.mask_path == str(bad))
    with pytest.raises(DataError) as e:
        ds[idx]
    assert (
        "train_2_a_1" in str(e.value) and "lung.nii.gz" in str(e.value) and "empty" in str(e.value)
    )
    cfg = _cfg(mini, tmp_path, augment=False, skip_bad_samples=True)
    skip = RGCTDataset(cfg, "train", train=False, tasks=tasks)
    assert skip[idx] is None and skip.num_skipped == 1
    assert skip[idx - 1] is not None
    batch = collate([skip[i] for i in range(len(skip))])
    assert batch["image"].shape[0] == len(skip) - 1
