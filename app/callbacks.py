"""The demo's behaviour: one named callback per user action, wired to the layout's components.

Every callback is wrapped by :func:`guard`, so an error becomes a message in the status line,
never a traceback. Callbacks that load a scan return a value for every output, so nothing of
the previous scan stays on screen.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from app import results, viewer
from app.handlers import DemoApp
from app.inputs import InputError
from app.layout import CUSTOM_WINDOW, EMPTY_REPORT, SCOPES, UI
from app.session import Session, generation_kwargs, public_message
from rgct.constants import QUESTION_TEMPLATES, WHOLE_SCAN

log = logging.getLogger(__name__)

WHEEL_JS = """
() => {
  document.addEventListener('wheel', (e) => {
    const shown = document.querySelector('#rgct-viewer');
    if (!shown || !shown.contains(e.target)) return;
    const input = document.querySelector('#rgct-slice input[type=range]');
    if (!input) return;
    e.preventDefault();
    const value = Math.min(Number(input.max), Math.max(Number(input.min),
      Number(input.value) + (e.deltaY > 0 ? -1 : 1)));
    if (value === Number(input.value)) return;
    input.value = value;
    input.dispatchEvent(new Event('input', {bubbles: true}));
    input.dispatchEvent(new Event('change', {bubbles: true}));
  }, {passive: false, capture: true});
}
"""
"""Page script: the mouse wheel over the viewer moves the slice slider (up: next slice)."""


def guard(status: gr.components.Component) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Wrap a UI callback so that errors become a message in ``status``, never a traceback.

    :class:`InputError` (the user can fix it) shows its message; anything else is logged
    with its traceback on the server and shown as a short message without server paths.
    """

    def decorate(fn: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(fn)
        def wrapped(*args: Any) -> dict:
            try:
                return fn(*args)
            except InputError as err:
                message = public_message(str(err))
            except Exception as err:  # noqa: BLE001 - UI boundary: log it, show a message
                log.exception("demo callback %s failed", fn.__name__)
                message = public_message(f"Something went wrong ({type(err).__name__}: {err}).")
            gr.Warning(message)
            return {status: f"⚠️ {message}"}

        return wrapped

    return decorate


def _event_value(evt: gr.EventData | None, key: str) -> Any:
    data = getattr(evt, "_data", None) or {}
    return data.get(key) if isinstance(data, dict) else None


def request_key(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def chat_messages(session: Session | None) -> list[dict]:
    """The session's conversation as ``gr.Chatbot`` messages: each answer tagged with the region
    whose mask it used and that mask's source, and the question the model was asked when the
    conversation rewrote a follow-up; a question back is tagged as such."""
    out: list[dict] = []
    for turn in getattr(session, "chat", []) or []:
        out.append({"role": "user", "content": turn["question"]})
        if turn.get("clarify"):
            out.append({"role": "assistant", "content": f"**[question back]** {turn['answer']}"})
            continue
        where = turn.get("region") or WHOLE_SCAN
        source = turn.get("mask_source")
        tag = f"{where}, {source} mask" if source not in (None, WHOLE_SCAN) else where
        text = f"**[{tag}]** {turn['answer']}"
        resolved = turn.get("resolved")
        if resolved and resolved != turn["question"]:
            text += f"\n\n*asked as: {resolved}*"
        out.append({"role": "assistant", "content": text})
    return out


def wire(ui: UI, app: DemoApp) -> None:
    """Attach the callbacks to the layout's components (inside the same ``gr.Blocks``)."""
    status, state = ui.status, ui.state

    def window_of(level: float, width: float) -> tuple[float, float]:
        return viewer.window_from_level(level, width)

    def image_update(session: Session, view: str, level: float, width: float, zoom: float):
        shown = app.frame(session, view, window_of(level, width), zoom)
        if shown is None:
            return gr.Image(value=None, label="Viewer")
        rgb, p = shown
        scan = session.require_scan()
        n = viewer.num_slices(scan.volume.array.shape, view)
        source = f" ({session.mask_source})" if session.mask_source else ""
        label = (
            f"{scan.name} · {view} {p.index + 1}/{n} · overlay: {session.selected or 'none'}"
            f"{source}"
        )
        return gr.Image(value=rgb, label=label)

    def show(session: Session, view: str, level: float, width: float, zoom: float) -> dict:
        """Updates after the scan, its masks, the selection or the cursor changed."""
        scan = session.require_scan()
        n = viewer.num_slices(scan.volume.array.shape, view)
        cursor = session.cursor or tuple(s // 2 for s in scan.volume.array.shape)
        return {
            state: session,
            ui.slice_slider: gr.Slider(
                minimum=0, maximum=n - 1, value=cursor[viewer.VIEW_AXIS[view]]
            ),
            ui.region_dd: gr.Dropdown(choices=list(scan.masks), value=session.selected),
            ui.image: image_update(session, view, level, width, zoom),
            ui.warnings: results.warnings_html(session.warnings()),
        }

    def cleared(session: Session) -> dict:
        """Every output derived from a scan, reset (a new scan was loaded)."""
        d, h, w = session.require_scan().volume.array.shape
        return {
            ui.z0: gr.Slider(maximum=d - 1, value=0),
            ui.z1: gr.Slider(maximum=d - 1, value=0),
            ui.top: gr.Slider(maximum=h - 1, value=0),
            ui.bottom: gr.Slider(maximum=h - 1, value=0),
            ui.left: gr.Slider(maximum=w - 1, value=0),
            ui.right: gr.Slider(maximum=w - 1, value=0),
            ui.region_sentences: "",
            ui.evidence: "",
            ui.rr_out: "",
            ui.fr_html: EMPTY_REPORT,
            ui.json_dl: gr.DownloadButton(value=None, visible=False),
            ui.txt_dl: gr.DownloadButton(value=None, visible=False),
            ui.html_dl: gr.DownloadButton(value=None, visible=False),
            ui.chatbot: [],
            ui.latency: "",
        }

    g = guard(status)

    @g
    def on_example(session, name, view, level, width, zoom, request: gr.Request):
        session, message = app.load_example(app.session(session, request_key(request)), name)
        return {**cleared(session), **show(session, view, level, width, zoom), status: message}

    @g
    def on_volume(session, path, view, level, width, zoom, request: gr.Request):
        if not path:
            return {}
        session, message = app.load_volume(app.session(session, request_key(request)), path)
        return {**cleared(session), **show(session, view, level, width, zoom), status: message}

    @g
    def on_masks(session, path, view, level, width, zoom):
        if not path:
            return {}
        session, message = app.load_masks(session, path)
        return {**show(session, view, level, width, zoom), status: message}

    @g
    def on_region(session, name, view, level, width, zoom):
        session = app.select(session, name)
        session.box_preview = None
        source = session.mask_source or "unknown"
        return {
            **show(session, view, level, width, zoom),
            ui.evidence: results.evidence_html(
                session.evidence.get(session.selected), session.selected
            ),
            ui.fr_html: results.report_html(session.report) or EMPTY_REPORT,
            status: f"Showing **{session.selected}** ({source} mask) where it is largest.",
        }

    @g
    def on_view(session, view, level, width, zoom):
        if not isinstance(session, Session) or session.scan is None:
            return {}
        return show(session, view, level, width, zoom)

    @g
    def on_slice(session, view, index, level, width, zoom):
        if not isinstance(session, Session) or session.scan is None:
            return {}
        app.move(session, view, index)
        return {state: session, ui.image: image_update(session, view, level, width, zoom)}

    @g
    def on_window(session, preset, view, level, width, zoom):
        if preset in viewer.WINDOW_PRESETS:
            level, width = viewer.level_from_window(viewer.WINDOW_PRESETS[preset])
        out = {ui.level: level, ui.width: width}
        if isinstance(session, Session) and session.scan is not None:
            out[ui.image] = image_update(session, view, level, width, zoom)
        return out

    @g
    def on_level(session, view, level, width, zoom):
        out = {ui.window: CUSTOM_WINDOW}
        for preset, window in viewer.WINDOW_PRESETS.items():
            if viewer.level_from_window(window) == (level, width):
                out[ui.window] = preset
        if isinstance(session, Session) and session.scan is not None:
            out[ui.image] = image_update(session, view, level, width, zoom)
        return out

    @g
    def on_zoom(session, view, level, width, zoom):
        if not isinstance(session, Session) or session.scan is None:
            return {}
        return {ui.image: image_update(session, view, level, width, zoom)}

    @g
    def on_click(session, mode, view, level, width, zoom, evt: gr.SelectData):
        session = app.session(session)
        scan = session.require_scan()
        p = app.frame(session, view, window_of(level, width), zoom)[1]
        voxel = p.voxel(evt.index[1], evt.index[0])
        if mode == "draw box":
            if view != "axial":
                return {status: "Switch to the **axial** plane to draw a box."}
            box = app.click_box(session, voxel)
            out: dict = {state: session}
            if box is None:
                out[status] = "First corner set: click the opposite corner."
            else:
                (za, zb), (ra, rb), (ca, cb) = box
                out.update({ui.z0: za, ui.z1: zb, ui.top: ra, ui.bottom: rb, ui.left: ca})
                out[ui.right] = cb
                out[status] = (
                    f"Box drawn on slice {za}: slices {za}-{zb}; adjust, then **Use box as region**."
                )
            out[ui.image] = image_update(session, view, level, width, zoom)
            return out
        session.cursor = voxel
        hu = float(scan.volume.array[voxel])
        inside = app.regions_at(session, voxel)
        named = [r for r in inside if session.report and r in session.report["regions"]]
        region = named[0] if named else (inside[0] if inside else None)
        if region is not None:
            session.selected, session.focus = region, None
        listing = (
            results.report_html(session.report, only=region) if session.report and region else ""
        )
        where = ", ".join(inside) or "no region mask"
        return {
            **show(session, view, level, width, zoom),
            ui.region_sentences: listing,
            status: f"Voxel {list(voxel)} (z, y, x), {hu:.0f} HU; inside: {where}.",
        }

    @g
    def on_box_preview(session, top, bottom, left, right, view, level, width, zoom):
        session = app.session(session)
        _, h, w = session.require_scan().volume.array.shape
        session.box_preview = (h - 1 - int(top), h - 1 - int(bottom), w - 1 - int(left))
        session.box_preview += (w - 1 - int(right),)
        return {state: session, ui.image: image_update(session, view, level, width, zoom)}

    @g
    def on_box(session, za, zb, top, bottom, left, right, view, level, width, zoom):
        session, message = app.set_box_from_image(session, (za, zb), (top, bottom), (left, right))
        return {**show(session, view, level, width, zoom), status: message}

    @g
    def on_region_report(session, mx, dec, nb, request: gr.Request):
        session = app.session(session, request_key(request))
        result, seconds = app.region_report(session, **generation_kwargs(mx, dec, nb))
        evidence = app.evidence(session)
        return {
            ui.rr_out: results.report_html(result, source="region"),
            ui.evidence: results.evidence_html(evidence, session.selected),
            ui.warnings: results.warnings_html(session.warnings()),
            ui.latency: f"Region report in {seconds:.2f} s.",
            status: f"Region report for **{session.selected}** ({result['mask_source']} mask).",
        }

    @g
    def on_full_report(session, mx, dec, nb, request: gr.Request):
        session = app.session(session, request_key(request))
        session, report, seconds = app.full_report(session, **generation_kwargs(mx, dec, nb))
        js, txt, page = app.report_files(session)
        return {
            state: session,
            ui.fr_html: results.report_html(report),
            ui.region_sentences: "",
            ui.json_dl: gr.DownloadButton(value=str(js), visible=True),
            ui.txt_dl: gr.DownloadButton(value=str(txt), visible=True),
            ui.html_dl: gr.DownloadButton(value=str(page), visible=True),
            ui.warnings: results.warnings_html(session.warnings()),
            ui.latency: f"Full report ({len(report['sentences'])} sentences) in {seconds:.2f} s.",
            status: f"Full report written ({report['mask_source']} masks). Click a sentence.",
        }

    @g
    def on_sentence(session, view, level, width, zoom, evt: gr.EventData):
        index = _event_value(evt, "sentence")
        if index is None:
            return {}
        source = "region" if _event_value(evt, "source") == "region" else "report"
        session, message = app.focus_sentence(session, int(index), source)
        active = session.focus[1] if session.focus else None
        return {
            **show(session, view, level, width, zoom),
            ui.fr_html: results.report_html(
                session.report, active=active if source == "report" else None
            )
            or EMPTY_REPORT,
            ui.rr_out: results.report_html(
                session.region_result,
                active=active if source == "region" else None,
                source="region",
            ),
            ui.evidence: results.evidence_html(
                session.evidence.get(session.selected), session.selected
            ),
            status: message,
        }

    @g
    def on_evidence(session, request: gr.Request):
        session = app.session(session, request_key(request))
        probs = app.evidence(session)
        return {
            state: session,
            ui.evidence: results.evidence_html(probs, session.selected),
            status: f"Region classifier evidence for **{session.selected}**.",
        }

    @g
    def on_template(session, key, abn):
        region = getattr(session, "selected", None) or "region"
        text = QUESTION_TEMPLATES[key].format(
            region=region, abnormality=(abn or "abnormality").strip()
        )
        out = {ui.question: text}
        if key == "disorders":
            out[ui.scope] = SCOPES[1]  # a whole-scan question: say so, visibly
        return out

    @g
    def on_ask(
        session, question, scope, mx, dec, nb, view, level, width, zoom, request: gr.Request
    ):
        session = app.session(session, request_key(request))
        before = session.selected
        turn, seconds = app.ask(
            session, question, whole_scan=scope == SCOPES[1], **generation_kwargs(mx, dec, nb)
        )
        out = {
            **show(session, view, level, width, zoom),
            ui.chatbot: chat_messages(session),
            ui.question: "",
            ui.latency: f"Answer in {seconds:.2f} s.",
        }
        if turn["clarify"]:
            out[status] = f"Asked back (turn {len(session.chat)}): answer in the chat."
            return out
        if turn["region"] and turn["region"] != WHOLE_SCAN:
            out[ui.scope] = SCOPES[0]  # the answer used a region: the scope says so
        if session.selected != before:  # the listed sentences follow the region shown
            region = session.selected
            out[ui.region_sentences] = (
                results.report_html(session.report, only=region) if session.report else ""
            )
        out[status] = (
            f"Answered about **{turn['region']}** (turn {len(session.chat)}); the viewer shows "
            "the region the answer used."
        )
        return out

    @g
    def on_clear_chat(session):
        if isinstance(session, Session):
            session.chat = []
            return {
                state: session,
                ui.chatbot: [],
                ui.warnings: results.warnings_html(session.warnings()),
            }
        return {ui.chatbot: []}

    private = {"api_visibility": "private"}
    views = ui.view_inputs
    shown = [state, status, ui.slice_slider, ui.region_dd, ui.image, ui.warnings]
    everything = [
        *shown,
        *ui.box_sliders,
        ui.region_sentences,
        ui.evidence,
        ui.rr_out,
        ui.fr_html,
        ui.json_dl,
        ui.txt_dl,
        ui.html_dl,
        ui.chatbot,
        ui.latency,
    ]
    ui.example_btn.click(on_example, [state, ui.example_dd, *views], everything, **private)
    ui.volume_file.upload(on_volume, [state, ui.volume_file, *views], everything, **private)
    ui.mask_file.upload(on_masks, [state, ui.mask_file, *views], shown, **private)
    ui.region_dd.input(
        on_region,
        [state, ui.region_dd, *views],
        [*shown, ui.evidence, ui.fr_html],
        **private,
    )
    ui.view.input(on_view, [state, *views], shown, **private)
    ui.slice_slider.change(
        on_slice,
        [state, ui.view, ui.slice_slider, ui.level, ui.width, ui.zoom],
        [state, ui.image, status],
        show_progress="hidden",
        trigger_mode="always_last",
        **private,
    )
    ui.window.input(
        on_window,
        [state, ui.window, *views],
        [ui.level, ui.width, ui.image, status],
        **private,
    )
    for s in (ui.level, ui.width):
        s.release(on_level, [state, *views], [ui.window, ui.image, status], **private)
    ui.zoom.release(on_zoom, [state, *views], [ui.image, status], **private)
    ui.image.select(
        on_click,
        [state, ui.click_mode, *views],
        [*shown, *ui.box_sliders, ui.region_sentences],
        **private,
    )
    for s in (ui.top, ui.bottom, ui.left, ui.right):
        s.release(
            on_box_preview,
            [state, ui.top, ui.bottom, ui.left, ui.right, *views],
            [state, ui.image, status],
            **private,
        )
    ui.box_btn.click(on_box, [state, *ui.box_sliders, *views], shown, **private)
    ui.rr_btn.click(
        on_region_report,
        [state, *ui.gen_inputs],
        [ui.rr_out, ui.evidence, ui.warnings, ui.latency, status],
        **private,
    )
    ui.fr_btn.click(
        on_full_report,
        [state, *ui.gen_inputs],
        [
            state,
            ui.fr_html,
            ui.region_sentences,
            ui.json_dl,
            ui.txt_dl,
            ui.html_dl,
            ui.warnings,
            ui.latency,
            status,
        ],
        **private,
    )
    sentence_outputs = [*shown, ui.fr_html, ui.rr_out, ui.evidence]
    ui.fr_html.click(on_sentence, [state, *views], sentence_outputs, **private)
    ui.rr_out.click(on_sentence, [state, *views], sentence_outputs, **private)
    ui.region_sentences.click(on_sentence, [state, *views], sentence_outputs, **private)
    ui.evidence_btn.click(on_evidence, [state], [state, ui.evidence, status], **private)
    # the user's choices only: a chat turn that moves the selection leaves the question box empty
    for trigger in (ui.template.input, ui.abnormality.input, ui.region_dd.input):
        trigger(
            on_template,
            [state, ui.template, ui.abnormality],
            [ui.question, ui.scope, status],
            **private,
        )
    ask_outputs = [*shown, ui.chatbot, ui.question, ui.scope, ui.latency, ui.region_sentences]
    ask_inputs = [state, ui.question, ui.scope, *ui.gen_inputs, *views]
    ui.ask_btn.click(on_ask, ask_inputs, ask_outputs, **private)
    ui.question.submit(on_ask, ask_inputs, ask_outputs, **private)
    ui.clear_chat.click(on_clear_chat, [state], [state, ui.chatbot, ui.warnings, status], **private)
