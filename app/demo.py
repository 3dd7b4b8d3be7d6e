"""The rgct Gradio demo: load a chest CT, see its regions, read its report, talk with the scan;
or, with a chest-radiograph checkpoint, a film, a box on it, its findings and questions.

:func:`build_demo` is the layout (:mod:`app.layout`) plus the callbacks (:mod:`app.callbacks`)
plus the named endpoints (:mod:`app.api`, documented in the README); :func:`launch` serves it.
A Predictor whose ``modality`` is ``"cxr"`` gets the radiograph page instead
(:mod:`app.cxr_layout`, :mod:`app.cxr_callbacks`, :mod:`app.cxr_handlers`).
``rgct demo`` (:mod:`app.main`) parses the command line and calls both.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from app.api import add_api
from app.callbacks import WHEEL_JS, wire
from app.cxr_api import add_cxr_api
from app.cxr_callbacks import wire_cxr
from app.cxr_handlers import CxrDemoApp
from app.cxr_layout import build_cxr_layout
from app.handlers import DemoApp
from app.layout import build_layout

log = logging.getLogger(__name__)

MODALITIES = ("ct", "cxr")
"""What a Predictor may read (``predictor.modality``): chest CT volumes or chest radiographs."""

EXAMPLES_DIR = Path(__file__).parent / "examples"
"""The bundled example phantoms (one folder each: a volume and ``seg_<volume>/`` masks)."""

CXR_EXAMPLES_DIR = Path(__file__).parent / "examples_cxr"
"""The bundled example films of the radiograph mode (phantom DICOM and PNG radiographs)."""

CSS = """
.rgct-report { font-size: 0.95rem; line-height: 1.4; }
.rgct-source { font-size: 0.8rem; opacity: 0.75; margin-bottom: 4px; }
.rgct-sentence { display: flex; gap: 0.75em; padding: 4px 8px; margin: 4px 0; cursor: pointer;
  border-radius: 4px; }
.rgct-sentence:hover { background: rgba(127, 127, 127, 0.15); }
.rgct-sentence.rgct-active { background: rgba(255, 0, 200, 0.15); }
.rgct-region { flex: 0 0 9.5em; font-weight: 600; }
.rgct-text { flex: 1; }
.rgct-badge { display: inline-block; margin-left: 0.5em; font-size: 0.8rem; opacity: 0.85; }
.rgct-bar { display: flex; align-items: center; gap: 6px; font-size: 0.78rem; }
.rgct-bar-label { flex: 0 0 14em; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.rgct-bar-track { flex: 1; height: 0.7em; background: rgba(127, 127, 127, 0.2); }
.rgct-bar-track span { display: block; height: 100%; }
.rgct-bar-value { flex: 0 0 2.5em; text-align: right; }
.rgct-warnings { border: 1px solid #e0a800; background: rgba(255, 193, 7, 0.12); padding: 6px 10px;
  border-radius: 4px; }
#rgct-status { min-height: 2.5em; }
/* never enlarge a frame beyond its own pixels: gradio maps a click to a pixel assuming that */
#rgct-viewer img { width: auto !important; height: auto !important; max-width: 100%;
  max-height: 100%; object-fit: contain; }
"""

DELETE_CACHE = (600, 1800)
"""gradio's file cache (rendered frames, uploads): every 10 min, delete files older than 30 min."""


def build_demo(
    predictor: Any,
    *,
    examples_dir: Path | None = None,
    max_upload_mb: float = 512,
    concurrency_limit: int = 2,
    upload_roots: list[Path] | None = None,
    tmp_root: Path | None = None,
    max_scans: int = 8,
    rate_limit: tuple[int, float] = (30, 60.0),
    model_name: str | None = None,
) -> gr.Blocks:
    """Build the demo around one shared Predictor.

    Args:
        predictor: an ``rgct.inference.Predictor`` (or anything with its interface).
        examples_dir: bundled examples; default ``app/examples`` (a radiograph Predictor:
            ``app/examples_cxr``).
        max_upload_mb: limit per uploaded file in MB (also pass it to :func:`launch`).
        concurrency_limit: events run at once across all users (``queue`` default limit).
        upload_roots: folders uploads may come from; default gradio's upload folder.
        tmp_root: parent of the per-session scratch folders.
        max_scans: scans kept in memory at once over all sessions (least recent released).
        rate_limit: (requests, seconds) of model calls allowed per session.
        model_name: the model's name recorded in exports (a folder name, not a path).

    Returns:
        The queued ``gr.Blocks``; launch it with :func:`launch`.

    Raises:
        ValueError: ``predictor.modality`` is neither "ct" nor "cxr".
    """
    modality = getattr(predictor, "modality", "ct")  # a Predictor before radiographs reads CT
    if modality not in MODALITIES:
        raise ValueError(f"predictor.modality must be one of {MODALITIES}, got {modality!r}")
    cxr = modality == "cxr"
    app = (CxrDemoApp if cxr else DemoApp)(
        predictor,
        examples_dir=(CXR_EXAMPLES_DIR if cxr else EXAMPLES_DIR)
        if examples_dir is None
        else examples_dir,
        max_upload_mb=max_upload_mb,
        upload_roots=upload_roots,
        tmp_root=tmp_root,
        max_scans=max_scans,
        rate_limit=rate_limit,
        model_name=model_name,
    )
    with gr.Blocks(title="rgct demo", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        demo.rgct_app = app  # handle for tests and scripts
        if cxr:
            wire_cxr(build_cxr_layout(app), app)
            add_cxr_api(app)
        else:
            ui = build_layout(app)
            wire(ui, app)
            add_api(app)

        def on_close(request: gr.Request) -> None:
            """The tab closed: free the session's scan now, not when gradio's state expires."""
            app.release(getattr(request, "session_hash", None))

        demo.unload(on_close)
    demo.queue(default_concurrency_limit=concurrency_limit)
    return demo


def launch(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    max_upload_mb: float = 512,
    auth: tuple[str, str] | None = None,
    prevent_thread_lock: bool = False,
) -> Any:
    """Launch a built demo locally (never shared publicly).

    Args:
        demo: from :func:`build_demo`.
        host: interface to bind; ``0.0.0.0`` exposes it on the network.
        port: TCP port, or None for gradio's first free one.
        max_upload_mb: largest accepted upload in MB.
        auth: optional (user, password) for basic login.
        prevent_thread_lock: return right away (tests) instead of blocking.
    """
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        auth=auth,
        max_file_size=int(max_upload_mb * 2**20),
        prevent_thread_lock=prevent_thread_lock,
        css=CSS,
        js=WHEEL_JS,
        theme=gr.themes.Soft(),
        show_error=False,
    )
