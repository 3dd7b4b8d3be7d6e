"""Benchmark training throughput: the CPU config at 1 and 2 processes (accelerate, gloo).

Runs are given as PROCESSESxTHREADS (default, N cores: 1xN, 1x1, 2x(N/2): the same cores
used by threads or by processes).
Each run is ``scripts/train.py`` in a subprocess; step time and samples/s are the medians of
the rows of ``<output_dir>/metrics.jsonl`` after the first (warm-up) step. Peak RSS is the
summed RSS of the run's process tree, sampled every 0.2 s, and the largest single child process
(``RUSAGE_CHILDREN``, cumulative over the runs). The dataset is a synthetic phantom set
(``rgct.data.synth``) unless --data names one; its transform cache is filled before timing.

    python scripts/bench_train.py --out bench/train.json
    python scripts/bench_train.py --config configs/model/smollm2.yaml --config configs/train/tiny.yaml
    python scripts/bench_train.py --quick --out train.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from bench_common import REPO, machine_info, offline_env, peak_rss_mb, print_table, write_json

from rgct.config import RGCTConfig, load_config
from rgct.data.dataset import RGCTDataset

DEFAULT_CONFIGS = [REPO / "configs/model/tiny.yaml", REPO / "configs/train/tiny.yaml"]
TWO_PROC = REPO / "configs/accelerate/cpu_2proc.yaml"
SYNTH_SHAPE = (32, 64, 64)
COLUMNS = [
    "procs",
    "threads_per_proc",
    "steps",
    "step_time_s",
    "samples_per_s",
    "speedup_vs_first",
    "peak_rss_tree_mb",
    "wall_s",
]


def make_dataset(root: Path, volumes: int) -> Path:
    """A small synthetic phantom dataset (train + valid splits) at ``root``."""
    from rgct.data.synth import write_dataset

    write_dataset(
        root,
        num_volumes=volumes,
        seed=0,
        shape=SYNTH_SHAPE,
        valid_fraction=0.2,
        workers=1,
        progress=False,
    )
    return root


def warm_cache(cfg: RGCTConfig) -> int:
    """Fill the transform cache for every (volume, mask) of the split, so no run pays for it."""
    dataset = RGCTDataset(cfg.data, cfg.data.train_split, train=False)
    pairs = {(s.image_path, s.mask_path): s for s in dataset.samples}
    for sample in pairs.values():
        dataset.load_tensors(sample)
    return len(pairs)


def run_and_watch(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak summed RSS MiB of its process tree)."""
    t0, peak = time.perf_counter(), 0.0
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree) / 2**20)
            except psutil.Error:  # a process ended between listing and reading it
                pass
            time.sleep(0.2)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"training run failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - t0, peak


def bench_run(spec: str, args: argparse.Namespace, overrides: list[str], work: Path) -> dict:
    procs, threads = (int(x) for x in spec.split("x"))
    out = work / f"run_{spec}"
    launch = [sys.executable]
    if procs > 1:
        launch += [
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(TWO_PROC),
            "--num_processes",
            str(procs),
        ]
    cmd = [
        *launch,
        str(REPO / "scripts/train.py"),
        *(f"--config={c}" for c in args.config),
        *overrides,
        f"train.output_dir={out}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    wall, rss = run_and_watch(cmd, env, work / f"log_{spec}.txt")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    rows = [r for r in rows if "samples_per_s" in r][1:]  # drop the warm-up step
    if not rows:
        raise RuntimeError(f"{out / 'metrics.jsonl'}: no timed steps (need --steps >= 2)")
    return {
        "procs": procs,
        "threads_per_proc": threads,
        "steps": args.steps,
        "step_time_s": statistics.median(r["step_time_s"] for r in rows),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in rows),
        "peak_rss_tree_mb": rss,
        "wall_s": wall,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", action="append", help="config YAML (repeatable; default tiny)")
    p.add_argument(
        "--runs",
        nargs="+",
        metavar="PxT",
        help="runs as PROCESSESxTHREADS_PER_PROCESS (default: 1xN 1x1 2x(N/2), N cores)",
    )
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    p.add_argument("--data", help="existing dataset folder (default: synthesize --volumes)")
    p.add_argument("--volumes", type=int, default=8, help="synthetic volumes to generate")
    p.add_argument("--quick", action="store_true", help="a few steps")
    p.add_argument("--out", default="bench/train.json")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    offline_env()
    cores = os.cpu_count() or 1
    args.runs = args.runs or list(dict.fromkeys([f"1x{cores}", "1x1", f"2x{max(1, cores // 2)}"]))
    if any(not re.fullmatch(r"[1-9]\d*x[1-9]\d*", r) for r in args.runs):
        p.error(f"--runs takes PROCSxTHREADS like 2x1, got {args.runs}")
    args.config = [Path(c).resolve() for c in args.config or DEFAULT_CONFIGS]
    if args.quick:
        args.steps, args.volumes, args.runs = 3, 4, ["1x1", "2x1"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else make_dataset(Path(tmp) / "data", args.volumes)
        overrides = [
            f"data.root={root}",
            f"data.cache_dir={Path(tmp) / 'cache'}",
            f"train.max_steps={args.steps}",
            "train.log_every=1",
            "train.eval_every=0",
            "train.sample_every=0",
            f"train.save_every={args.steps + 1}",
            "train.device=cpu",
            *args.overrides,
        ]
        warm_cache(load_config(args.config, overrides))
        rows = [bench_run(spec, args, overrides, Path(tmp)) for spec in args.runs]
    for row in rows:
        row["speedup_vs_first"] = row["samples_per_s"] / rows[0]["samples_per_s"]
    print_table(rows, COLUMNS)
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "quick": args.quick,
            "configs": [
                str(c.relative_to(REPO)) if c.is_relative_to(REPO) else str(c) for c in args.config
            ],
            "dataset": args.data or f"synthetic, {args.volumes} volumes {list(SYNTH_SHAPE)}",
            "peak_rss_children_max_mb": peak_rss_mb(children=True),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
