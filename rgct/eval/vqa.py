"""VQA metrics for the RadGenome-Chest CT question tasks.

- ``presence``: accuracy after reading "Yes."/"yes"/"No" as yes/no (answers that are neither
  count as wrong; their number is ``unparsed``).
- ``abnormality``, ``location``, ``disorders``: ``exact`` (strings equal after trimming) and
  ``normalized`` match (lower case, punctuation other than '/' dropped, comma-separated items
  sorted), plus ``item_f1``: mean per-question F1 of the sets of comma-separated items.
- ``size``: the sizes in both texts are parsed ("6x4 mm", "1.2 cm"); ``mae_mm`` is the mean
  absolute error of the LARGEST dimension; ``dims_mae_mm`` compares all dimensions (sorted,
  largest first) where both give the same number of them; unparsable answers are counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from rgct.eval.labeler import parse_sizes_mm

_PUNCT = re.compile(r"[^\w\s/,]")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation (keep '/' and commas), sort comma-separated items."""
    items = [" ".join(_PUNCT.sub(" ", it).split()) for it in (text or "").lower().split(",")]
    return ", ".join(sorted(it for it in items if it))


def _items(text: str) -> set[str]:
    return {it for it in normalize_answer(text).split(", ") if it}


def parse_yes_no(text: str) -> str | None:
    """ "yes", "no" or None for an answer such as "Yes." or "no, it cannot"."""
    words = re.findall(r"[a-z]+", (text or "").lower())
    return words[0] if words and words[0] in ("yes", "no") else None


def presence_scores(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Accuracy of yes/no answers. Returns {accuracy, n, unparsed}."""
    pred = [parse_yes_no(p) for p in predictions]
    ref = [parse_yes_no(r) for r in references]
    correct = [p is not None and p == r for p, r in zip(pred, ref)]
    return {
        "accuracy": float(np.mean(correct)) if correct else None,
        "n": len(correct),
        "unparsed": sum(p is None for p in pred),
    }


def match_scores(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Exact / normalised match and item F1. Returns {exact, normalized, item_f1, n}."""
    exact, norm, f1s = [], [], []
    for p, r in zip(predictions, references):
        exact.append((p or "").strip() == (r or "").strip())
        norm.append(normalize_answer(p) == normalize_answer(r))
        ps, rs = _items(p), _items(r)
        tp = len(ps & rs)
        f1s.append(2 * tp / (len(ps) + len(rs)) if ps or rs else 1.0)
    n = len(exact)
    return {
        "exact": float(np.mean(exact)) if n else None,
        "normalized": float(np.mean(norm)) if n else None,
        "item_f1": float(np.mean(f1s)) if n else None,
        "n": n,
    }


def size_scores(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Size error in mm. Returns {mae_mm, dims_mae_mm, n, n_scored, unparsed}."""
    errors, dim_errors, unparsed = [], [], 0
    for p, r in zip(predictions, references):
        ps, rs = parse_sizes_mm(p or ""), parse_sizes_mm(r or "")
        if not rs:
            continue
        if not ps:
            unparsed += 1
            continue
        pd, rd = sorted(ps[0], reverse=True), sorted(rs[0], reverse=True)
        errors.append(abs(pd[0] - rd[0]))
        if len(pd) == len(rd):
            dim_errors.extend(abs(a - b) for a, b in zip(pd, rd))
    return {
        "mae_mm": float(np.mean(errors)) if errors else None,
        "dims_mae_mm": float(np.mean(dim_errors)) if dim_errors else None,
        "n": len(predictions),
        "n_scored": len(errors),
        "unparsed": unparsed,
    }


def vqa_per_sample(task: str, predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Per-question values behind a task's headline numbers (NaN = not scored).

    Returns:
        presence: ``{"accuracy": 0/1}``; abnormality/location/disorders: ``{"exact",
        "normalized", "item_f1"}``; size: ``{"mae_mm": absolute error of the largest
        dimension}``; each an array (N,).
    """
    if task == "presence":
        correct = [
            (p := parse_yes_no(a)) is not None and p == parse_yes_no(b)
            for a, b in zip(predictions, references)
        ]
        return {"accuracy": np.asarray(correct, dtype=float)}
    if task == "size":
        err = []
        for p, r in zip(predictions, references):
            ps, rs = parse_sizes_mm(p or ""), parse_sizes_mm(r or "")
            err.append(abs(max(ps[0]) - max(rs[0])) if ps and rs else np.nan)
        return {"mae_mm": np.asarray(err, dtype=float)}
    exact, norm, f1s = [], [], []
    for p, r in zip(predictions, references):
        exact.append((p or "").strip() == (r or "").strip())
        norm.append(normalize_answer(p) == normalize_answer(r))
        ps, rs = _items(p), _items(r)
        f1s.append(2 * len(ps & rs) / (len(ps) + len(rs)) if ps or rs else 1.0)
    return {
        "exact": np.asarray(exact, dtype=float),
        "normalized": np.asarray(norm, dtype=float),
        "item_f1": np.asarray(f1s, dtype=float),
    }


VQA_SCORERS = {
    "presence": presence_scores,
    "abnormality": match_scores,
    "location": match_scores,
    "disorders": match_scores,
    "size": size_scores,
}
"""Task -> scorer(predictions, references) -> dict."""
