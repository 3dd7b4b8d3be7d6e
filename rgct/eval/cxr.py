"""Scoring chest-radiograph predictions (tasks :data:`rgct.constants.CXR_TASKS`).

Each task's lines are scored from per-line counts; every metric is a ratio of summed counts,
so its 95% interval comes from the volume bootstrap (:mod:`rgct.eval.bootstrap`: the image is
the unit, all lines of a drawn image count) and a paired comparison (``--compare``) draws the
same images for both files. Texts are read by :mod:`rgct.eval.cxr_parse` in the dataset's
class vocabulary (from ``--data``, else told by the references' class names, else the two
datasets' shared words).

| task | metric | a line counts |
|---|---|---|
| ``cxr_presence`` | ``accuracy`` | the prediction reads yes/no as the reference; an answer that reads as neither is wrong and counted in ``unparsed`` |
| ``cxr_box`` | ``accuracy`` | the classes the prediction names are exactly the reference's one class; ``per_class`` by reference class |
| ``cxr_location`` | ``exact_accuracy`` | the set of "side zone" phrases equals the reference's; ``precision`` / ``recall`` / ``f1`` per phrase (micro) |
| ``cxr_labels`` | ``precision`` / ``recall`` / ``f1`` | micro over classes ("No finding." is the empty set); ``per_class`` |
| ``cxr_report`` | ``finding_*`` | micro P/R/F1 of the classes its sentences name |
| ``cxr_report`` | ``location_accuracy`` | per reference (class, side zone) whose class the prediction names: the prediction's sentences naming that class also name that place; ``located_recall`` divides by every reference (class, place) |

With ``--data`` (a VinDr-CXR or ChestX-ray14 folder), each line is first checked against the
folder's own boxes and labels (:mod:`rgct.eval.cxr_truth`).

Example::

    metrics = score_cxr(rows, layout="vindr-cxr")
    metrics["tasks"]["cxr_presence"]["accuracy"], metrics["tasks"]["cxr_presence"]["ci95"]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rgct.constants import CXR_TASKS
from rgct.eval.bootstrap import DEFAULT_REPLICATES, VolumeBootstrap, paired_difference
from rgct.eval.cxr_parse import (
    find_classes,
    find_locations,
    infer_layout,
    parse_presence,
    parse_report,
)
from rgct.eval.predictions import line_key

SCHEMA_VERSION = 1
HEADLINE = (
    ("cxr_presence", "accuracy", "presence accuracy", 0.85),
    ("cxr_box", "accuracy", "finding named for a given box", 0.80),
    ("cxr_location", "exact_accuracy", "side/zone of a named finding", 0.80),
    ("cxr_labels", "f1", "image labels micro F1", None),
    ("cxr_report", "finding_f1", "report finding F1", None),
    ("cxr_report", "location_accuracy", "report location accuracy", None),
)
"""(task, metric, name, issue #18 target or None) of the headline table."""

Metric = Callable[[np.ndarray], np.ndarray]


def _ratio(num: int, den: int) -> Metric:
    def metric(s: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(s[:, den] > 0, s[:, num] / np.maximum(s[:, den], 1e-300), np.nan)

    return metric


def _f1(tp: int, fp: int, fn: int) -> Metric:
    def metric(s: np.ndarray) -> np.ndarray:
        den = 2 * s[:, tp] + s[:, fp] + s[:, fn]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 2 * s[:, tp] / np.maximum(den, 1e-300), np.nan)

    return metric


def _precision(tp: int, fp: int) -> Metric:
    def metric(s: np.ndarray) -> np.ndarray:
        den = s[:, tp] + s[:, fp]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, s[:, tp] / np.maximum(den, 1e-300), np.nan)

    return metric


@dataclass(frozen=True)
class TaskScore:
    """How one task's lines are scored: per-line ``counts`` (named), the metrics as functions
    of counts summed over lines ((B, K) -> (B,)), and the counts reported as totals."""

    counts: tuple[str, ...]
    line: Callable[[dict, str | None], list[float]]
    metrics: dict[str, Metric]
    totals: tuple[str, ...] = ()


def _presence(row: dict, layout: str | None) -> list[float]:
    said, want = parse_presence(row["prediction"]), parse_presence(row["reference"])
    return [float(said is not None and said == want), 1.0, float(said is None)]


def _box(row: dict, layout: str | None) -> list[float]:
    said = set(find_classes(row["prediction"], layout))
    want = set(find_classes(row["reference"], layout))
    return [float(bool(said) and said == want), 1.0, float(not said)]


def _sets(said: set, want: set) -> list[float]:
    return [len(said & want), len(said - want), len(want - said)]


def _location(row: dict, layout: str | None) -> list[float]:
    said, want = set(find_locations(row["prediction"])), set(find_locations(row["reference"]))
    return [float(bool(said) and said == want), 1.0, *_sets(said, want), float(not said)]


def _labels(row: dict, layout: str | None) -> list[float]:
    said = set(find_classes(row["prediction"], layout))
    want = set(find_classes(row["reference"], layout))
    return [*_sets(said, want), 1.0]


def _report(row: dict, layout: str | None) -> list[float]:
    said, want = parse_report(row["prediction"], layout), parse_report(row["reference"], layout)
    named = [c for c in want if c in said]
    return [
        *_sets(set(said), set(want)),
        sum(len(set(want[c]) & set(said[c])) for c in named),
        sum(len(want[c]) for c in named),
        sum(len(places) for places in want.values()),
        1.0,
    ]


SCORES: dict[str, TaskScore] = {
    "cxr_presence": TaskScore(
        ("correct", "n", "unparsed"), _presence, {"accuracy": _ratio(0, 1)}, ("unparsed",)
    ),
    "cxr_box": TaskScore(
        ("correct", "n", "unparsed"), _box, {"accuracy": _ratio(0, 1)}, ("unparsed",)
    ),
    "cxr_location": TaskScore(
        ("exact", "n", "tp", "fp", "fn", "unparsed"),
        _location,
        {
            "exact_accuracy": _ratio(0, 1),
            "precision": _precision(2, 3),
            "recall": _precision(2, 4),
            "f1": _f1(2, 3, 4),
        },
        ("unparsed",),
    ),
    "cxr_labels": TaskScore(
        ("tp", "fp", "fn", "n"),
        _labels,
        {"precision": _precision(0, 1), "recall": _precision(0, 2), "f1": _f1(0, 1, 2)},
        ("tp", "fp", "fn"),
    ),
    "cxr_report": TaskScore(
        ("tp", "fp", "fn", "located", "named_places", "places", "n"),
        _report,
        {
            "finding_precision": _precision(0, 1),
            "finding_recall": _precision(0, 2),
            "finding_f1": _f1(0, 1, 2),
            "location_accuracy": _ratio(3, 4),
            "located_recall": _ratio(3, 5),
        },
        ("named_places", "places"),
    ),
}
assert set(SCORES) == set(CXR_TASKS)


def _value(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _counts(rows: list[dict], task: str, layout: str | None) -> np.ndarray:
    """(N, K) per-line counts of one task's rows."""
    return np.asarray([SCORES[task].line(r, layout) for r in rows], dtype=float)


def _per_class(rows: list[dict], task: str, layout: str | None) -> dict[str, dict]:
    """cxr_box: accuracy per reference class; cxr_labels: P/R/F1 and support per class."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for row in rows:
        said = set(find_classes(row["prediction"], layout))
        want = set(find_classes(row["reference"], layout))
        if task == "cxr_box":
            for name in want:
                out[name][0] += 1
                out[name][1] += float(said == want)
            continue
        for name in said | want:
            out[name][0] += name in said and name in want
            out[name][1] += name in said and name not in want
            out[name][2] += name in want and name not in said
    if task == "cxr_box":
        return {k: {"n": int(v[0]), "accuracy": v[1] / v[0]} for k, v in sorted(out.items())}
    table = np.asarray(list(out.values()), dtype=float).reshape(-1, 3)
    p, r, f = (_precision(0, 1)(table), _precision(0, 2)(table), _f1(0, 1, 2)(table))
    return {
        k: {
            "precision": _value(p[i]),
            "recall": _value(r[i]),
            "f1": _value(f[i]),
            "support": int(out[k][0] + out[k][2]),
        }
        for i, k in sorted(enumerate(out), key=lambda x: x[1])
    }


def score_task(
    rows: list[dict], task: str, layout: str | None, replicates: int, seed: int
) -> dict[str, Any]:
    """One task's block: ``n``, ``images``, each metric, its totals and ``ci95`` per metric."""
    spec = SCORES[task]
    counts = _counts(rows, task, layout)
    summed = counts.sum(0, keepdims=True)
    volumes = [r.get("volume") or "" for r in rows]
    block: dict[str, Any] = {"n": len(rows), "images": len({v for v in volumes if v})}
    block.update({name: _value(m(summed)[0]) for name, m in spec.metrics.items()})
    block.update({name: int(summed[0, spec.counts.index(name)]) for name in spec.totals})
    boot = VolumeBootstrap(volumes, replicates, seed) if replicates else None
    block["ci95"] = {
        name: boot.ci(boot.stat_replicates(counts, m)) if boot else None
        for name, m in spec.metrics.items()
    }
    if task in ("cxr_box", "cxr_labels"):
        block["per_class"] = _per_class(rows, task, layout)
    return block


def cxr_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(radiograph lines, other lines) of a predictions file."""
    mine = [r for r in rows if r.get("task") in CXR_TASKS]
    return mine, [r for r in rows if r.get("task") not in CXR_TASKS]


def resolve_layout(rows: list[dict], layout: str | None) -> tuple[str | None, str]:
    """(layout, how it was told): from ``--data``, from the references, or none."""
    if layout:
        return layout, "data"
    told = infer_layout([r["reference"] for r in rows])
    return told, "references" if told else "none (classes compared by their words)"


def score_cxr(
    rows: list[dict],
    layout: str | None = None,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
) -> dict[str, Any]:
    """Every radiograph task present in ``rows`` (see the module notes).

    Args:
        rows: prediction records (``volume``, ``task``, ``prediction``, ``reference``).
        layout: 'vindr-cxr' or 'chestxray14' (``--data``); None: told by the references.
        replicates: bootstrap replicates over images for the 95% intervals (0: none).
        seed: seed of the draw.

    Raises:
        ValueError: no radiograph line.
    """
    mine, _ = cxr_rows(rows)
    if not mine:
        raise ValueError(f"no radiograph lines (tasks {CXR_TASKS}) to score")
    layout, told = resolve_layout(mine, layout)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for row in mine:
        by_task[row["task"]].append(row)
    tasks = {
        t: score_task(by_task[t], t, layout, replicates, seed) for t in CXR_TASKS if t in by_task
    }
    headline = [
        {
            "task": task,
            "metric": metric,
            "name": name,
            "value": tasks[task][metric],
            "ci95": tasks[task]["ci95"][metric],
            "n": tasks[task]["n"],
            "target": target,
        }
        for task, metric, name, target in HEADLINE
        if task in tasks
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "modality": "cxr",
        "layout": layout,
        "layout_from": told,
        "num_predictions": len(mine),
        "num_images": len({r.get("volume") for r in mine}),
        "bootstrap": {
            "replicates": replicates,
            "seed": seed,
            "unit": "image",
            "method": "percentile 2.5-97.5 over resampled images",
        },
        "headline": headline,
        "tasks": tasks,
    }


def compare_cxr(
    rows: list[dict],
    other_rows: list[dict],
    layout: str | None = None,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap differences (this - other) of every task metric, on the radiograph lines
    both files hold (matched by volume, task, region, question and box).

    Returns:
        The shape of :func:`rgct.eval.report.compare_predictions`: ``num_matched``,
        ``num_volumes``, ``only_in_this``, ``only_in_other``, ``metrics: {"<task> <metric>":
        {"this", "other", "difference", "ci95", "p_value"}}``.

    Raises:
        ValueError: no shared line, a pair whose references differ, or no replicates.
    """
    if not replicates:
        raise ValueError("a comparison needs bootstrap replicates (> 0)")
    a = {line_key(r): r for r in cxr_rows(rows)[0]}
    b = {line_key(r): r for r in cxr_rows(other_rows)[0]}
    common = [k for k in a if k in b]
    if not common:
        raise ValueError("the two prediction files share no radiograph line to compare")
    for k in common:
        if a[k]["reference"] != b[k]["reference"]:
            raise ValueError(
                f"line {a[k].get('line')} and other line {b[k].get('line')} pair the same sample "
                "but their references differ"
            )
    layout, _ = resolve_layout([a[k] for k in common], layout)
    results: dict[str, Any] = {}
    for task in CXR_TASKS:
        keys = [k for k in common if k[1] == task]
        if not keys:
            continue
        boot = VolumeBootstrap([a[k].get("volume") or "" for k in keys], replicates, seed)
        ca, cb = (_counts([side[k] for k in keys], task, layout) for side in (a, b))
        for name, metric in SCORES[task].metrics.items():
            this, other = (
                _value(metric(ca.sum(0, keepdims=True))[0]),
                _value(metric(cb.sum(0, keepdims=True))[0]),
            )
            diff = (this - other) if this is not None and other is not None else float("nan")
            results[f"{task} {name}"] = {
                "this": this,
                "other": other,
                **paired_difference(
                    boot, boot.stat_replicates(ca, metric), boot.stat_replicates(cb, metric), diff
                ),
            }
    return {
        "num_matched": len(common),
        "num_volumes": len({a[k].get("volume") for k in common}),
        "only_in_this": len(a) - len(common),
        "only_in_other": len(b) - len(common),
        "layout": layout,
        "metrics": results,
    }


# --- metrics.md ------------------------------------------------------------------------------


def _fmt(value: Any, ci: list[float] | None = None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        text = f"{value:.4f}"
        return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    return str(value)


def cxr_markdown(metrics: dict[str, Any]) -> str:
    """``metrics.md`` of radiograph predictions: the headline table with the issue's targets,
    then every task's metrics and per-class tables."""
    from rgct.eval.report import comparison_markdown

    boot = metrics["bootstrap"]
    out = [
        "# Evaluation: chest radiographs",
        "",
        f"{metrics['num_predictions']} predictions over {metrics['num_images']} images; "
        f"vocabulary: {metrics['layout'] or 'both datasets'} (told by {metrics['layout_from']}). "
        f"Intervals: bootstrap 95% over images ({boot['replicates']} replicates, seed "
        f"{boot['seed']}).",
        "",
        "| measure | value [95% CI] | n | target |",
        "|---|---|---|---|",
    ]
    for h in metrics["headline"]:
        target = "–" if h["target"] is None else f">= {h['target']:.2f}"
        if h["target"] is not None and h["value"] is not None:
            target += ": **met**" if h["value"] >= h["target"] else ": not met"
        out.append(f"| {h['name']} | {_fmt(h['value'], h['ci95'])} | {h['n']} | {target} |")
    out.append("")
    for task, block in metrics["tasks"].items():
        spec = SCORES[task]
        out += [f"## {task}", "", "| metric | value [95% CI] |", "|---|---|"]
        out += [
            f"| {name} | {_fmt(block[name], block['ci95'].get(name))} |" for name in spec.metrics
        ]
        out += [f"| {name} | {block[name]} |" for name in ("n", "images", *spec.totals)]
        out.append("")
        per_class = block.get("per_class") or {}
        if per_class and task == "cxr_box":
            out += ["| reference class | n | accuracy |", "|---|---|---|"]
            out += [f"| {k} | {v['n']} | {_fmt(v['accuracy'])} |" for k, v in per_class.items()]
            out.append("")
        elif per_class:
            out += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            out += [
                f"| {k} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {_fmt(v['f1'])} | "
                f"{v['support']} |"
                for k, v in per_class.items()
            ]
            out.append("")
    if metrics.get("invalid_lines"):
        out += [f"{len(metrics['invalid_lines'])} invalid line(s) skipped (see metrics.json).", ""]
    if metrics.get("comparison"):
        out += ["## Comparison", "", f"Other file: {metrics['comparison'].get('other')}", ""]
        out += comparison_markdown(metrics["comparison"])
    return "\n".join(out)
