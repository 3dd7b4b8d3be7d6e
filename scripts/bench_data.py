"""Benchmark volume loading: cold (NIfTI -> model tensor) vs the disk cache.

python scripts/bench_data.py --data /data/rg --split train --max-volumes 20
python scripts/bench_data.py --synth 8 --out bench_data.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

from rgct.config import DataConfig
from rgct.data.layout import volume_path
from rgct.data.records import find_volumes
from rgct.data.transforms import TransformCache, build_deterministic_transforms, run_transforms


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="dataset folder in the RadGenome layout")
    src.add_argument("--synth", type=int, metavar="N", help="generate N phantom volumes first")
    p.add_argument("--split", default="train")
    p.add_argument("--max-volumes", type=int, default=20)
    p.add_argument(
        "--input-shape", type=int, nargs=3, default=(64, 128, 128), metavar=("D", "H", "W")
    )
    p.add_argument("--cached-passes", type=int, default=3, help="timed passes over the cache")
    p.add_argument("--out", default="bench_data.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "synth"
        if args.synth:
            from rgct.data.synth import write_dataset

            write_dataset(root, num_volumes=args.synth, seed=0, valid_fraction=0.0, workers=1)
        cfg = DataConfig(root=str(root), input_shape=tuple(args.input_shape))
        paths = [volume_path(root, v) for v in find_volumes(root, args.split)[: args.max_volumes]]
        if not paths:
            raise SystemExit(f"{root}: no volumes in split {args.split!r}")
        det = build_deterministic_transforms(cfg)
        t0 = time.perf_counter()
        for path in paths:
            run_transforms(det, {"image": str(path)})
        cold = time.perf_counter() - t0

        cache = TransformCache(cfg, Path(tmp) / "cache")
        t0 = time.perf_counter()
        for path in paths:
            cache.image(path)
        fill = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.cached_passes):
            for path in paths:
                cache.image(path)
        cached = (time.perf_counter() - t0) / args.cached_passes

    result = {
        "volumes": len(paths),
        "input_shape": list(args.input_shape),
        "cold_volumes_per_s": _rate(len(paths), cold),
        "cache_fill_volumes_per_s": _rate(len(paths), fill),
        "cached_volumes_per_s": _rate(len(paths), cached),
        "speedup_cached_vs_cold": cold / cached if cached > 0 else float("inf"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"{'measure':28s}{'value':>14s}")
    for key, value in result.items():
        print(
            f"{key:28s}{value:>14.2f}" if isinstance(value, float) else f"{key:28s}{value!s:>14s}"
        )
    out = Path(args.out)
    tmp_out = out.with_suffix(out.suffix + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
