"""Named endpoints for scripts (``gradio_client``): files and text in, text or JSON out.

Single-shot: ``/region_report`` (text), ``/region_report_details`` (JSON: sentences, findings,
mask source, warnings), ``/report`` (JSON) and ``/answer`` (text, the question as written). A
conversation: ``/chat`` takes the earlier turns as ``history``, resolves a follow-up against
them (``Predictor.chat``) and returns the answer, the question the model was asked, the region
whose mask it used, and the updated history. Every
endpoint validates the generation settings, counts against the caller's request rate, and
reports errors as messages without server paths. Examples are in the README.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from app import results
from app.handlers import DemoApp
from app.inputs import InputError
from app.session import Session, check_generation, public_message

log = logging.getLogger(__name__)


def api_guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Errors become ``gr.Error`` messages (the client sees them; no paths, no traceback)."""

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except InputError as err:
            raise gr.Error(public_message(str(err))) from err
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001 - API boundary: log it, send a message
            log.exception("endpoint %s failed", fn.__name__)
            raise gr.Error(
                public_message(f"Something went wrong ({type(err).__name__}: {err}).")
            ) from err

    return wrapped


def api_generation(max_new_tokens: Any, num_beams: Any, default_tokens: int) -> dict[str, int]:
    return check_generation(
        default_tokens if max_new_tokens is None else max_new_tokens,
        1 if num_beams is None else num_beams,
    )


def _history(value: Any) -> list:
    """``history`` from the client: the previous turn's history (or [question, answer] pairs),
    or its JSON text."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise InputError(f"history is not valid JSON ({err.msg}).") from err
    if not isinstance(value, list):
        raise InputError("history must be a list of turns or [question, answer] pairs.")
    return value


# --- one-shot calls: a scan, masks and settings in, a result out, nothing kept ----------------------


def _one_shot_session(app: DemoApp, volume_file: str | None, key: str | None) -> Session:
    """A throwaway session holding the uploaded scan (counted against ``key``'s rate)."""
    app.limiter.check(key)
    session = app.session(None)
    try:
        app.load_volume(session, volume_file, segment=False)
    except InputError:
        app.discard(session)
        raise
    return session


def _one_shot_masks(
    app: DemoApp, session: Session, mask_file: str | None, region: str | None
) -> None:
    """Masks for an API call: a file (a single mask counts as ``region``), else predicted."""
    scan = session.require_scan()
    if mask_file:
        before = set(scan.masks)
        app.load_masks(session, mask_file)
        added = [n for n in scan.masks if n not in before]
        single = not str(mask_file).lower().endswith(".zip")
        if region and single and added and added[0] != region:
            app.rename_single_mask(session, added[0], region)
    elif hasattr(app.predictor, "segment"):
        app.predict_masks(session)
    if region:
        if region not in scan.masks:
            raise InputError(
                f"Region {region!r} is not among the masks: {', '.join(scan.masks) or 'none'}."
            )
        session.selected = region


def region_report_once(
    app: DemoApp,
    volume_file: str | None,
    mask_file: str | None,
    region: str | None,
    key: str | None = None,
    **gen: int,
) -> dict:
    """One-shot region report: a scan, a mask (one file counts as ``region``; a zip needs
    ``region``; none: the predicted mask of ``region``)."""
    session = _one_shot_session(app, volume_file, key)
    try:
        if not mask_file and not region:
            raise InputError("Upload a mask for the region, or name a region.")
        _one_shot_masks(app, session, mask_file, region)
        result, _ = app.region_report(session, **gen)
        return results.public_report(result, warnings=session.warnings())
    finally:
        app.discard(session)


def report_once(
    app: DemoApp,
    volume_file: str | None,
    masks_file: str | None,
    key: str | None = None,
    **gen: int,
) -> dict:
    """One-shot full report from a scan and a zip of region masks (none: predicted)."""
    session = _one_shot_session(app, volume_file, key)
    try:
        _one_shot_masks(app, session, masks_file, None)
        report = app.full_report(session, **gen)[1]
        return results.public_report(report, warnings=session.warnings())
    finally:
        app.discard(session)


def answer_once(
    app: DemoApp,
    volume_file: str | None,
    mask_file: str | None,
    question: str,
    region: str | None = None,
    key: str | None = None,
    **gen: int,
) -> dict:
    """One question on its own, asked as written (without a mask file or region: about the
    whole scan)."""
    session = _one_shot_session(app, volume_file, key)
    try:
        whole = not mask_file and not region
        if not whole:
            _one_shot_masks(app, session, mask_file, region)
        turn, _ = app.answer(session, question, whole_scan=whole, **gen)
        return {**turn, "warnings": list(dict.fromkeys(session.scan_warnings + turn["warnings"]))}
    finally:
        app.discard(session)


def chat_once(
    app: DemoApp,
    volume_file: str | None,
    mask_file: str | None,
    question: str,
    region: str | None = None,
    history: list | None = None,
    key: str | None = None,
    **gen: int,
) -> dict:
    """One conversation turn from files. ``history`` is the ``history`` of the previous turn's
    result (turn dicts), or ``[question, answer]`` pairs.

    The scan's masks are the mask file's, else predicted; ``region`` (or the mask file) is the
    region in view, else the conversation's region in focus; the first turn without either is
    about the whole scan.
    """
    session = _one_shot_session(app, volume_file, key)
    try:
        for turn in history or []:
            if isinstance(turn, dict) and isinstance(turn.get("question"), str):
                entry = {k: v for k, v in turn.items() if k != "warnings"}
            elif isinstance(turn, (list, tuple)) and len(turn) == 2:
                entry = {"question": str(turn[0]), "answer": str(turn[1])}
            else:
                raise InputError(
                    "history must be the previous turn's history, or [question, answer] pairs."
                )
            session.chat.append({"warnings": [], **entry})
        if mask_file or region or history:
            _one_shot_masks(app, session, mask_file, region)
        if not mask_file and not region:
            session.selected = None  # the conversation's region in focus, not the first mask
        whole = not mask_file and not region and not history
        turn, _ = app.ask(session, question, whole_scan=whole, **gen)
        return {
            **turn,
            "warnings": list(dict.fromkeys(session.scan_warnings + turn["warnings"])),
            "history": [{k: v for k, v in t.items() if k != "warnings"} for t in session.chat],
        }
    finally:
        app.discard(session)


# --- the endpoints ---------------------------------------------------------------------------------


def add_api(app: DemoApp) -> None:
    """Add the named endpoints (inside the ``gr.Blocks`` context, on hidden components)."""
    with gr.Column(visible=False):
        a_volume = gr.File(label="volume", type="filepath")
        a_mask = gr.File(label="mask", type="filepath")
        a_region = gr.Textbox(label="region")
        a_question = gr.Textbox(label="question")
        a_history = gr.JSON(label="history")
        a_max_new = gr.Number(64, label="max_new_tokens", precision=0)
        a_beams = gr.Number(1, label="num_beams", precision=0)
        a_text = gr.Textbox(label="text")
        a_json = gr.JSON(label="result")
        buttons = [gr.Button(visible=False) for _ in range(5)]

    def key(request: gr.Request | None) -> str | None:
        return getattr(request, "session_hash", None)

    @api_guard
    def region_report(
        volume: str,
        mask: str | None,
        region: str,
        max_new_tokens: float,
        num_beams: float,
        request: gr.Request,
    ) -> str:
        gen = api_generation(max_new_tokens, num_beams, 64)
        return region_report_once(app, volume, mask, region or None, key(request), **gen)["text"]

    @api_guard
    def region_report_details(
        volume: str,
        mask: str | None,
        region: str,
        max_new_tokens: float,
        num_beams: float,
        request: gr.Request,
    ) -> dict:
        gen = api_generation(max_new_tokens, num_beams, 64)
        return region_report_once(app, volume, mask, region or None, key(request), **gen)

    @api_guard
    def report(
        volume: str, masks: str | None, max_new_tokens: float, num_beams: float, request: gr.Request
    ) -> dict:
        return report_once(
            app, volume, masks, key(request), **api_generation(max_new_tokens, num_beams, 64)
        )

    @api_guard
    def answer(
        volume: str,
        mask: str | None,
        question: str,
        max_new_tokens: float,
        num_beams: float,
        request: gr.Request,
    ) -> str:
        gen = api_generation(max_new_tokens, num_beams, 32)
        return answer_once(app, volume, mask, question, None, key(request), **gen)["answer"]

    @api_guard
    def chat(
        volume: str,
        mask: str | None,
        region: str,
        question: str,
        history: Any,
        max_new_tokens: float,
        num_beams: float,
        request: gr.Request,
    ) -> dict:
        gen = api_generation(max_new_tokens, num_beams, 32)
        return chat_once(
            app, volume, mask, question, region or None, _history(history), key(request), **gen
        )

    gen_inputs = [a_max_new, a_beams]
    buttons[0].click(
        region_report,
        [a_volume, a_mask, a_region, *gen_inputs],
        a_text,
        api_name="region_report",
    )
    buttons[1].click(
        region_report_details,
        [a_volume, a_mask, a_region, *gen_inputs],
        a_json,
        api_name="region_report_details",
    )
    buttons[2].click(report, [a_volume, a_mask, *gen_inputs], a_json, api_name="report")
    buttons[3].click(answer, [a_volume, a_mask, a_question, *gen_inputs], a_text, api_name="answer")
    buttons[4].click(
        chat,
        [a_volume, a_mask, a_region, a_question, a_history, *gen_inputs],
        a_json,
        api_name="chat",
    )
