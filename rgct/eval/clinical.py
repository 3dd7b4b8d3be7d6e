"""Clinical efficacy: CT-RATE label precision / recall / F1, reference vs prediction labels.

Both texts of a pair are labelled by the rule-based labeler (:mod:`rgct.eval.labeler`); the
reference labels are the truth. Conventions: precision is 0 when a label is never predicted,
recall 0 when it never occurs in the references, F1 0 when both are 0. ``micro`` pools the
counts of all 18 labels; ``macro`` averages the per-label scores over the labels that occur in
the references (support > 0; their number is ``macro.num_labels``).

**CRG score** (Hamamci et al., "CRG Score: A Distribution-Aware Clinical Metric for Radiology
Report Generation", MIDL 2025, arXiv:2505.17167; the clinical metric of the VLM3D
report-generation challenge). True negatives are ignored; with T label slots (samples x 18),
A of them positive in the references, and TP, FN, FP pooled over all labels::

    w = (T - A) / (2 A)            reward of a TP and penalty of an FN; an FP costs 1
    s = w TP - w FN - FP
    S_max = w A
    CRG = S_max / (2 S_max - s)    1 for a perfect report set, 1/3 for all-negative ones

It is undefined (null) when the references hold no positive label or only positive ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from rgct.constants import CT_RATE_LABELS
from rgct.eval.labeler import CTRateLabeler, default_labeler


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def label_matrix(texts: Iterable[str], labeler: CTRateLabeler | None = None) -> np.ndarray:
    """Labels of each text.

    Args:
        texts: N report texts.
        labeler: Labeler to use; the default one if None.

    Returns:
        int array (N, 18), columns in CT_RATE_LABELS order.
    """
    lab = labeler or default_labeler()
    seen: dict[str, list[int]] = {}  # real reports repeat texts: label each once
    rows = []
    for t in texts:
        row = seen.get(t)
        if row is None:
            labels = lab.label_text(t)
            row = seen[t] = [labels[name] for name in CT_RATE_LABELS]
        rows.append(row)
    return np.asarray(rows, dtype=int).reshape(len(rows), len(CT_RATE_LABELS))


def crg_score(
    tp: np.ndarray | float,
    fn: np.ndarray | float,
    fp: np.ndarray | float,
    num_slots: np.ndarray | float,
) -> np.ndarray:
    """CRG score from pooled counts (any matching shapes; see the module docstring).

    Args:
        tp: True positives. fn: False negatives. fp: False positives.
        num_slots: T, the number of label slots (samples x labels).

    Returns:
        CRG values; NaN where undefined (A = 0 or A = T).
    """
    tp, fn, fp, t = (np.asarray(x, dtype=float) for x in (tp, fn, fp, num_slots))
    a = tp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (t - a) / (2 * a)
        s = w * tp - w * fn - fp
        s_max = w * a
        out = s_max / (2 * s_max - s)
    return np.where((a > 0) & (a < t), out, np.nan)


def sample_counts(pred_labels: np.ndarray, ref_labels: np.ndarray) -> np.ndarray:
    """Per-sample, per-label (tp, fp, fn): int array (N, 18, 3)."""
    pred, ref = pred_labels.astype(bool), ref_labels.astype(bool)
    return np.stack([pred & ref, pred & ~ref, ~pred & ref], axis=-1).astype(int)


def clinical_scores(pred_labels: np.ndarray, ref_labels: np.ndarray) -> dict:
    """Per-label and micro/macro precision, recall, F1.

    Args:
        pred_labels: (N, 18) 0/1 labels of the predictions.
        ref_labels: (N, 18) 0/1 labels of the references.

    Returns:
        ``{"micro": {precision, recall, f1}, "macro": {precision, recall, f1, num_labels},
        "crg": CRG score or None, "per_label": {label: {precision, recall, f1, support,
        predicted}}, "num_samples": N}``.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"label shapes differ: {pred_labels.shape} vs {ref_labels.shape}")
    pred, ref = pred_labels.astype(bool), ref_labels.astype(bool)
    tp = (pred & ref).sum(0)
    fp = (pred & ~ref).sum(0)
    fn = (~pred & ref).sum(0)
    per_label = {}
    for k, name in enumerate(CT_RATE_LABELS):
        p, r, f = _prf(int(tp[k]), int(fp[k]), int(fn[k]))
        per_label[name] = {
            "precision": p,
            "recall": r,
            "f1": f,
            "support": int(ref[:, k].sum()),
            "predicted": int(pred[:, k].sum()),
        }
    mp, mr, mf = _prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    present = [v for v in per_label.values() if v["support"] > 0]
    macro = {
        key: float(np.mean([v[key] for v in present])) if present else 0.0
        for key in ("precision", "recall", "f1")
    }
    macro["num_labels"] = len(present)
    crg = float(crg_score(tp.sum(), fn.sum(), fp.sum(), pred.shape[0] * pred.shape[1]))
    return {
        "micro": {"precision": mp, "recall": mr, "f1": mf},
        "macro": macro,
        "crg": None if np.isnan(crg) else crg,
        "per_label": per_label,
        "num_samples": int(pred.shape[0]),
    }
