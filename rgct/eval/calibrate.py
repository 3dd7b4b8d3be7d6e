"""Per-label thresholds for the region classifier's detections (``model.evidence_prompt``).

The classifier's probabilities are not calibrated (rare labels sit well below 0.5 even when
present), so each CT-RATE label gets its own threshold, chosen to maximise the micro F1 over
all (volume, region, label) decisions of a calibration set (:func:`fit_thresholds`). Keep that set apart from the volumes you report
on: :func:`collect_region_probabilities` skips the first ``skip_volumes`` volumes of the
split (sorted by name), which are the ones a ``limit``-ed held-out check uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rgct.config import RGCTConfig
from rgct.constants import CT_RATE_LABELS
from rgct.data.dataset import RGCTDataset
from rgct.model.rgct_model import RGCTModel

logger = logging.getLogger(__name__)

THRESHOLD_GRID = np.round(np.linspace(0.02, 0.98, 49), 2)
"""Candidate thresholds."""


@dataclass
class RegionFeatures:
    """What the region classifier reads for every (volume, region) of a split, cached so its
    heads can be fitted (:mod:`rgct.train.region_head`) and scored without the encoder."""

    region: torch.Tensor
    """(N, 2, C) pooled region tokens [mean, max] (after the pooler's LayerNorm)."""
    stats: torch.Tensor | None
    """(N, F) intensity statistics (``model.region_stats``), else None."""
    labels: np.ndarray
    """(N, 18) bool ground truth."""
    keys: list[tuple[str, str]]
    """(volume, region) of each row."""


@torch.no_grad()
def collect_region_features(
    model: RGCTModel,
    cfg: RGCTConfig,
    data_root: str | Path,
    split: str = "valid",
    skip_volumes: int = 0,
    max_volumes: int | None = None,
    tasks: tuple[str, ...] = ("region_report",),
) -> RegionFeatures:
    """Run the encoder once per volume and pool every region of a split (no augmentation).

    Skips the first ``skip_volumes`` volumes (sorted by name) and keeps at most
    ``max_volumes`` of the rest; every region needs ground-truth labels. ``tasks`` picks whose
    masks count: the ten regions of ``region_report``, and with the VQA tasks also lobes,
    aorta, heart tissue and the whole scan (each (volume, region) once).
    """
    data = replace(
        cfg.data, root=str(data_root), augment=False, finding_maps=False, crop_shape=None
    )
    ds = RGCTDataset(data, split, train=False, tasks=list(tasks))
    volumes = sorted({s.volume for s in ds.samples})
    keep = set(volumes[skip_volumes:])
    if max_volumes is not None:
        keep = set(sorted(keep)[:max_volumes])
    if not keep:
        raise ValueError(
            f"{data_root} split {split!r}: no volumes left after skipping {skip_volumes}"
        )
    device = next(model.parameters()).device
    model.eval()
    pooler = model.pooler
    by_volume: dict[str, list[int]] = {}
    seen: set[tuple[str, str]] = set()
    for i, sample in enumerate(ds.samples):
        if sample.volume in keep and (sample.volume, sample.region) not in seen:
            if sample.labels is None:
                raise ValueError(
                    f"{sample.volume} region {sample.region!r} has no ground-truth labels"
                )
            seen.add((sample.volume, sample.region))
            by_volume.setdefault(sample.volume, []).append(i)
    regions, stats, labels, keys = [], [], [], []
    for volume, rows in by_volume.items():
        items = [ds[i] for i in rows]
        image = items[0]["image"][None].to(device)
        masks = torch.stack([it["mask"] for it in items]).to(device)
        grid = model.encode_image(image)
        _, region = pooler.pool(grid.expand(len(rows), *grid.shape[1:]), masks)
        regions.append(region.float().cpu())
        if pooler.stats is not None:  # the image's filters once, every region's histograms
            stats.append(pooler.stats(image, masks).float().cpu())
        labels += [it["labels"].numpy() > 0.5 for it in items]
        keys += [(volume, ds.samples[i].region) for i in rows]
    logger.info("region features for %d regions of %d volumes", len(keys), len(keep))
    return RegionFeatures(
        region=torch.cat(regions),
        stats=torch.cat(stats) if stats else None,
        labels=np.stack(labels),
        keys=keys,
    )


@torch.no_grad()
def region_probabilities(model: RGCTModel, feats: RegionFeatures) -> np.ndarray:
    """The region classifier's (N, 18) probabilities for cached features."""
    pooler = model.pooler
    device = next(pooler.classifier.parameters()).device
    stats = None if feats.stats is None else feats.stats.to(device)
    logits = pooler.classify(feats.region.to(device), stats if pooler.stats is not None else None)
    return torch.sigmoid(logits.float()).cpu().numpy()


def collect_region_probabilities(
    model: RGCTModel,
    cfg: RGCTConfig,
    data_root: str | Path,
    split: str = "valid",
    skip_volumes: int = 0,
    max_volumes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Classifier probabilities and true labels for every (volume, region) of a split.

    Returns:
        ``(probs (N, 18), labels (N, 18) bool, [(volume, region)] * N)``; the encoder runs
        once per volume.
    """
    feats = collect_region_features(model, cfg, data_root, split, skip_volumes, max_volumes)
    return region_probabilities(model, feats), feats.labels, feats.keys


def _f1(pred: np.ndarray, gold: np.ndarray) -> tuple[float, int, int, int]:
    tp, fp, fn = int((pred & gold).sum()), int((pred & ~gold).sum()), int((~pred & gold).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1), tp, fp, fn


def fit_thresholds(
    probs: np.ndarray, labels: np.ndarray, rounds: int = 3
) -> tuple[list[float], dict]:
    """Thresholds that maximise the micro F1 over all (region, label) decisions.

    Coordinate ascent from 0.5: each label in turn takes the grid threshold that gives the best
    micro F1 with the others fixed (``rounds`` passes). Micro, not per-label, F1 is the goal,
    because that is what the held-out finding F1 counts: a weak label's own best threshold
    buys a few true positives with many false ones, and the micro optimum then keeps it quiet.
    Labels never positive keep 0.5.

    Returns:
        ``(thresholds (18,), report)`` where ``report`` has per-label ``positives``,
        ``f1_at_0.5``, ``threshold``, ``f1`` and the micro ``f1`` over all labels at 0.5 and
        at the fitted thresholds.
    """
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(CT_RATE_LABELS):
        raise ValueError(
            f"probs and labels must both be (N, {len(CT_RATE_LABELS)}), "
            f"got {probs.shape} and {labels.shape}"
        )
    th = np.full(probs.shape[1], 0.5)
    counted = [j for j in range(probs.shape[1]) if labels[:, j].any()]
    # per-label (tp, fp, fn) at every grid threshold, then ascent on the summed counts
    table = {j: [_f1(probs[:, j] >= t, labels[:, j])[1:] for t in THRESHOLD_GRID] for j in counted}
    current = {j: _f1(probs[:, j] >= 0.5, labels[:, j])[1:] for j in range(probs.shape[1])}
    for _ in range(rounds):
        for j in counted:
            rest = np.sum([c for k, c in current.items() if k != j], axis=0)

            def micro(c, rest=rest):
                tp, fp, fn = rest + np.array(c)
                return 2 * tp / max(2 * tp + fp + fn, 1)

            best = max(
                range(len(THRESHOLD_GRID)),
                key=lambda i: (micro(table[j][i]), -abs(THRESHOLD_GRID[i] - 0.5)),
            )
            th[j], current[j] = float(THRESHOLD_GRID[best]), table[j][best]
    per_label = {
        CT_RATE_LABELS[j]: {
            "positives": int(labels[:, j].sum()),
            "f1_at_0.5": _f1(probs[:, j] >= 0.5, labels[:, j])[0],
            "threshold": float(th[j]),
            "f1": _f1(probs[:, j] >= th[j], labels[:, j])[0],
        }
        for j in counted
    }
    report = {
        "regions": int(len(probs)),
        "micro_f1_at_0.5": _f1(probs >= 0.5, labels)[0],
        "micro_f1": _f1(probs >= th, labels)[0],
        "per_label": per_label,
    }
    return [float(t) for t in th], report


def detection_scores(probs: np.ndarray, labels: np.ndarray, thresholds: list[float]) -> dict:
    """Micro precision / recall / F1 of the detections at ``thresholds`` (e.g. on held-out)."""
    f1, tp, fp, fn = _f1(probs >= np.array(thresholds), labels)
    return {
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }
