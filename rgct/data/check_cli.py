"""``rgct data check DIR`` and ``rgct data show DIR --volume NAME --out PNG``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rgct.files import write_json

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``check`` and ``show`` sub-subcommands."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate a dataset folder and list every problem")
    check.add_argument(
        "dir",
        help="dataset folder: RadGenome-Chest CT, RAD-ChestCT, DeepLesion, VinDr-CXR or ChestX-ray14 "
        "layout",
    )
    check.add_argument(
        "--layout",
        choices=("auto", "radgenome", "rad-chestct", "deeplesion", "vindr-cxr", "chestxray14"),
        default="auto",
        help="the folder's layout (default: told by its files, e.g. DL_info.csv)",
    )
    check.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    check.add_argument(
        "--headers-only",
        action="store_true",
        help="read NIfTI headers only (fast, misses truncation)",
    )
    check.add_argument("--max-volumes", type=int, help="check at most N volumes (images) per split")
    show = sub.add_parser(
        "show",
        help="save a montage PNG of a volume with its region masks (a radiograph with its boxes)",
    )
    show.add_argument("dir", help="dataset folder")
    show.add_argument(
        "--volume",
        required=True,
        help="volume name, e.g. train_1_a_1 (VinDr-CXR: image_id; ChestX-ray14: Image Index)",
    )
    show.add_argument("--out", required=True, help="PNG file to write")
    show.add_argument("--split", help="split (default: from the volume name)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; exit code 1 when the check finds an error."""
    from rgct.data.source_report import detect_layout

    if args.data_command == "show":
        layout = detect_layout(args.dir)
        if layout in ("vindr-cxr", "chestxray14"):
            from rgct.data.cxr_show import save_film
            from rgct.data.io import DataError

            try:
                save_film(args.dir, layout, args.volume, args.out)
            except DataError as e:
                print(f"rgct data show: error: {e}", file=sys.stderr)
                return 2
        else:
            from rgct.data.montage import save_montage

            save_montage(args.dir, args.volume, args.out, split=args.split)
        print(f"wrote {args.out}")
        return 0
    layout = detect_layout(args.dir) if args.layout == "auto" else args.layout
    if layout == "radgenome":
        from rgct.data.check import check_dataset, format_report

        report = check_dataset(args.dir, deep=not args.headers_only, max_volumes=args.max_volumes)
        print(format_report(report))
    else:
        from rgct.data.source_report import check_source, format_source_report

        deep = not args.headers_only
        report = check_source(args.dir, layout, deep=deep, max_volumes=args.max_volumes)
        print(format_source_report(report))
    if args.json:
        write_json(Path(args.json), report.to_dict())
    return 1 if report.errors else 0
