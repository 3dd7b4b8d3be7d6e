"""Dense finding maps from phantom ground truth, for the encoder's dense auxiliary loss.

A per-region label says *that* a region holds a nodule; it does not say *where*, so a
from-scratch encoder learns small findings slowly from it. Phantoms know where: each finding
in ``ground_truth.jsonl`` has a ``center_voxel`` (z, y, x) and a ``radius_vox`` half-extent in
the volume's (D, H, W) grid. :func:`paint_finding_map` turns them into one float32 volume
whose voxels hold a bitmask of CT-RATE label indices (bit ``l`` set = label ``l`` is there),
so overlapping findings of different labels survive and nearest-neighbour augmentation keeps
the values exact (float32 holds integers below 2**24; there are 18 labels).
:func:`finding_targets` decodes a batch of such maps into per-patch multi-label targets.

Real RadGenome data has no such positions: the dense loss is then simply off
(``data.finding_maps: false``, the default).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rgct.constants import CT_RATE_LABELS

_LABEL_BIT = {name: i for i, name in enumerate(CT_RATE_LABELS)}


def paint_finding_map(record: dict, input_shape: tuple[int, int, int]) -> np.ndarray:
    """(D, H, W) float32 bitmask map of a ground-truth record's findings at ``input_shape``.

    Each finding is painted as the ellipsoid of semi-axes ``radius_vox`` (at least one voxel)
    around ``center_voxel``, scaled from the record's ``shape`` to ``input_shape``.

    Raises:
        ValueError: a finding with an unknown label or without position fields.
    """
    shape = tuple(int(s) for s in record.get("shape") or input_shape)
    if len(shape) != 3:
        raise ValueError(f"volume {record.get('volume')!r}: ground-truth shape {shape} is not 3D")
    out = np.zeros(tuple(input_shape), np.int64)
    scale = np.array(input_shape, float) / np.array(shape, float)
    for f in record.get("findings", []):
        label = f.get("label")
        if label not in _LABEL_BIT:
            raise ValueError(f"volume {record.get('volume')!r}: unknown finding label {label!r}")
        if "center_voxel" not in f or "radius_vox" not in f:
            raise ValueError(
                f"volume {record.get('volume')!r}: finding {label!r} lacks center_voxel/radius_vox"
            )
        center = np.array(f["center_voxel"], float) * scale
        radius = np.maximum(np.array(f["radius_vox"], float) * scale, 1.0)
        lo = np.maximum(np.floor(center - radius), 0).astype(int)
        hi = np.minimum(np.ceil(center + radius) + 1, input_shape).astype(int)
        if np.any(hi <= lo):
            continue  # entirely outside the volume
        axes = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
        q = sum(((ax - c) / r) ** 2 for ax, c, r in zip(axes, center, radius))
        box = out[tuple(slice(a, b) for a, b in zip(lo, hi))]
        box[q <= 1.0] |= 1 << _LABEL_BIT[label]
    return out.astype(np.float32)


def finding_targets(
    maps: torch.Tensor, grid: tuple[int, int, int], num_labels: int = len(CT_RATE_LABELS)
) -> torch.Tensor:
    """(B, 1, D, H, W) bitmask maps -> (B, L, d, h, w) {0, 1}: label present in the patch."""
    if maps.ndim != 5 or maps.shape[1] != 1:
        raise ValueError(f"finding maps must be (B, 1, D, H, W), got {tuple(maps.shape)}")
    bits = maps.round().long()
    out = []
    for label in range(num_labels):
        present = ((bits >> label) & 1).float()
        out.append(F.adaptive_max_pool3d(present, grid))
    return torch.cat(out, dim=1)
