"""The class-balanced per-patch BCE of the dense finding heads (one home for the formula).

A 10 mm nodule covers one or two of ~2000 patches of a CT volume and a small radiograph finding
a few dozen of 16,384 film pixels: a plain mean over patches lets the large findings (effusions,
cardiomegaly) and the empty background drown it. Per class, :func:`balanced_bce` averages the
loss over positive patches, plus over negative ones, plus over each sample's hardest
``1 / hard_fraction`` of negatives (vessels and rib crossings that look like findings: what
decides whether a region's strongest patch is a false alarm), then averages over classes.

Used by the CT model's dense head (:meth:`rgct.model.rgct_model.RGCTModel.dense_loss`) and the
segmenter's ``loss: balanced`` (:func:`rgct.train.segmenter.segmentation_loss`: the radiograph
finding detector, whose channels have box targets).

Example::

    loss = balanced_bce(logits, target)            # (B, K, ...) logits and {0, 1} targets
    loss = balanced_bce(logits, target, valid)     # (B, K) bool: channels annotated per sample
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HARD_FRACTION = 64
"""Each sample's hardest 1/64 of negative patches also count as their own term."""


def balanced_bce(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    hard_fraction: int = HARD_FRACTION,
) -> torch.Tensor:
    """Scalar class-balanced BCE of (B, K, ...) logits against {0, 1} targets of that shape.

    Args:
        valid: (B, K) which channels are annotated per sample (None: all); a class with no
            annotated sample in the batch adds nothing and is not counted in the mean.
        hard_fraction: the hardest ``ceil(N / hard_fraction)`` negatives of each sample's
            channel (N patches) form the third term.
    """
    if logits.shape != target.shape or logits.ndim < 3:
        raise ValueError(
            f"balanced_bce needs (B, K, ...) logits and targets of one shape, got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    logits, target = logits.float(), target.float()
    batch, classes = logits.shape[:2]
    w = torch.ones(batch, classes, device=logits.device) if valid is None else valid.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2)
    target, w3 = target.flatten(2), w[..., None].to(bce)  # (B, K, N), (B, K, 1)
    pos = (bce * target * w3).sum((0, 2)) / (target * w3).sum((0, 2)).clamp(min=1.0)
    neg_mask = (1 - target) * w3
    neg = (bce * neg_mask).sum((0, 2)) / neg_mask.sum((0, 2)).clamp(min=1.0)
    k = max(1, math.ceil(bce.shape[-1] / hard_fraction))
    hardest = (bce * (1 - target)).topk(k, dim=-1).values.mean(-1)  # (B, K)
    hard = (hardest * w).sum(0) / w.sum(0).clamp(min=1.0)
    counted = (w.sum(0) > 0).float()
    return ((pos + neg + hard) * counted).sum() / counted.sum().clamp(min=1.0)
