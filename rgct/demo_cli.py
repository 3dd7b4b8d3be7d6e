"""``rgct demo``: serve the Gradio app (the shipped demo model unless ``--checkpoint``).

The app lives in the top-level ``app`` package and is imported only when the command runs,
so ``rgct --help`` and ``rgct demo --help`` never load gradio.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="model folder (default: the shipped demo model)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="events processed at once across users (default 2)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=512,
        help="largest accepted upload in MB (default 512)",
    )
    parser.add_argument(
        "--auth",
        default=None,
        help="USER:PASS basic login (default: env RGCT_DEMO_AUTH, else none)",
    )
    parser.add_argument(
        "--device", default="auto", help="torch device for the model (default auto)"
    )


def run(args: argparse.Namespace) -> int:
    """Load the model once and block serving the demo."""
    from app.main import serve

    return serve(args, auth_env=os.environ.get("RGCT_DEMO_AUTH"))
