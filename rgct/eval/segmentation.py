"""Scoring segmentation and finding localisation (arrays and dicts in, numbers out).

* :func:`dice` / :func:`volume_dice`: Dice per class of one volume; a class absent from both
  prediction and truth is not scored (None), a class absent from one of them scores 0.
* :func:`summarize_dice`: per-class means over volumes, the mean of the ten regions and the
  mean of the five lobes (each the mean of the per-class means).
* :func:`box_accuracy`: a detected finding is correct when a true finding of the same label
  has its centre within ``tolerance_mm`` of the predicted centre, or when the predicted centre
  lies inside that true finding's voxels (the issue's "centre inside the true finding or
  within 10 mm"). Accuracy is over detected findings whose label the volume truly has; the
  recall over true findings is reported beside it.

Example::

    per_volume = [volume_dice(pred_masks, true_masks)]
    summarize_dice(per_volume)["mean_regions"]
    box_accuracy(pred_findings, true_findings, spacing_mm=(5, 2.5, 2.5))["accuracy"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rgct.constants import LUNG_LOBES, REGIONS

BOX_TOLERANCE_MM = 10.0
"""A predicted centre this close to the true centre counts as correct."""


def dice(pred: np.ndarray, true: np.ndarray) -> float | None:
    """Dice of two bool masks of one shape; None when both are empty."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: predicted {pred.shape}, true {true.shape}")
    total = int(pred.sum()) + int(true.sum())
    if total == 0:
        return None
    return 2.0 * int((pred & true).sum()) / total


def volume_dice(
    pred: Mapping[str, np.ndarray],
    true: Mapping[str, np.ndarray],
    classes: Sequence[str] | None = None,
) -> dict[str, float | None]:
    """class -> Dice for one volume; a class missing from ``pred`` or ``true`` counts as empty.

    Args:
        pred, true: name -> bool (D, H, W) on the same grid.
        classes: classes to score (default: every name in either mapping).
    """
    names = list(classes) if classes is not None else sorted({*pred, *true})
    shape = next((np.shape(m) for m in (*pred.values(), *true.values())), None)
    out: dict[str, float | None] = {}
    for name in names:
        p = pred.get(name)
        t = true.get(name)
        if p is None and t is None:
            out[name] = None
            continue
        p = np.zeros(shape, bool) if p is None else p
        t = np.zeros(shape, bool) if t is None else t
        out[name] = dice(p, t)
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize_dice(per_volume: Sequence[Mapping[str, float | None]]) -> dict:
    """Mean Dice per class over volumes, plus ``mean_regions`` and ``mean_lobes``.

    Returns:
        ``{"per_class": {name: mean or None}, "count": {name: volumes scored},
        "mean_regions": ..., "mean_lobes": ..., "volumes": N}``.
    """
    names = sorted({n for v in per_volume for n in v})
    per_class: dict[str, float | None] = {}
    count: dict[str, int] = {}
    for name in names:
        vals = [v[name] for v in per_volume if v.get(name) is not None]
        per_class[name] = _mean(vals)
        count[name] = len(vals)
    regions = [per_class[r] for r in REGIONS if per_class.get(r) is not None]
    lobes = [per_class[lb] for lb in LUNG_LOBES if per_class.get(lb) is not None]
    return {
        "per_class": per_class,
        "count": count,
        "mean_regions": _mean(regions),
        "mean_lobes": _mean(lobes),
        "volumes": len(per_volume),
    }


def _center_correct(
    center: np.ndarray, truth: Mapping, spacing: np.ndarray, tolerance_mm: float
) -> bool:
    true_center = np.asarray(truth["center_voxel"], float)
    if float(np.linalg.norm((center - true_center) * spacing)) <= tolerance_mm:
        return True
    mask = truth.get("mask")
    if mask is None:
        return False
    idx = tuple(int(v) for v in center)
    inside = all(0 <= i < s for i, s in zip(idx, np.shape(mask)))
    return bool(inside and mask[idx])


def box_accuracy(
    predicted: Sequence[Mapping],
    truth: Sequence[Mapping],
    spacing_mm: Sequence[float],
    tolerance_mm: float = BOX_TOLERANCE_MM,
) -> dict:
    """Localisation accuracy of one volume's detected findings.

    Args:
        predicted: findings with ``label`` and ``center_voxel`` [z, y, x].
        truth: true findings with ``label``, ``center_voxel`` and optionally ``mask`` (bool
            (D, H, W) voxels of the finding, same grid).
        spacing_mm: voxel size (d, h, w).
        tolerance_mm: distance under which a centre is correct.

    Returns:
        ``{"correct", "scored" (detections whose label is true here), "detected" (all),
        "true", "found" (true findings hit by a correct detection)}``: counts, to be summed
        over volumes with :func:`summarize_boxes`.
    """
    spacing = np.asarray([float(s) for s in spacing_mm])
    correct = scored = 0
    found: set[int] = set()
    for p in predicted:
        same = [(i, t) for i, t in enumerate(truth) if t["label"] == p["label"]]
        if not same:
            continue
        scored += 1
        center = np.asarray(p["center_voxel"], float)
        hits = [i for i, t in same if _center_correct(center, t, spacing, tolerance_mm)]
        if hits:
            correct += 1
            found.update(hits)
    return {
        "correct": correct,
        "scored": scored,
        "detected": len(predicted),
        "true": len(truth),
        "found": len(found),
    }


def summarize_boxes(per_volume: Sequence[Mapping[str, int]]) -> dict:
    """Sum :func:`box_accuracy` counts; ``accuracy`` = correct / scored, ``recall`` = found /
    true, ``precision`` = scored / detected (detections whose label the volume has)."""
    tot = {
        k: sum(int(v[k]) for v in per_volume)
        for k in ("correct", "scored", "detected", "true", "found")
    }
    return {
        **tot,
        "accuracy": tot["correct"] / tot["scored"] if tot["scored"] else None,
        "recall": tot["found"] / tot["true"] if tot["true"] else None,
        "label_precision": tot["scored"] / tot["detected"] if tot["detected"] else None,
    }
