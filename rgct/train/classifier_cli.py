"""``rgct classifier fit|calibrate``: fit a checkpoint's region classifier into a new folder.

    rgct classifier fit --checkpoint runs/stage0_dense/model --data DIR --out runs/head/model
    rgct classifier calibrate --checkpoint runs/stage3/model --data DIR --out runs/cal/model \
        --skip-volumes 50 --report-volumes 50
    rgct classifier fit ... --masks dataset,predicted   # also learn the segmenter's masks
    rgct classifier fit ... --masks predicted --head predicted   # a head for the segmenter's masks
    rgct classifier fit ... --masks predicted --head predicted --erode 1   # reading their cores
    rgct classifier calibrate ... --masks predicted --head predicted
    rgct classifier fit-lobes --checkpoint runs/grounded/model --data DIR --out runs/lobes/model
"""

from __future__ import annotations

import argparse
import json

from rgct.config import SOURCE_HEAD_NAMES
from rgct.model.region_classifier import FIT_TASKS


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = sub.add_parser("fit", help="add the histogram head and fit both heads (new folder)")
    cal = sub.add_parser("calibrate", help="fit per-label detection thresholds (new folder)")
    lobes = sub.add_parser(
        "fit-lobes",
        help="fit the lobe head (which lobe holds each label; rgct.model.lobe_head) (new folder)",
    )
    for p in (fit, cal, lobes):
        p.add_argument("--checkpoint", required=True, help="source checkpoint folder (unchanged)")
        p.add_argument("--data", required=True, help="dataset with ground_truth.jsonl")
        p.add_argument("--out", required=True, help="new checkpoint folder")
        p.add_argument("--max-volumes", type=int, default=None, help="use at most N volumes")
        p.add_argument("--device", default="auto")
        p.add_argument(
            "--masks",
            default="dataset",
            help="mask sources, comma list: dataset, predicted (the checkpoint's segmenter) "
            "or a folder of seg_<volume>/ masks",
        )
    for p in (fit, cal):
        p.add_argument(
            "--head",
            default=None,
            choices=SOURCE_HEAD_NAMES,
            help="fit / calibrate the classifier head of this mask source (model.source_heads: "
            "used when that source gives the masks) instead of the main head",
        )
    fit.add_argument("--split", default="train")
    fit.add_argument(
        "--tasks", default=",".join(FIT_TASKS), help="whose masks to fit on (comma list)"
    )
    fit.add_argument("--epochs", type=int, default=200)
    fit.add_argument("--lr", type=float, default=1e-3)
    fit.add_argument(
        "--weight-decay", type=float, default=1e-2, help="AdamW weight decay of both heads"
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--erode",
        type=int,
        default=None,
        help="with --head: that head reads its masks eroded by N voxels of the model grid "
        "(model.source_erosion; default: the checkpoint's)",
    )
    lobes.add_argument("--split", default="train")
    lobes.add_argument("--epochs", type=int, default=400)
    lobes.add_argument("--lr", type=float, default=3e-3)
    lobes.add_argument("--weight-decay", type=float, default=0.05)
    lobes.add_argument("--hidden", type=int, default=64, help="width of the hidden layer")
    lobes.add_argument("--seed", type=int, default=0)
    cal.add_argument("--split", default="valid")
    cal.add_argument("--skip-volumes", type=int, default=0, help="leave these for reporting")
    cal.add_argument("--report-volumes", type=int, default=0, help="score on the first N")


def run(args: argparse.Namespace) -> int:
    from rgct.train.classifier import (
        calibrate_checkpoint,
        calibration_table,
        fit_classifier_checkpoint,
    )

    if args.action == "fit-lobes":
        from rgct.train.lobe_head import fit_lobe_head_checkpoint

        record = fit_lobe_head_checkpoint(
            args.checkpoint,
            args.data,
            args.out,
            split=args.split,
            max_volumes=args.max_volumes,
            masks=[m for m in args.masks.split(",") if m],
            hidden=args.hidden,
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            seed=args.seed,
            device=args.device,
        )
        print(json.dumps(record, indent=1))
    elif args.action == "fit":
        record = fit_classifier_checkpoint(
            args.checkpoint,
            args.data,
            args.out,
            split=args.split,
            max_volumes=args.max_volumes,
            tasks=tuple(t for t in args.tasks.split(",") if t),
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            seed=args.seed,
            device=args.device,
            masks=[m for m in args.masks.split(",") if m],
            head=args.head,
            erode=args.erode,
        )
        print(json.dumps({k: v for k, v in record.items() if k != "loss"}, indent=1))
    else:
        report = calibrate_checkpoint(
            args.checkpoint,
            args.data,
            args.out,
            split=args.split,
            skip_volumes=args.skip_volumes,
            max_volumes=args.max_volumes,
            report_volumes=args.report_volumes,
            device=args.device,
            masks=[m for m in args.masks.split(",") if m],
            head=args.head,
        )
        print(calibration_table(report))
    print(f"wrote {args.out}")
    return 0
