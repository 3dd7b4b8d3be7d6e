"""``rgct plot RUN_DIR [--out PNG]``: draw a run's loss curves from ``metrics.jsonl``.

Training rows carry ``step, loss, lm_loss, aux_loss, dense_loss, lr, samples_per_s``; evaluation rows
carry ``step, val_loss/<task>, val_aux_f1``. Four panels: training losses, validation loss per
task, auxiliary-classifier F1, learning rate. Written atomically (temp file, then rename).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rgct.constants import METRICS_FILE
from rgct.files import atomic_path
from rgct.jsonl import iter_jsonl

logger = logging.getLogger(__name__)

DEFAULT_PNG = "loss_curves.png"
TRAIN_KEYS = ("loss", "lm_loss", "aux_loss", "dense_loss")
VAL_PREFIX = "val_loss/"


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a ``metrics.jsonl`` file; raises if it is missing, unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file (is this a training run folder?)")
    rows = []
    for n, row in iter_jsonl(path):
        if "step" not in row:
            raise ValueError(f"{path}:{n}: a metrics row must be an object with a 'step'")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: has no metric rows yet")
    return rows


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [s for s, _ in points], [v for _, v in points]


def plot_metrics(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the curves of ``run_dir/metrics.jsonl`` to ``out`` (default ``run_dir/loss_curves.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / METRICS_FILE)
    out = Path(out) if out is not None else run_dir / DEFAULT_PNG
    val_keys = sorted({k for r in rows for k in r if k.startswith(VAL_PREFIX)})

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    panels = [
        (axes[0, 0], "training loss", [(k, k) for k in TRAIN_KEYS]),
        (axes[0, 1], "validation loss", [(k, k[len(VAL_PREFIX) :]) for k in val_keys]),
        (axes[1, 0], "auxiliary classifier F1 (validation)", [("val_aux_f1", "micro-F1")]),
        (axes[1, 1], "learning rate", [("lr", "lr")]),
    ]
    for ax, title, curves in panels:
        drawn = 0
        for key, label in curves:
            steps, values = _series(rows, key)
            if steps and any(values):  # an all-zero loss is one the stage does not train
                ax.plot(steps, values, marker="o" if len(steps) < 20 else None, ms=3, label=label)
                drawn += 1
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    axes[1, 0].set_ylim(-0.02, 1.02)
    axes[1, 1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.suptitle(f"{run_dir.name}: {len(rows)} metric rows, last step {rows[-1]['step']}")

    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="training output folder with metrics.jsonl"
    )
    parser.add_argument(
        "--out", metavar="PNG", help=f"image to write (default RUN_DIR/{DEFAULT_PNG})"
    )


def run(args: argparse.Namespace) -> int:
    try:
        path = plot_metrics(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as e:
        logger.error("%s", e)
        return 1
    print(f"wrote {path}")
    return 0
