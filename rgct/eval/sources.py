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

import math

import numpy as np

from rgct.constants import CT_RATE_LABELS
from rgct.data.deeplesion import DeepLesionIndex
from rgct.data.radchestct import RadChestIndex
from rgct.data.source_maps import lesion_type_from_text
from rgct.data.source_samples import radchest_region_findings, region_label_vector
from rgct.eval.bootstrap import DEFAULT_REPLICATES, VolumeBootstrap
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
    rows: list[dict],
    index: RadChestIndex,
    labeler: CTRateLabeler | None = None,
    replicates: int = DEFAULT_REPLICATES,
) -> dict:
    """Per-(region, label) and micro P/R/F1 of region reports against the label matrix.

    Rows whose volume is not in ``index`` are counted in ``unmatched`` and not scored;
    ``micro.f1_ci95`` is a 95% bootstrap interval over volumes (:mod:`rgct.eval.bootstrap`).
    """
    labeler = labeler or default_labeler()
    rows, other = _of_task(rows, "region_report")
    counts: dict[str, list[int]] = {}
    per_row: list[list[int]] = []  # (tp, fp, fn) of each scored report, for the interval
    volumes: list[str] = []
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
        mine = [0, 0, 0]
        for label, want in zip(CT_RATE_LABELS, truth):
            got = int(said.get(label, 0))
            if not (want or got):
                continue
            c = counts.setdefault(f"{region}|{label}", [0, 0, 0])
            hit = (int(want and got), int(got and not want), int(want and not got))
            for k in range(3):
                c[k] += hit[k]
                mine[k] += hit[k]
        per_row.append(mine)
        volumes.append(volume)
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    micro = _prf(*totals)
    micro["f1_ci95"] = _f1_interval(per_row, volumes, replicates)
    return {
        "reports": matched,
        "unmatched": unmatched,
        "other_tasks": other,
        "micro": micro,
        "per_pair": {k: _prf(*c) for k, c in sorted(counts.items())},
    }


def _f1_interval(per_row: list[list[int]], volumes: list[str], replicates: int):
    """95% volume-bootstrap interval of micro F1 from per-row (tp, fp, fn)."""
    if not per_row:
        return None
    counts = np.asarray(per_row, dtype=float)

    def f1(summed: np.ndarray) -> np.ndarray:
        tp, fp, fn = summed[:, 0], summed[:, 1], summed[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            return 2 * tp / (2 * tp + fp + fn)

    boot = VolumeBootstrap(volumes, replicates=replicates)
    return boot.ci(boot.stat_replicates(counts, f1))


def score_deeplesion(
    rows: list[dict],
    index: DeepLesionIndex,
    replicates: int = DEFAULT_REPLICATES,
    text_key: str = "prediction",
) -> dict:
    """Type accuracy and long-diameter error of lesion descriptions, with 95% bootstrap
    intervals over series (a series' lesions are drawn together).

    The first size a description states is its long diameter; a description without one counts
    in ``no_size``, one without a type word as wrong. ``text_key``: the field read as the
    description (``lesion_evidence``: the evidence line the model measured, scored alone).
    """
    lesions = {les.name: les for les in index.lesions}
    rows, other = _of_task(rows, "lesion")
    typed = right = no_size = unmatched = 0
    errors: list[float] = []
    correct: list[float] = []  # per scored lesion: 1/0, NaN when its type is unknown
    error: list[float] = []  # per scored lesion: mm, NaN without a size
    series: list[str] = []
    for row in rows:
        lesion = lesions.get(row.get("volume"))
        if lesion is None:
            unmatched += 1
            continue
        text = row.get(text_key) or ""
        series.append(lesion.series)
        if lesion.type_known:
            typed += 1
            hit = int(lesion_type_from_text(text) == lesion.lesion_type)
            right += hit
            correct.append(float(hit))
        else:
            correct.append(math.nan)
        sizes = parse_sizes_mm(text)
        if sizes:
            errors.append(abs(max(sizes[0]) - lesion.diameters_mm[0]))
            error.append(errors[-1])
        else:
            no_size += 1
            error.append(math.nan)
    boot = VolumeBootstrap(series, replicates=replicates) if series else None
    return {
        "lesions": len(errors) + no_size,
        "unmatched": unmatched,
        "other_tasks": other,
        "type_accuracy": right / typed if typed else None,
        "type_accuracy_ci95": boot.mean_ci(correct) if boot and typed else None,
        "typed_lesions": typed,
        "long_diameter_mae_mm": sum(errors) / len(errors) if errors else None,
        "long_diameter_mae_mm_ci95": boot.mean_ci(error) if boot and errors else None,
        "no_size": no_size,
    }


def _fmt(value, ci=None, digits: int = 3) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def sources_markdown(result: dict) -> str:
    """``metrics.md`` of ``rgct evaluate --data`` on a RAD-ChestCT or DeepLesion folder."""
    lines = []
    for split, m in (result.get("rad-chestct") or {}).items():
        micro = m["micro"]
        lines += [
            f"## RAD-ChestCT ({split}): region reports against the label matrix",
            "",
            f"{m['reports']} region reports scored ({m['unmatched']} of unknown volumes, "
            f"{m['other_tasks']} rows of other tasks left out); 95% intervals over volumes.",
            "",
            "| micro precision | micro recall | micro F1 | support |",
            "|---|---|---|---|",
            f"| {_fmt(micro['precision'])} | {_fmt(micro['recall'])} | "
            f"{_fmt(micro['f1'], micro.get('f1_ci95'))} | {micro['support']} |",
            "",
            "| region, label | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {pair.replace('|', ', ')} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | "
            f"{_fmt(v['f1'])} | {v['support']} |"
            for pair, v in m["per_pair"].items()
        ]
        lines.append("")
    dl = result.get("deeplesion")
    if dl:
        lines += [
            "## DeepLesion: lesion descriptions from each lesion's box",
            "",
            f"{dl['lesions']} lesions scored ({dl['typed_lesions']} of known type, "
            f"{dl['no_size']} descriptions without a size); 95% intervals over series.",
            "",
            "| type accuracy | long-diameter error (mm) |",
            "|---|---|",
            f"| {_fmt(dl['type_accuracy'], dl.get('type_accuracy_ci95'))} | "
            f"{_fmt(dl['long_diameter_mae_mm'], dl.get('long_diameter_mae_mm_ci95'), 2)} |",
            "",
        ]
    return "\n".join(lines)
