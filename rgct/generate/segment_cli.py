"""``rgct segment VOLUME --checkpoint DIR --out DIR``: region and lobe masks for a volume.

The learned engine (default) runs a segmenter checkpoint (a folder with
``segmenter.safetensors``, or that file); ``--engine totalsegmentator`` runs TotalSegmentator
where it is installed and converts its classes (:mod:`rgct.data.totalseg`). Either way the
masks land in the RadGenome layout under ``--out`` with a ``mask_source.json`` summary, and a
mask that was not found is listed as a warning, never replaced by a whole-volume mask.

Examples::

    rgct segment ct.nii.gz --checkpoint runs/segmenter --out masks/
    rgct segment train_1_a_1.nii.gz --engine totalsegmentator --out masks/
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rgct.data.io import DataError, load_volume
from rgct.data.layout import strip_suffix

logger = logging.getLogger(__name__)

ENGINES = ("learned", "totalsegmentator")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("volume", help="CT volume: .nii/.nii.gz, DICOM folder or .zip, .npz")
    parser.add_argument("--out", required=True, help="output folder (RadGenome mask layout)")
    parser.add_argument("--engine", choices=ENGINES, default="learned")
    parser.add_argument(
        "--checkpoint", default=None, help="segmenter folder or its segmenter.safetensors"
    )
    parser.add_argument("--name", default=None, help="volume name in seg_<name> (default: stem)")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold")
    parser.add_argument(
        "--finding-threshold", type=float, default=0.5, help="finding probability threshold"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the learned engine")
    parser.add_argument("--fast", action="store_true", help="TotalSegmentator's 3 mm model")


def _run_learned(args: argparse.Namespace, name: str) -> dict:
    from rgct.generate.segment import segment_volume, write_segmentation
    from rgct.model.segmenter import load_segmenter

    if args.checkpoint is None:
        raise ValueError("--engine learned needs --checkpoint DIR (a trained segmenter folder)")
    model, meta = load_segmenter(args.checkpoint, device=args.device)
    volume = load_volume(args.volume)
    seg = segment_volume(
        model, meta, volume, threshold=args.threshold, finding_threshold=args.finding_threshold
    )
    return write_segmentation(seg, args.out, name, source=args.volume)


def _run_totalsegmentator(args: argparse.Namespace, name: str) -> dict:
    from rgct.data.totalseg import masks_from_totalsegmentator, run_totalsegmentator

    raw = Path(args.out) / "totalsegmentator" / name
    run_totalsegmentator(args.volume, raw, fast=args.fast)
    result = masks_from_totalsegmentator(raw, args.out, reference=args.volume, volume_name=name)
    summary = result.to_dict()
    summary["warnings"] = [
        *(
            f"{n}: no mask predicted, region skipped ({why})"
            for n, why in result.missing_regions.items()
        ),
        *summary["warnings"],
    ]
    return summary


def run(args: argparse.Namespace) -> int:
    name = args.name or strip_suffix(Path(args.volume).name)
    try:
        if args.engine == "learned":
            summary = _run_learned(args, name)
        else:
            summary = _run_totalsegmentator(args, name)
    except (DataError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"rgct segment: {e}")
        return 1
    print(f"masks of {name} -> {summary['region_dir']} and {summary['anatomy_dir']}")
    for w in summary.get("warnings", []):
        print(f"warning: {w}")
    for f in summary.get("findings", []):
        where = ", ".join(f["lobes"]) or f["region"] or "?"
        print(
            f"finding: {f['label']} ({where}; p={f['probability']:.2f}) "
            f"box {f['box_voxel']} size {f['box_mm']['size_mm']} mm"
        )
    logger.debug("%s", json.dumps({k: v for k, v in summary.items() if k != "voxels"}))
    return 0
