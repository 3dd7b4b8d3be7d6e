"""How well the labeler reads a file of sentences with gold labels (exact match, micro F1).

The file is a CSV with a ``sentence`` column and one 0/1 column per CT-RATE label (extra
columns such as ``phenomenon`` group the results). Used by the labeler tests and
``scripts/bench_eval.py``.

Example::

    from rgct.eval.labeler_check import check_labeler
    check_labeler("tests/eval/labeler_heldout_sentences.csv")["exact_match"]
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rgct.constants import CT_RATE_LABELS
from rgct.eval.labeler import CTRateLabeler, default_labeler


class LabelFileError(ValueError):
    """A gold-label CSV that cannot be read (the message names file and row)."""


def load_gold_sentences(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a gold-label CSV: ``{"sentence", "labels": {label: 0/1}, "group"}``.

    Args:
        path: CSV with ``sentence`` and the 18 label columns; ``phenomenon`` (optional)
            names the row's group.

    Raises:
        LabelFileError: a missing column or a label cell that is not 0 or 1.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("sentence", *CT_RATE_LABELS) if c not in (reader.fieldnames or [])]
        if missing:
            raise LabelFileError(f"{path}: missing column(s) {missing}")
        rows = []
        for lineno, r in enumerate(reader, 2):
            bad = [n for n in CT_RATE_LABELS if r[n] not in ("0", "1")]
            if bad:
                raise LabelFileError(f"{path}: line {lineno}: label cell(s) {bad} not 0/1")
            rows.append(
                {
                    "sentence": r["sentence"],
                    "labels": {n: int(r[n]) for n in CT_RATE_LABELS},
                    "group": r.get("phenomenon") or "all",
                }
            )
    return rows


def check_labeler(path: str | Path, labeler: CTRateLabeler | None = None) -> dict[str, Any]:
    """Exact label-set match and micro precision / recall / F1 of the labeler on a gold file.

    Args:
        path: Gold-label CSV (see :func:`load_gold_sentences`).
        labeler: Labeler to check; the default one if None.

    Returns:
        ``{"n", "exact_match", "micro": {precision, recall, f1}, "per_group": {group:
        {n, exact_match}}, "wrong": [(sentence, {label: (gold, got)})]}``.
    """
    lab = labeler or default_labeler()
    rows = load_gold_sentences(path)
    gold = np.array([[r["labels"][n] for n in CT_RATE_LABELS] for r in rows], dtype=bool)
    got = np.array(
        [[lab.label_text(r["sentence"])[n] for n in CT_RATE_LABELS] for r in rows], dtype=bool
    ).reshape(gold.shape)
    tp = int((gold & got).sum())
    fp = int((~gold & got).sum())
    fn = int((gold & ~got).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    exact = (gold == got).all(axis=1)
    groups: dict[str, list[bool]] = defaultdict(list)
    for r, ok in zip(rows, exact):
        groups[r["group"]].append(bool(ok))
    wrong = [
        (
            r["sentence"],
            {
                n: (int(gold[i, k]), int(got[i, k]))
                for k, n in enumerate(CT_RATE_LABELS)
                if gold[i, k] != got[i, k]
            },
        )
        for i, r in enumerate(rows)
        if not exact[i]
    ]
    return {
        "n": len(rows),
        "exact_match": float(exact.mean()) if len(rows) else 0.0,
        "micro": {"precision": precision, "recall": recall, "f1": f1},
        "per_group": {
            g: {"n": len(v), "exact_match": float(np.mean(v))} for g, v in sorted(groups.items())
        },
        "wrong": wrong,
    }
