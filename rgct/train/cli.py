"""``rgct train`` / ``scripts/train.py``: run a training stage from YAML configs + overrides."""

from __future__ import annotations

import argparse
import shlex
import sys

from rgct.config import load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="YAML",
        help="config file (repeatable; later files override earlier ones)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from the latest checkpoint of the run (or a given folder)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. train.lr=2e-4 data.root=data/phantoms",
    )


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"train.resume={args.resume}")
    cfg = load_config(args.config, overrides)  # fails here, before any work, on bad values
    from rgct.train.loop import resolve_threads, train

    resolve_threads()
    final = train(cfg, command=" ".join(shlex.quote(a) for a in ["rgct", "train", *sys.argv[2:]]))
    print(f"model written to {final}")
    return 0
