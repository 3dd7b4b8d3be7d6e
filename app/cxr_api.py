"""Named endpoints of the radiograph page, for scripts (``gradio_client``).

``/cxr_ask``: (film, question, box or None, max_new_tokens, num_beams) -> text; the box is
``[x_min, y_min, x_max, y_max]`` in film pixels (a JSON list, or text "x0, y0, x1, y1"); with a
box and an empty question, "What is in the given box?" is asked. ``/cxr_report``: (film,
max_new_tokens, num_beams) -> ``{"text", "sentences": [{"text", "label", "side", "zone",
"place"}], "warnings"}`` (warnings include what the film's header says: a lateral view, another
body part). Each call loads the film, answers and forgets it; every endpoint validates its
settings, counts against the caller's request rate and reports errors without server paths.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from app.api import api_generation, api_guard
from app.cxr_handlers import BOX_QUESTION, CxrDemoApp, CxrSession
from app.inputs import InputError


def _box(value: Any) -> list[float] | None:
    """The box argument: None/empty, a list of 4 numbers, or their text."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text if text.startswith("[") else f"[{text}]")
        except json.JSONDecodeError as err:
            raise InputError(f"box must be [x_min, y_min, x_max, y_max]; got {text!r}.") from err
    if not isinstance(value, list) or len(value) != 4:
        raise InputError(f"box must be [x_min, y_min, x_max, y_max]; got {value!r}.")
    return value


def _one_shot(app: CxrDemoApp, film_file: str | None, key: str | None) -> CxrSession:
    app.limiter.check(key)
    session = app.session(None)
    try:
        app.load_film(session, film_file)
    except InputError:
        app.discard(session)
        raise
    return session


def cxr_ask_once(
    app: CxrDemoApp,
    film_file: str | None,
    question: str | None,
    box: Any = None,
    key: str | None = None,
    **gen: int,
) -> dict:
    """One question about a film (about ``box`` when given). Returns the turn (``answer``,
    ``region``: the box and its place, or "whole image") with the film's warnings."""
    session = _one_shot(app, film_file, key)
    try:
        coords = _box(box)
        if coords is not None:
            app.set_box(session, coords)
        asked = (question or "").strip() or (BOX_QUESTION if coords is not None else "")
        turn, _ = app.ask_film(session, asked, about_box=coords is not None, **gen)
        return {**turn, "warnings": session.warnings()}
    finally:
        app.discard(session)


def cxr_report_once(
    app: CxrDemoApp, film_file: str | None, key: str | None = None, **gen: int
) -> dict:
    """The findings report of a film, with the film's warnings."""
    session = _one_shot(app, film_file, key)
    try:
        report, _ = app.film_report(session, **gen)
        return {**report, "warnings": session.warnings()}
    finally:
        app.discard(session)


def add_cxr_api(app: CxrDemoApp) -> None:
    """Add the named endpoints (inside the ``gr.Blocks`` context, on hidden components)."""
    with gr.Column(visible=False):
        a_film = gr.File(label="film", type="filepath")
        a_question = gr.Textbox(label="question")
        a_box = gr.JSON(label="box")
        a_max_new = gr.Number(64, label="max_new_tokens", precision=0)
        a_beams = gr.Number(1, label="num_beams", precision=0)
        a_text = gr.Textbox(label="text")
        a_json = gr.JSON(label="result")
        buttons = [gr.Button(visible=False) for _ in range(2)]

    def key(request: gr.Request | None) -> str | None:
        return getattr(request, "session_hash", None)

    @api_guard
    def cxr_ask(
        film: str,
        question: str,
        box: Any,
        max_new_tokens: float,
        num_beams: float,
        request: gr.Request,
    ) -> str:
        gen = api_generation(max_new_tokens, num_beams, 32)
        return cxr_ask_once(app, film, question, box, key(request), **gen)["answer"]

    @api_guard
    def cxr_report(film: str, max_new_tokens: float, num_beams: float, request: gr.Request) -> dict:
        return cxr_report_once(
            app, film, key(request), **api_generation(max_new_tokens, num_beams, 64)
        )

    gen_inputs = [a_max_new, a_beams]
    buttons[0].click(cxr_ask, [a_film, a_question, a_box, *gen_inputs], a_text, api_name="cxr_ask")
    buttons[1].click(cxr_report, [a_film, *gen_inputs], a_json, api_name="cxr_report")
