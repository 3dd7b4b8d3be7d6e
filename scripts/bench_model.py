"""Benchmark the model: train-step time and generation throughput per preset (synthetic inputs).

LLM FLOP/s counts 6 * LLM params * tokens per train step and 2 * params * generated tokens,
reported as a fraction of this machine's fp32 2048x2048 matmul rate measured in the same run.

    python scripts/bench_model.py --out bench/model.json
    python scripts/bench_model.py --quick --out model.json     # tiny preset, seconds
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch
from bench_common import (
    ANSWER,
    PRESETS,
    PROMPT,
    machine_info,
    matmul_flops,
    offline_env,
    peak_rss_mb,
    print_table,
    record_generate,
    time_call,
    write_json,
)

from rgct.config import GenerationConfig, load_config
from rgct.model.builder import build_model
from rgct.model.region_classifier import RegionIntensityStats
from rgct.model.rgct_model import RGCTModel
from rgct.train.optim import build_optimizer

COLUMNS = [
    "preset",
    "kind",
    "batch",
    "seq_len",
    "step_s",
    "tokens_per_s",
    "llm_gflop_s",
    "frac_matmul",
    "target",
    "pass",
]


def inputs(model: RGCTModel, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random image (B,1,D,H,W) in [0,1] and a central box mask (B,1,D,H,W)."""
    torch.manual_seed(0)
    image = torch.rand(batch, model.in_channels, *model.input_shape)
    mask = torch.zeros_like(image)
    d, h, w = model.input_shape
    mask[..., d // 4 : 3 * d // 4, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
    return image, mask


def train_step_time(model: RGCTModel, optimizer, batch: int, repeats: int) -> dict:
    """Median seconds of one fwd + bwd + AdamW step, with its token count."""
    image, mask = inputs(model, batch)
    enc = model.tokenize([PROMPT.format(region="lung")] * batch, [ANSWER] * batch)

    def step() -> None:
        model(image, mask, **enc)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = time_call(step, repeats, warmup=1)
    tokens = int(enc["attention_mask"].sum())
    return {"seq_len": enc["input_ids"].shape[1], "step_s": seconds, "tokens": tokens}


def generate_time(model: RGCTModel, batch: int, new_tokens: int, repeats: int) -> dict:
    """Median seconds of greedy generation of exactly ``new_tokens`` per row (grid precomputed)."""
    image, mask = inputs(model, 1)
    with torch.no_grad():
        grid = model.encode_image(image).expand(batch, -1, -1, -1, -1)
    masks, prompts = mask.expand(batch, -1, -1, -1, -1), [PROMPT.format(region="lung")] * batch
    gen = GenerationConfig(max_new_tokens=new_tokens, draft_tokens=0)  # plain decoding's step
    with record_generate(model, min_new_tokens=new_tokens) as outputs:
        seconds = time_call(
            lambda: model.generate_from_grid(grid, masks, prompts, gen, image=image), repeats
        )
    tokens = outputs[-1].numel()
    if tokens != batch * new_tokens:
        raise RuntimeError(f"expected {batch * new_tokens} generated tokens, got {tokens}")
    return {"seq_len": new_tokens, "step_s": seconds, "tokens": tokens}


def region_stats_time(model: RGCTModel, masks: int, repeats: int) -> dict:
    """Median seconds of the region intensity histograms (``model.region_stats``) of one
    volume under ``masks`` region masks (filters once, then one histogram per mask)."""
    stats = RegionIntensityStats(model.hu_window)
    image, mask = inputs(model, 1)
    masks_t = mask.expand(masks, -1, -1, -1, -1)
    with torch.no_grad():
        seconds = time_call(lambda: stats(image, masks_t), repeats, warmup=1)
    return {"seq_len": "", "step_s": seconds, "tokens": 0}


def bench_preset(name: str, args: argparse.Namespace, peak: float) -> list[dict]:
    cfg = load_config([PRESETS[name]], ["train.seed=0"])
    model = build_model(cfg)
    n_llm = sum(p.numel() for p in model.llm.parameters())  # tied embeddings counted once
    model.train()
    optimizer = build_optimizer(model, cfg.train)
    rows = []
    for batch in args.train_batches:
        r = train_step_time(model, optimizer, batch, args.repeats)
        ok = r["step_s"] < 5 if name == "smollm2" and batch == 2 else None
        rows.append(
            {
                "kind": "train",
                "batch": batch,
                "flop": 6 * n_llm * r["tokens"],
                **r,
                "target": "< 5 s" if ok is not None else "",
                "pass": "" if ok is None else ok,
            }
        )
    model.eval()
    for batch in (1, 8):
        r = generate_time(model, batch, args.new_tokens, args.repeats)
        rows.append(
            {
                "kind": "generate",
                "batch": batch,
                "flop": 2 * n_llm * r["tokens"],
                **r,
                "target": "",
                "pass": "",
            }
        )
    speedup = rows[-1]["tokens"] / rows[-1]["step_s"] / (rows[-2]["tokens"] / rows[-2]["step_s"])
    rows[-1].update(target=">= 4x batch 1 tokens/s", speedup=speedup, **{"pass": speedup >= 4})
    r = region_stats_time(model, 10, args.repeats)
    rows.append({"kind": "region_stats", "batch": 10, "flop": 0, **r, "target": "", "pass": ""})
    for row in rows:
        row.update(
            preset=name,
            llm_params=n_llm,
            tokens_per_s=row["tokens"] / row["step_s"],
            llm_gflop_s=row["flop"] / row["step_s"] / 1e9,
            frac_matmul=row["flop"] / row["step_s"] / peak,
            peak_rss_mb=peak_rss_mb(),
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--train-batches", type=int, nargs="+", default=[2, 8])
    p.add_argument("--new-tokens", type=int, default=32, help="generated tokens per row")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    p.add_argument("--quick", action="store_true", help="tiny preset, few iterations")
    p.add_argument("--out", default="bench/model.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    offline_env()
    if args.quick:
        args.presets, args.train_batches, args.new_tokens, args.repeats = ["tiny"], [2], 4, 1
    peak = matmul_flops(512 if args.quick else 2048)
    rows = [r for name in args.presets for r in bench_preset(name, args, peak)]
    print(f"machine fp32 matmul: {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)\n")
    print_table(rows, COLUMNS)
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "matmul_flop_s": peak,
            "quick": args.quick,
            "new_tokens": args.new_tokens,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
