"""``rgct evaluate``: score a predictions JSONL (language, clinical, VQA, grounding).

Example::

    rgct evaluate --predictions runs/demo/preds.jsonl --data data/phantom --out runs/demo/metrics
    rgct evaluate --predictions preds.jsonl --protocol reg2rg --out metrics_reg2rg/
    rgct evaluate --predictions new.jsonl --compare old.jsonl --out metrics_new/

Radiograph lines (tasks ``cxr_*``, from a VinDr-CXR or ChestX-ray14 checkpoint) are scored by
:mod:`rgct.eval.cxr` (presence, box-finding and side/zone accuracy, label and report F1, with
95% intervals over images); ``--data`` on such a folder checks every reference against its
boxes and labels. A file mixing radiograph and CT lines is refused: score them apart.

Every bad line of a predictions file (not UTF-8, not JSON, missing or bad fields, an empty
prediction, a duplicate (volume, task, region, question), a volume that ``--data`` does not
hold) is listed with its line number; nothing is scored unless ``--skip-invalid`` is given,
which scores the valid lines and records the skipped ones in ``metrics.json``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rgct.data.truth import GroundTruthError, load_ground_truth
from rgct.eval.bootstrap import DEFAULT_REPLICATES
from rgct.eval.labeler import CTRateLabeler
from rgct.eval.predictions import LineCheck, PredictionsError, read_predictions
from rgct.eval.report import (
    PROTOCOLS,
    compare_predictions,
    comparison_markdown,
    evaluate_predictions,
    language_keys,
    save_metrics,
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, help="JSONL written by 'rgct generate'")
    parser.add_argument(
        "--data",
        default=None,
        help="dataset folder; its ground_truth.jsonl enables grounding (a VinDr-CXR or "
        "ChestX-ray14 folder: radiograph references are checked against its boxes and labels)",
    )
    parser.add_argument("--out", required=True, help="output folder for metrics.json/md and PNGs")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="coco",
        help="language metrics: coco (pycocoevalcap, default) or reg2rg (Reg2RG's published "
        "protocol: smoothed per-sample BLEU, NLTK METEOR, ROUGE-1/2/L, CIDEr)",
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="OTHER.jsonl",
        help="a second predictions file of the same samples: paired bootstrap differences",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="score the valid lines when some are bad (they are listed either way)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_REPLICATES,
        help="bootstrap replicates over volumes for the 95%% intervals (0: none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draw")
    parser.add_argument("--no-bertscore", action="store_true", help="skip BERTScore")
    parser.add_argument(
        "--no-meteor", action="store_true", help="skip METEOR (coco: Java; reg2rg: WordNet)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
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


def _read(
    path: str, ground_truth: dict | None, skip_invalid: bool, check: LineCheck | None = None
) -> tuple[list[dict], list]:
    report = read_predictions(path, ground_truth, check=check)
    if report.problems:
        text = report.summary()
        if not skip_invalid:
            raise PredictionsError(text + "\n(--skip-invalid scores the valid lines only)")
        log.warning("%s\nskipping these lines (--skip-invalid)", text)
    if not report.rows:
        raise PredictionsError(f"{path}: no valid prediction lines")
    return report.rows, report.problems


def _run_source(args: argparse.Namespace, layout: str) -> int:
    """``--data`` is a RAD-ChestCT or DeepLesion folder: score against its own truth."""
    from rgct.eval.sources import score_deeplesion, score_radchest, sources_markdown
    from rgct.files import write_json, write_text
    from rgct.jsonl import iter_jsonl

    rows = [rec for _, rec in iter_jsonl(Path(args.predictions), PredictionsError)]
    if layout == "rad-chestct":
        from rgct.data.radchestct import RADCHEST_SPLITS, load_radchest

        metrics = {}
        for split in RADCHEST_SPLITS:
            index = load_radchest(args.data, split)
            if index.volumes:
                metrics[split] = score_radchest(rows, index)
        result = {"rad-chestct": metrics}
    else:
        from rgct.data.deeplesion import load_deeplesion

        result = {"deeplesion": score_deeplesion(rows, load_deeplesion(args.data))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result)
    write_text(out / "metrics.md", sources_markdown(result))
    print(sources_markdown(result)[:4000])
    return 0


def _run_cxr(args: argparse.Namespace, layout: str | None) -> int:
    """Radiograph lines; ``layout``: ``--data`` is a folder of that layout (references checked
    against its truth)."""
    from rgct.data.io import DataError
    from rgct.eval.cxr import compare_cxr, cxr_markdown, cxr_rows, score_cxr
    from rgct.eval.cxr_truth import load_cxr_truth, truth_check
    from rgct.files import write_json, write_text

    try:
        check = None
        if layout is not None:
            check = truth_check(load_cxr_truth(args.data, layout), layout, args.data)
        rows, problems = _read(args.predictions, None, args.skip_invalid, check)
        other = _read(args.compare, None, args.skip_invalid, check)[0] if args.compare else None
        ct_lines = cxr_rows(rows)[1]
        if ct_lines:
            raise PredictionsError(
                f"{args.predictions}: {len(ct_lines)} CT line(s) among radiograph lines: score "
                "each modality on its own"
            )
    except (PredictionsError, DataError) as e:
        log.error("%s", e)
        return 2
    metrics = score_cxr(rows, layout, args.bootstrap, args.seed)
    metrics["invalid_lines"] = [
        {"line": p.line, "kind": p.kind, "message": p.message} for p in problems
    ]
    if other is not None:
        try:
            metrics["comparison"] = compare_cxr(
                rows, other, metrics["layout"], args.bootstrap or DEFAULT_REPLICATES, args.seed
            )
        except ValueError as e:
            log.error("--compare %s: %s", args.compare, e)
            return 2
        metrics["comparison"]["other"] = str(args.compare)
    out = Path(args.out)
    paths = [
        write_json(out / "metrics.json", metrics),
        write_text(out / "metrics.md", text := cxr_markdown(metrics)),
    ]
    print(text.split("\n## ")[0])
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _has_cxr_lines(path: str) -> bool:
    """Whether a predictions file holds radiograph lines (its readable lines' tasks)."""
    from rgct.constants import CXR_TASKS

    try:
        rows = read_predictions(path).rows
    except PredictionsError:
        return False
    return any(r.get("task") in CXR_TASKS for r in rows)


def run(args: argparse.Namespace) -> int:
    if args.data:
        from rgct.data.source_report import detect_layout

        layout = detect_layout(args.data)
        if layout in ("vindr-cxr", "chestxray14"):
            return _run_cxr(args, layout)
        if _has_cxr_lines(args.predictions):
            log.error(
                "%s holds chest-radiograph lines but --data %s is a %s folder (CT): give the "
                "VinDr-CXR or ChestX-ray14 folder they come from, or no --data",
                args.predictions,
                args.data,
                layout,
            )
            return 2
        if layout != "radgenome":
            return _run_source(args, layout)
    elif _has_cxr_lines(args.predictions):
        return _run_cxr(args, None)
    try:
        ground_truth = load_ground_truth(args.data) if args.data else None
        rows, problems = _read(args.predictions, ground_truth, args.skip_invalid)
        other = _read(args.compare, ground_truth, args.skip_invalid)[0] if args.compare else None
    except (PredictionsError, GroundTruthError) as e:
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
        protocol=args.protocol,
        bootstrap=args.bootstrap,
        seed=args.seed,
        progress=not args.no_progress,
    )
    metrics["invalid_lines"] = [
        {"line": p.line, "kind": p.kind, "message": p.message} for p in problems
    ]
    if other is not None:
        try:
            metrics["comparison"] = compare_predictions(
                rows,
                other,
                protocol=args.protocol,
                meteor=not args.no_meteor,
                labeler=labeler,
                bootstrap=args.bootstrap or DEFAULT_REPLICATES,
                seed=args.seed,
                progress=not args.no_progress,
            )
        except ValueError as e:
            log.error("--compare %s: %s", args.compare, e)
            return 2
        metrics["comparison"]["other"] = str(args.compare)
    paths = save_metrics(metrics, args.out)
    _print_summary(metrics)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _print_summary(metrics: dict) -> None:
    ov = metrics["overall"]
    mean = ov["language_per_sample_mean"]
    ci = ov.get("ci95", {}).get("language_per_sample_mean", {})

    def f(v: float | None, interval: list[float] | None = None) -> str:
        if v is None:
            return "n/a"
        return f"{v:.4f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")

    keys = [
        k
        for k in language_keys(metrics["protocol"])
        if k in ("bleu_4", "meteor", "rouge_l", "cider", "bertscore_f1")
    ]
    clin = ov["clinical"]
    cci = ov.get("ci95", {}).get("clinical") or {}
    print(
        f"{ov['num_samples']} samples ({', '.join(ov['tasks'])}), protocol {metrics['protocol']}, "
        "per-sample means with bootstrap 95% CI over volumes:"
    )
    print("  " + "  ".join(f"{k} {f(mean[k], ci.get(k))}" for k in keys))
    print(
        f"  clinical micro-F1 {f(clin['micro']['f1'], cci.get('micro_f1'))}  "
        f"CRG {f(clin['crg'], cci.get('crg'))}"
    )
    if metrics["grounding"]:
        g = metrics["grounding"]
        gci = g.get("ci95") or {}
        print(
            f"grounding: finding F1 {f(g['finding']['f1'], gci.get('finding_f1'))}  "
            f"lobe acc {f(g['lobe_accuracy'], gci.get('lobe_accuracy'))} (n {g['lobe_n']})  "
            f"side acc {f(g['side_accuracy'], gci.get('side_accuracy'))} (n {g['side_n']})  "
            f"size MAE {f(g['size_mae_mm'])} mm"
        )
    if metrics.get("invalid_lines"):
        print(f"skipped {len(metrics['invalid_lines'])} invalid line(s) (see metrics.json)")
    if metrics.get("comparison"):
        print("\n".join(comparison_markdown(metrics["comparison"])))
