"""The radiograph mode's behaviour: one named callback per user action, wired to
:mod:`app.cxr_layout`'s components.

Every callback is wrapped by :func:`app.callbacks.guard` (an error becomes a message in the
status line, never a traceback). Loading a film returns a value for every output, so nothing of
the previous film stays on screen.
"""

from __future__ import annotations

import gradio as gr

from app.callbacks import chat_messages, guard, request_key
from app.cxr_handlers import CxrDemoApp, CxrSession
from app.cxr_layout import SCOPES, TEMPLATES, CxrUI
from app.cxr_results import EMPTY_REPORT, box_answer_html, cxr_report_html
from app.results import warnings_html
from app.session import generation_kwargs


def _event_index(evt: gr.EventData | None) -> int | None:
    data = getattr(evt, "_data", None) or {}
    value = data.get("sentence") if isinstance(data, dict) else None
    return None if value is None else int(value)


def wire_cxr(ui: CxrUI, app: CxrDemoApp) -> None:
    """Attach the callbacks to the layout's components (inside the same ``gr.Blocks``)."""
    status, state = ui.status, ui.state
    g = guard(status)

    def shown(session: CxrSession) -> dict:
        """The film and what lies on it, and the warnings."""
        film = session.require_film()
        label = f"{film.name} · {film.shape[1]} x {film.shape[0]} px"
        if session.box is not None:
            label += f" · box {list(session.box)}"
        return {
            state: session,
            ui.image: gr.Image(value=app.film_frame(session), label=label),
            ui.warnings: warnings_html(session.warnings()),
        }

    def box_fields(session: CxrSession) -> dict:
        values = list(session.box) if session.box is not None else [None] * 4
        return dict(zip(ui.box_inputs, values))

    def loaded(session: CxrSession, message: str) -> dict:
        """Every output after a new film: its view, and nothing left of the last one."""
        return {
            **shown(session),
            **box_fields(session),
            ui.box_out: "",
            ui.fr_html: EMPTY_REPORT,
            ui.chatbot: [],
            ui.latency: "",
            status: message,
        }

    @g
    def on_film(session, path, request: gr.Request):
        if not path:
            return {}
        return loaded(*app.load_film(app.session(session, request_key(request)), path))

    @g
    def on_example(session, name, request: gr.Request):
        return loaded(*app.load_film_example(app.session(session, request_key(request)), name))

    @g
    def on_click(session, evt: gr.SelectData):
        session = app.session(session)
        message, _ = app.click(session, evt.index[0], evt.index[1])
        return {**shown(session), **box_fields(session), ui.box_out: "", status: message}

    @g
    def on_box(session, x0, y0, x1, y1):
        session = app.session(session)
        message = app.set_box(session, (x0, y0, x1, y1))
        return {**shown(session), **box_fields(session), ui.box_out: "", status: message}

    @g
    def on_clear_box(session):
        session = app.session(session)
        session.require_film()
        app.clear_box(session)
        return {**shown(session), **box_fields(session), ui.box_out: "", status: "Box cleared."}

    @g
    def on_box_ask(session, mx, dec, nb, request: gr.Request):
        session = app.session(session, request_key(request))
        answer, seconds = app.ask_box(session, **generation_kwargs(mx, dec, nb))
        return {
            **shown(session),
            ui.box_out: box_answer_html(answer),
            ui.latency: f"Answer in {seconds:.2f} s.",
            status: f"Answered about the box ({answer['place']}).",
        }

    @g
    def on_report(session, mx, dec, nb, request: gr.Request):
        session = app.session(session, request_key(request))
        report, seconds = app.film_report(session, **generation_kwargs(mx, dec, nb))
        return {
            **shown(session),
            ui.fr_html: cxr_report_html(report),
            ui.latency: f"Report ({len(report['sentences'])} sentences) in {seconds:.2f} s.",
            status: "Findings report written. Click a sentence to see its zone and where the "
            "model found it.",
        }

    @g
    def on_sentence(session, evt: gr.EventData):
        index = _event_index(evt)
        if index is None:
            return {}
        session, message = app.focus_sentence(session, index)
        return {
            **shown(session),
            ui.fr_html: cxr_report_html(session.report, active=index),
            status: message,
        }

    @g
    def on_template(key, finding):
        return {ui.question: TEMPLATES[key].format(finding=(finding or "finding").strip())}

    @g
    def on_ask(session, question, scope, mx, dec, nb, request: gr.Request):
        session = app.session(session, request_key(request))
        turn, seconds = app.ask_film(
            session, question, about_box=scope == SCOPES[1], **generation_kwargs(mx, dec, nb)
        )
        return {
            **shown(session),
            ui.chatbot: chat_messages(session),
            ui.question: "",
            ui.latency: f"Answer in {seconds:.2f} s.",
            status: f"Answered about the {turn['region']} (turn {len(session.chat)}).",
        }

    @g
    def on_clear_chat(session):
        if isinstance(session, CxrSession):
            session.chat = []
            return {state: session, ui.chatbot: []}
        return {ui.chatbot: []}

    private = {"api_visibility": "private"}
    film = [state, ui.image, ui.warnings, status]
    with_box = [*film, *ui.box_inputs, ui.box_out]
    everything = [*with_box, ui.fr_html, ui.chatbot, ui.latency]
    ui.film_file.upload(on_film, [state, ui.film_file], everything, **private)
    ui.example_btn.click(on_example, [state, ui.example_dd], everything, **private)
    ui.image.select(on_click, [state], with_box, **private)
    ui.box_btn.click(on_box, [state, *ui.box_inputs], with_box, **private)
    ui.clear_box_btn.click(on_clear_box, [state], with_box, **private)
    ui.box_ask_btn.click(
        on_box_ask, [state, *ui.gen_inputs], [*film, ui.box_out, ui.latency], **private
    )
    ui.fr_btn.click(on_report, [state, *ui.gen_inputs], [*film, ui.fr_html, ui.latency], **private)
    ui.fr_html.click(on_sentence, [state], [*film, ui.fr_html], **private)
    for trigger in (ui.template.input, ui.finding.input):
        trigger(on_template, [ui.template, ui.finding], [ui.question, status], **private)
    ask_inputs = [state, ui.question, ui.scope, *ui.gen_inputs]
    ask_outputs = [*film, ui.chatbot, ui.question, ui.latency]
    ui.ask_btn.click(on_ask, ask_inputs, ask_outputs, **private)
    ui.question.submit(on_ask, ask_inputs, ask_outputs, **private)
    ui.clear_chat.click(on_clear_chat, [state], [state, ui.chatbot, status], **private)
