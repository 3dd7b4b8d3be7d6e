"""Choose a segmenter's per-label finding thresholds on calibration phantoms (new folder).

A CT segmenter is calibrated on the phantom volumes' findings, a film (radiograph) segmenter
on the films' boxes (film-level detection F1 per class; its ``--splits`` default ``test``).

Usage::

    rgct synth --out data/calib5 --num-volumes 24 --seed 5
    python scripts/calibrate_segmenter.py --checkpoint runs/segmenter --data data/calib5 \
        --out runs/segmenter_calibrated
    python scripts/calibrate_segmenter.py --checkpoint runs/film_seg --data data/phantoms_vindr \
        --out runs/film_seg_calibrated
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rgct.generate.localize_cxr import (
    calibrate_film_segmenter,
    is_film_segmenter,
    score_film_segmenter,
)
from rgct.generate.segment import calibrate_findings
from rgct.model.segmenter import load_segmenter, save_segmenter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="segmenter folder")
    p.add_argument(
        "--data", required=True, help="calibration phantoms (not training, not held-out)"
    )
    p.add_argument(
        "--splits", default=None, help="default train,valid (CT) or test (a film segmenter)"
    )
    p.add_argument("--max-volumes", type=int, default=None)
    p.add_argument("--out", required=True, help="new segmenter folder")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if Path(args.out).resolve() == Path(args.checkpoint).resolve():
        p.error("--out must be a new folder (a finished checkpoint is never edited in place)")
    model, meta = load_segmenter(args.checkpoint)
    if is_film_segmenter(model):
        split = args.splits or "test"
        if "," in split:
            p.error("a film segmenter is calibrated on one split")
        result = calibrate_film_segmenter(model, meta, args.data, split, max_films=args.max_volumes)
        meta = {
            **meta,
            "finding_thresholds": result["finding_thresholds"],
            "finding_calibration": {
                "data": args.data,
                "films": result["films"],
                "scores": result["scores"],
            },
        }
        save_segmenter(args.out, model, meta)
        scored = score_film_segmenter(model, meta, args.data, split, max_films=args.max_volumes)
        print(json.dumps({**result, "on_calibration_films": scored}, indent=1))
        return 0
    args.splits = args.splits or "train,valid"
    result = calibrate_findings(
        model, meta, args.data, tuple(args.splits.split(",")), max_volumes=args.max_volumes
    )
    meta = {
        **meta,
        "finding_thresholds": result["finding_thresholds"],
        "finding_min_voxels": result["finding_min_voxels"],
        "finding_calibration": {
            "data": args.data,
            "volumes": result["volumes"],
            "scores": result["scores"],
        },
    }
    save_segmenter(args.out, model, meta)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
