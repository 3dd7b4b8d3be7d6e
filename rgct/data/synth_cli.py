"""``rgct synth``: write a synthetic phantom dataset in the RadGenome-Chest CT layout.

Example::

    rgct synth --out data/phantoms --num-volumes 100 --seed 0 --workers 2 --montage montage.png
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rgct.data.phantom import DEFAULT_SHAPE

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, type=Path, help="dataset folder to create (absent or empty)"
    )
    parser.add_argument(
        "--num-volumes", type=int, default=100, help="number of volumes (default 100)"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=list(DEFAULT_SHAPE),
        metavar=("D", "H", "W"),
        help="volume shape in voxels (z, y, x), each >= 16; default 64 128 128 (5.0 x 2.5 x 2.5 mm)",
    )
    parser.add_argument(
        "--valid-fraction", type=float, default=0.2, help="share of volumes in 'valid', in [0, 1)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--montage", type=Path, default=None, help="also draw the first volume to this PNG"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument(
        "--ct-rate-like",
        action="store_true",
        help="per-volume CT-RATE grids: --in-plane voxels of 0.6-0.9 mm, 100-300 slices of 1-3 mm "
        "(replaces --shape)",
    )
    parser.add_argument(
        "--in-plane", type=int, default=512, help="in-plane size with --ct-rate-like (default 512)"
    )
    parser.add_argument(
        "--blank-header-fraction",
        type=float,
        default=0.0,
        help="share of volumes with a blank NIfTI header, spacing in metadata/metadata.csv",
    )
    parser.add_argument(
        "--raw-values-fraction",
        type=float,
        default=0.0,
        help="share of volumes stored as raw values (HU + 1024), intercept in metadata/metadata.csv",
    )
    parser.add_argument(
        "--layout",
        choices=("radgenome", "rad-chestct", "deeplesion", "vindr-cxr", "chestxray14"),
        default="radgenome",
        help="files to write: RadGenome-Chest CT (default), RAD-ChestCT (.npz + label matrix), "
        "DeepLesion (PNG slices + DL_info.csv), or radiographs projected from the phantoms: "
        "VinDr-CXR (DICOM + reader box CSVs) or ChestX-ray14 (PNG + Data_Entry/BBox CSVs); the "
        "same phantoms for the same seed",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _variation(args: argparse.Namespace):
    """The per-volume :class:`~rgct.data.synth.Variation` the options ask for, or None."""
    from rgct.data.phantom import MIN_SIZE
    from rgct.data.synth import Variation

    for key in ("blank_header_fraction", "raw_values_fraction"):
        if not 0.0 <= getattr(args, key) <= 1.0:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{flag} must lie in [0, 1], got {getattr(args, key)}")
    if args.in_plane < MIN_SIZE:
        raise ValueError(f"--in-plane must be >= {MIN_SIZE}, got {args.in_plane}")
    variation = Variation(
        args.ct_rate_like, args.in_plane, args.blank_header_fraction, args.raw_values_fraction
    )
    return variation if variation != Variation() else None


def run(args: argparse.Namespace) -> int:
    from rgct.data.synth import check_args, write_dataset

    try:
        check_args(args.num_volumes, tuple(args.shape), args.valid_fraction, args.workers)
        variation = _variation(args)
    except ValueError as e:
        print(f"rgct synth: error: {e}", file=sys.stderr)
        return 2
    if args.layout != "radgenome":
        return _run_layout(args, variation)
    try:
        records = write_dataset(
            args.out,
            args.num_volumes,
            seed=args.seed,
            shape=tuple(args.shape),
            valid_fraction=args.valid_fraction,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            variation=variation,
        )
    except FileExistsError as e:
        print(f"rgct synth: error: {e}", file=sys.stderr)
        return 2
    n_valid = sum(r["split"] == "valid" for r in records)
    n_findings = sum(len(r["findings"]) for r in records)
    print(
        f"{args.out}: {len(records)} volumes ({len(records) - n_valid} train, {n_valid} valid), {n_findings} findings"
    )
    if args.montage is not None:
        from rgct.data.montage import save_montage

        path = save_montage(args.out, records[0]["volume"], args.montage)
        print(f"montage of {records[0]['volume']}: {path}")
    return 0


def _run_layout(args: argparse.Namespace, variation) -> int:
    """``rgct synth --layout rad-chestct|deeplesion|vindr-cxr|chestxray14``."""
    from rgct.data.synth_layouts import write_layout_dataset

    if variation is not None or args.montage is not None or args.workers != 1:
        print(
            f"rgct synth: error: --layout {args.layout} takes no --ct-rate-like, header quirks, "
            "--montage or --workers",
            file=sys.stderr,
        )
        return 2
    try:
        records = write_layout_dataset(
            args.out,
            args.layout,
            args.num_volumes,
            seed=args.seed,
            shape=tuple(args.shape),
            valid_fraction=args.valid_fraction,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (FileExistsError, ValueError) as e:
        print(f"rgct synth: error: {e}", file=sys.stderr)
        return 2
    unit = {"deeplesion": "lesion series", "vindr-cxr": "radiographs", "chestxray14": "radiographs"}
    unit = unit.get(args.layout, "volumes")
    print(f"{args.out}: {len(records)} {unit} in the {args.layout} layout")
    return 0
