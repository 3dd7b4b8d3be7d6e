"""Synthetic chest-CT phantoms: a HU volume, region and anatomy masks, and findings.

A phantom is a random normal chest (:mod:`rgct.data.phantom_anatomy`) with 0-4 findings
painted in (:mod:`rgct.data.phantom_findings`), mild Gaussian noise, and binary masks derived
from the same label map, so masks, intensities and ground truth always agree.

Example::

    rng = np.random.default_rng([seed, index])
    ph = build_phantom((64, 128, 128), rng)
    ph.volume.shape, ph.volume.dtype      # (64, 128, 128) int16, [z, y, x], RAS+
    [f.kind for f in ph.findings]         # e.g. ['pleural_effusion', 'nodule']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rgct.constants import REGIONS
from rgct.data.phantom_anatomy import (
    ANATOMY_LABELS,
    FOV_MM,
    LABEL_ID,
    LABEL_NAMES,
    LABEL_REGION,
    LUNG_LABELS,
    Grid,
    build_anatomy,
)
from rgct.data.phantom_findings import Finding, add_findings, plan_findings

DEFAULT_SHAPE = (64, 128, 128)
"""Default volume shape (D, H, W) = (z, y, x): spacing (5.0, 2.5, 2.5) mm."""
MIN_SIZE = 16
"""Smallest allowed size per axis."""
NOISE_HU = 10.0
"""Standard deviation of the Gaussian image noise (HU)."""
HU_RANGE = (-1024.0, 3071.0)


def spacing_for_shape(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """Voxel spacing (dz, dy, dx) in mm so that the chest field of view fits ``shape``."""
    return tuple(float(f) / int(n) for f, n in zip(FOV_MM, shape))


def affine_for(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Diagonal RAS+ NIfTI affine for an (X, Y, Z) array of a (D, H, W) volume, centred on 0."""
    d, h, w = shape
    dz, dy, dx = spacing
    aff = np.diag([dx, dy, dz, 1.0])
    aff[:3, 3] = [-(w - 1) / 2.0 * dx, -(h - 1) / 2.0 * dy, -(d - 1) / 2.0 * dz]
    return aff


@dataclass
class Phantom:
    """One synthetic volume with its masks and findings.

    Attributes:
        volume: (D, H, W) int16 Hounsfield units, ``volume[z, y, x]``.
        spacing_mm: (dz, dy, dx).
        affine: 4x4 RAS+ affine of the NIfTI (X, Y, Z) array ``volume.transpose(2, 1, 0)``.
        label: (D, H, W) uint8 label map (ids of :data:`LABEL_NAMES`).
        region_masks: region -> (D, H, W) uint8 0/1; 'breast' only when the phantom has one.
        anatomy_masks: anatomy name -> (D, H, W) uint8 0/1 (non-empty ones only).
        findings: the findings placed, in painting order.
    """

    volume: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    label: np.ndarray
    region_masks: dict[str, np.ndarray]
    anatomy_masks: dict[str, np.ndarray]
    findings: list[Finding]


def _lut(names) -> np.ndarray:
    lut = np.zeros(256, bool)
    lut[[LABEL_ID[n] for n in names]] = True
    return lut


def _dilate(mask: np.ndarray) -> np.ndarray:
    """One-voxel 6-neighbourhood dilation."""
    out = mask.copy()
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        out[tuple(lo)] |= mask[tuple(hi)]
        out[tuple(hi)] |= mask[tuple(lo)]
    return out


def build_masks(label: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Region and anatomy masks (uint8 0/1) from a label map.

    Pleura is a one-voxel shell around the lungs plus any pleural effusion.
    """
    regions: dict[str, np.ndarray] = {}
    for region in REGIONS:
        names = [n for n in LABEL_NAMES if LABEL_REGION[n] == region]
        mask = _lut(names)[label]
        if region == "pleura":
            lung = _lut([LABEL_NAMES[i] for i in LUNG_LABELS])[label]
            inside = ~_lut(["air", "table"])[label]
            mask |= _dilate(lung) & ~lung & inside
        if region == "breast" and not mask.any():
            continue
        regions[region] = mask.astype(np.uint8)
    anatomy: dict[str, np.ndarray] = {}
    for name, names in ANATOMY_LABELS.items():
        mask = _lut(names)[label]
        if mask.any():
            anatomy[name] = mask.astype(np.uint8)
    return regions, anatomy


def build_phantom(
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    spacing: tuple[float, float, float] | None = None,
) -> Phantom:
    """Draw one phantom of ``shape`` (D, H, W) from ``rng`` (same rng state, same phantom).

    ``spacing`` (dz, dy, dx) mm sets the voxel size (the field of view is shape x spacing, the
    anatomy stays centred); None fits :data:`FOV_MM` into ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < MIN_SIZE:
        raise ValueError(f"phantom shape must be 3 sizes >= {MIN_SIZE}, got {shape}")
    if spacing is None:
        spacing = spacing_for_shape(shape)
    elif len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"phantom spacing must be 3 positive mm sizes, got {spacing}")
    else:
        spacing = tuple(float(s) for s in spacing)
    grid = Grid(shape, spacing)
    plan = plan_findings(rng)
    enlarged = any(p["kind"] == "cardiomegaly" for p in plan)
    heart_scale = float(rng.uniform(1.2, 1.3) if enlarged else rng.uniform(0.85, 0.97))
    anat = build_anatomy(grid, rng, heart_scale)
    findings = add_findings(anat, plan, rng)
    regions, anatomy = build_masks(anat.label)
    hu = anat.hu
    hu += NOISE_HU * rng.standard_normal(shape, dtype=np.float32)
    volume = np.clip(np.rint(hu), *HU_RANGE).astype(np.int16)
    return Phantom(
        volume=volume,
        spacing_mm=spacing,
        affine=affine_for(shape, spacing),
        label=anat.label,
        region_masks=regions,
        anatomy_masks=anatomy,
        findings=findings,
    )
