"""Benchmark the Gradio app: server memory over browser sessions, and text latency.

Memory: the app is served in this process; headless Chromium (``/usr/bin/chromium``) opens
``--sessions`` tabs one after another, each loads a ``--shape`` (D H W) chest phantom and
closes. The server's resident memory is read before, at each session's peak and after all
tabs closed (target: back within 300 MB of the start). Latency: the shipped model (or
``--checkpoint``) writes a region report (lung) and a full report of a bundled example through
the app's handlers, median of ``--repeats`` runs (targets on 2 cores: 5 s and 12 s).

    python scripts/bench_app.py --out bench/app.json
    python scripts/bench_app.py --sessions 2 --shape 64 128 128 --no-latency --out app.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import torch
from bench_common import machine_info, offline_env, print_table

from rgct.files import write_json

CHROMIUM = Path("/usr/bin/chromium")
MEMORY_TARGET_MB = 300.0
LATENCY_TARGETS_S = {"region_report": 5.0, "full_report": 12.0}

log = logging.getLogger("bench_app")


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def write_example(root: Path, shape: tuple[int, int, int]) -> Path:
    """A chest-like phantom of ``shape`` (body, two lungs) with its lung mask, as an example."""
    d, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    body = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.46 * w)) ** 2 < 1
    lung2d = (
        ((yy - h / 2) / (0.25 * h)) ** 2 + ((np.abs(xx - w / 2) - 0.22 * w) / (0.14 * w)) ** 2
    ) < 1
    plane = np.where(body, 40, -1000).astype(np.int16)
    plane[lung2d] = -820
    volume = np.broadcast_to(plane, (d, h, w))
    lung = np.broadcast_to(lung2d, (d, h, w)).astype(np.uint8)
    folder = root / "big_chest"
    seg = folder / "seg_big_chest_1"
    seg.mkdir(parents=True)
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    for array, path in ((volume, folder / "big_chest_1.nii.gz"), (lung, seg / "lung.nii.gz")):
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine), path)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_memory(predictor, sessions: int, shape: tuple[int, int, int]) -> dict:
    """Serve the app, open and close ``sessions`` tabs that each load a big scan."""
    from playwright.sync_api import expect, sync_playwright

    from app.demo import build_demo, launch

    with tempfile.TemporaryDirectory() as tmp:
        examples = write_example(Path(tmp) / "examples", shape)
        demo = build_demo(predictor, examples_dir=examples, tmp_root=Path(tmp) / "sessions")
        for attempt in range(3):  # gradio's 3 s start-up probe can time out on a busy machine
            try:
                launch(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True)
                break
            except ValueError as err:
                log.warning("launch attempt %d failed: %s", attempt + 1, err)
                demo.close()
                time.sleep(5)
        else:
            raise RuntimeError("the app did not start (machine too busy?)")
        app = demo.rgct_app
        rows = []
        try:
            gc.collect()
            start = rss_mb()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
                )
                for i in range(sessions):
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(demo.local_url, wait_until="domcontentloaded")
                    t0 = time.perf_counter()
                    page.locator("#rgct-load-example").click()
                    expect(page.locator("#rgct-status")).to_contain_text(
                        "Loaded example", timeout=180_000
                    )
                    load_s = time.perf_counter() - t0
                    held = rss_mb()
                    page.close()
                    t1 = time.perf_counter()
                    while app.live_scans() and time.perf_counter() - t1 < 60:
                        time.sleep(0.25)
                    freed_s = time.perf_counter() - t1
                    gc.collect()
                    rows.append(
                        {
                            "session": i + 1,
                            "load_s": round(load_s, 2),
                            "rss_loaded_mb": round(held, 1),
                            "release_s": round(freed_s, 2),
                            "rss_closed_mb": round(rss_mb(), 1),
                            "live_scans": app.live_scans(),
                        }
                    )
                    print_table(rows[-1:])
                browser.close()
            gc.collect()
            time.sleep(2)
            end = rss_mb()
        finally:
            demo.close()
    return {
        "shape": list(shape),
        "sessions": sessions,
        "rss_start_mb": round(start, 1),
        "rss_peak_mb": round(max(r["rss_loaded_mb"] for r in rows), 1),
        "rss_end_mb": round(end, 1),
        "growth_mb": round(end - start, 1),
        "target_mb": MEMORY_TARGET_MB,
        "pass": end - start <= MEMORY_TARGET_MB,
        "rows": rows,
    }


def bench_latency(predictor, repeats: int) -> dict:
    """Median seconds of a region report and a full report of ``phantom_1`` via the handlers."""
    from app.demo import EXAMPLES_DIR
    from app.handlers import DemoApp

    with tempfile.TemporaryDirectory() as tmp:
        app = DemoApp(predictor, examples_dir=EXAMPLES_DIR, tmp_root=Path(tmp), rate_limit=(0, 1))
        session, _ = app.load_example(None, "phantom_1")
        session = app.select(session, "lung")
        gen = {"max_new_tokens": 64, "num_beams": 1}
        out = {}
        for name, call in (
            ("region_report", lambda: app.region_report(session, **gen)[1]),
            ("full_report", lambda: app.full_report(session, **gen)[2]),
        ):
            call()  # warm-up
            times = sorted(call() for _ in range(repeats))
            median = times[len(times) // 2]
            out[name] = {
                "median_s": round(median, 2),
                "runs_s": [round(t, 2) for t in times],
                "target_s": LATENCY_TARGETS_S[name],
                "pass": median <= LATENCY_TARGETS_S[name],
            }
        out["sentences"] = len(session.report["sentences"]) if session.report else 0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model (default: shipped)")
    parser.add_argument("--sessions", type=int, default=10, help="browser sessions (default 10)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[300, 512, 512], help="scan size D H W"
    )
    parser.add_argument("--repeats", type=int, default=3, help="latency runs (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--no-latency", action="store_true", help="skip the model latency part")
    parser.add_argument("--no-memory", action="store_true", help="skip the browser memory part")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    offline_env()
    torch.set_num_threads(args.threads)
    from rgct.inference import Predictor, default_checkpoint

    checkpoint = args.checkpoint or default_checkpoint()
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", merge_lora=True)  # as app/main
    result: dict = {
        "machine": {**machine_info(), "load_average_1m": round(os.getloadavg()[0], 2)},
        "checkpoint": Path(checkpoint).name,
    }
    if not args.no_memory:
        if not CHROMIUM.exists():
            print(f"{CHROMIUM} is missing (make chromium); skipping the memory part")
        else:
            result["memory"] = bench_memory(predictor, args.sessions, tuple(args.shape))
            mem = result["memory"]
            print_table([{k: v for k, v in mem.items() if k != "rows"}])
    if not args.no_latency:
        result["latency"] = bench_latency(predictor, args.repeats)
        print_table([{"call": k, **v} for k, v in result["latency"].items() if isinstance(v, dict)])
    if args.out.is_file():  # a part skipped this time keeps its earlier measurement
        earlier = json.loads(args.out.read_text())
        for part in ("memory", "latency"):
            if part not in result and part in earlier:
                result[part] = earlier[part]
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
