"""Score a predictions file and write ``metrics.json``, ``metrics.md`` and bar charts.

``metrics.json`` schema (``schema_version`` 1); every score is a float in [0, 1] unless noted,
null when it could not be computed (no samples, METEOR without Java, BERTScore switched off)::

    schema_version            1
    num_predictions           int, lines in the predictions file
    tokenization              str, how texts were tokenised for BLEU/METEOR/ROUGE-L/CIDEr
    bertscore                 str describing the BERTScore variant, or null when skipped
    labeler                   {vocab, hedges_positive, rule_out_positive}
    overall                   report-like lines (tasks "report" and "region_report"; all lines
                              when there are none; the tasks used are listed in "tasks"):
        num_samples, tasks
        language              corpus level: bleu_1 bleu_2 bleu_3 bleu_4 meteor rouge_l
                              cider (>= 0, not bounded by 1) bertscore_f1
        language_per_sample_mean   the same keys, mean of per-sample scores
        clinical              CT-RATE labels of reference vs prediction (rgct.eval.clinical):
            micro             {precision, recall, f1}
            macro             {precision, recall, f1, num_labels}
            per_label.<label> {precision, recall, f1, support, predicted} (18 labels)
            num_samples
    per_region.<region>       report-like lines grouped by their "region" field (ten regions
                              and "whole scan"): {num_samples, language,
                              language_per_sample_mean, clinical}
    per_task.<task>           every task present: {num_samples, language,
                              language_per_sample_mean}
    vqa.<task>                presence: {accuracy, n, unparsed};
                              abnormality/location/disorders: {exact, normalized, item_f1, n};
                              size: {mae_mm, dims_mae_mm, n, n_scored, unparsed}
                              (see rgct.eval.vqa)
    grounding                 null without ground truth, else (rgct.eval.grounding):
        finding               {precision, recall, f1, tp, fp, fn}
        lobe_accuracy, lobe_n, side_accuracy, side_n, size_mae_mm (mm), size_n,
        num_asked_regions, num_volumes

CIDEr's IDF comes from the scored subset, so per-region/per-task CIDEr is not comparable
with the overall value.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rgct.constants import CT_RATE_LABELS, REGIONS, TASKS, WHOLE_SCAN
from rgct.eval.clinical import clinical_scores, label_matrix
from rgct.eval.grounding import grounding_scores
from rgct.eval.labeler import CTRateLabeler, default_labeler
from rgct.eval.language import (
    BERTSCORE_DESCRIPTION,
    LANGUAGE_KEYS,
    TOKENIZATION,
    BertScorer,
    MeteorScorer,
    language_scores,
)
from rgct.eval.vqa import VQA_SCORERS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REPORT_TASKS = ("report", "region_report")


def _text_block(
    rows: list[dict],
    idx: list[int],
    meteor: MeteorScorer | None,
    bert_f1: np.ndarray | None,
    pred_labels: np.ndarray | None = None,
    ref_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    preds = [rows[i]["prediction"] for i in idx]
    refs = [rows[i]["reference"] for i in idx]
    corpus, mean = language_scores(
        preds, refs, meteor=meteor, bertscore_f1=None if bert_f1 is None else bert_f1[idx]
    )
    block: dict[str, Any] = {
        "num_samples": len(idx),
        "language": corpus,
        "language_per_sample_mean": mean,
    }
    if pred_labels is not None and ref_labels is not None:
        block["clinical"] = clinical_scores(pred_labels[idx], ref_labels[idx])
    return block


def evaluate_predictions(
    rows: list[dict],
    ground_truth: dict[str, dict] | None = None,
    bertscore: bool = True,
    meteor: bool = True,
    labeler: CTRateLabeler | None = None,
) -> dict[str, Any]:
    """All metrics for a list of prediction lines (see the module docstring for the schema).

    Args:
        rows: Prediction records (``prediction``, ``reference``, ``task``, ``region`` ...).
        ground_truth: volume -> ground-truth record, or None to skip grounding.
        bertscore: Compute BERTScore (loads the offline MiniLM once).
        meteor: Compute METEOR (starts one Java process).
        labeler: Labeler for clinical and grounding scores; the default one if None.

    Returns:
        The metrics dictionary written to ``metrics.json``.
    """
    lab = labeler or default_labeler()
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_task[r.get("task", "report")].append(i)
    report_idx = [i for t in REPORT_TASKS for i in by_task.get(t, [])]
    overall_tasks = [t for t in REPORT_TASKS if t in by_task]
    if not report_idx:
        report_idx, overall_tasks = list(range(len(rows))), sorted(by_task)

    bert_f1 = None
    if bertscore:
        log.info("BERTScore on %d pairs (offline MiniLM, CPU)", len(rows))
        scorer = BertScorer()
        _, _, bert_f1 = scorer.score(
            [r["prediction"] for r in rows], [r["reference"] for r in rows]
        )
    meteor_scorer = MeteorScorer() if meteor else None
    try:
        log.info("labelling %d report-like predictions and references", len(report_idx))
        pred_labels = np.zeros((len(rows), len(CT_RATE_LABELS)), dtype=int)
        ref_labels = np.zeros_like(pred_labels)
        pred_labels[report_idx] = label_matrix([rows[i]["prediction"] for i in report_idx], lab)
        ref_labels[report_idx] = label_matrix([rows[i]["reference"] for i in report_idx], lab)

        overall = _text_block(rows, report_idx, meteor_scorer, bert_f1, pred_labels, ref_labels)
        overall["tasks"] = overall_tasks
        by_region: dict[str, list[int]] = defaultdict(list)
        for i in report_idx:
            by_region[rows[i].get("region") or WHOLE_SCAN].append(i)
        region_order = [r for r in (*REGIONS, WHOLE_SCAN) if r in by_region]
        region_order += sorted(set(by_region) - set(region_order))
        per_region = {
            region: _text_block(
                rows, by_region[region], meteor_scorer, bert_f1, pred_labels, ref_labels
            )
            for region in region_order
        }
        per_task = {
            task: _text_block(rows, by_task[task], meteor_scorer, bert_f1)
            for task in TASKS
            if task in by_task
        }
    finally:
        if meteor_scorer is not None:
            meteor_scorer.close()
    vqa = {
        task: VQA_SCORERS[task](
            [rows[i]["prediction"] for i in by_task[task]],
            [rows[i]["reference"] for i in by_task[task]],
        )
        for task in TASKS
        if task in by_task and task in VQA_SCORERS
    }
    grounding = grounding_scores(rows, ground_truth, lab) if ground_truth is not None else None
    return {
        "schema_version": SCHEMA_VERSION,
        "num_predictions": len(rows),
        "tokenization": TOKENIZATION,
        "bertscore": BERTSCORE_DESCRIPTION if bertscore else None,
        "labeler": {
            "vocab": lab.vocab_path.name,
            "hedges_positive": lab.hedges_positive,
            "rule_out_positive": lab.rule_out_positive,
        },
        "overall": overall,
        "per_region": per_region,
        "per_task": per_task,
        "vqa": vqa,
        "grounding": grounding,
    }


# --- writing --------------------------------------------------------------------------------
def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """Markdown tables of a metrics dictionary."""
    ov = metrics["overall"]
    out = [
        "# Evaluation",
        "",
        f"{metrics['num_predictions']} predictions; overall = tasks {', '.join(ov['tasks'])} "
        f"({ov['num_samples']} samples). Tokenisation: {metrics['tokenization']}.",
        "",
        "## Language (overall)",
        "",
    ]
    out += _table(
        ["", *LANGUAGE_KEYS],
        [
            ["corpus", *(ov["language"][k] for k in LANGUAGE_KEYS)],
            ["per-sample mean", *(ov["language_per_sample_mean"][k] for k in LANGUAGE_KEYS)],
        ],
    )
    out += ["## Per region", ""]
    out += _table(
        ["region", "n", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "BERTScore F1", "clin. micro F1"],
        [
            [
                name,
                b["num_samples"],
                b["language"]["bleu_4"],
                b["language"]["meteor"],
                b["language"]["rouge_l"],
                b["language"]["cider"],
                b["language"]["bertscore_f1"],
                b["clinical"]["micro"]["f1"],
            ]
            for name, b in metrics["per_region"].items()
        ],
    )
    out += ["## Per task", ""]
    out += _table(
        ["task", "n", "BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "BERTScore F1"],
        [
            [
                t,
                b["num_samples"],
                *(
                    b["language"][k]
                    for k in ("bleu_1", "bleu_4", "rouge_l", "cider", "bertscore_f1")
                ),
            ]
            for t, b in metrics["per_task"].items()
        ],
    )
    clin = ov["clinical"]
    out += ["## Clinical efficacy (CT-RATE labels, overall)", ""]
    out += _table(
        ["", "precision", "recall", "F1"],
        [[k, clin[k]["precision"], clin[k]["recall"], clin[k]["f1"]] for k in ("micro", "macro")],
    )
    out += _table(
        ["label", "precision", "recall", "F1", "support", "predicted"],
        [
            [name, v["precision"], v["recall"], v["f1"], v["support"], v["predicted"]]
            for name, v in clin["per_label"].items()
        ],
    )
    if metrics["vqa"]:
        out += ["## VQA", ""]
        out += _table(
            ["task", "metric", "value"],
            [[t, k, v] for t, block in metrics["vqa"].items() for k, v in block.items()],
        )
    g = metrics.get("grounding")
    if g:
        out += ["## Grounding (phantom ground truth)", ""]
        out += _table(
            ["metric", "value"],
            [[f"finding {k}", v] for k, v in g["finding"].items()]
            + [[k, v] for k, v in g.items() if k != "finding"],
        )
    return "\n".join(out)


def _plot_per_region(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = list(metrics["per_region"])
    series = {
        "BLEU-4": [metrics["per_region"][r]["language"]["bleu_4"] for r in regions],
        "ROUGE-L": [metrics["per_region"][r]["language"]["rouge_l"] for r in regions],
        "METEOR": [metrics["per_region"][r]["language"]["meteor"] for r in regions],
        "BERTScore F1": [metrics["per_region"][r]["language"]["bertscore_f1"] for r in regions],
        "clinical micro F1": [metrics["per_region"][r]["clinical"]["micro"]["f1"] for r in regions],
    }
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(regions) + 3.5), 4.5))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(regions))
    for j, (name, vals) in enumerate(series.items()):
        ax.bar(x + (j - (len(series) - 1) / 2) * width, [v or 0.0 for v in vals], width, label=name)
    ax.set_xticks(
        x,
        [f"{r}\n(n={metrics['per_region'][r]['num_samples']})" for r in regions],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title("Report metrics per region")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _plot_per_label(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_label = metrics["overall"]["clinical"]["per_label"]
    names = list(per_label)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(names) + 1.5))
    h = 0.27
    for j, key in enumerate(("precision", "recall", "f1")):
        ax.barh(y + (j - 1) * h, [per_label[n][key] for n in names], h, label=key)
    ax.set_yticks(y, [f"{n} (support {per_label[n]['support']})" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    ax.set_title("Clinical efficacy per CT-RATE label (reference vs prediction)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def save_metrics(metrics: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write metrics.json, metrics.md, per_region.png and per_label.png (atomically).

    Args:
        metrics: Output of :func:`evaluate_predictions`.
        out_dir: Folder, created if missing.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    paths = [
        out / "metrics.json",
        out / "metrics.md",
        out / "per_region.png",
        out / "per_label.png",
    ]

    def write_text(text: str):
        def write(tmp: str) -> None:
            Path(tmp).write_text(text, encoding="utf-8")

        return write

    _atomic_write(paths[0], write_text(json.dumps(metrics, indent=2) + "\n"))
    _atomic_write(paths[1], write_text(metrics_markdown(metrics)))
    _plot_per_region(metrics, paths[2])
    _plot_per_label(metrics, paths[3])
    return paths
