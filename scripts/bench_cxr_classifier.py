"""Does the radiograph region classifier need the film statistics head? (issue #18)

Fits the classifier's heads on cached features of a radiograph folder's training films (every
film, box and zone; the encoder frozen), once on pooled patch features alone and once with the
box's value histograms and geometry (``model.region_stats``), and scores both on another split:
the finding named for a box (the most probable class is the box's), whole-film detections
(micro F1 at 0.5) and the zone localiser's exact places per boxed class.

    python scripts/bench_cxr_classifier.py --checkpoint runs/cxr_demo/cxr_encoder/model \
        --data runs/cxr_demo/synth --out bench/cxr_classifier.json
"""

from __future__ import annotations

import argparse
import copy
import logging

import numpy as np

from rgct.files import write_json
from rgct.model import region_classifier as rc
from rgct.model.checkpoint import load_checkpoint
from rgct.model.film_regions import ZONE_THRESHOLD, collect_film_features, zone_place_accuracy


def scores(model, feats) -> dict:
    probs = rc.feature_probabilities(model, feats)
    kind = np.array([k.split(" ")[0] for _, k in feats.keys])
    box, film = kind == "box", kind == "film"
    named = probs[box].argmax(1)
    truth = feats.labels[box]
    return {
        "box_named": float(truth[np.arange(len(named)), named].mean()),
        "boxes": int(box.sum()),
        "film_detection": rc.detection_scores(
            probs[film], feats.labels[film], [0.5] * model.num_labels
        ),
        "zone_places": zone_place_accuracy(probs, feats, model.label_names, ZONE_THRESHOLD),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--fit-split", default="train")
    p.add_argument("--score-split", default="test")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--max-films", type=int, default=None, help="fit on the first N films")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    base, cfg = load_checkpoint(args.checkpoint)
    rc.add_region_stats(base)
    fit = collect_film_features(base, cfg, args.data, args.fit_split, 0, args.max_films)
    held = collect_film_features(base, cfg, args.data, args.score_split)
    result = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "epochs": args.epochs,
        "fit_films": len({film for film, _ in fit.keys}),
        "scored_films": len({film for film, _ in held.keys}),
    }
    for name, stats in (("patch_features", False), ("with_film_stats", True)):
        model = copy.deepcopy(base)
        if not stats:
            model.pooler.stats, model.pooler.stats_head = None, None
        use = (
            (lambda f: f)
            if stats
            else (lambda f: rc.RegionFeatures(f.region, None, f.labels, f.keys))
        )
        rc.fit_region_classifier(model, use(fit), epochs=args.epochs)
        result[name] = scores(model, use(held))
        print(name, result[name])
    write_json(args.out, result)


if __name__ == "__main__":
    main()
