"""The rgct Gradio demo: load a chest CT, pick a region, read its report, ask questions.

Launch with ``rgct demo`` (see ``rgct demo --help``). Three named endpoints serve scripts:
``/region_report``, ``/report`` and ``/answer``. From Python::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    text = client.predict(handle_file("scan.nii.gz"), handle_file("lung.nii.gz"), "lung", 64, 1, api_name="/region_report")
    report = client.predict(handle_file("scan.nii.gz"), handle_file("masks.zip"), 64, 1, api_name="/report")
    answer = client.predict(handle_file("scan.nii.gz"), None, "What are the abnormalities in the scan?", 32, 1, api_name="/answer")
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from app import viewer
from app.handlers import DemoApp, Session, delete_session, generation_kwargs, report_html
from app.inputs import MASK_SUFFIXES, VOLUME_SUFFIXES, InputError
from rgct.constants import QUESTION_TEMPLATES

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).parent / "examples"
"""The bundled example phantoms (one folder each: a volume and ``seg_<volume>/`` masks)."""

INSTRUCTIONS = """
# rgct: region-grounded chest CT reports
**1. Scan** — pick an example phantom, or upload a CT (`.nii`, `.nii.gz`, a DICOM series as
`.zip`, or a RAD-ChestCT `.npz`). **2. Region** — choose a region mask from the list, upload
masks (one binary NIfTI, or a `.zip` of `<region>.nii.gz`), or draw a box: click two corners on
the axial image, set the slice range, then *Use box*. **3. Text** — write the region's report,
the full report (click a sentence to see its region), or ask a question. Research demo: not for
clinical use.
"""

CSS = """
.rgct-report { font-size: 0.95rem; line-height: 1.4; }
#rgct-status { min-height: 2.5em; }
"""

QUESTION_CHOICES = [k for k in QUESTION_TEMPLATES]

ErrorHandler = Callable[..., dict]


def guard(status: gr.components.Component) -> Callable[[Callable[..., dict]], ErrorHandler]:
    """Wrap a UI callback so that errors become a message in ``status``, never a traceback.

    :class:`InputError` (the user can fix it) shows its message; anything else is logged
    with its traceback on the server and shown as a short message.
    """

    def decorate(fn: Callable[..., dict]) -> ErrorHandler:
        @functools.wraps(fn)
        def wrapped(*args: Any) -> dict:
            try:
                return fn(*args)
            except InputError as err:
                message = str(err)
            except Exception as err:  # noqa: BLE001 - UI boundary: log it, show a message
                log.exception("demo callback %s failed", fn.__name__)
                message = f"Something went wrong ({type(err).__name__}: {err})."
            gr.Warning(message)
            return {status: f"⚠️ {message}"}

        return wrapped

    return decorate


def _api_guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """API endpoints report user errors as ``gr.Error`` (the client sees the message)."""

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except InputError as err:
            raise gr.Error(str(err)) from err

    return wrapped


def build_demo(
    predictor: Any,
    *,
    examples_dir: Path | None = None,
    max_upload_mb: float = 512,
    concurrency_limit: int = 2,
    upload_roots: list[Path] | None = None,
    tmp_root: Path | None = None,
) -> gr.Blocks:
    """Build the demo around one shared Predictor.

    Args:
        predictor: an ``rgct.inference.Predictor`` (or anything with its interface).
        examples_dir: bundled examples; default ``app/examples``.
        max_upload_mb: limit per uploaded file in MB (also pass it to :func:`launch`).
        concurrency_limit: events run at once across all users (``queue`` default limit).
        upload_roots: folders uploads may come from; default gradio's upload folder.
        tmp_root: parent of the per-session scratch folders.

    Returns:
        The queued ``gr.Blocks``; launch it with :func:`launch`.
    """
    app = DemoApp(
        predictor,
        examples_dir=EXAMPLES_DIR if examples_dir is None else examples_dir,
        max_upload_mb=max_upload_mb,
        upload_roots=upload_roots,
        tmp_root=tmp_root,
    )
    # gradio caches every rendered frame and upload: sweep files older than an hour, hourly
    with gr.Blocks(title="rgct demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        demo.rgct_app = app  # handle for tests and scripts
        state = gr.State(None, delete_callback=delete_session)
        gr.Markdown(INSTRUCTIONS)
        with gr.Row(equal_height=False):
            # --- left: scan and region ---------------------------------------------------------
            with gr.Column(scale=3, min_width=280):
                gr.Markdown("### 1. Scan")
                with gr.Tab("Examples"):
                    example_dd = gr.Dropdown(
                        app.examples,
                        value=app.examples[0] if app.examples else None,
                        label="Example phantom",
                        elem_id="rgct-example",
                    )
                    example_btn = gr.Button(
                        "Load example", variant="primary", elem_id="rgct-load-example"
                    )
                with gr.Tab("Upload"):
                    volume_file = gr.File(
                        label="CT scan: .nii / .nii.gz / DICOM .zip / RAD-ChestCT .npz",
                        file_types=list(VOLUME_SUFFIXES),
                        type="filepath",
                    )
                gr.Markdown("### 2. Region")
                region_dd = gr.Dropdown(
                    [], label="Region in use", interactive=True, elem_id="rgct-region"
                )
                with gr.Accordion("Upload masks", open=False):
                    mask_file = gr.File(
                        label="Binary mask .nii(.gz), or .zip of <region>.nii.gz",
                        file_types=list(MASK_SUFFIXES),
                        type="filepath",
                    )
                with gr.Accordion("Draw a box", open=False):
                    gr.Markdown(
                        "Click two opposite corners on the **axial** image (or use the sliders)."
                    )
                    z0 = gr.Slider(0, 1, value=0, step=1, label="First slice")
                    z1 = gr.Slider(0, 1, value=0, step=1, label="Last slice")
                    y0 = gr.Slider(0, 1, value=0, step=1, label="Top row")
                    y1 = gr.Slider(0, 1, value=0, step=1, label="Bottom row")
                    x0 = gr.Slider(0, 1, value=0, step=1, label="Left column")
                    x1 = gr.Slider(0, 1, value=0, step=1, label="Right column")
                    box_btn = gr.Button("Use box as region")
                status = gr.Markdown("Load a scan to begin.", elem_id="rgct-status")

            # --- middle: viewer ------------------------------------------------------------------
            with gr.Column(scale=5, min_width=360):
                image = gr.Image(
                    label="Viewer (click: box corners on axial)",
                    type="numpy",
                    interactive=False,
                    height=520,
                    buttons=["download", "fullscreen"],
                    elem_id="rgct-viewer",
                )
                slice_slider = gr.Slider(0, 1, value=0, step=1, label="Slice", elem_id="rgct-slice")
                with gr.Row():
                    view = gr.Radio(list(viewer.VIEWS), value="axial", label="Plane")
                    window = gr.Radio(list(viewer.WINDOW_PRESETS), value="lung", label="HU window")

            # --- right: text -------------------------------------------------------------------
            with gr.Column(scale=4, min_width=320):
                gr.Markdown("### 3. Text")
                with gr.Tab("Region report"):
                    rr_btn = gr.Button(
                        "Write region report", variant="primary", elem_id="rgct-rr-btn"
                    )
                    rr_out = gr.Textbox(label="Region report", lines=5, elem_id="rgct-rr-out")
                with gr.Tab("Full report"):
                    fr_btn = gr.Button(
                        "Write full report", variant="primary", elem_id="rgct-fr-btn"
                    )
                    fr_html = gr.HTML(
                        "<i>Needs region masks (an example, or a mask .zip).</i>",
                        elem_id="rgct-report",
                    )
                    sentence = gr.Radio(
                        [], label="Show a sentence's region in the viewer", elem_id="rgct-sentences"
                    )
                    with gr.Row():
                        json_dl = gr.DownloadButton(
                            "Report .json", visible=False, size="sm", elem_id="rgct-json-dl"
                        )
                        txt_dl = gr.DownloadButton("Report .txt", visible=False, size="sm")
                with gr.Tab("Ask"):
                    template = gr.Dropdown(
                        QUESTION_CHOICES, value="abnormality", label="Question template"
                    )
                    abnormality = gr.Textbox(
                        label="{abnormality} (for presence/location/size)", value="nodule"
                    )
                    question = gr.Textbox(label="Question (edit freely)", lines=2)
                    ask_btn = gr.Button("Ask", variant="primary")
                    answer_out = gr.Textbox(label="Answer", lines=2)
                with gr.Accordion("Generation settings", open=False):
                    max_new = gr.Slider(8, 256, value=64, step=8, label="Max new tokens")
                    decoding = gr.Radio(["greedy", "beam search"], value="greedy", label="Decoding")
                    beams = gr.Slider(2, 8, value=3, step=1, label="Beams (beam search)")
                latency = gr.Markdown("")

        gen_inputs = [max_new, decoding, beams]
        box_sliders = [z0, z1, y0, y1, x0, x1]

        def frame(session: Session | None, view_: str, index: float, window_: str) -> Any:
            box = getattr(session, "box_preview", None)
            return app.render(session, view_, index, window_, box)

        def scan_view(session: Session, view_: str, window_: str, message: str) -> dict:
            """Updates after the scan or its masks changed: slider range, regions, frame."""
            scan = session.require_scan()
            shape = scan.volume.array.shape
            n = viewer.num_slices(shape, view_)
            centre = viewer.mask_centre(session.mask, view_) if session.mask is not None else None
            index = n // 2 if centre is None else centre
            return {
                state: session,
                status: message,
                slice_slider: gr.Slider(minimum=0, maximum=n - 1, value=index),
                region_dd: gr.Dropdown(choices=list(scan.masks), value=session.selected),
                image: gr.Image(
                    value=frame(session, view_, index, window_),
                    label=f"{scan.name} · {view_} · overlay: {session.selected or 'none'}",
                ),
            }

        def box_ranges(session: Session) -> dict:
            d, h, w = session.require_scan().volume.array.shape
            return {
                z0: gr.Slider(maximum=d - 1, value=d // 3),
                z1: gr.Slider(maximum=d - 1, value=2 * d // 3),
                y0: gr.Slider(maximum=h - 1, value=h // 3),
                y1: gr.Slider(maximum=h - 1, value=2 * h // 3),
                x0: gr.Slider(maximum=w - 1, value=w // 3),
                x1: gr.Slider(maximum=w - 1, value=2 * w // 3),
            }

        scan_outputs = [
            state,
            status,
            slice_slider,
            region_dd,
            image,
            *box_sliders,
            fr_html,
            sentence,
            json_dl,
            txt_dl,
        ]

        def fresh_text() -> dict:
            return {
                fr_html: "<i>Needs region masks (an example, or a mask .zip).</i>",
                sentence: gr.Radio(choices=[], value=None),
                json_dl: gr.DownloadButton(visible=False),
                txt_dl: gr.DownloadButton(visible=False),
            }

        @guard(status)
        def on_example(session, name, view_, window_):
            session, msg = app.load_example(session, name)
            session.box_preview = None
            return {
                **scan_view(session, view_, window_, msg),
                **box_ranges(session),
                **fresh_text(),
            }

        @guard(status)
        def on_volume(session, path, view_, window_):
            if not path:
                return {}
            session, msg = app.load_volume(session, path)
            session.box_preview = None
            return {
                **scan_view(session, view_, window_, msg),
                **box_ranges(session),
                **fresh_text(),
            }

        @guard(status)
        def on_masks(session, path, view_, window_):
            if not path:
                return {}
            session, msg = app.load_masks(session, path)
            return scan_view(session, view_, window_, msg)

        @guard(status)
        def on_region(session, name, view_, window_):
            session = app.select(session, name)
            session.box_preview = None
            return scan_view(session, view_, window_, f"Showing **{session.selected}**.")

        @guard(status)
        def on_view(session, view_, window_):
            if not isinstance(session, Session) or session.scan is None:
                return {}
            return scan_view(session, view_, window_, f"{view_.capitalize()} view.")

        @guard(status)
        def on_frame(session, view_, index, window_):
            return {image: frame(session, view_, index, window_)}

        @guard(status)
        def on_click(session, view_, index, window_, evt: gr.SelectData):
            session = app.session(session)
            session.require_scan()
            if view_ != "axial":
                return {status: "Switch to the **axial** plane to draw a box."}
            session, box = app.click(session, evt.index[1], evt.index[0])
            out: dict = {state: session}
            if box is None:
                y, x = session.corner
                session.box_preview = (y, y, x, x)
                out[status] = f"First corner at row {y}, column {x}: click the opposite corner."
            else:
                session.box_preview = box
                out.update({y0: box[0], y1: box[1], x0: box[2], x1: box[3]})
                out[status] = "Box drawn: set the slice range, then **Use box as region**."
            out[image] = frame(session, view_, index, window_)
            return out

        @guard(status)
        def on_box_preview(session, ya, yb, xa, xb, view_, index, window_):
            session = app.session(session)
            session.require_scan()
            session.box_preview = (int(ya), int(yb), int(xa), int(xb))
            return {state: session, image: frame(session, view_, index, window_)}

        @guard(status)
        def on_box(session, za, zb, ya, yb, xa, xb, view_, window_):
            session, msg = app.set_box(session, (za, zb), (ya, yb), (xa, xb))
            session.box_preview = None
            return scan_view(session, view_, window_, msg)

        @guard(status)
        def on_region_report(session, mx, dec, nb):
            text, seconds = app.region_report(session, **generation_kwargs(mx, dec, nb))
            return {
                rr_out: text,
                latency: f"Region report in {seconds:.2f} s.",
                status: f"Region report for **{session.selected}**.",
            }

        @guard(status)
        def on_full_report(session, mx, dec, nb):
            session, report, seconds = app.full_report(session, **generation_kwargs(mx, dec, nb))
            js, txt = app.report_files(session)
            choices = [
                (f"{s['region']}: {s['text'][:40]}{'…' if len(s['text']) > 40 else ''}", str(i))
                for i, s in enumerate(report.get("sentences", []))
            ]
            return {
                state: session,
                fr_html: report_html(report),
                sentence: gr.Radio(choices=choices, value=None),
                json_dl: gr.DownloadButton(value=str(js), visible=True),
                txt_dl: gr.DownloadButton(value=str(txt), visible=True),
                latency: f"Full report ({len(choices)} sentences) in {seconds:.2f} s.",
                status: "Full report written. Pick a sentence to see its region.",
            }

        @guard(status)
        def on_sentence(session, choice, view_, window_):
            session = app.session(session)
            if choice is None or session.report is None:
                return {}
            region = session.report["sentences"][int(choice)]["region"]
            if session.scan is None or region not in session.scan.masks:
                return {status: f"No mask for **{region}** in this scan."}
            session = app.select(session, region)
            session.box_preview = None
            return scan_view(
                session, view_, window_, f"Showing **{region}** for the selected sentence."
            )

        @guard(status)
        def on_template(session, key, abn):
            region = getattr(session, "selected", None) or "region"
            text = QUESTION_TEMPLATES[key].format(
                region=region, abnormality=(abn or "abnormality").strip()
            )
            return {question: text}

        @guard(status)
        def on_ask(session, q, mx, dec, nb):
            text, seconds = app.answer(session, q, **generation_kwargs(mx, dec, nb))
            where = getattr(session, "selected", None) or "whole scan"
            return {
                answer_out: text,
                latency: f"Answer in {seconds:.2f} s.",
                status: f"Answered about **{where}**.",
            }

        ui = {"api_visibility": "private"}
        example_btn.click(on_example, [state, example_dd, view, window], scan_outputs, **ui)
        volume_file.upload(on_volume, [state, volume_file, view, window], scan_outputs, **ui)
        mask_file.upload(on_masks, [state, mask_file, view, window], scan_outputs, **ui)
        region_dd.input(on_region, [state, region_dd, view, window], scan_outputs, **ui)
        view.input(on_view, [state, view, window], scan_outputs, **ui)
        window.input(on_frame, [state, view, slice_slider, window], [image, status], **ui)
        slice_slider.change(
            on_frame,
            [state, view, slice_slider, window],
            [image, status],
            show_progress="hidden",
            **ui,
        )
        image.select(
            on_click,
            [state, view, slice_slider, window],
            [state, image, status, y0, y1, x0, x1],
            **ui,
        )
        for s in (y0, y1, x0, x1):
            s.release(
                on_box_preview,
                [state, y0, y1, x0, x1, view, slice_slider, window],
                [state, image, status],
                **ui,
            )
        box_btn.click(on_box, [state, *box_sliders, view, window], scan_outputs, **ui)
        rr_btn.click(on_region_report, [state, *gen_inputs], [rr_out, latency, status], **ui)
        fr_btn.click(
            on_full_report,
            [state, *gen_inputs],
            [state, fr_html, sentence, json_dl, txt_dl, latency, status],
            **ui,
        )
        sentence.input(on_sentence, [state, sentence, view, window], scan_outputs, **ui)
        for trigger in (template.input, abnormality.input, region_dd.change):
            trigger(on_template, [state, template, abnormality], [question, status], **ui)
        demo.load(on_template, [state, template, abnormality], [question, status], **ui)
        ask_btn.click(on_ask, [state, question, *gen_inputs], [answer_out, latency, status], **ui)

        _add_api(app)
    demo.queue(default_concurrency_limit=concurrency_limit)
    return demo


def _add_api(app: DemoApp) -> None:
    """Named endpoints for scripts (``gradio_client``): files + text in, text or JSON out."""
    with gr.Column(visible=False):
        a_volume = gr.File(label="volume", type="filepath")
        a_mask = gr.File(label="mask", type="filepath")
        a_region = gr.Textbox(label="region")
        a_question = gr.Textbox(label="question")
        a_max_new = gr.Number(64, label="max_new_tokens", precision=0)
        a_beams = gr.Number(1, label="num_beams", precision=0)
        a_text = gr.Textbox(label="text")
        a_json = gr.JSON(label="report")
        buttons = [gr.Button(visible=False) for _ in range(3)]

    @_api_guard
    def region_report(
        volume: str, mask: str, region: str, max_new_tokens: float, num_beams: float
    ) -> str:
        gen = {"max_new_tokens": int(max_new_tokens or 64), "num_beams": int(num_beams or 1)}
        return app.api_region_report(volume, mask, region or None, **gen)

    @_api_guard
    def report(volume: str, masks: str, max_new_tokens: float, num_beams: float) -> dict:
        gen = {"max_new_tokens": int(max_new_tokens or 64), "num_beams": int(num_beams or 1)}
        return app.api_report(volume, masks, **gen)

    @_api_guard
    def answer(
        volume: str, mask: str | None, question: str, max_new_tokens: float, num_beams: float
    ) -> str:
        gen = {"max_new_tokens": int(max_new_tokens or 32), "num_beams": int(num_beams or 1)}
        return app.api_answer(volume, mask, question, **gen)

    buttons[0].click(
        region_report,
        [a_volume, a_mask, a_region, a_max_new, a_beams],
        a_text,
        api_name="region_report",
    )
    buttons[1].click(report, [a_volume, a_mask, a_max_new, a_beams], a_json, api_name="report")
    buttons[2].click(
        answer, [a_volume, a_mask, a_question, a_max_new, a_beams], a_text, api_name="answer"
    )


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
        theme=gr.themes.Soft(),
        show_error=False,
    )


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


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the Predictor once, and serve the demo until interrupted."""
    import os

    from rgct.demo_cli import configure

    parser = argparse.ArgumentParser(prog="rgct demo", description="Launch the rgct Gradio demo.")
    configure(parser)
    return serve(parser.parse_args(argv), auth_env=os.environ.get("RGCT_DEMO_AUTH"))


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
    predictor = Predictor.from_checkpoint(checkpoint, device=args.device)
    log.info("model ready in %.1f s", time.perf_counter() - t0)
    demo = build_demo(
        predictor, max_upload_mb=args.max_upload_mb, concurrency_limit=args.concurrency
    )
    launch(demo, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, auth=auth)
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
