"""The compact transform cache: uint16 images (2 bytes/voxel), packed-bit masks (1 bit/voxel)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from rgct.config import DataConfig, EncoderConfig
from rgct.data.transforms import (
    IMAGE_CACHE_TOLERANCE,
    TransformCache,
    build_deterministic_transforms,
    decode_image,
    decode_mask,
    encode_image,
    encode_mask,
)
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
