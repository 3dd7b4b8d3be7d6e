"""Fit the per-label detection thresholds of a checkpoint's region classifier.

    python scripts/calibrate_evidence.py --checkpoint runs/stage3/model --data DIR \
        --skip-volumes 50 --report-volumes 50 --write

Runs the encoder + region classifier over every (volume, region) of ``--split`` except the
first ``--skip-volumes`` volumes (sorted by name: the ones a ``--limit``-ed held-out check
uses), picks for each CT-RATE label the threshold with the best F1, prints a table, writes
JSON, and with ``--write`` stores the thresholds as ``model.evidence_thresholds`` in the
checkpoint's ``rgct_config.yaml``. ``--report-volumes N`` also scores the fitted thresholds on
the first N (skipped) volumes: the ceiling of a detect-then-describe model's finding F1.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rgct.config import load_config, save_config
from rgct.constants import CT_RATE_LABELS
from rgct.eval.calibrate import collect_region_probabilities, detection_scores, fit_thresholds
from rgct.inference import pick_device
from rgct.model.builder import CONFIG_FILE, load_checkpoint

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True, help="checkpoint folder")
    ap.add_argument("--data", required=True, help="dataset with ground_truth.jsonl")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--skip-volumes", type=int, default=0, help="leave these for reporting")
    ap.add_argument("--max-volumes", type=int, default=None, help="calibrate on at most N")
    ap.add_argument("--report-volumes", type=int, default=0, help="score on the first N")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="JSON path (default CHECKPOINT/calibration.json)")
    ap.add_argument("--write", action="store_true", help="store the thresholds in the config")
    a = ap.parse_args()
    ckpt = Path(a.checkpoint)
    if a.report_volumes > a.skip_volumes:
        sys.exit("--report-volumes must not exceed --skip-volumes (they would overlap)")
    model, cfg = load_checkpoint(ckpt, device=pick_device(a.device))
    probs, labels, _ = collect_region_probabilities(
        model, cfg, a.data, a.split, a.skip_volumes, a.max_volumes
    )
    thresholds, report = fit_thresholds(probs, labels)
    report.update(
        {
            "checkpoint": str(ckpt),
            "data": str(a.data),
            "split": a.split,
            "skip_volumes": a.skip_volumes,
            "thresholds": thresholds,
        }
    )
    if a.report_volumes:
        p, y, _ = collect_region_probabilities(model, cfg, a.data, a.split, 0, a.report_volumes)
        report["report_volumes"] = a.report_volumes
        report["report_at_0.5"] = detection_scores(p, y, [0.5] * len(CT_RATE_LABELS))
        report["report_fitted"] = detection_scores(p, y, thresholds)
    print(f"{'label':38s} {'pos':>4s} {'F1@0.5':>7s} {'thr':>5s} {'F1':>5s}")
    for name, row in report["per_label"].items():
        print(
            f"{name:38s} {row['positives']:4d} {row['f1_at_0.5']:7.3f} "
            f"{row['threshold']:5.2f} {row['f1']:5.3f}"
        )
    print(
        f"micro F1 on {report['regions']} calibration regions: "
        f"{report['micro_f1_at_0.5']:.3f} at 0.5 -> {report['micro_f1']:.3f} fitted"
    )
    if a.report_volumes:
        r0, r1 = report["report_at_0.5"], report["report_fitted"]
        print(
            f"first {a.report_volumes} volumes: F1 {r0['f1']:.3f} at 0.5 -> {r1['f1']:.3f} "
            f"fitted (P {r1['precision']:.3f} R {r1['recall']:.3f})"
        )
    out = Path(a.out) if a.out else ckpt / "calibration.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    if a.write:
        saved = load_config([ckpt / CONFIG_FILE])
        saved.model.evidence_thresholds = thresholds
        save_config(saved, ckpt / CONFIG_FILE)
        print(f"stored model.evidence_thresholds in {ckpt / CONFIG_FILE}")
