"""Train the learned segmenter on a dataset's masks (resumable: run the same command again).

Usage::

    python scripts/train_segmenter.py --data data/phantoms --out runs/segmenter --steps 400
    python scripts/train_segmenter.py --data data/phantoms_vindr --out runs/film_seg --shape 128 128
    python scripts/train_segmenter.py --data data/phantoms_vindr --out runs/film_det --shape 128 128 \
        --loss balanced --set backbone=cnn --set channels=24,48,96 --set internal_scale=1.0
    python scripts/train_segmenter.py --data data/phantoms --out runs/seg_refine \
        --set refine_channels=8 --set channels=16,32,64,128,256
    python scripts/train_segmenter.py --data data/phantoms --out runs/seg_rim \
        --init rgct/assets/demo_model --train-parts refine --bright-weight 20 --steps 150
"""

from __future__ import annotations

import argparse
import logging

from rgct.train.segmenter import SegmenterTrainConfig, fit_segmenter, prepare_cache


def _value(text: str):
    if "," in text:
        return tuple(int(v) for v in text.split(","))
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset folder (RadGenome layout)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--split", default="train")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--max-volumes", type=int, default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--finding-pos-weight", type=float, default=1.0, help="BCE weight of finding voxels"
    )
    p.add_argument("--init", help="segmenter folder to fine-tune (its network)")
    p.add_argument(
        "--train-parts",
        default="unet,cnn,refine",
        help="comma list of the submodules that learn: unet (or cnn: the backbone), refine",
    )
    p.add_argument(
        "--loss",
        choices=("dice_bce", "balanced"),
        default="dice_bce",
        help="BCE + soft Dice, or the class-balanced BCE (the radiograph finding detector)",
    )
    p.add_argument(
        "--bright-weight",
        type=float,
        default=1.0,
        help="BCE weight of voxels >= 130 HU (bone rims, calcium)",
    )
    p.add_argument(
        "--prepare-workers", type=int, default=0, help="fill the cache with N processes first"
    )
    p.add_argument("--max-seconds", type=float, default=None, help="stop (and save) after this")
    p.add_argument(
        "--shape",
        type=int,
        nargs="+",
        default=(64, 128, 128),
        help="model grid: D H W for CT volumes, H W for radiographs (a VinDr-CXR or "
        "ChestX-ray14 folder)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Segmenter keyword argument, e.g. refine_channels=8 or channels=16,32,64",
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    model = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set wants KEY=VALUE, got {item!r}")
        model[key] = _value(value)
    cfg = SegmenterTrainConfig(
        data_root=args.data,
        out_dir=args.out,
        split=args.split,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        save_every=args.save_every,
        log_every=args.log_every,
        num_workers=args.workers,
        max_volumes=args.max_volumes,
        cache_dir=args.cache_dir,
        seed=args.seed,
        max_seconds=args.max_seconds,
        finding_pos_weight=args.finding_pos_weight,
        input_shape=tuple(args.shape),
        model=model,
        init=args.init,
        train_parts=tuple(x for x in args.train_parts.split(",") if x),
        bright_weight=args.bright_weight,
        loss=args.loss,
    )
    if args.prepare_workers:
        prepare_cache(cfg, args.prepare_workers)
    fit_segmenter(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
