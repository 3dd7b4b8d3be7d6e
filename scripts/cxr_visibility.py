"""How visible are a radiograph folder's boxed findings? (issue #18: why presence is hard)

For every box, the z-score of its mean displayed value (at the model's input size) against the
same box on the split's other films (:func:`rgct.data.film_targets.box_visibility`), per class.

    python scripts/cxr_visibility.py --data runs/cxr_demo/synth --max-films 300 \
        --out bench/cxr_visibility.json
"""

from __future__ import annotations

import argparse
import json

from rgct.config import DataConfig
from rgct.data.film_targets import FilmSegmentationDataset, box_visibility
from rgct.files import write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="VinDr-CXR or ChestX-ray14 folder")
    p.add_argument("--split", default="train")
    p.add_argument("--max-films", type=int, default=None)
    p.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    p.add_argument("--out", default=None, help="JSON file (printed either way)")
    args = p.parse_args(argv)
    cfg = DataConfig(modality="cxr", input_shape=tuple(args.size))
    ds = FilmSegmentationDataset(args.data, args.split, cfg, max_films=args.max_films)
    result = {
        "data": args.data,
        "split": args.split,
        "films": len(ds),
        "input_shape": list(args.size),
        "classes": box_visibility(ds),
    }
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
