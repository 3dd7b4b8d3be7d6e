"""Profile training steps: where a step's time goes, and what would stall a GPU.

Runs the real training loop (:func:`rgct.train.loop.train`, one process) for ``--steps`` steps
under ``torch.profiler`` and reads the loop's phase labels (:data:`rgct.train.loop.PHASES`:
data, inputs, forward, backward, optimizer) after the ``--warmup`` first steps. Per step it
reports the milliseconds of each phase and of the rest (logging, trace), the operators the
step dispatches (nested ones included: each costs host time, and those that compute launch a
kernel on a GPU), the host syncs (:data:`SYNCS`: each one waits for the GPU queue to drain; on
a CPU they are counted, not felt), the FLOPs the profiler counts (matmuls and convolutions),
samples/s and tokens/s, and the model FLOPs utilisation against ``--peak-tflops`` (on CPU: the
measured fp32 matmul rate of this machine). On CUDA it also records the GPU busy fraction
(kernel time / wall time) and writes ``bench/gpu.json`` by default; on CPU ``bench/step.json``.

Per-step Python work is what bounds a GPU run whose kernels are small: on the CPU its cost
shows as the ops and syncs counts (device-independent) and as the tiny preset's step time.

    python scripts/bench_step.py                                   # tiny preset, batch 16
    python scripts/bench_step.py --preset smollm2 --steps 3 --warmup 1 --out bench/step_smollm2.json
    python scripts/bench_step.py --preset smollm2 --device cuda     # on a GPU: bench/gpu.json
    python scripts/bench_step.py --quick --out step.json
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from bench_common import (
    PRESETS,
    REPO,
    machine_info,
    matmul_flops,
    offline_env,
    print_table,
    write_json,
)
from bench_train import SYNTH_SHAPE, make_dataset

from rgct.config import load_config
from rgct.model.rgct_model import RGCTModel
from rgct.train.loop import PHASES, train

SYNCS = ("aten::_local_scalar_dense", "aten::equal", "aten::nonzero")
"""Operators that wait for the device (``item``, ``bool(tensor)``, ``tolist`` all end in
``_local_scalar_dense``; ``nonzero`` has a data-dependent size)."""
STEP_CONFIG = REPO / "configs/train/stage2_instruct.yaml"
H100_BF16_TFLOPS = 989.0
"""Dense bf16 peak of an H100/H200 SXM (the default --peak-tflops on CUDA)."""


def step_windows(events) -> list[tuple[float, float]]:
    """(start, end) microseconds of each profiled step but the first (workers starting) and the
    last (unbounded): from one ``data`` phase to the next."""
    starts = sorted(ev.time_range.start for ev in events if ev.name == PHASES["data"])
    return list(zip(starts[1:-1], starts[2:]))


def summarize(events, device: str) -> dict:
    """Per-step means over the complete profiled steps (:func:`step_windows`)."""
    windows = step_windows(events)
    if not windows:
        raise RuntimeError("the profile holds fewer than 3 steps: raise --steps")
    first, last = windows[0][0], windows[-1][1]
    steps = len(windows)
    phase_ms: dict[str, float] = defaultdict(float)
    ops = syncs = 0
    flops = kernel_us = 0.0
    sync_by: dict[str, int] = defaultdict(int)
    op_ms: dict[str, float] = defaultdict(float)
    op_n: dict[str, int] = defaultdict(int)
    sync_phase: dict[str, int] = defaultdict(int)
    spans = [
        (ev.time_range.start, ev.time_range.end, ev.name.rsplit(".", 1)[-1])
        for ev in events
        if ev.name in PHASES.values()
    ]
    for ev in events:
        if not first <= ev.time_range.start < last:
            continue
        name = ev.name
        if name in PHASES.values():
            phase_ms[name.rsplit(".", 1)[-1]] += ev.time_range.elapsed_us() / 1000.0
        elif ev.device_type == torch.autograd.DeviceType.CUDA:
            kernel_us += ev.time_range.elapsed_us()
        elif name.startswith("aten::"):
            ops += 1
            flops += float(ev.flops or 0)
            op_ms[name] += ev.self_cpu_time_total / 1000.0
            op_n[name] += 1
            if name in SYNCS:
                syncs += 1
                sync_by[name] += 1
                t = ev.time_range.start
                where = next((ph for a, b, ph in spans if a <= t < b), "other")
                sync_phase[where] += 1
    wall_s = (last - first) / 1e6
    step_ms = 1000.0 * wall_s / steps
    phases = {k: round(v / steps, 2) for k, v in phase_ms.items()}
    phases["other"] = round(step_ms - sum(phases.values()), 2)
    top = sorted(op_ms.items(), key=lambda kv: -kv[1])[:12]
    out = {
        "steps_measured": steps,
        "step_ms": round(step_ms, 2),
        "phase_ms": phases,
        "ops_per_step": round(ops / steps, 1),
        "host_syncs_per_step": round(syncs / steps, 1),
        "host_syncs_by_op": {k: round(v / steps, 1) for k, v in sorted(sync_by.items())},
        "host_syncs_by_phase": {k: round(v / steps, 1) for k, v in sorted(sync_phase.items())},
        "flops_per_step": flops / steps,
        "top_ops_self_ms_per_step": {k: round(v / steps, 2) for k, v in top},
        "top_ops_calls_per_step": {
            k: round(v / steps, 1) for k, v in sorted(op_n.items(), key=lambda kv: -kv[1])[:12]
        },
    }
    if device == "cuda":
        out["gpu_busy_fraction"] = round(kernel_us / 1e6 / wall_s, 3)
    return out


class TokenCount:
    """Counts the tokens of every training batch the model tokenises (attention mask sum)."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def __enter__(self) -> TokenCount:
        self.real = RGCTModel.tokenize

        def counted(model, *a, **kw):
            enc = self.real(model, *a, **kw)
            self.counts.append(int(enc["attention_mask"].sum()))  # host tensors: no sync
            return enc

        RGCTModel.tokenize = counted
        return self

    def __exit__(self, *exc) -> None:
        RGCTModel.tokenize = self.real


def _shown(path: str) -> str:
    full = Path(path).resolve()
    return str(full.relative_to(REPO)) if full.is_relative_to(REPO) else path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--train-config", default=str(STEP_CONFIG), help="the stage to profile")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--steps", type=int, default=12, help="profiled steps (the first and last are not counted)"
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: measured)")
    p.add_argument("--data", help="existing dataset folder (default: synthesize --volumes)")
    p.add_argument("--volumes", type=int, default=8)
    p.add_argument("--out", help="JSON (default bench/step.json, on CUDA bench/gpu.json)")
    p.add_argument("--quick", action="store_true", help="batch 4, 4 steps, 4 volumes")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    offline_env()
    if args.quick:
        args.batch, args.steps, args.warmup, args.volumes = 4, 4, 1, 4
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    if args.steps < 3 or args.warmup < 1:
        p.error("--steps must be >= 3 (the first and last are not counted), --warmup >= 1")
    out_path = args.out or ("bench/gpu.json" if args.device == "cuda" else "bench/step.json")
    peak = args.peak_tflops or (
        H100_BF16_TFLOPS if args.device == "cuda" else matmul_flops() / 1e12
    )
    total = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else make_dataset(Path(tmp) / "data", args.volumes)
        overrides = [
            f"data.root={root}",
            f"data.cache_dir={Path(tmp) / 'cache'}",
            f"data.num_workers={args.workers}",
            f"train.batch_size={args.batch}",
            "train.grad_accum=1",
            "train.warmup_steps=1",
            "train.eval_every=0",
            "train.sample_every=0",
            f"train.save_every={total + 1}",
            f"train.device={args.device}",
            f"train.output_dir={Path(tmp) / 'run'}",
            *args.overrides,
        ]
        if args.preset == "tiny":
            overrides.append(f"data.input_shape={list(SYNTH_SHAPE)}")
        cfg = load_config([PRESETS[args.preset], Path(args.train_config)], overrides)
        warm = copy.deepcopy(cfg)  # fills the transform cache; first-call costs stay out
        warm.train.max_steps = args.warmup
        warm.train.output_dir = str(Path(tmp) / "warm")
        train(warm)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if args.device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        cfg.train.max_steps = args.steps
        with (
            TokenCount() as tokens,
            torch.profiler.profile(activities=activities, with_flops=True) as prof,
        ):
            t0 = time.perf_counter()
            train(cfg)
            if args.device == "cuda":
                torch.cuda.synchronize()
            wall_all = time.perf_counter() - t0
    summary = summarize(prof.events(), args.device)
    step_s = summary["step_ms"] / 1000.0
    result = {
        "machine": machine_info(),
        "device": args.device,
        "preset": args.preset,
        "train_config": _shown(args.train_config),
        "batch": args.batch,
        "loader_workers": args.workers,
        "quick": args.quick,
        "steps_profiled": args.steps,
        "run_wall_s": round(wall_all, 2),
        "steps_per_s": round(1.0 / step_s, 3),
        "samples_per_s": round(args.batch / step_s, 2),
        "tokens_per_s": round(statistics.mean(tokens.counts) / step_s, 1)
        if tokens.counts
        else None,
        **summary,
        "peak_tflops": round(peak, 3),
        "mfu": round(summary["flops_per_step"] / step_s / (peak * 1e12), 4),
    }
    shown = ["step_ms", "samples_per_s", "tokens_per_s", "ops_per_step", "host_syncs_per_step"]
    print_table([{**{k: result[k] for k in shown}, **result["phase_ms"]}])
    write_json(out_path, result)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
