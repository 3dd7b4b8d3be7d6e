"""Region grounding against phantom ground truth (``ground_truth.jsonl``).

What was asked: every ``region_report`` line asks about (volume, its region); every ``report``
line asks about (volume, r) for all ten regions. What was said: the labeler reads the predicted
text; a ``region_report`` prediction's findings go to the line's region, a ``report``
prediction's findings go to the region of each predicted sentence (the ``sentences`` tags
written by ``rgct generate``, else the region the labeler reads from the sentence).

- ``finding``: precision / recall / F1 of the set of (volume, region, label) predicted vs the
  ground-truth set {(volume, finding.region, finding.label)} restricted to the asked pairs.
- ``lobe_accuracy``: over ground-truth findings that have a lobe and were detected, the share
  whose predicted sentences (same volume, region and label) name that lobe.
- ``side_accuracy``: same, for findings with a side: the predicted sentences' side equals it.
- ``size_mae_mm``: over detected findings with a size, the mean absolute error of the largest
  dimension, taking the predicted size (same volume, region, label) closest to the truth.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from rgct.constants import CT_RATE_LABELS, REGIONS
from rgct.eval.labeler import (
    CTRateLabeler,
    SentenceLabel,
    default_labeler,
    parse_lobes,
    parse_sizes_mm,
)

_Key = tuple[str, str, str]  # (volume, region, label)


def volume_key(name: str) -> str:
    """Volume name without a NIfTI suffix ("train_1_a_1.nii.gz" -> "train_1_a_1")."""
    name = str(name).strip()
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _gt_size(finding: dict) -> float | None:
    size = finding.get("size_mm")
    if isinstance(size, int | float):
        return float(size)
    if isinstance(size, list | tuple) and size:
        return float(max(size))
    if finding.get("size_text"):
        parsed = parse_sizes_mm(str(finding["size_text"]))
        return max(parsed[0]) if parsed else None
    return None


def _gt_lobe(finding: dict) -> str | None:
    lobe = finding.get("lobe")
    if not lobe:
        return None
    parsed = parse_lobes(str(lobe))
    return parsed[0] if parsed else str(lobe).strip().lower()


def _predicted_sentences(line: dict, labeler: CTRateLabeler) -> Iterable[tuple[str, SentenceLabel]]:
    """(region, sentence label) pairs of one prediction line."""
    task = line.get("task", "report")
    if task == "region_report":
        for s in labeler.label_sentences(line.get("prediction", "")):
            yield line.get("region"), s
    elif line.get("sentences"):
        for tagged in line["sentences"]:
            for s in labeler.label_sentences(tagged.get("text", "")):
                yield tagged.get("region") or s.region, s
    else:
        for s in labeler.label_sentences(line.get("prediction", "")):
            yield s.region, s


def grounding_scores(
    predictions: list[dict],
    ground_truth: dict[str, dict],
    labeler: CTRateLabeler | None = None,
) -> dict[str, Any]:
    """Region-level finding detection, lobe/side accuracy and size error (see
    :func:`grounding_with_counts`, which also returns per-volume counts)."""
    return grounding_with_counts(predictions, ground_truth, labeler)[0]


def grounding_with_counts(
    predictions: list[dict],
    ground_truth: dict[str, dict],
    labeler: CTRateLabeler | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[int, int, int]]]:
    """Region-level finding detection, lobe/side accuracy and size error.

    Args:
        predictions: Prediction lines (``volume``, ``task``, ``region``, ``prediction`` and for
            ``report`` lines optionally ``sentences``); other tasks are ignored.
        ground_truth: volume -> ground_truth.jsonl record (``findings`` list).
        labeler: Labeler for the predicted text; the default one if None.

    Returns:
        (scores, counts): scores ``{"finding": {precision, recall, f1, tp, fp, fn},
        "lobe_accuracy", "lobe_n", "side_accuracy", "side_n", "size_mae_mm", "size_n",
        "num_asked_regions", "num_volumes"}`` (accuracies None when nothing could be scored);
        counts: volume -> its (finding tp, fp, fn, lobe hits, lobe n, side hits, side n), for
        intervals over volumes.
    """
    lab = labeler or default_labeler()
    gt = {volume_key(k): v for k, v in ground_truth.items()}
    asked: set[tuple[str, str]] = set()
    predicted: dict[_Key, list[SentenceLabel]] = defaultdict(list)
    for line in predictions:
        task = line.get("task", "report")
        if task not in ("report", "region_report"):
            continue
        vol = volume_key(line.get("volume", ""))
        if vol not in gt:
            continue
        if task == "region_report":
            if line.get("region") not in REGIONS:
                continue
            asked.add((vol, line["region"]))
        else:
            asked.update((vol, r) for r in REGIONS)
        for region, s in _predicted_sentences(line, lab):
            for name in s.positive:
                predicted[(vol, region, name)].append(s)
    pred_set = {k for k in predicted if (k[0], k[1]) in asked}
    gt_findings: dict[_Key, list[dict]] = defaultdict(list)
    for vol, record in gt.items():
        for f in record.get("findings", []):
            if f.get("label") in CT_RATE_LABELS and (vol, f.get("region")) in asked:
                gt_findings[(vol, f["region"], f["label"])].append(f)
    gt_set = set(gt_findings)
    tp, fp, fn = len(pred_set & gt_set), len(pred_set - gt_set), len(gt_set - pred_set)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    lobe_hits, side_hits, size_err = [], [], []
    placed: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # lobe hit/n, side hit/n
    for key in pred_set & gt_set:
        sentences = predicted[key]
        named_lobes = {lobe for s in sentences for lobe in s.lobes}
        named_sides = {s.side for s in sentences if s.side}
        sizes = [max(d) for s in sentences for d in s.sizes_mm]
        for f in gt_findings[key]:
            lobe = _gt_lobe(f)
            if lobe:
                lobe_hits.append(lobe in named_lobes)
                placed[key[0]][0] += lobe_hits[-1]
                placed[key[0]][1] += 1
            if f.get("side"):
                side_hits.append(str(f["side"]).lower() in named_sides)
                placed[key[0]][2] += side_hits[-1]
                placed[key[0]][3] += 1
            true_size = _gt_size(f)
            if true_size is not None and sizes:
                size_err.append(min(abs(s - true_size) for s in sizes))
    by_volume = {
        kind: Counter(k[0] for k in keys)
        for kind, keys in (
            ("tp", pred_set & gt_set),
            ("fp", pred_set - gt_set),
            ("fn", gt_set - pred_set),
        )
    }
    counts = {
        vol: (by_volume["tp"][vol], by_volume["fp"][vol], by_volume["fn"][vol], *placed[vol])
        for vol in sorted({v for v, _ in asked})
    }
    scores = {
        "finding": {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "tp": tp,
            "fp": fp,
            "fn": fn,
        },
        "lobe_accuracy": float(np.mean(lobe_hits)) if lobe_hits else None,
        "lobe_n": len(lobe_hits),
        "side_accuracy": float(np.mean(side_hits)) if side_hits else None,
        "side_n": len(side_hits),
        "size_mae_mm": float(np.mean(size_err)) if size_err else None,
        "size_n": len(size_err),
        "num_asked_regions": len(asked),
        "num_volumes": len({v for v, _ in asked}),
    }
    return scores, counts
