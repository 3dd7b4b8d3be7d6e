"""``rgct demo``: parse the command line, load the model once, serve the app.

This module is the ``rgct demo`` subcommand (``configure`` adds its options, ``run`` serves;
``rgct/cli.py`` names it), so the ``rgct`` library never imports the app. gradio is imported
only when the demo is served, so ``rgct demo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` -> (user, pass); None or empty -> None.

    Raises:
        ValueError: no colon, or an empty user or password.
    """
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("auth must look like USER:PASS")
    return user, password


# --- the `rgct demo` command ----------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options (``rgct demo``)."""
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
    parser.add_argument(
        "--max-scans",
        type=int,
        default=8,
        help="scans kept in memory over all sessions; the least recent is released (default 8)",
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=30,
        help="model requests per minute allowed per session, 0 for no limit (default 30)",
    )


def run(args: argparse.Namespace) -> int:
    """Load the model named by ``args`` once and block serving the demo."""
    return serve(args, auth_env=os.environ.get("RGCT_DEMO_AUTH"))


def serve(args: argparse.Namespace, auth_env: str | None = None) -> int:
    """Load the model named by ``args`` and block serving the demo."""
    from rgct.inference import Predictor, default_checkpoint

    try:
        auth = parse_auth(args.auth or auth_env)
        checkpoint = args.checkpoint or default_checkpoint()
    except (ValueError, FileNotFoundError) as err:
        log.error("rgct demo: %s", err)
        return 2
    log.info("loading the model from %s", checkpoint)
    t0 = time.perf_counter()
    # the app only generates: the LoRA adapter merged into the weights saves its extra
    # matrix products on every pass (the shipped model's texts are unchanged, 27/27)
    predictor = Predictor.from_checkpoint(checkpoint, device=args.device, merge_lora=True)
    log.info("model ready in %.1f s", time.perf_counter() - t0)
    from app.demo import build_demo, launch

    demo = build_demo(
        predictor,
        max_upload_mb=args.max_upload_mb,
        concurrency_limit=args.concurrency,
        max_scans=args.max_scans,
        rate_limit=(args.rate_limit, 60.0),
        model_name=Path(checkpoint).name,
    )
    launch(demo, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, auth=auth)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m app.main``: the same as ``rgct demo``."""
    parser = argparse.ArgumentParser(prog="rgct demo", description="Launch the rgct Gradio demo.")
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    import sys

    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
