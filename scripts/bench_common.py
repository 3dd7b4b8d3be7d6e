"""Helpers shared by the benchmark scripts: timing, machine matmul rate, RSS, tables, JSON.

Imported by ``scripts/bench_*.py`` (run as ``python scripts/bench_x.py``, so this folder is on
``sys.path``). Nothing here knows about the model.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from rgct import files

REPO = Path(__file__).resolve().parents[1]
PRESETS = {"tiny": REPO / "configs/model/tiny.yaml", "smollm2": REPO / "configs/model/smollm2.yaml"}
# A realistic region-report sample: with the chat template and 11 visual tokens this is
# ~80 tokens for SmolLM2's tokenizer (~100 for the tiny one).
PROMPT = "Describe the findings in the {region}."
ANSWER = (
    "Bilateral ground-glass opacities are seen in both lower lobes with mild septal "
    "thickening. No pleural effusion or pneumothorax."
)


def offline_env() -> None:
    """Never touch the network; keep tokenizers from spawning threads."""
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops(n: int = 2048, repeats: int = 3) -> float:
    """Achieved fp32 FLOP/s of an ``n x n`` matmul with all of torch's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = time_call(lambda: a @ b, repeats=repeats, warmup=1)
    return 2 * n**3 / seconds


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size in MiB of this process (or of its largest waited-for child)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


@contextlib.contextmanager
def record_generate(model: torch.nn.Module, min_new_tokens: int | None = None) -> Iterator[list]:
    """Record the token ids each ``model.llm.generate`` call returns (B, new tokens).

    With ``min_new_tokens`` set, end-of-sequence is suppressed until that many tokens are out,
    so a greedy run of ``max_new_tokens == min_new_tokens`` has a fixed length.
    """
    llm = model.llm
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    outputs: list[torch.Tensor] = []
    real = llm.generate

    def wrapped(**kwargs: Any) -> torch.Tensor:
        out = real(**kwargs)  # inputs_embeds in -> only the new tokens come back
        outputs.append(out.detach().cpu())
        return out

    old = base.generation_config.min_new_tokens
    base.generation_config.min_new_tokens = min_new_tokens
    llm.generate = wrapped
    try:
        yield outputs
    finally:
        del llm.generate
        base.generation_config.min_new_tokens = old


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e5:
            return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def print_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Print rows as a Markdown table (columns: given order, else the first row's keys)."""
    if not rows:
        print("(no rows)")
        return
    columns = columns or list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically (temp file, then rename)."""
    return files.write_json(path, data)
