"""Clinical efficacy: CT-RATE label precision / recall / F1, reference vs prediction labels.

Both texts of a pair are labelled by the rule-based labeler (:mod:`rgct.eval.labeler`); the
reference labels are the truth. Conventions: precision is 0 when a label is never predicted,
recall 0 when it never occurs in the references, F1 0 when both are 0. ``micro`` pools the
counts of all 18 labels; ``macro`` averages the per-label scores over the labels that occur in
the references (support > 0; their number is ``macro.num_labels``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rgct.constants import CT_RATE_LABELS
from rgct.eval.labeler import CTRateLabeler, default_labeler


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def label_matrix(texts: Sequence[str], labeler: CTRateLabeler | None = None) -> np.ndarray:
    """Labels of each text.

    Args:
        texts: N report texts.
        labeler: Labeler to use; the default one if None.

    Returns:
        int array (N, 18), columns in CT_RATE_LABELS order.
    """
    lab = labeler or default_labeler()
    rows = [[lab.label_text(t)[name] for name in CT_RATE_LABELS] for t in texts]
    return np.asarray(rows, dtype=int).reshape(len(texts), len(CT_RATE_LABELS))


def clinical_scores(pred_labels: np.ndarray, ref_labels: np.ndarray) -> dict:
    """Per-label and micro/macro precision, recall, F1.

    Args:
        pred_labels: (N, 18) 0/1 labels of the predictions.
        ref_labels: (N, 18) 0/1 labels of the references.

    Returns:
        ``{"micro": {precision, recall, f1}, "macro": {precision, recall, f1, num_labels},
        "per_label": {label: {precision, recall, f1, support, predicted}}, "num_samples": N}``.
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
    return {
        "micro": {"precision": mp, "recall": mr, "f1": mf},
        "macro": macro,
        "per_label": per_label,
        "num_samples": int(pred.shape[0]),
    }
