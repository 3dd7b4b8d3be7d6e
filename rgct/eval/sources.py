"""Scores against the other datasets' own truth (``rgct evaluate --data`` on their folders).

- RAD-ChestCT: each region report is labelled by the CT-RATE labeler and compared with the
  region's targets from the label matrix (:mod:`rgct.data.source_maps`): precision, recall and
  F1 per (region, label) and micro-averaged.
- DeepLesion: lesion descriptions ("A lung lesion of 15.6 x 12.0 mm.") against each lesion's
  coarse type (accuracy over lesions of known type) and long diameter (mean absolute error, mm).

Prediction rows are ``rgct generate`` lines: ``volume``, ``region``, ``prediction`` (the
RAD-ChestCT volume name, or the DeepLesion lesion name ``<file stem>_<line>``) and ``task``:
region reports (``region_report``) and lesion descriptions (``lesion``) are scored; rows of
other tasks are counted in ``other_tasks`` (a row without ``task`` is scored).

Example::

    metrics = score_radchest(rows, load_radchest(root, "valid"))
    metrics["micro"]["f1"], metrics["per_pair"]["lung|Lung nodule"]
"""

from __future__ import annotations

from rgct.constants import CT_RATE_LABELS
from rgct.data.deeplesion import DeepLesionIndex
from rgct.data.radchestct import RadChestIndex
from rgct.data.source_maps import lesion_type_from_text
from rgct.data.source_samples import radchest_region_findings, region_label_vector
from rgct.eval.labeler import CTRateLabeler, default_labeler, parse_sizes_mm


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int | None]:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f = 2 * p * r / (p + r) if p and r else (0.0 if (tp + fp) and (tp + fn) else None)
    return {"precision": p, "recall": r, "f1": f, "support": tp + fn}


def _of_task(rows: list[dict], task: str) -> tuple[list[dict], int]:
    """The rows of ``task`` (or with no task), and how many rows of other tasks were left out."""
    mine = [r for r in rows if r.get("task", task) == task]
    return mine, len(rows) - len(mine)


def score_radchest(
    rows: list[dict], index: RadChestIndex, labeler: CTRateLabeler | None = None
) -> dict:
    """Per-(region, label) and micro P/R/F1 of region reports against the label matrix.

    Rows whose volume is not in ``index`` are counted in ``unmatched`` and not scored.
    """
    labeler = labeler or default_labeler()
    rows, other = _of_task(rows, "region_report")
    counts: dict[str, list[int]] = {}
    matched = unmatched = 0
    for row in rows:
        volume, region = row.get("volume"), row.get("region")
        if volume not in index.positives:
            unmatched += 1
            continue
        matched += 1
        truth = region_label_vector(
            radchest_region_findings(index.positives[volume]).get(region, [])
        )
        said = labeler.label_text(row.get("prediction") or "")
        for label, want in zip(CT_RATE_LABELS, truth):
            got = int(said.get(label, 0))
            if not (want or got):
                continue
            c = counts.setdefault(f"{region}|{label}", [0, 0, 0])
            c[0] += int(want and got)
            c[1] += int(got and not want)
            c[2] += int(want and not got)
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    return {
        "reports": matched,
        "unmatched": unmatched,
        "other_tasks": other,
        "micro": _prf(*totals),
        "per_pair": {k: _prf(*c) for k, c in sorted(counts.items())},
    }


def score_deeplesion(rows: list[dict], index: DeepLesionIndex) -> dict:
    """Type accuracy and long-diameter error of lesion descriptions.

    The first size a description states is its long diameter; a description without one counts
    in ``no_size``, one without a type word as wrong.
    """
    lesions = {les.name: les for les in index.lesions}
    rows, other = _of_task(rows, "lesion")
    typed = right = no_size = unmatched = 0
    errors: list[float] = []
    for row in rows:
        lesion = lesions.get(row.get("volume"))
        if lesion is None:
            unmatched += 1
            continue
        text = row.get("prediction") or ""
        if lesion.type_known:
            typed += 1
            right += int(lesion_type_from_text(text) == lesion.lesion_type)
        sizes = parse_sizes_mm(text)
        if sizes:
            errors.append(abs(max(sizes[0]) - lesion.diameters_mm[0]))
        else:
            no_size += 1
    return {
        "lesions": len(errors) + no_size,
        "unmatched": unmatched,
        "other_tasks": other,
        "type_accuracy": right / typed if typed else None,
        "typed_lesions": typed,
        "long_diameter_mae_mm": sum(errors) / len(errors) if errors else None,
        "no_size": no_size,
    }
