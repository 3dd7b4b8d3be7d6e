"""Benchmark batched region generation: one volume's encoder grid, 16 region masks.

Greedy, natural stopping (end-of-sequence or --new-tokens). Reports regions/s and generated
tokens/s per batch size, and whether batched output equals batch-1 output for every region.
The random tiny model is first fitted a few steps to one answer so its greedy choices are not
coin flips between near-equal logits.

    python scripts/bench_generate.py --out bench/generate.json
    python scripts/bench_generate.py --quick --out generate.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch
from bench_common import (
    ANSWER,
    PRESETS,
    PROMPT,
    machine_info,
    offline_env,
    peak_rss_mb,
    print_table,
    record_generate,
    write_json,
)

from rgct.config import GenerationConfig, load_config
from rgct.constants import REGIONS
from rgct.model.builder import build_model
from rgct.model.rgct_model import RGCTModel
from rgct.train.optim import build_optimizer

NUM_REGIONS = 16
COLUMNS = [
    "preset",
    "batch",
    "seconds",
    "regions_per_s",
    "tokens_per_s",
    "speedup",
    "target",
    "pass",
    "match_batch1",
]


def region_masks(shape: tuple[int, int, int], n: int) -> torch.Tensor:
    """``n`` different box masks (n,1,D,H,W): boxes stepping through the volume."""
    d, h, w = shape
    masks = torch.zeros(n, 1, d, h, w)
    for i in range(n):
        z, y, x = (i % 2) * d // 2, (i // 2 % 2) * h // 2, (i // 4 % 4) * w // 4
        masks[i, :, z : z + d // 2, y : y + h // 2, x : x + w // 4] = 1
    return masks


def fit_briefly(
    model: RGCTModel, image: torch.Tensor, masks: torch.Tensor, prompts: list[str], steps: int
) -> None:
    """A few optimizer steps towards ANSWER so greedy decoding is decisive."""
    train_cfg = load_config([PRESETS["tiny"]], ["train.lr=0.01", "train.projector_lr=0.01"]).train
    optimizer = build_optimizer(model, train_cfg)
    enc = model.tokenize(prompts, [ANSWER] * len(prompts))
    images = image.expand(len(prompts), -1, -1, -1, -1)
    model.train()
    for _ in range(steps):
        model(images, masks, **enc)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def count_tokens(ids: torch.Tensor, eos: int) -> int:
    """Generated tokens of (B, T) ids: up to and including each row's first EOS."""
    is_eos = ids == eos
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, ids.shape[1])
    return int(first.sum())


def bench_preset(name: str, args: argparse.Namespace) -> list[dict]:
    model = build_model(load_config([PRESETS[name]], ["train.seed=0"]))
    torch.manual_seed(0)
    image = torch.rand(1, model.in_channels, *model.input_shape)
    masks = region_masks(model.input_shape, NUM_REGIONS)
    prompts = [PROMPT.format(region=REGIONS[i % len(REGIONS)]) for i in range(NUM_REGIONS)]
    if name == "tiny":
        fit_briefly(model, image, masks, prompts, args.fit_steps)
    model.eval()
    # plain batched decoding (the tokens/s this measures); drafted decoding is timed by
    # bench_app / bench_segment --report
    gen = GenerationConfig(max_new_tokens=args.new_tokens, draft_tokens=0)
    with torch.no_grad():
        grid = model.encode_image(image)
    rows, texts = [], {}
    with record_generate(model) as outputs:
        for batch in args.batches:

            def run_all(batch: int = batch) -> tuple[list[str], int]:
                out, tokens = [], 0
                for s in range(0, NUM_REGIONS, batch):
                    m = masks[s : s + batch]
                    g = grid.expand(len(m), -1, -1, -1, -1)
                    out += model.generate_from_grid(g, m, prompts[s : s + batch], gen, image=image)
                    tokens += count_tokens(outputs[-1], model.tokenizer.eos_token_id)
                return out, tokens

            model.generate_from_grid(grid, masks[:1], prompts[:1], gen, image=image)  # warm-up
            t0 = time.perf_counter()
            texts[batch], tokens = run_all()
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "preset": name,
                    "batch": batch,
                    "seconds": seconds,
                    "regions_per_s": NUM_REGIONS / seconds,
                    "tokens_per_s": tokens / seconds,
                    "generated_tokens": tokens,
                }
            )
    first = rows[0]
    for row in rows:
        row["speedup"] = row["regions_per_s"] / first["regions_per_s"]
        row["match_batch1"] = texts[row["batch"]] == texts[first["batch"]]
        row["mismatched_regions"] = sum(
            a != b for a, b in zip(texts[row["batch"]], texts[first["batch"]])
        )
        row["target"], row["pass"] = "", ""
        row["peak_rss_mb"] = peak_rss_mb()
    if first["batch"] == 1 and rows[-1]["batch"] == 16:
        rows[-1]["target"] = ">= 5x batch 1 regions/s"
        rows[-1]["pass"] = rows[-1]["speedup"] >= 5
    rows[0]["sample_output"] = texts[first["batch"]][0]
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--new-tokens", type=int, default=32, help="max new tokens per region")
    p.add_argument("--fit-steps", type=int, default=40, help="fitting steps for the tiny model")
    p.add_argument("--quick", action="store_true", help="tiny preset, short generations")
    p.add_argument("--out", default="bench/generate.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    offline_env()
    if args.quick:
        args.presets, args.new_tokens, args.fit_steps = ["tiny"], 12, 20
    rows = [r for name in args.presets for r in bench_preset(name, args)]
    print_table(rows, COLUMNS)
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "quick": args.quick,
            "regions": NUM_REGIONS,
            "new_tokens": args.new_tokens,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
