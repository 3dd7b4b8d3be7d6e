"""``rgct evaluate``: score a predictions JSONL (language, clinical, VQA, grounding).

Example::

    rgct evaluate --predictions runs/demo/preds.jsonl --data data/phantom --out runs/demo/metrics
"""

from __future__ import annotations

import argparse
import logging

from rgct.eval.labeler import CTRateLabeler
from rgct.eval.predictions import PredictionsError, load_ground_truth, load_predictions
from rgct.eval.report import evaluate_predictions, save_metrics

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, help="JSONL written by 'rgct generate'")
    parser.add_argument(
        "--data", default=None, help="dataset folder; its ground_truth.jsonl enables grounding"
    )
    parser.add_argument("--out", required=True, help="output folder for metrics.json/md and PNGs")
    parser.add_argument("--no-bertscore", action="store_true", help="skip BERTScore")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    parser.add_argument(
        "--hedges-negative",
        action="store_true",
        help="labeler: read hedged findings ('possible X') as negative",
    )
    parser.add_argument(
        "--rule-out-negative",
        action="store_true",
        help="labeler: read 'X cannot be excluded' as negative",
    )


def run(args: argparse.Namespace) -> int:
    try:
        rows = load_predictions(args.predictions)
        ground_truth = load_ground_truth(args.data) if args.data else None
    except PredictionsError as e:
        log.error("%s", e)
        return 2
    if args.data and ground_truth is None:
        log.warning("%s has no ground_truth.jsonl: grounding metrics skipped", args.data)
    labeler = CTRateLabeler(
        hedges_positive=not args.hedges_negative, rule_out_positive=not args.rule_out_negative
    )
    metrics = evaluate_predictions(
        rows,
        ground_truth=ground_truth,
        bertscore=not args.no_bertscore,
        meteor=not args.no_meteor,
        labeler=labeler,
    )
    paths = save_metrics(metrics, args.out)
    ov = metrics["overall"]
    lang = ov["language"]

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    print(
        f"{ov['num_samples']} samples ({', '.join(ov['tasks'])}): "
        f"BLEU-4 {f(lang['bleu_4'])}  METEOR {f(lang['meteor'])}  ROUGE-L {f(lang['rouge_l'])}  "
        f"CIDEr {f(lang['cider'])}  BERTScore-F1 {f(lang['bertscore_f1'])}  "
        f"clinical micro-F1 {f(ov['clinical']['micro']['f1'])}"
    )
    if metrics["grounding"]:
        g = metrics["grounding"]
        print(
            f"grounding: finding F1 {f(g['finding']['f1'])}  lobe acc {f(g['lobe_accuracy'])}  "
            f"size MAE {f(g['size_mae_mm'])} mm"
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
