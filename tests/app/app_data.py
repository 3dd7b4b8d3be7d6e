"""Volumes and masks written for the app tests: a random phantom and chest-like examples."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (12, 24, 20)  # (D, H, W)
SPACING = (2.0, 0.8, 0.8)  # (d, h, w) mm

CHEST_SHAPE = (40, 96, 96)
CHEST_SPACING = (2.5, 3.0, 3.0)
NODULE_CENTRE = (30, 50, 68)
"""(z, y, x) of the nodule in ``chest_a``: upper third, x > W/2 (patient's right): right upper
lobe."""


def save_nifti(path: Path, array: np.ndarray, spacing=SPACING) -> Path:
    """Write a (D, H, W) array so that rgct.data.io reads it back as (D, H, W)."""
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine), str(path))
    return path


def phantom() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Random HU (not a chest) with two box regions and an empty one."""
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 400, size=SHAPE).astype(np.int16)
    lung = np.zeros(SHAPE, np.uint8)
    lung[2:10, 4:12, 3:9] = 1  # 8*8*6 = 384
    heart = np.zeros(SHAPE, np.uint8)
    heart[4:8, 12:20, 8:16] = 1  # 4*8*8 = 256
    return vol, {"lung": lung, "heart": heart, "breast": np.zeros(SHAPE, np.uint8)}


def chest(nodule: tuple[int, int, int] | None, lung_scale: float = 1.0):
    """A chest-like volume (body, two lungs, heart, optional 3-voxel-radius nodule) and its
    dataset masks (the lung mask holds the nodule, as RadGenome's lung masks do)."""
    d, h, w = CHEST_SHAPE
    zz, yy, xx = np.mgrid[:d, :h, :w]
    body = ((yy - 48) / 40) ** 2 + ((xx - 48) / 44) ** 2 < 1
    ry, rx = 24 * lung_scale, 13 * lung_scale
    left = ((yy - 46) / ry) ** 2 + ((xx - 27) / rx) ** 2 < 1
    right = ((yy - 46) / ry) ** 2 + ((xx - 69) / rx) ** 2 < 1
    heart = ((yy - 58) / 12) ** 2 + ((xx - 48) / 10) ** 2 + ((zz - 14) / 10) ** 2 < 1
    lung = (left | right) & ~heart & (zz >= 2) & (zz < d - 2)
    vol = np.where(body, 40, -1000).astype(np.int16)
    vol[lung] = -820
    if nodule is not None:
        c = np.asarray(nodule)
        ball = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= 9
        vol[ball & lung] = 30
    return vol, {"lung": lung, "heart": heart & body}


def write_chest_examples(root: Path) -> Path:
    """Two examples: ``chest_a`` (a nodule at NODULE_CENTRE) and ``chest_b`` (no nodule,
    smaller lungs)."""
    for name, nodule, scale in (("chest_a", NODULE_CENTRE, 1.0), ("chest_b", None, 0.8)):
        vol, masks = chest(nodule, scale)
        folder = root / name
        seg = folder / f"seg_{name}_1"
        seg.mkdir(parents=True, exist_ok=True)
        save_nifti(folder / f"{name}_1.nii.gz", vol, CHEST_SPACING)
        for region, m in masks.items():
            save_nifti(seg / f"{region}.nii.gz", m.astype(np.uint8), CHEST_SPACING)
    return root
