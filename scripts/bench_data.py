"""Benchmark the data path; each mode writes its own section of one JSON file.

cached:  volume loading, cold (NIfTI -> model tensor) vs the disk cache
    python scripts/bench_data.py --data /data/rg --split train --max-volumes 20
    python scripts/bench_data.py --synth 8
scale:   the sample index at RadGenome-Chest CT's release size (25,692 volumes, 665k region
         sentences, 1.3M VQA rows; CSV files only): build time, peak RSS, extra memory per worker
    python scripts/bench_data.py --scale 1.0 [--scale-root DIR]
real_size: one CT-RATE-sized phantom (512 x 512 x 300 int16 NIfTI): cold load + preprocess
         (fresh process: wall time, peak RSS) with today's resize and with the geometry path,
         and cached samples/s through 2 DataLoader workers (compact batches; and, for comparison,
         batches expanded to float32 in the workers)
    python scripts/bench_data.py --real-size [--real-root DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from bench_common import machine_info, peak_rss_mb, print_table

from rgct.config import DataConfig
from rgct.data.compact import expand_batch
from rgct.data.layout import volume_path
from rgct.data.records import find_volumes
from rgct.data.scale import measure_index, write_release_csvs
from rgct.data.transforms import TransformCache, build_deterministic_transforms, run_transforms
from rgct.files import write_json


def _flat(result: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_cached(args: argparse.Namespace, tmp: Path) -> dict:
    root = Path(args.data) if args.data else tmp / "synth"
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
    cache = TransformCache(cfg, tmp / "cache")
    t0 = time.perf_counter()
    for path in paths:
        cache.image(path)
    fill = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.cached_passes):
        for path in paths:
            cache.image(path)
    cached = (time.perf_counter() - t0) / args.cached_passes
    return {
        "volumes": len(paths),
        "input_shape": list(args.input_shape),
        "cold_volumes_per_s": _rate(len(paths), cold),
        "cache_fill_volumes_per_s": _rate(len(paths), fill),
        "cached_volumes_per_s": _rate(len(paths), cached),
        "speedup_cached_vs_cold": cold / cached if cached > 0 else float("inf"),
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_scale(args: argparse.Namespace, tmp: Path) -> dict:
    root = Path(args.scale_root) if args.scale_root else tmp / "release"
    t0 = time.perf_counter()
    if not (root / "radgenome_files").is_dir():
        write_release_csvs(root, scale=args.scale)
    written = time.perf_counter() - t0
    result = measure_index(
        root, num_samples=args.num_samples, workers=2, probe=args.probe, objects=args.objects
    )
    targets = {"index_build_s": 60.0, "peak_rss_mb": 4096.0, "worker_extra_mb": 200.0}
    return {
        "scale": args.scale,
        "csv_write_s": written,
        **result,
        "targets": targets,
        "met": {k: result[k] <= v for k, v in targets.items()},
    }


GEOMETRY = {"crop_foreground": True, "spacing": (5.0, 2.5, 2.5), "fit": "pad_crop"}
"""The geometry path at the default grid: body crop, 5 x 2.5 x 2.5 mm, pad/crop to 64x128x128."""


def _vm_hwm_mb() -> float:
    """This process's peak resident memory since its exec (``VmHWM``). ``ru_maxrss`` is not
    used: Linux carries it across exec, so a child forked from a large parent reports the
    parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def cold_child(path: str, settings: str) -> None:
    """In a fresh process: load + preprocess one volume; print wall seconds and peak RSS."""
    from rgct.data.io import load_volume
    from rgct.data.transforms import preprocess

    cfg = DataConfig(**json.loads(settings))
    t0, c0 = time.perf_counter(), time.process_time()
    image, _ = preprocess(load_volume(path), None, cfg)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_s": cpu,
                "peak_rss_mb": _vm_hwm_mb(),
                "shape": list(image.shape),
            }
        )
    )


def _cold(path: Path, settings: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--cold-child", str(path), json.dumps(settings)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _expanding_collate(items: list) -> dict:
    """The loader until now: items expanded to float32 in the worker, stacked into shared memory."""
    from rgct.data.dataset import collate

    return collate([expand_batch(it) for it in items if it is not None])


def _cold_real_size(root: Path, tmp: Path) -> dict:
    """Cold load + preprocess of one 512 x 512 x 300 volume, each path in a fresh process."""
    path = volume_path(root, find_volumes(root, "train")[0])
    img = nib.load(path)
    shape = [int(s) for s in img.shape]
    # a 512 x 512 x 300 volume: the phantom's slices cropped or repeated to 300
    if shape[2] != 300:
        data = np.asarray(img.dataobj, dtype=np.int16)
        data = np.take(data, np.arange(300) % shape[2], axis=2)
        path = tmp / "ct_512x512x300.nii.gz"
        nib.save(nib.Nifti1Image(data, img.affine), path)
    grid = {"input_shape": [64, 128, 128]}
    return {
        "volume": str(nib.load(path).shape) + " int16",
        "file_mb": path.stat().st_size / 2**20,
        "cold_resize": _cold(path, grid),
        "cold_geometry": _cold(path, {**grid, **GEOMETRY}),
    }


def bench_real_size(args: argparse.Namespace, tmp: Path) -> dict:
    from torch.utils.data import DataLoader

    from rgct.data.dataset import RGCTDataset, collate
    from rgct.data.synth import Variation, write_dataset

    root = Path(args.real_root) if args.real_root else tmp / "real"
    if not root.is_dir():
        t0 = time.perf_counter()
        variation = Variation(ct_rate_like=True)
        write_dataset(root, 2, seed=0, valid_fraction=0.0, progress=False, variation=variation)
        logging.info("real-size phantoms written in %.0f s", time.perf_counter() - t0)
    result = {} if args.loader_only else _cold_real_size(root, tmp)
    cache = args.cache_dir or str(tmp / "cache")
    cfg = DataConfig(root=str(root), cache_dir=cache, augment=False, **GEOMETRY)
    ds = RGCTDataset(cfg, "train", train=True, num_samples=args.cached_samples, seed=0)
    t0 = time.perf_counter()
    for i in range(len(ds)):  # fill the cache (every distinct image and mask once)
        ds[i]
    if not args.cache_dir:  # a reused cache was (mostly) filled before
        result["cache_fill_s"] = time.perf_counter() - t0
    # compact batches (uint16 image, uint8 mask) as training reads them, then, for comparison at
    # the same machine load, batches expanded to float32 in the workers (the loader until now)
    for label, collate_fn in (("", collate), ("float32_in_workers_", _expanding_collate)):
        loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_fn)
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        n = sum(len(b["prompt"]) for b in loader)
        result[f"{label}cached_samples_per_s_2_workers"] = n / (time.perf_counter() - t0)
        # CPU seconds of this process and its (finished) workers: what the machine's load hides
        result[f"{label}cached_samples_per_cpu_s"] = n / (_cpu_seconds() - cpu0)
    result["loader_load_average_1m"] = os.getloadavg()[0]
    batch = collate([ds[i] for i in range(8)])
    result["batch_mb_per_sample"] = {
        "compact": sum(batch[k].nbytes for k in ("image", "mask")) / 8 / 2**20,
        "float32": sum(expand_batch(batch)[k].nbytes for k in ("image", "mask")) / 8 / 2**20,
    }
    result["targets"] = {"cold_s": 4.0, "cold_peak_rss_mb": 2560.0, "cached_samples_per_s": 100.0}
    return result


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--cold-child":
        cold_child(sys.argv[2], sys.argv[3])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="dataset folder in the RadGenome layout")
    src.add_argument("--synth", type=int, metavar="N", help="generate N phantom volumes first")
    src.add_argument("--scale", type=float, metavar="F", help="release-size index x F (1.0: real)")
    src.add_argument("--real-size", action="store_true", help="CT-RATE-sized volumes")
    p.add_argument("--real-root", help="reuse (or keep) the real-size phantom folder here")
    p.add_argument("--cached-samples", type=int, default=2000, help="samples through the loader")
    p.add_argument("--cache-dir", help="real-size: reuse (or keep) the transform cache here")
    p.add_argument(
        "--loader-only",
        action="store_true",
        help="real-size: measure the cached loader only (keep the section's cold measures)",
    )
    p.add_argument("--scale-root", help="reuse (or keep) the release-size CSV folder here")
    p.add_argument("--num-samples", type=int, default=320_000, help="training mix length")
    p.add_argument("--probe", type=int, default=200_000, help="records the workers read")
    p.add_argument(
        "--objects", action="store_true", help="scale: hand workers a list of Sample objects"
    )
    p.add_argument("--split", default="train")
    p.add_argument("--max-volumes", type=int, default=20)
    p.add_argument(
        "--input-shape", type=int, nargs=3, default=(64, 128, 128), metavar=("D", "H", "W")
    )
    p.add_argument("--cached-passes", type=int, default=3, help="timed passes over the cache")
    p.add_argument("--out", default="bench/data.json", help="JSON file; this mode's section")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        if args.scale is not None:
            section = "scale_objects" if args.objects else "scale"
            result = bench_scale(args, Path(tmp))
        elif args.real_size:
            section, result = "real_size", bench_real_size(args, Path(tmp))
        else:
            section, result = "cached", bench_cached(args, Path(tmp))
    print_table([{"measure": k, "value": v} for k, v in _flat(result).items()])
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {}
    if getattr(args, "loader_only", False):  # the section's other measures and their load stay
        record[section] = {**record.get(section, {}), **result}
    else:
        record[section] = {**result, "load_average_1m": os.getloadavg()[0]}
    record["machine"] = machine_info()
    write_json(out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
