"""Benchmark the learned segmenter on 2 CPU threads: one 64x128x128 volume, network alone and
the whole ``segment_volume`` (preprocessing, network, masks, findings on the volume's grid).

Usage::

    python scripts/bench_segment.py --checkpoint runs/segmenter_gpu/A --out bench/segment.json

``--report CHECKPOINT`` also times a masks-free full report with that model folder
(``Predictor.report(volume)``: segment, encode once, every region's text; the segmentation
cache is cleared before each call). Target: <= 15 s.

    python scripts/bench_segment.py --checkpoint rgct/assets/demo_model \
        --report rgct/assets/demo_model --out bench/segment.json

Without ``--checkpoint`` a freshly initialised default Segmenter is timed (same cost for the
network; post-processing then sees noise). Target: <= 2 s per volume. On a shared machine
the wall time counts other people's work too: ``idle_estimate_s`` (CPU seconds / threads) is
what idle cores would take, and ``load_average_1min`` says how busy the machine was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from bench_common import machine_info, offline_env, peak_rss_mb, print_table, time_call, write_json

from rgct.data.io import Volume
from rgct.data.phantom import build_phantom
from rgct.generate.segment import segment_volume
from rgct.model.segmenter import Segmenter, load_segmenter

TARGET_S = 2.0
REPORT_TARGET_S = 15.0


def cpu_seconds(fn, repeats: int) -> float:
    """Mean CPU seconds (all threads) of ``fn()``: on a shared machine wall time also counts
    other people's work; CPU time / threads estimates the wall time on idle cores."""
    fn()
    t0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - t0) / repeats


def time_report(checkpoint: str, volume: Volume, repeats: int) -> dict:
    """Wall and CPU seconds of ``Predictor.report(volume)`` without masks (segmentation not
    cached between calls)."""
    from rgct.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    if predictor.segmenter is None:
        raise SystemExit(
            f"--report {checkpoint}: the model has no segmenter (masks-free needs one)"
        )

    def once() -> dict:
        predictor.clear_cache()
        return predictor.report(volume)

    out = once()  # warm-up (and the regions it writes)
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        once()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    threads = torch.get_num_threads()
    return {
        "checkpoint": checkpoint,
        "regions": len(out["regions"]),
        "mask_source": out["mask_source"],
        "report_s": round(wall, 3),
        "report_cpu_s": round(cpu, 3),
        "idle_estimate_s": round(cpu / threads, 3),
        "target_s": REPORT_TARGET_S,
        "pass": wall <= REPORT_TARGET_S,
        "pass_idle_estimate": cpu / threads <= REPORT_TARGET_S,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/segment.json")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra network variants to time, e.g. refine_channels=8",
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="CHECKPOINT",
        help="also time a masks-free full report with this model folder (needs its segmenter)",
    )
    args = p.parse_args(argv)
    offline_env()
    torch.set_num_threads(args.threads)
    ph = build_phantom((64, 128, 128), np.random.default_rng([7, 0]))
    volume = Volume(ph.volume.astype(np.float32), ph.affine, ph.spacing_mm, "phantom")
    if args.checkpoint:
        model, meta = load_segmenter(args.checkpoint)
    else:
        model, meta = Segmenter().eval(), {}
    variants = [("checkpoint" if args.checkpoint else "default", model)]
    for item in args.set:
        key, _, value = item.partition("=")
        variants.append((item, Segmenter(**{key: int(value)}).eval()))
    rows = []
    x = torch.rand(1, 1, 64, 128, 128)
    for name, net in variants:
        with torch.inference_mode():
            net_s = time_call(lambda net=net: net(x), repeats=args.repeats)
        full_s = time_call(lambda net=net: segment_volume(net, meta, volume), repeats=args.repeats)
        full_cpu = cpu_seconds(lambda net=net: segment_volume(net, meta, volume), args.repeats)
        idle_estimate = full_cpu / args.threads
        rows.append(
            {
                "variant": name,
                "config": net.config() | {"classes": len(net.classes)},
                "network_s": round(net_s, 3),
                "segment_volume_s": round(full_s, 3),
                "segment_volume_cpu_s": round(full_cpu, 3),
                "idle_estimate_s": round(idle_estimate, 3),
                "target_s": TARGET_S,
                "pass": full_s <= TARGET_S,
                "pass_idle_estimate": idle_estimate <= TARGET_S,
            }
        )
    print_table(
        rows,
        ["variant", "network_s", "segment_volume_s", "idle_estimate_s", "target_s", "pass"],
    )
    report = None
    if args.report:
        report = time_report(args.report, volume, max(1, args.repeats - 1))
        print_table([report], ["regions", "report_s", "idle_estimate_s", "target_s", "pass"])
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "shape": [64, 128, 128],
            "rows": rows,
            "masks_free_report": report,
            "peak_rss_mb": peak_rss_mb(),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
