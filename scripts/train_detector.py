"""Train the segmenter's focal detector (nodules by default) on crops; resumable: run the same
command again. The result is the ``--init`` segmenter with the detector, in ``--out``.

Usage::

    python scripts/train_detector.py --init rgct/assets/demo_model --data runs/seg_synth \
        --out runs/detector --steps 1500 --calibrate runs/calibration_synth --calibrate-volumes 60
    rgct segment ct.nii.gz --checkpoint runs/detector --out seg/     # its nodules, boxed
"""

from __future__ import annotations

import argparse
import logging

from rgct.train.detector import DetectorTrainConfig, calibrate_detector, fit_detector


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", required=True, help="segmenter folder (or a model folder with one)")
    p.add_argument("--data", required=True, help="phantoms with ground_truth.jsonl (RadGenome)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--classes", default="Lung nodule", help="comma list of finding labels")
    p.add_argument("--split", default="train")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--crops", type=int, default=4, help="crops per step")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pos-weight", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-volumes", type=int, default=None)
    p.add_argument("--workers", type=int, default=2, help="processes reading the volumes")
    p.add_argument("--calibrate", help="phantom folder whose findings set the thresholds")
    p.add_argument("--calibrate-volumes", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = DetectorTrainConfig(
        data_root=args.data,
        init=args.init,
        out_dir=args.out,
        classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()),
        split=args.split,
        steps=args.steps,
        crops=args.crops,
        width=args.width,
        lr=args.lr,
        pos_weight=args.pos_weight,
        seed=args.seed,
        max_volumes=args.max_volumes,
        workers=args.workers,
    )
    fit_detector(cfg)
    if args.calibrate:
        found = calibrate_detector(args.out, args.calibrate, max_volumes=args.calibrate_volumes)
        for label, score in found["scores"].items():
            print(label, found["finding_thresholds"][label], score)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
