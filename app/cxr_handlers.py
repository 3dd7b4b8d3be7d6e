"""The demo's chest-radiograph mode, free of layout: a film, a box on it, the model's answers.

Used when the loaded checkpoint reads radiographs (``predictor.modality == "cxr"``). It keeps
:class:`~app.handlers.DemoApp`'s sessions, upload checks, memory limit (``max_scans`` films
over all sessions) and rate limit, and talks to the Predictor's radiograph interface:

- ``cxr_ask(image, question, box=None, generation=None) -> str``: "What is in the given box?"
  with the box, or a free question about the film (with the box when the user asks about it);
- ``cxr_report(image, generation=None) -> {"text", "sentences": [{"text", "label", "side",
  "zone", "boxes"}]}``: the findings report, each sentence linked to its side and zone of the
  film and (a model with a film detector) to the boxes where it found the finding.

``image`` is the loaded :class:`rgct.data.cxr.Radiograph`; ``box`` is (x_min, y_min, x_max,
y_max) in film pixels; ``generation`` is ``{"max_new_tokens", "num_beams"}``. A box the
Predictor refuses (``ValueError``) reaches the user as its message, like every other problem
the user can fix (:class:`~app.inputs.InputError`).

Bad input: films are loaded by :mod:`app.cxr_inputs` (a CT refused by name, a lateral or
non-chest header flagged); a box outside the film or without area is refused before the model
sees it.

Zones on screen: a sentence's (side, zone) is drawn as the rectangle :func:`zone_rect`, the
inverse of :func:`rgct.data.cxr.box_location` (halves of the film for right and left, its middle
half for central; thirds of the lung band :data:`rgct.data.cxr.LUNG_BAND` for the zones), and
the finding itself, where the model's detector boxed it, on top of it in a stronger tint
(:data:`FOUND_FILL`): the zone says where the sentence puts it, the box what the model saw.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app import viewer
from app.cxr_inputs import Film, list_film_examples, load_film_file
from app.cxr_results import SIDES, normalise_cxr_report
from app.handlers import DemoApp, ask_model
from app.inputs import InputError
from app.session import Session
from rgct.constants import CXR_PROMPTS
from rgct.data.cxr import (
    CENTRAL_SHARE,
    LUNG_BAND,
    ZONES,
    box_location,
    box_problem,
    location_words,
)

BOX_QUESTION = CXR_PROMPTS["cxr_box"]
ZONE_FILL = 0.25
"""Tint of the zone of the sentence in focus."""
FOUND_FILL = 0.6
"""Tint of the boxes where the model found that sentence's finding (over the zone's)."""
WHOLE_IMAGE = "whole image"


def zone_rect(side: str, zone: str, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) of a side and zone of a PA film of ``shape`` (H, W): the
    area :func:`rgct.data.cxr.box_location` names so (see the module notes).

    Raises:
        ValueError: an unknown side or zone.
    """
    if side not in SIDES or zone not in ZONES:
        raise ValueError(f"unknown place {side!r} {zone!r}; sides {SIDES}, zones {ZONES}")
    height, width = shape
    top, bottom = LUNG_BAND[0] * height, LUNG_BAND[1] * height
    third = (bottom - top) / 3.0
    y0 = top + ZONES.index(zone) * third
    margin = width * (0.5 - CENTRAL_SHARE)
    x0, x1 = {"right": (0.0, width / 2), "left": (width / 2, width)}.get(
        side, (margin, width - margin)
    )
    return x0, y0, x1, y0 + third


@dataclass
class CxrSession(Session):
    """A browser session of the radiograph mode (a :class:`~app.session.Session`: its scratch
    folder, report, conversation and warnings), plus the film and the box on it.

    Attributes:
        film: the loaded radiograph, or None.
        box: (x_min, y_min, x_max, y_max) film pixels, or None.
        box_corner: the first corner (x, y) of a box being clicked, or None.
        box_answer: the last answer about the box: ``{"answer", "box", "place"}``.
    """

    film: Film | None = None
    box: tuple[int, int, int, int] | None = None
    box_corner: tuple[int, int] | None = None
    box_answer: dict | None = field(default=None)

    def require_film(self) -> Film:
        if self.film is None:
            if self.released:
                raise InputError(self.released)
            raise InputError("Upload a chest radiograph first (DICOM or PNG).")
        return self.film

    def clear_outputs(self) -> None:
        super().clear_outputs()
        self.box = self.box_corner = self.box_answer = None


def box_place(box: tuple[float, ...], shape: tuple[int, int]) -> str:
    """``'right lower zone'``: where a box lies on the film (:func:`rgct.data.cxr.box_location`)."""
    return location_words(*box_location(box, shape))


class CxrDemoApp(DemoApp):
    """The radiograph mode's handlers (see the module notes); the CT handlers are not used.

    Args:
        predictor: a radiograph Predictor (``modality == "cxr"``).
        examples_dir: folder of bundled example films (:func:`list_film_examples`).
        **options: :class:`~app.handlers.DemoApp`'s (upload roots and size, scratch root,
            ``max_scans`` films, rate limit, model name).
    """

    def __init__(self, predictor: Any, *, examples_dir: Path | None = None, **options: Any):
        super().__init__(predictor, examples_dir=None, **options)
        self.examples_dir = Path(examples_dir) if examples_dir is not None else None
        self.examples = list_film_examples(self.examples_dir)

    def session(self, session: Session | None, key: str | None = None) -> CxrSession:
        if not isinstance(session, CxrSession):
            workdir = Path(tempfile.mkdtemp(prefix="session-", dir=self.tmp_root))
            session = CxrSession(workdir=workdir)
        session = super().session(session, key)
        if session.film is not None:
            with self._lock:
                if id(session) in self._live:
                    self._live.move_to_end(id(session))
        return session  # type: ignore[return-value]

    def _forget_scan(self, session: Session) -> None:
        """A film is released: nothing of it stays (the Predictor caches nothing of films)."""
        if isinstance(session, CxrSession):
            session.film = None
            session.box = session.box_corner = session.box_answer = None
            return
        super()._forget_scan(session)

    # --- the film and the box --------------------------------------------------------------------
    def load_film(self, session: Session | None, path: str | Path | None) -> tuple[CxrSession, str]:
        """Load an uploaded radiograph (everything of the previous one cleared)."""
        return self._load(session, self._checked(path, "a chest radiograph"))

    def _load(self, session: Session | None, path: Path) -> tuple[CxrSession, str]:
        session = self.session(session)
        film, warnings = load_film_file(path)
        session.clear_outputs()
        session.film = film
        session.scan_warnings = warnings
        self._hold(session)
        h, w = film.shape
        spacing = film.radiograph.spacing
        mm = f", {spacing[1]:.3g} x {spacing[0]:.3g} mm pixels" if spacing else ""
        return session, (
            f"Loaded **{film.name}**, {w} x {h} pixels{mm}. Draw a box (click two corners) or "
            "type one, write the report, or ask a question."
        )

    def load_film_example(
        self, session: Session | None, name: str | None
    ) -> tuple[CxrSession, str]:
        """Load a bundled example film by name (never by path)."""
        if not name:
            raise InputError("Pick an example first.")
        if name not in self.examples:
            raise InputError(f"Unknown example {name!r}.")
        return self._load(session, self.examples_dir / name)

    def set_box(self, session: CxrSession, box: tuple[Any, Any, Any, Any]) -> str:
        """Use (x_min, y_min, x_max, y_max) film pixels as the box.

        Raises:
            InputError: not four numbers, outside the film, or without area (said which).
        """
        film = session.require_film()
        try:
            coords = tuple(float(v) for v in box)
        except (TypeError, ValueError):
            coords = ()
        if len(coords) != 4:
            raise InputError(f"A box is four numbers (x_min, y_min, x_max, y_max); got {box}.")
        h, w = film.shape
        problem = box_problem(coords, w, h)
        if problem is not None:
            raise InputError(f"Box not used: {problem[1]} (x: 0-{w}, y: 0-{h} pixels).")
        session.box = tuple(int(round(v)) for v in coords)  # type: ignore[assignment]
        session.box_corner, session.box_answer = None, None
        return f"Box {list(session.box)} set ({box_place(session.box, film.shape)})."

    def click(self, session: CxrSession, col: float, row: float) -> tuple[str, bool]:
        """A click on the shown film at display (column, row): the first corner of a box, or
        its second (the box is then set). Returns (message, whether a box was set)."""
        film = session.require_film()
        x, y = film.to_film(col, row)
        if session.box_corner is None:
            session.box_corner = (x, y)
            return f"First corner at ({x}, {y}): click the opposite corner.", False
        (x0, y0), session.box_corner = session.box_corner, None
        box = (min(x0, x), min(y0, y), max(x0, x) + 1, max(y0, y) + 1)
        return self.set_box(session, box), True

    def clear_box(self, session: CxrSession) -> None:
        session.box = session.box_corner = session.box_answer = None

    def film_frame(self, session: Session | None) -> np.ndarray | None:
        """The shown film (h, w, 3) uint8 with the box, a clicked corner and the zone of the
        sentence in focus; None without a film."""
        if not isinstance(session, CxrSession) or session.film is None:
            return None
        film = session.film
        layers = []
        sentence = self.focused_sentence(session)

        def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
            (c0, r0), (c1, r1) = film.to_display(x0, y0), film.to_display(x1, y1)
            mask = np.zeros(film.display.shape, dtype=bool)
            mask[int(r0) : int(np.ceil(r1)), int(c0) : int(np.ceil(c1))] = True
            return mask

        if sentence is not None and sentence["place"] is not None:
            zone = rect(*zone_rect(sentence["side"], sentence["zone"], film.shape))
            layers.append(viewer.Layer(zone, viewer.FINDING_COLOUR, ZONE_FILL))
        for found in (sentence or {}).get("boxes") or []:
            layers.append(viewer.Layer(rect(*found), viewer.FINDING_COLOUR, FOUND_FILL))
        box = None
        if session.box is not None:
            x0, y0, x1, y1 = session.box
            (c0, r0), (c1, r1) = film.to_display(x0, y0), film.to_display(x1, y1)
            right, bottom = int(np.ceil(c1)) - 1, int(np.ceil(r1)) - 1
            box = (int(c0), int(r0), max(int(c0), right), max(int(r0), bottom))
        marker = None
        if session.box_corner is not None:
            c, r = film.to_display(session.box_corner[0] + 0.5, session.box_corner[1] + 0.5)
            marker = (r, c)
        return viewer.render_film(film.display, layers, box=box, marker=marker)

    # --- the model -------------------------------------------------------------------------------
    def ask_box(self, session: Session | None, **gen: int) -> tuple[dict, float]:
        """ "What is in the given box?" about the session's box. Returns (answer, seconds):
        ``{"answer", "box", "place"}``."""
        session = self.session(session)
        film = session.require_film()
        if session.box is None:
            raise InputError("Draw a box on the film (click two corners) or type one first.")
        self._limit(session)
        t0 = time.perf_counter()
        text = _answer_text(
            ask_model(
                self.predictor.cxr_ask, film.radiograph, BOX_QUESTION, box=session.box,
                generation=dict(gen),
            )
        )  # fmt: skip
        session.box_answer = {
            "answer": text,
            "box": list(session.box),
            "place": box_place(session.box, film.shape),
        }
        session.settings = dict(gen)
        return session.box_answer, time.perf_counter() - t0

    def film_report(self, session: Session | None, **gen: int) -> tuple[dict, float]:
        """The findings report (normalised, see :func:`normalise_cxr_report`), seconds."""
        session = self.session(session)
        film = session.require_film()
        self._limit(session)
        t0 = time.perf_counter()
        raw = ask_model(self.predictor.cxr_report, film.radiograph, generation=dict(gen))
        session.report, session.focus, session.settings = normalise_cxr_report(raw), None, dict(gen)
        return session.report, time.perf_counter() - t0

    def ask_film(
        self, session: Session | None, question: str, about_box: bool = False, **gen: int
    ) -> tuple[dict, float]:
        """A free question about the film, or about the box (``about_box``); the turn is
        appended to the conversation, tagged with what it was asked about."""
        session = self.session(session)
        film = session.require_film()
        if not question or not question.strip():
            raise InputError("Type a question or pick a template.")
        if about_box and session.box is None:
            raise InputError("Draw or type a box first, or ask about the whole image.")
        box = session.box if about_box else None
        self._limit(session)
        t0 = time.perf_counter()
        text = _answer_text(
            ask_model(
                self.predictor.cxr_ask, film.radiograph, question.strip(), box=box,
                generation=dict(gen),
            )
        )  # fmt: skip
        where = WHOLE_IMAGE
        if box is not None:
            where = f"box {list(box)}, {box_place(box, film.shape)}"
        turn = {
            "question": question.strip(),
            "answer": text,
            "resolved": question.strip(),
            "task": None,
            "region": where,
            "finding": None,
            "mask_source": None,
            "clarify": False,
            "warnings": [],
        }
        session.chat.append(turn)
        session.settings = dict(gen)
        return turn, time.perf_counter() - t0

    def focus_sentence(self, session: Session | None, index: int, source: str = "report"):
        """Show a report sentence's side and zone on the film. Returns (session, message)."""
        session = self.session(session)
        session.require_film()
        report = session.report
        if report is None or not 0 <= index < len(report["sentences"]):
            raise InputError("Write the report first, then click one of its sentences.")
        sentence = report["sentences"][index]
        session.focus = ("report", index)
        found = len(sentence.get("boxes") or [])
        where = (
            f" ({found} box{'es' if found > 1 else ''} where the model found it)" if found else ""
        )
        if sentence["place"] is None:
            return session, f"'{sentence['text']}' names no side and zone of the film{where}."
        return session, f"**{sentence['place']}** highlighted{where}: {sentence['text']}"

    def focused_sentence(self, session: CxrSession) -> dict | None:
        """The report sentence in focus, or None."""
        if session.focus is None or session.report is None:
            return None
        sentences = session.report["sentences"]
        if not 0 <= session.focus[1] < len(sentences):
            return None
        return sentences[session.focus[1]]


def _answer_text(raw: Any) -> str:
    """``cxr_ask`` returns text (a dict with ``text`` is read too)."""
    return str(raw.get("text", "")) if isinstance(raw, dict) else str(raw)
