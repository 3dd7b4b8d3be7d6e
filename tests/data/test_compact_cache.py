"""The compact transform cache: uint16 images (2 bytes/voxel), packed-bit masks (1 bit/voxel);
compact items and batches (uint16 images, uint8 masks) expanded by expand_batch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rgct.config import DataConfig, EncoderConfig
from rgct.data.compact import (
    IMAGE_CACHE_TOLERANCE,
    decode_image,
    decode_mask,
    encode_image,
    encode_mask,
    expand_batch,
    expand_image,
    expand_mask,
)
from rgct.data.dataset import RGCTDataset, collate
from rgct.data.transforms import TransformCache, build_deterministic_transforms
from rgct.model.encoder import build_encoder

MINI = Path(__file__).parents[1] / "fixtures" / "mini_radgenome"
VOL = MINI / "train_preprocessed/train_1/train_1a/train_1_a_1.nii.gz"
LUNG = MINI / "train_region_mask/seg_train_1_a_1/lung.nii.gz"
SHAPE = (16, 32, 32)
WINDOWS = ((-1000.0, -500.0), (-160.0, 240.0))


def test_image_and_mask_encodings_round_trip() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((3, 5, 7, 9), dtype=np.float32)
    image[0, 0, 0, :2] = [0.0, 1.0]
    stored = encode_image(image)
    assert stored.dtype == np.uint16 and stored.nbytes == 2 * image.size
    err = np.abs(decode_image(stored).numpy() - image).max()
    assert err <= IMAGE_CACHE_TOLERANCE and err > 0.4 / 65535  # really quantised
    assert decode_image(stored)[0, 0, 0, :2].tolist() == [0.0, 1.0]
    mask = rng.random((1, 5, 7, 9)) > 0.5  # 315 voxels: not a multiple of 8
    packed = encode_mask(mask.astype(np.float32))
    assert packed["bits"].nbytes == 40
    assert torch.equal(decode_mask(packed), torch.from_numpy(mask.astype(np.float32)))


def test_cache_files_hold_two_bytes_per_image_voxel_and_one_bit_per_mask_voxel(tmp_path) -> None:
    cfg = DataConfig(input_shape=SHAPE, extra_hu_windows=WINDOWS)
    cache = TransformCache(cfg, tmp_path / "cache")
    cold = build_deterministic_transforms(cfg)({"image": str(VOL), "mask": str(LUNG)})
    image, mask = cache.image(VOL), cache.mask(LUNG, VOL)
    assert image.dtype == torch.float32 and image.shape == (3, *SHAPE)
    voxels = int(np.prod(SHAPE))
    (image_file,) = (tmp_path / "cache/image").rglob("*.npy")
    (mask_file,) = (tmp_path / "cache/mask").rglob("*.npz")
    assert image_file.stat().st_size <= 2 * 3 * voxels + 256  # .npy header
    assert mask_file.stat().st_size <= voxels / 8 + 1024  # .npz headers
    assert (image - cold["image"]).abs().max() <= IMAGE_CACHE_TOLERANCE
    assert torch.equal(mask, cold["mask"])
    warm = TransformCache(cfg, tmp_path / "cache")
    assert torch.equal(warm.image(VOL), image) and warm.hits == 1  # cold and warm read the same


def test_model_features_on_cached_inputs_match_float32(tmp_path) -> None:
    cfg = DataConfig(input_shape=SHAPE)
    cold = build_deterministic_transforms(cfg)({"image": str(VOL)})["image"]
    cached = TransformCache(cfg, tmp_path / "cache").image(VOL)
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(feature_size=32, patch_size=(4, 8, 8), depth=3), SHAPE)
    with torch.no_grad():
        a, b = enc(cold[None]), enc(cached[None])
    # the encoder is Lipschitz in its input: a 7.7e-6 input error stays ~1e-5 of its output
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_a_stale_or_foreign_cache_file_is_recomputed(tmp_path, caplog) -> None:
    cfg = DataConfig(input_shape=SHAPE)
    cache = TransformCache(cfg, tmp_path / "cache")
    first = cache.image(VOL)
    (path,) = (tmp_path / "cache/image").rglob("*.npy")
    np.save(path, first.numpy())  # float32 where uint16 belongs (an old encoding)
    again = TransformCache(cfg, tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        assert torch.equal(again.image(VOL), first)
    assert again.misses == 1 and "uint16" in caplog.text and str(path) in caplog.text
    assert np.load(path).dtype == np.uint16


def _dataset(tmp_path, **kw) -> RGCTDataset:
    cfg = DataConfig(root=str(MINI), input_shape=SHAPE, cache_dir=str(tmp_path / "cache"), **kw)
    return RGCTDataset(cfg, "train", train=True, num_samples=12, seed=3)


def test_items_and_batches_stay_compact_until_expand_batch(tmp_path) -> None:
    ds = _dataset(tmp_path, augment=False, extra_hu_windows=WINDOWS)
    items = [ds[i] for i in range(len(ds))]
    assert all(
        it["image"].dtype == torch.uint16 and it["image"].shape == (3, *SHAPE) for it in items
    )
    assert all(it["mask"].dtype == torch.uint8 and it["mask"].shape == (1, *SHAPE) for it in items)
    batch = collate(items)
    assert batch["image"].dtype == torch.uint16 and batch["mask"].dtype == torch.uint8
    out = expand_batch(batch, "cpu")
    assert out["image"].dtype == out["mask"].dtype == torch.float32
    assert out["prompt"] == batch["prompt"] and batch["image"].dtype == torch.uint16  # a new dict
    # expanded values are exactly the cache's float32 tensors (the ones the model read before)
    for row, i in enumerate(range(len(ds))):
        s = ds.samples[i]
        assert torch.equal(out["image"][row], ds.cache.image(s.image_path))
        want = (
            torch.ones(1, *SHAPE)
            if s.mask_path is None
            else ds.cache.mask(s.mask_path, s.image_path)
        )
        assert torch.equal(out["mask"][row], want)
    # the same float32 division as the numpy decoding of the cache, bit for bit
    stored = batch["image"][0].numpy()
    assert np.array_equal(decode_image(stored).numpy(), stored.astype(np.float32) / 65535)


def test_a_dataloader_with_workers_moves_compact_batches(tmp_path) -> None:
    ds = _dataset(tmp_path, augment=False)
    serial = expand_batch(collate([ds[i] for i in range(4)]))
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=collate)
    first = next(iter(loader))
    assert first["image"].dtype == torch.uint16 and first["mask"].dtype == torch.uint8
    parallel = expand_batch(first)
    assert torch.equal(parallel["image"], serial["image"])
    assert torch.equal(parallel["mask"], serial["mask"])


def test_augmented_items_are_compacted_within_the_cache_tolerance(tmp_path) -> None:
    ds = _dataset(tmp_path, augment=True)
    for i in range(4):
        item = ds[i]
        assert item["image"].dtype == torch.uint16 and item["mask"].dtype == torch.uint8
        s = ds.samples[i]
        image = ds.cache.image(s.image_path)
        mask = (
            torch.ones(1, *SHAPE)
            if s.mask_path is None
            else ds.cache.mask(s.mask_path, s.image_path)
        )
        seed = int(np.random.SeedSequence([ds.seed, i]).generate_state(1)[0])
        ds.random.set_random_state(seed=seed)
        want = ds.random({"image": image, "mask": mask})  # the float32 augmentation
        got = expand_batch(item)
        assert (got["image"] - want["image"]).abs().max() <= IMAGE_CACHE_TOLERANCE
        assert torch.equal(got["mask"], want["mask"])


def test_expand_rejects_other_dtypes() -> None:
    assert expand_image(torch.zeros(2, dtype=torch.float64)).dtype == torch.float32
    with pytest.raises(TypeError, match="int32"):
        expand_image(torch.zeros(2, dtype=torch.int32))
    with pytest.raises(TypeError, match="int64"):
        expand_mask(torch.zeros(2, dtype=torch.int64))
