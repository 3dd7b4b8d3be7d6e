"""Real-size CT in: body crop, resampling to a spacing, pad/crop, masks following (opt-in)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, Resized

from rgct.config import DataConfig
from rgct.data.io import DataError, Volume
from rgct.data.transforms import (
    HUWindowsd,
    LoadVolumed,
    TransformCache,
    build_deterministic_transforms,
    preprocess,
)

SHAPE = (60, 128, 128)
SPACING = (2.5, 0.7, 0.7)  # (D, H, W) mm


def _chest(shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """An elliptic body off-centre in a wide field of view, a table below it, and a box mask."""
    d, h, w = shape
    hu = np.full(shape, -1000.0, np.float32)
    _, yy, xx = np.mgrid[:d, :h, :w]
    hu[((yy - 60) / 36) ** 2 + ((xx - 70) / 44) ** 2 < 1] = 40.0
    hu[:, 104:106, 8:120] = 300.0  # the table: thin, removed by the body crop
    mask = np.zeros(shape, bool)
    mask[20:40, 50:70, 60:80] = True  # 20 x 20 x 20 voxels: 50 x 14 x 14 mm
    return hu, mask


def _nifti(path: Path, hu: np.ndarray, spacing=SPACING, dtype=np.int16) -> Path:
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0).astype(dtype), affine), path)
    return path


def test_the_default_pipeline_is_todays_resize(tmp_path) -> None:
    hu, _ = _chest()
    path = _nifti(tmp_path / "ct.nii.gz", hu)
    cfg = DataConfig(input_shape=(16, 32, 32))
    det = build_deterministic_transforms(cfg)
    names = [type(t).__name__ for t in det.transforms]
    assert names == ["LoadVolumed", "EnsureChannelFirstd", "HUWindowsd", "Resized", "EnsureTyped"]
    keys = ("image", "mask")
    today = Compose(
        [
            LoadVolumed(keys),
            EnsureChannelFirstd(keys, channel_dim="no_channel", allow_missing_keys=True),
            HUWindowsd("image", cfg.hu_windows, allow_missing_keys=True),
            Resized(keys, (16, 32, 32), mode=("area", "nearest"), allow_missing_keys=True),
            EnsureTyped(keys, data_type="tensor", track_meta=False, allow_missing_keys=True),
        ]
    )
    assert torch.equal(det({"image": str(path)})["image"], today({"image": str(path)})["image"])


def test_crop_resample_pad_keeps_millimetres_and_masks_on_their_anatomy() -> None:
    hu, mask = _chest()
    vol = Volume(hu, np.diag([0.7, 0.7, 2.5, 1.0]), SPACING, "mem")
    cfg = DataConfig(
        input_shape=(32, 64, 96), spacing=(5.0, 1.4, 1.4), crop_foreground=True, fit="pad_crop"
    )
    image, masks = preprocess(vol, {"box": mask}, cfg)
    assert image.shape == (1, 32, 64, 96) and masks["box"].shape == (1, 32, 64, 96)
    m = masks["box"][0]
    assert int(m.sum()) == 10 * 10 * 10  # 50 x 14 x 14 mm at 5 x 1.4 x 1.4 mm
    # the body (74 x 90 voxels of 0.7 mm -> 37 x 45 of 1.4 mm) sits centred on the grid,
    # the table is gone, and the rest is air (0 after the window)
    body = image[0, 16] > 0.5
    rows, cols = torch.nonzero(body.any(1)).flatten(), torch.nonzero(body.any(0)).flatten()
    assert 35 <= len(rows) <= 39 and 43 <= len(cols) <= 47
    assert abs(float(rows.float().mean()) - 31.5) < 2 and abs(float(cols.float().mean()) - 47.5) < 2
    # the mask keeps its place relative to the body: 10 voxels of 1.4 mm left of the centre
    mrows = torch.nonzero(m.any(0).any(1)).flatten().float().mean()
    assert abs(float(mrows) - (rows.float().mean() + (59.5 - 60) / 2)) < 1.5
    # resize instead of pad_crop: the same crop and resampling, then stretched to the grid
    stretched, _ = preprocess(vol, None, DataConfig(input_shape=(16, 32, 32), crop_foreground=True))
    assert stretched.shape == (1, 16, 32, 32)
    assert float((stretched[0, 8, 16] > 0.5).float().mean()) > 0.85  # the body spans the width
    whole, _ = preprocess(vol, None, DataConfig(input_shape=(16, 32, 32)))
    assert float((whole[0, 8, 16] > 0.5).float().mean()) < 0.75  # today: air on both sides


def test_bad_volumes_and_settings_name_the_problem(tmp_path) -> None:
    cfg = DataConfig(input_shape=(8, 16, 16), spacing=(2.0, 2.0, 2.0), crop_foreground=True)
    air = Volume(np.full((8, 16, 16), -1000.0, np.float32), np.eye(4), (1.0, 1.0, 1.0), "air.nii")
    with pytest.raises(DataError, match=r"air\.nii: no body found"):
        preprocess(air, None, cfg)
    hu, _ = _chest()
    for bad in ((0.0, 0.7, 0.7), (float("nan"), 0.7, 0.7)):
        vol = Volume(hu, np.eye(4), bad, "blank.nii.gz")
        with pytest.raises(
            DataError, match=r"blank\.nii\.gz: voxel spacing .* zero, negative or NaN"
        ):
            preprocess(vol, None, cfg)
    with pytest.raises(ValueError, match="data.fit"):
        build_deterministic_transforms(DataConfig(fit="stretch"))
    with pytest.raises(ValueError, match="data.spacing"):
        build_deterministic_transforms(DataConfig(spacing=(1.0, 0.0, 1.0)))
    with pytest.raises(DataError, match="data.metadata_csv=.*absent.csv: file not found"):
        TransformCache(DataConfig(metadata_csv=str(tmp_path / "absent.csv")), tmp_path / "c")


def test_cache_gives_masks_their_images_geometry_and_reads_metadata_spacing(tmp_path) -> None:
    hu, mask = _chest()
    image_path = _nifti(tmp_path / "train_1_a_1.nii.gz", hu, spacing=(1.0, 1.0, 1.0))
    image_path.unlink()
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0).astype(np.int16), np.eye(4)), image_path)
    mask_path = tmp_path / "box.nii.gz"
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0).astype(np.uint8), np.eye(4)), mask_path)
    meta = tmp_path / "metadata.csv"
    meta.write_text('VolumeName,XYSpacing,ZSpacing\ntrain_1_a_1.nii.gz,"[0.7, 0.7]",2.5\n')
    cfg = DataConfig(
        input_shape=(32, 64, 96),
        spacing=(5.0, 1.4, 1.4),
        crop_foreground=True,
        fit="pad_crop",
        metadata_csv=str(meta),
    )
    cache = TransformCache(cfg, tmp_path / "cache")
    mask_first = cache.mask(mask_path, image_path)  # geometry computed from the image first
    image = cache.image(image_path)
    vol = Volume(hu, np.diag([0.7, 0.7, 2.5, 1.0]), SPACING, "mem")
    ref_image, ref = preprocess(vol, {"box": mask}, cfg)
    assert torch.equal(mask_first, ref["box"]) and int(mask_first.sum()) == 1000
    assert (image - ref_image).abs().max() < 1e-4
    assert list((tmp_path / "cache/geometry").rglob("*.json"))
