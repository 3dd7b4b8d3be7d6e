"""Fit the region classifier's heads on cached region features (``model.region_stats``).

The region classifier (``pooler.classifier`` on the pooled patch features, plus
``pooler.stats_head`` on the intensity histograms) is small, but it needs a few hundred
passes over every region of a few hundred volumes to converge, which through the full
training loop would mean running the encoder as often. With the encoder frozen its outputs do
not change, so :func:`rgct.eval.calibrate.collect_region_features` runs it once per volume and
this module trains the heads on those features (a linear-probe style stage; seconds per epoch
on a CPU). ``scripts/fit_region_classifier.py`` is the command.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from rgct.eval.calibrate import RegionFeatures
from rgct.model.rgct_model import RGCTModel

logger = logging.getLogger(__name__)


def fit_region_classifier(
    model: RGCTModel,
    feats: RegionFeatures,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    batch_size: int = 256,
    seed: int = 0,
) -> list[float]:
    """Train ``pooler.classifier`` (and ``pooler.stats_head`` if present) on ``feats`` with the
    per-label BCE of the auxiliary loss; every other weight stays as it is.

    Returns:
        The mean training loss of each epoch.
    """
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(
            f"epochs, lr and batch_size must be positive, got {epochs}, {lr}, {batch_size}"
        )
    pooler = model.pooler
    if (pooler.stats is None) != (feats.stats is None):
        raise ValueError(
            "the features and the model disagree on region statistics: collect them with the "
            "same model (model.add_region_stats() before collecting)"
        )
    n = len(feats.keys)
    if (
        n == 0
        or feats.region.shape[0] != n
        or feats.labels.shape != (n, pooler.classifier[-1].out_features)
    ):
        raise ValueError(
            f"inconsistent features: {n} keys, region {tuple(feats.region.shape)}, labels {feats.labels.shape}"
        )
    heads = [pooler.classifier] + ([pooler.stats_head] if pooler.stats_head is not None else [])
    params = [p for h in heads for p in h.parameters()]
    flags = [p.requires_grad for p in params]
    device = params[0].device
    region = feats.region.to(device)
    stats = None if feats.stats is None else feats.stats.to(device)
    target = torch.as_tensor(feats.labels, dtype=torch.float32, device=device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history = []
    try:
        for p in params:
            p.requires_grad_(True)
        for h in heads:
            h.train()
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).to(device)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                logits = pooler.classify(region[idx], None if stats is None else stats[idx])
                loss = F.binary_cross_entropy_with_logits(logits.float(), target[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            history.append(total / n)
            if epoch == 0 or (epoch + 1) % max(1, epochs // 10) == 0:
                logger.info(
                    "region classifier epoch %d/%d: loss %.4f", epoch + 1, epochs, history[-1]
                )
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for h in heads:
            h.eval()
    return history
