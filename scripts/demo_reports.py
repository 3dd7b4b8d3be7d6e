"""`make demo`: region-linked reports from the shipped model for held-out phantoms, beside the truth.

python scripts/demo_reports.py --data data/demo_phantoms --limit 3 [--checkpoint DIR]
"""

import argparse
import logging
import textwrap
import time

from rgct.constants import REGIONS
from rgct.data.layout import region_mask_path, volume_path
from rgct.data.records import load_split
from rgct.inference import Predictor, default_checkpoint

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True, help="phantom dataset (rgct synth)")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--limit", type=int, default=3, help="number of volumes")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped demo model")
    a = ap.parse_args()
    predictor = Predictor.from_checkpoint(a.checkpoint or default_checkpoint())
    index = load_split(a.data, a.split, max_volumes=a.limit)
    truth = index.ground_truth or {}
    refs_by_volume: dict[str, dict[str, str]] = {}
    for row in index.tables.get("region_report", []):
        refs_by_volume.setdefault(row["Volumename"], {})[row["Anatomy"]] = row["Sentence"]
    wrap = lambda s: textwrap.fill(s, 100, initial_indent="      ", subsequent_indent="      ")  # noqa: E731
    for volume in index.volumes:
        masks = {r: p for r in REGIONS if (p := region_mask_path(a.data, volume, r)).is_file()}
        t0 = time.perf_counter()
        report = predictor.report(volume_path(a.data, volume), masks)
        print(f"\n=== {volume}  ({time.perf_counter() - t0:.1f} s for {len(masks)} regions)")
        findings = truth.get(volume, {}).get("findings", [])
        print(
            "ground truth findings: "
            + (
                "; ".join(
                    f"{f['label']} ({f['lobe'] or f['region']}, {f['size_mm']:.0f} mm)"
                    for f in findings
                )
                or "none"
            )
        )
        refs = refs_by_volume.get(volume, {})
        for region, text in report["regions"].items():
            print(f"  [{region}]")
            print(wrap("model: " + text))
            print(wrap("truth: " + refs.get(region, "-")))
