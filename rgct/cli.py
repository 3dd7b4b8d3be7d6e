"""The ``rgct`` command line: one entry point, one module per subcommand.

Each subcommand lives in the module named in :data:`COMMANDS`, which defines
``configure(parser)`` (adds its arguments) and ``run(args) -> int`` (does the work and
returns the exit code). Modules are imported only when their command runs, so
``rgct --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command -> (module, one-line help). "data" has its own sub-subcommands.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": (
        "rgct.data.synth_cli",
        "write a synthetic phantom dataset in the RadGenome-Chest CT layout",
    ),
    "data": (
        "rgct.data.check_cli",
        "inspect a dataset folder ('rgct data check DIR', 'rgct data show')",
    ),
    "masks": (
        "rgct.data.masks_cli",
        "region masks from other tools ('rgct masks from-totalsegmentator SRC --out DIR')",
    ),
    "segment": (
        "rgct.generate.segment_cli",
        "region, lobe and finding masks of a volume ('rgct segment CT --checkpoint DIR --out DIR')",
    ),
    "train": ("rgct.train.cli", "fine-tune a model (same as scripts/train.py)"),
    "generate": ("rgct.generate.cli", "batch-generate reports and answers for a split to JSONL"),
    "evaluate": (
        "rgct.eval.cli",
        "score predictions: language, clinical, VQA and grounding metrics",
    ),
    "label": ("rgct.eval.label_cli", "add one 0/1 column per CT-RATE label to a CSV of reports"),
    "plot": ("rgct.train.plot", "draw a run's loss curves to a PNG"),
    "classifier": (
        "rgct.train.classifier_cli",
        "fit a checkpoint's region classifier or its thresholds (writes a new folder)",
    ),
    "heldout": (
        "rgct.generate.heldout_cli",
        "score a checkpoint and its blind baseline on phantoms",
    ),
    "recipe": ("rgct.recipe", "run a recipe: every stage of how a model is made, resumable"),
    "demo": ("app.main", "launch the Gradio app (shipped demo model by default)"),
}


def build_parser(load_modules: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rgct", description="Region-grounded chest-CT reports.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if load_modules and (only is None or only == name):
            mod = importlib.import_module(module)
            mod.configure(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        parser = build_parser(load_modules=False)
        if command is None:
            parser.print_help()
            return 0 if ("-h" in argv or "--help" in argv) else 2
        parser.error(f"unknown command {command!r}")
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
