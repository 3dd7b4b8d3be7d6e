"""``rgct heldout``: does a checkpoint use the image? Score it and its blind baseline.

    rgct heldout --checkpoint runs/stage3/model --data DIR --limit 50 --out runs/heldout [--oracle]

Generates region reports and VQA answers for the first ``--limit`` volumes of ``--split``
(sorted by name) normally and with the visual input zeroed (the blind baseline), scores both
against ``ground_truth.jsonl``, prints the table and writes ``OUT/heldout.json``. ``--oracle``
(detect-then-describe models) adds a run with the true labels as the detections line.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="phantom dataset (with ground_truth.jsonl)")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--limit", type=int, default=None, help="first N volumes of the split")
    parser.add_argument("--out", required=True, help="folder for predictions and heldout.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--tasks",
        default=None,
        help="radiograph checkpoints: comma-separated radiograph tasks (default all)",
    )
    parser.add_argument(
        "--masks", default="dataset", help="dataset | predicted (the checkpoint's segmenter) | DIR"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="generation batch size")
    parser.add_argument(
        "--no-blind",
        action="store_true",
        help="leave the blind baseline out (e.g. when it was measured with another mask source)",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also run with the true labels as the detections line (evidence-prompt models)",
    )


def run(args: argparse.Namespace) -> int:
    from rgct.generate.heldout import card_section, heldout_eval
    from rgct.inference import pick_device
    from rgct.model.checkpoint import load_checkpoint

    overrides = [f"generation.batch_size={args.batch_size}"] if args.batch_size else None
    model, cfg = load_checkpoint(
        args.checkpoint, device=pick_device(args.device), overrides=overrides
    )
    from rgct.generate.masks import build_mask_provider

    masks = build_mask_provider(
        args.masks, args.checkpoint, cfg, args.data, next(model.parameters()).device
    )
    from rgct.generate.localize import build_localizer

    localizer = build_localizer(model, cfg, args.checkpoint, args.data, masks)
    result = heldout_eval(
        model,
        cfg,
        args.data,
        args.out,
        split=args.split,
        limit=args.limit,
        oracle=args.oracle,
        masks=masks,
        localizer=localizer,
        blind=not args.no_blind,
        tasks=args.tasks.split(",") if args.tasks else None,
    )
    print(card_section(result))
    return 0
