"""Score a segmenter on phantoms never used in training: Dice per class, finding boxes.

Usage::

    rgct synth --out data/heldout7 --num-volumes 40 --seed 7
    python scripts/eval_segmenter.py --checkpoint runs/segmenter --data data/heldout7 \
        --out runs/segmenter/heldout.json
"""

from __future__ import annotations

import argparse
import json
import logging

from rgct.files import write_json
from rgct.generate.segment import evaluate_segmenter
from rgct.model.segmenter import load_segmenter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="segmenter folder")
    p.add_argument("--data", required=True, help="phantom folder with ground_truth.jsonl")
    p.add_argument("--splits", default="train,valid", help="comma-separated splits to score")
    p.add_argument("--max-volumes", type=int, default=None)
    p.add_argument(
        "--finding-threshold",
        type=float,
        default=None,
        help="one finding threshold for every label (default: the checkpoint's calibrated ones)",
    )
    p.add_argument("--out", default=None, help="JSON file for the numbers")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    model, meta = load_segmenter(args.checkpoint)
    result = evaluate_segmenter(
        model,
        meta,
        args.data,
        tuple(args.splits.split(",")),
        max_volumes=args.max_volumes,
        finding_threshold=args.finding_threshold,
    )
    result = {"checkpoint": args.checkpoint, "data": args.data, **result}
    if args.out:
        write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("boxes", "lobe_accuracy", "side_accuracy")}, indent=1))
    d = result["dice"]
    print(f"Dice mean regions {d['mean_regions']:.3f}, mean lobes {d['mean_lobes']:.3f}")
    for name, value in d["per_class"].items():
        print(f"  {name:28s} {value if value is None else round(value, 3)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
