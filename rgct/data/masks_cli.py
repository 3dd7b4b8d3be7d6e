"""``rgct masks from-totalsegmentator``: TotalSegmentator output -> RadGenome mask files.

Example::

    TotalSegmentator -i ct.nii.gz -o ts/                       # the 'total' task
    TotalSegmentator -i ct.nii.gz -o ts/ -ta pleural_pericard_effusion
    rgct masks from-totalsegmentator ts/ --out masks/ --volume-name train_1_a_1 \
        --reference ct.nii.gz
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``from-totalsegmentator`` action."""
    sub = parser.add_subparsers(dest="masks_command", metavar="ACTION", required=True)
    ts = sub.add_parser(
        "from-totalsegmentator",
        help="turn TotalSegmentator output into RadGenome region and anatomy masks",
        description="Turn TotalSegmentator output (a folder of <class>.nii.gz files, or a "
        "multilabel NIfTI with its label table) into RadGenome region and anatomy mask files. "
        "Regions no input covers are listed, never filled with an all-ones mask.",
    )
    ts.add_argument(
        "src",
        nargs="+",
        type=Path,
        help="TotalSegmentator output folder(s) and/or multilabel file(s), e.g. the 'total' "
        "task plus pleural_pericard_effusion, trunk_cavities, lung_vessels, breasts",
    )
    ts.add_argument("--out", required=True, type=Path, help="folder to write the masks under")
    ts.add_argument(
        "--volume-name",
        help="<volume> of seg_<volume> (a CT-RATE name such as train_1_a_1 gives the dataset "
        "layout <split>_region_mask/...); default: the reference's or the source's stem",
    )
    ts.add_argument("--reference", type=Path, help="the CT volume; every mask must lie on its grid")
    ts.add_argument(
        "--class-map",
        type=Path,
        help="JSON {id: name} or CSV id,name for a multilabel file without a label table",
    )


def run(args: argparse.Namespace) -> int:
    """Convert; exit 0 when at least one region mask was written, 1 when none, 2 on bad input."""
    from rgct.data.totalseg import TotalSegmentatorError, masks_from_totalsegmentator

    try:
        result = masks_from_totalsegmentator(
            args.src,
            args.out,
            args.reference,
            volume_name=args.volume_name,
            class_map=args.class_map,
        )
    except (TotalSegmentatorError, ValueError) as e:
        print(f"rgct masks: error: {e}", file=sys.stderr)
        return 2
    print(f"{result.region_dir}: {len(result.regions)} region masks ({', '.join(result.regions)})")
    print(f"{result.anatomy_dir}: {len(result.anatomy)} anatomy masks")
    for region, why in result.missing_regions.items():
        print(f"  missing region {region}: {why}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    print(f"summary: {result.summary_path}")
    return 0 if result.regions else 1
