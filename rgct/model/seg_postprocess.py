"""From segmenter scores to masks and localised findings (numpy / torch, no training code).

:func:`predict_masks` thresholds the region, lobe and anatomy channels, keeps the connected
components anatomy allows (one per lobe, two lungs ...) and resamples to the input volume's own
grid. A class predicted empty stays an all-False mask: callers report it ("lung: no mask
predicted"), they never replace it with a whole-volume mask.

:func:`localize_findings` turns the finding channels into findings: one per connected
component above threshold, with its label, region (a lung-parenchyma label in a lobe is in the
lung, :data:`rgct.constants.PARENCHYMA_LABELS`), lobe(s), side, probability, centre, voxel
box, box in scanner millimetres and voxel mask.

Example::

    probs = torch.sigmoid(segmenter(image))[0]                  # (K, D, H, W)
    masks = predict_masks(probs, from_logits=False, out_shape=volume.shape)
    empty = [name for name, m in masks.items() if not m.any()]
    found = localize_findings(
        finding_probabilities(probs, from_logits=False, out_shape=volume.shape),
        lobe_masks={n: masks[n] for n in LUNG_LOBES},
        region_masks={n: masks[n] for n in REGIONS},
        spacing_mm=volume.spacing,
        affine=volume.affine,
    )
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from rgct.constants import LUNG_LOBES, PARENCHYMA_LABELS, SEGMENT_CLASSES, SEGMENT_FINDINGS

COMPONENTS: dict[str, int] = {
    **{lobe: 1 for lobe in LUNG_LOBES},
    "lung": 2,
    "heart": 1,
    "heart tissue": 1,
    "aorta": 1,
    "esophagus": 1,
    "trachea and bronchie": 1,
    "thyroid": 2,
    "breast": 2,
}
"""Class -> how many connected components anatomy allows (the largest are kept). Classes not
listed (bone, abdomen, mediastinum, pleura) keep every component: ribs are many pieces."""

SIDED_REGIONS = ("lung", "pleura")
"""Regions whose findings carry a side (right / left / both)."""


def _as_tensor(scores: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(scores)
    if t.ndim == 5 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 4 or t.shape[0] != num_classes:
        raise ValueError(
            f"scores must be (K, D, H, W) or (1, K, D, H, W) with K = {num_classes}, "
            f"got {tuple(t.shape)}"
        )
    return t.detach().float().cpu()


def _channel(
    t: torch.Tensor, k: int, from_logits: bool, out_shape: Sequence[int] | None
) -> np.ndarray:
    """Probability map of channel ``k`` (D, H, W) float32, resampled to ``out_shape``."""
    p = torch.sigmoid(t[k]) if from_logits else t[k]
    if out_shape is not None and tuple(int(s) for s in out_shape) != tuple(p.shape):
        size = tuple(int(s) for s in out_shape)
        p = F.interpolate(p[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]
    return p.numpy()


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 26-connected components of a bool (D, H, W) mask, largest first.

    Returns:
        ``(labels int32 (D, H, W) with 0 = background and 1 = the largest component, count)``.
    """
    img = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    cc = sitk.ConnectedComponent(img, True)
    relabel = sitk.RelabelComponentImageFilter()
    labels = relabel.Execute(cc)
    return sitk.GetArrayFromImage(labels).astype(np.int32), int(relabel.GetNumberOfObjects())


def largest_components(mask: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` largest 26-connected components of a bool mask (empty stays empty)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not mask.any():
        return np.zeros(mask.shape, bool)
    labels, count = connected_components(mask)
    return (labels >= 1) & (labels <= min(n, count))


def predict_masks(
    scores: torch.Tensor | np.ndarray,
    classes: Sequence[str] = SEGMENT_CLASSES,
    *,
    from_logits: bool = True,
    threshold: float | Mapping[str, float] = 0.5,
    out_shape: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    min_voxels: int = 1,
) -> dict[str, np.ndarray]:
    """Binary masks of the anatomy channels, on the model grid or resampled to ``out_shape``.

    Args:
        scores: (K, D, H, W) or (1, K, D, H, W) logits (or probabilities).
        classes: the channel names (the segmenter's ``classes``).
        from_logits: apply a sigmoid first.
        threshold: probability threshold, one for all or per class name.
        out_shape: the input volume's own (D, H, W); probabilities are resampled trilinearly
            before thresholding. None keeps the model grid.
        names: classes to return (default: every non-finding class).
        min_voxels: a mask with fewer voxels (after the component filter) counts as empty.

    Returns:
        name -> bool (D, H, W). A class predicted empty is an all-False array, never filled.
    """
    classes = tuple(classes)
    t = _as_tensor(scores, len(classes))
    wanted = (
        tuple(names)
        if names is not None
        else tuple(c for c in classes if c not in SEGMENT_FINDINGS)
    )
    unknown = [n for n in wanted if n not in classes]
    if unknown:
        raise ValueError(f"unknown class names {unknown}; the segmenter has {list(classes)}")
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        thr = threshold[name] if isinstance(threshold, Mapping) else threshold
        mask = _channel(t, classes.index(name), from_logits, out_shape) >= float(thr)
        if name in COMPONENTS:
            mask = largest_components(mask, COMPONENTS[name])
        if int(mask.sum()) < min_voxels:
            mask = np.zeros(mask.shape, bool)
        out[name] = mask
    return out


def finding_probabilities(
    scores: torch.Tensor | np.ndarray,
    classes: Sequence[str] = SEGMENT_CLASSES,
    *,
    from_logits: bool = True,
    out_shape: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """label -> (D, H, W) float32 probability of the finding channels in ``classes``."""
    classes = tuple(classes)
    t = _as_tensor(scores, len(classes))
    return {
        c: _channel(t, k, from_logits, out_shape)
        for k, c in enumerate(classes)
        if c in SEGMENT_FINDINGS
    }


def _voxel_to_mm(affine: np.ndarray, zyx: np.ndarray) -> np.ndarray:
    """(N, 3) voxel (z, y, x) -> (N, 3) scanner mm (x, y, z) through a canonical affine."""
    xyz1 = np.concatenate([zyx[:, ::-1], np.ones((len(zyx), 1))], axis=1)
    return (np.asarray(affine, float) @ xyz1.T).T[:, :3]


def _side(lobes: list[str]) -> str | None:
    sides = {lobe.split()[0] for lobe in lobes}
    if not sides:
        return None
    return sides.pop() if len(sides) == 1 else "both"


def _nearest_side(center: np.ndarray, lobe_masks: Mapping[str, np.ndarray]) -> str | None:
    """right/left: the lung (union of its lobes) whose centroid is nearer along x."""
    cx = {}
    for side in ("right", "left"):
        lobes = [m for n, m in lobe_masks.items() if n.startswith(side) and m.any()]
        if lobes:
            cx[side] = float(np.argwhere(np.logical_or.reduce(lobes))[:, 2].mean())
    if not cx:
        return None
    return min(cx, key=lambda s: abs(cx[s] - float(center[2])))


def localize_findings(
    finding_probs: Mapping[str, np.ndarray],
    lobe_masks: Mapping[str, np.ndarray],
    region_masks: Mapping[str, np.ndarray],
    spacing_mm: Sequence[float],
    thresholds: float | Mapping[str, float] = 0.5,
    *,
    affine: np.ndarray | None = None,
    min_voxels: int | Mapping[str, int] = 2,
    max_per_label: int = 4,
    lobe_share: float = 0.5,
) -> list[dict]:
    """One finding per connected component of each finding channel above its threshold.

    Args:
        finding_probs: label -> (D, H, W) probability.
        lobe_masks: lobe name -> bool (D, H, W) (predicted or true), same grid.
        region_masks: region name -> bool (D, H, W), same grid.
        spacing_mm: voxel size (d, h, w) in mm.
        thresholds: one threshold for all labels or per label.
        affine: canonical NIfTI affine (voxel (x, y, z, 1) -> scanner mm); None puts the
            origin at voxel (0, 0, 0) with axes (x, y, z) = (w, h, d) scaled by the spacing.
        min_voxels: smaller components are noise (one value, or per label).
        max_per_label: keep at most this many components per label (largest first).
        lobe_share: a lobe is named when it holds at least this share of the voxels that the
            lobe holding most of the finding holds.

    Returns:
        Findings, most probable first: ``{"label", "region", "lobes", "side", "probability",
        "center_voxel" [z, y, x], "box_voxel" [z0, y0, x0, z1, y1, x1] (half-open),
        "center_mm" [x, y, z], "box_mm" {"min", "max" [x, y, z], "size_mm" [d, h, w]},
        "num_voxels", "volume_mm3", "mask" bool (D, H, W)}``.
    """
    spacing = np.asarray([float(s) for s in spacing_mm])
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be 3 positive sizes (d, h, w), got {list(spacing_mm)}")
    if affine is None:
        affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    out: list[dict] = []
    for label, prob in finding_probs.items():
        thr = float(thresholds[label] if isinstance(thresholds, Mapping) else thresholds)
        least = int(min_voxels[label] if isinstance(min_voxels, Mapping) else min_voxels)
        mask = np.asarray(prob) >= thr
        if not mask.any():
            continue
        for name, m in (*lobe_masks.items(), *region_masks.items()):
            if m.shape != mask.shape:
                raise ValueError(f"{name}: mask shape {m.shape} != finding map {mask.shape}")
        labels, count = connected_components(mask)
        for i in range(1, min(count, max_per_label) + 1):
            comp = labels == i
            n = int(comp.sum())
            if n < least:
                break
            out.append(
                _describe(
                    label,
                    comp,
                    np.asarray(prob),
                    lobe_masks,
                    region_masks,
                    spacing,
                    affine,
                    lobe_share,
                )
            )
    return sorted(out, key=lambda f: -f["probability"])


def _describe(
    label: str,
    comp: np.ndarray,
    prob: np.ndarray,
    lobe_masks: Mapping[str, np.ndarray],
    region_masks: Mapping[str, np.ndarray],
    spacing: np.ndarray,
    affine: np.ndarray,
    lobe_share: float,
) -> dict:
    idx = np.argwhere(comp)  # (N, 3) z, y, x
    w = prob[comp].astype(float)
    centroid = (idx * w[:, None]).sum(0) / max(w.sum(), 1e-9)
    center = idx[int(np.argmin(((idx - centroid) ** 2).sum(1)))]
    lo, hi = idx.min(0), idx.max(0) + 1
    region_counts = {r: int((comp & m).sum()) for r, m in region_masks.items()}
    region = max(region_counts, key=region_counts.get) if any(region_counts.values()) else None
    lobe_counts = {lb: int((comp & m).sum()) for lb, m in lobe_masks.items()}
    best = max(lobe_counts.values(), default=0)
    lobes = (
        sorted(
            (lb for lb, c in lobe_counts.items() if c >= lobe_share * best),
            key=lambda lb: -lobe_counts[lb],
        )
        if best > 0
        else []
    )
    # a nodule against the chest wall is mostly "pleura" voxels: still a lung finding
    if lobes and label in PARENCHYMA_LABELS and "lung" in region_masks:
        region = "lung"
    side = _side(lobes)
    if side is None and region in SIDED_REGIONS:
        side = _nearest_side(center, lobe_masks)
    corners = (
        np.array(
            [[z, y, x] for z in (lo[0], hi[0]) for y in (lo[1], hi[1]) for x in (lo[2], hi[2])],
            float,
        )
        - 0.5
    )
    mm = _voxel_to_mm(affine, corners)
    return {
        "label": label,
        "region": region,
        "lobes": lobes,
        "side": side,
        "probability": round(float(prob[comp].max()), 4),
        "center_voxel": [int(v) for v in center],
        "box_voxel": [int(v) for v in (*lo, *hi)],
        "center_mm": [
            round(float(v), 2) for v in _voxel_to_mm(affine, center[None].astype(float))[0]
        ],
        "box_mm": {
            "min": [round(float(v), 2) for v in mm.min(0)],
            "max": [round(float(v), 2) for v in mm.max(0)],
            "size_mm": [round(float(v), 2) for v in (hi - lo) * spacing],
        },
        "num_voxels": int(comp.sum()),
        "volume_mm3": round(float(comp.sum() * np.prod(spacing)), 1),
        "mask": comp,
    }
