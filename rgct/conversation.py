"""A conversation with a scan: follow-up questions resolved into questions the model was trained on.

The language model only ever saw single questions of a few forms (``QUESTION_TEMPLATES``:
abnormality, presence, location, size, disorders; ``REPORT_PROMPTS``: a region's report), each
with one region's mask. A conversation is therefore kept *outside* the model, as a
:class:`Focus` (the region in focus, the findings in focus, the last task), and each new
question is rewritten against it into one standalone question of a trained form, with the
region whose mask answers it::

    focus = Focus(region="lung")
    resolve("What are the abnormalities in the lung?", focus).question   # as written
    # the model answers "nodule." -> focus_after(...) puts the nodule in focus
    resolve("where is it?", focus).question   # "Where is the nodule located in the image?"
    resolve("how big is it?", focus).question  # "What is the approximate size of the nodule in the lung?"
    resolve("and the heart?", focus).question  # "What are the abnormalities in the heart?"

A reference that cannot be resolved (no finding in focus and none detected, several
candidates, no region) gives a :class:`Resolution` with a ``clarification`` (a question back
to the user), never a guess; the reply to it ("the nodule") completes the pending task.

:func:`take_turn` runs one turn with the caller's mask lookup and answer function; it is what
:meth:`rgct.inference.Predictor.chat` calls, and what a test double of the Predictor calls.
Nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rgct.constants import (
    LUNG_LOBES,
    LUNG_SIDES,
    QUESTION_TEMPLATES,
    REGIONS,
    REPORT_PROMPTS,
    SEGMENT_ANATOMY,
    WHOLE_SCAN,
)
from rgct.data.phantom_text import FINDING_LABELS, FINDING_NAMES, FINDING_REGIONS
from rgct.eval.labeler import default_labeler, parse_lobes

# --- vocabulary -------------------------------------------------------------------------------------

FINDING_TERMS: dict[str, str] = {FINDING_LABELS[k]: FINDING_NAMES[k] for k in FINDING_NAMES}
"""CT-RATE label -> the finding name the VQA questions were trained with ("Lung opacity" ->
"ground glass opacity"); labels without one use their own name in lower case."""

FINDING_HOME: dict[str, str] = {FINDING_NAMES[k]: FINDING_REGIONS[k] for k in FINDING_NAMES}
"""Finding name -> the top-level region it belongs to."""

PARENT_REGION: dict[str, str] = {
    **{part: "lung" for part in (*LUNG_LOBES, *LUNG_SIDES)},
    "heart tissue": "heart",
    "aorta": "mediastinum",
}
"""Named parts -> the top-level region they lie in (a lung finding is asked about in a lobe)."""

NAMED_REGIONS = (*REGIONS, *LUNG_LOBES, *LUNG_SIDES, *SEGMENT_ANATOMY)
"""Region names the model's questions use (top-level regions and the anatomy it was asked about)."""

TASKS = ("abnormality", "presence", "location", "size", "disorders", "region_report", "free")
"""What a resolved question asks; ``free``: not a trained form, asked as written."""

WHOLE_SCAN_TASKS = ("location", "disorders")
"""Tasks trained without a region mask (for location the region is the answer)."""

_LOBE_PHRASE = re.compile(
    r"\b(?:right|left|both)\s+(?:lung\s+)?(?:upper|middle|lower)\s+lobes?\b"
    r"|\b(?:upper|middle|lower)\s+lobes?\s+of\s+(?:the\s+)?(?:right|left|both)\s+lungs?\b"
    r"|\blingul\w*"
)
_SIDE = re.compile(r"\b(right|left)\s+lung\b")
_REGION_WORDS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("heart tissue", r"\bheart tissue\b"),
        ("aorta", r"\baort(?:a|ic)\b"),
        ("trachea and bronchie", r"\btrachea\b|\bbronch(?:i|ie|us)\b|\bairways?\b"),
        ("lung", r"\blungs?\b(?!\s+(?:nodule|opacit))|\bparenchyma\b"),
        ("heart", r"\bheart\b|\bcardiac\b"),
        ("pleura", r"\bpleura\b|\bpleural (?:space|cavit\w*)"),
        ("mediastinum", r"\bmediastinum\b"),
        ("esophagus", r"\bo?esophag(?:us|eal)\b"),
        ("thyroid", r"\bthyroid\b"),
        ("breast", r"\bbreasts?\b"),
        ("abdomen", r"\babdom(?:en|inal)\b"),
        ("bone", r"\bbones?\b|\bskelet\w*|\bspine\b|\bvertebra\w*|\bribs?\b|\bsternum\b"),
    )
)
_WHOLE = re.compile(
    r"\b(?:whole|entire|overall|anywhere|everywhere)\b|\b(?:the|this) (?:scan|ct|chest|image)\b"
)

_LOCATION = re.compile(r"\bwhere\b|\blocat\w*|\bwhich (?:lobe|side|region|part|segment)\b")
_SIZE = re.compile(
    r"\bhow (?:big|large|small|wide|long)\b|\bsizes?\b|\bmeasur\w*|\bdimensions?\b"
    r"|\bdiameter\b|\b(?:big|large|small)\b"
)
_REPORT = re.compile(r"\bdescribe\b|\breport\b|\bfindings\b")
_PRESENCE = re.compile(
    r"^(?:is|are|can|could|do|does|did|has|have|any)\b|\bis there\b|\bare there\b|\bpresent\b"
    r"|\bidentif\w*|\bevidence of\b|\bsigns? of\b|\bsee (?:a|an|any)\b"
)
_ABNORMAL = re.compile(
    r"\babnormal\w*|\banything\b|\bwrong\b|\bnormal\b|\bwhat (?:is|do|can|does)\b"
    r"|\bwhat's\b|\belse\b|\bpatholog\w*"
)
_ELLIPSIS = re.compile(r"^(?:and|also|now|then)\b|\b(?:what|how) about\b")
_FINDING_REF = re.compile(
    r"\b(?:it|its|it's|they|them|their|this|that|these|those)\b"
    r"|\bthe (?:finding|lesion|abnormality|one)\b"
)


def finding_term(label: str) -> str:
    """The finding name questions use for a CT-RATE label."""
    return FINDING_TERMS.get(label, label.lower())


def _template_pattern(template: str) -> re.Pattern:
    text = re.escape(template)
    for key in ("abnormality", "region"):
        text = text.replace(re.escape("{" + key + "}"), f"(?P<{key}>.+?)")
    return re.compile(f"^{text}$", re.IGNORECASE)


_TRAINED_FORMS: tuple[tuple[str, re.Pattern], ...] = (
    ("disorders", _template_pattern(QUESTION_TEMPLATES["disorders"])),  # before "in the {region}"
    *((task, _template_pattern(t)) for task, t in QUESTION_TEMPLATES.items()),
    ("region_report", _template_pattern(REPORT_PROMPTS["region_report"])),
    ("region_report", _template_pattern(REPORT_PROMPTS["region_report_unnamed"])),
)

# --- state ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Focus:
    """What a conversation is about after its last turn.

    Attributes:
        region: the region in focus (a mask name, or ``WHOLE_SCAN``), or None.
        findings: finding names in focus (from the last question, else the last answer).
        task: the last task asked (an elliptic "and the heart?" asks it again).
        pending: the task a clarification is waiting to complete, or None.
    """

    region: str | None = None
    findings: tuple[str, ...] = ()
    task: str | None = None
    pending: str | None = None


@dataclass(frozen=True)
class Resolution:
    """A question resolved against the conversation.

    Attributes:
        task: one of :data:`TASKS`.
        question: the standalone question for the model, or None with a clarification.
        region: the region whose mask answers it (``WHOLE_SCAN``: no mask), or None.
        finding: the finding name it is about, or None.
        clarification: a question back to the user when a reference cannot be resolved.
        notes: how references were read ("'it' is the nodule the detector found").
    """

    task: str
    question: str | None
    region: str | None = None
    finding: str | None = None
    clarification: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class _Parsed:
    trained: str | None  # task of a question already in a trained form
    intent: str | None
    regions: tuple[str, ...]
    findings: tuple[str, ...]
    whole: bool
    finding_ref: bool
    ellipsis: bool


def _regions_in(text: str, names: Iterable[str]) -> tuple[list[str], str]:
    """Region names mentioned in ``text`` (lower case), in text order, and the text with them
    blanked (so "right lung upper lobe" is not also read as "lung")."""
    found: list[tuple[int, str]] = []

    def take(pattern: re.Pattern, name_of: Callable[[re.Match], str | None]) -> None:
        nonlocal text
        for m in pattern.finditer(text):
            name = name_of(m)
            if name:
                found.append((m.start(), name))
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)

    for name in sorted(set(names) - set(NAMED_REGIONS), key=len, reverse=True):
        take(re.compile(rf"\b{re.escape(name.lower())}\b"), lambda m, n=name: n)
    take(_LOBE_PHRASE, lambda m: next(iter(parse_lobes(m.group(0))), None))
    take(_SIDE, lambda m: f"{m.group(1)} lung")
    for name, pattern in _REGION_WORDS:
        take(pattern, lambda m, n=name: n)
    ordered = [n for _, n in sorted(found)]
    return list(dict.fromkeys(ordered)), text


def _findings_in(text: str) -> tuple[str, ...]:
    """Finding names the labeler reads as stated in ``text`` (negated ones left out)."""
    labels = [lb for s in default_labeler().label_sentences(text) for lb in s.positive]
    return tuple(dict.fromkeys(finding_term(lb) for lb in labels))


def _parse(question: str, names: Iterable[str]) -> _Parsed:
    q = " ".join(question.strip().split())
    for task, pattern in _TRAINED_FORMS:
        m = pattern.match(q)
        if m:
            fields = m.groupdict()
            region = fields.get("region")
            finding = fields.get("abnormality")
            regions = () if region is None else (region,)
            if task == "disorders":
                regions = (WHOLE_SCAN,)
            if task == "region_report" and region is None:  # the unnamed form: the given mask
                regions = ()
            return _Parsed(
                task, task, regions, () if finding is None else (finding,), False, False, False
            )
    low = q.lower()
    regions, rest = _regions_in(low, names)
    whole = bool(_WHOLE.search(rest))
    intent = None
    for task, pattern in (
        ("location", _LOCATION),
        ("size", _SIZE),
        ("region_report", _REPORT),
        ("presence", _PRESENCE),
        ("abnormality", _ABNORMAL),
    ):
        if pattern.search(low):
            intent = task
            break
    return _Parsed(
        None,
        intent,
        tuple(regions),
        _findings_in(q),
        whole,
        bool(_FINDING_REF.search(rest)),
        bool(_ELLIPSIS.search(low)),
    )


def _compatible(region: str | None, finding: str) -> bool:
    """Whether ``finding`` can be asked about in ``region`` (its home region or a part of it)."""
    home = FINDING_HOME.get(finding)
    if region is None or region == WHOLE_SCAN:
        return False
    return home is None or region == home or PARENT_REGION.get(region) == home


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def _format(task: str, region: str | None, finding: str | None) -> str:
    """The standalone question of a trained form."""
    if task == "region_report":
        if region in NAMED_REGIONS:
            return REPORT_PROMPTS["region_report"].format(region=region)
        return REPORT_PROMPTS["region_report_unnamed"]
    if task == "abnormality" and region not in NAMED_REGIONS:
        return REPORT_PROMPTS["region_report_unnamed"]  # an unnamed mask (a drawn box)
    return QUESTION_TEMPLATES[task].format(region=region, abnormality=finding)


def resolve(
    question: str,
    focus: Focus = Focus(),
    *,
    region: str | None = None,
    detections: Callable[[str | None], Sequence[Mapping[str, Any]]] | None = None,
    names: Iterable[str] = (),
) -> Resolution:
    """Rewrite ``question`` against the conversation into one standalone trained question.

    Args:
        question: what the user typed.
        focus: the conversation so far (:func:`focus_from`).
        region: the region the caller has in view for this turn (the app's selected mask, or
            ``WHOLE_SCAN``); a region the question names wins over it, and it wins over the
            region in focus.
        detections: region (None: any) -> the findings detected there (dicts with ``label``
            and ``region``), asked only when a reference needs them.
        names: further mask names the question may use verbatim (an uploaded "drawn box").

    Returns:
        A :class:`Resolution`; one with a ``clarification`` asks the user instead.

    Raises:
        ValueError: an empty question.
    """
    if not question or not question.strip():
        raise ValueError("the question is empty")
    asked = " ".join(question.strip().split())
    p = _parse(asked, names)
    notes: list[str] = []

    def clarify(task: str, text: str) -> Resolution:
        return Resolution(task, None, clarification=text)

    # -- the task --------------------------------------------------------------------------------
    task = p.intent
    if p.trained is None:
        wants_finding = focus.pending in ("presence", "location", "size")
        if (
            focus.pending
            and task is None
            and (p.findings if wants_finding else p.regions or p.whole)
        ):
            task = focus.pending  # the reply to a clarification completes its task
        elif p.ellipsis and task in (None, "abnormality") and (p.regions or p.findings):
            task = focus.task if focus.task in ("presence", "size", "region_report") else None
            same = p.findings or focus.findings[:1]
            if task in ("presence", "size") and p.regions and not p.findings:
                if len(focus.findings) != 1 or not _compatible(p.regions[0], same[0]):
                    task = None  # "is there a nodule?" ... "and the heart?": its abnormalities
            if task is None:
                task = "presence" if p.findings and not p.regions else "abnormality"
        elif task is None and p.findings:
            task = "presence"
        elif task is None and (p.regions or p.whole):
            task = "abnormality"
        elif task == "presence" and not p.findings and not p.finding_ref:
            task = "abnormality"  # "is the heart normal?", "are there any abnormalities?"
    if task is None:
        task = "free"

    # -- the finding -----------------------------------------------------------------------------
    finding: str | None = None
    if task in ("presence", "location", "size"):
        if len(p.findings) > 1:
            return clarify(task, f"One finding at a time, please: {_listing(p.findings)}?")
        if p.findings:
            finding = p.findings[0]
        elif len(focus.findings) == 1:
            finding = focus.findings[0]
        elif focus.findings:
            return clarify(task, f"Which finding do you mean: {_listing(focus.findings)}?")
        else:
            where = p.regions[0] if p.regions else region or focus.region
            scope = None if where in (None, WHOLE_SCAN) else where
            found = list(
                dict.fromkeys(
                    finding_term(str(d["label"])) for d in (detections(scope) if detections else ())
                )
            )
            in_words = f" in the {scope}" if scope else ""
            if len(found) == 1:
                finding = found[0]
                notes.append(f"No finding was in focus: read as the {finding} detected{in_words}.")
            elif found:
                return clarify(task, f"Which finding do you mean: {_listing(found)}?")
            else:
                return clarify(
                    task,
                    f"Which finding do you mean? None is in focus and none was detected"
                    f"{in_words}; name one (for example: where is the nodule?).",
                )

    # -- the region ------------------------------------------------------------------------------
    where: str | None
    if task in WHOLE_SCAN_TASKS:
        where = WHOLE_SCAN
    elif len(p.regions) > 1:
        return clarify(task, f"One region at a time, please: {_listing(p.regions)}?")
    elif p.regions:
        where = p.regions[0]
    elif p.whole:
        where = WHOLE_SCAN
    else:
        where = region or focus.region
        if finding is not None and not _compatible(where, finding):
            home = _finding_region(finding, detections) or FINDING_HOME.get(finding)
            if home is None and where in (None, WHOLE_SCAN):
                return clarify(task, f"In which region should I look for the {finding}?")
            if home is not None:
                if where not in (None, WHOLE_SCAN):
                    notes.append(f"Asked about the {home}, the region of the {finding}.")
                where = home
    if task == "abnormality" and where == WHOLE_SCAN:
        task = "disorders"
    if task in ("presence", "size") and where == WHOLE_SCAN:
        if finding is not None and FINDING_HOME.get(finding):
            where = FINDING_HOME[finding]
            notes.append(f"Asked about the {where}, the region of the {finding}.")
        else:
            return clarify(task, f"In which region should I look for the {finding}?")
    if where is None and task != "free":
        return clarify(
            task, "Which region do you mean (for example: the lung, the heart, or the whole scan)?"
        )

    if task == "free":
        notes.append("Not one of the question forms the model was trained on: asked as written.")
        return Resolution(task, asked, where or WHOLE_SCAN, None, None, tuple(notes))
    text = asked if p.trained else _format(task, where, finding)
    return Resolution(task, text, where, finding, None, tuple(notes))


def _finding_region(
    finding: str, detections: Callable[[str | None], Sequence[Mapping[str, Any]]] | None
) -> str | None:
    """The region where ``finding`` was detected (the first detection of it), or None."""
    for d in detections(None) if detections else ():
        if finding_term(str(d.get("label"))) == finding and d.get("region"):
            return str(d["region"])
    return None


def focus_after(focus: Focus, resolution: Resolution, answer: str) -> Focus:
    """The conversation after a turn: a clarification keeps the focus and waits for its task; an
    answered turn moves the focus to its region and finding (or the findings its answer names)."""
    if resolution.clarification is not None:
        return replace(focus, pending=resolution.task)
    region = focus.region if resolution.task == "location" else resolution.region
    if resolution.finding is not None:
        findings: tuple[str, ...] = (resolution.finding,)
    else:
        findings = _findings_in(answer)
    return Focus(region=region, findings=findings, task=resolution.task, pending=None)


def focus_from(
    history: Iterable[Mapping[str, Any] | Sequence[str]] | None, names: Iterable[str] = ()
) -> Focus:
    """The focus after the given turns: turn dicts as :func:`take_turn` returns them, or
    ``[question, answer]`` pairs (their questions are resolved again, without detections)."""
    focus = Focus()
    for turn in history or ():
        if isinstance(turn, Mapping):
            question, answer = str(turn.get("question", "")), str(turn.get("answer", ""))
        elif isinstance(turn, Sequence) and not isinstance(turn, str) and len(turn) == 2:
            question, answer = str(turn[0]), str(turn[1])
            turn = {}
        else:
            raise ValueError(f"a history turn is a dict or a [question, answer] pair, got {turn!r}")
        if "task" in turn and turn.get("task") in TASKS:
            resolution = Resolution(
                str(turn["task"]),
                turn.get("resolved"),
                turn.get("region"),
                turn.get("finding"),
                answer if turn.get("clarify") else None,
            )
        elif question.strip():
            resolution = resolve(question, focus, names=names)
        else:
            continue
        focus = focus_after(focus, resolution, answer)
    return focus


# --- one turn ---------------------------------------------------------------------------------------


class MaskNotFound(LookupError):
    """A resolved region has no mask (neither given nor predicted)."""


def take_turn(
    question: str,
    history: Iterable[Mapping[str, Any] | Sequence[str]] | None,
    *,
    ask: Callable[[Resolution], dict],
    region: str | None = None,
    detections: Callable[[str | None], Sequence[Mapping[str, Any]]] | None = None,
    names: Iterable[str] = (),
) -> dict:
    """One conversation turn: resolve ``question`` against ``history``, then ``ask``.

    Args:
        ask: resolution -> ``{"answer", "mask_source", "truncated", "warnings"}``: answers
            ``resolution.question`` with the mask of ``resolution.region`` (``WHOLE_SCAN``: no
            mask); raises :class:`MaskNotFound` when that region has no mask.
        region, detections, names: as for :func:`resolve`.

    Returns:
        The turn: ``{"question", "answer", "resolved", "task", "region", "finding",
        "mask_source", "clarify", "warnings", "truncated", "history"}``; ``history`` is the
        given one plus this turn (turn dicts), to pass to the next call.
    """
    history = list(history or ())
    names = list(names)
    focus = focus_from(history, names)
    res = resolve(question, focus, region=region, detections=detections, names=names)
    out: dict[str, Any] = {
        "question": " ".join(question.split()),
        "resolved": res.question,
        "task": res.task,
        "region": res.region,
        "finding": res.finding,
        "mask_source": None,
        "clarify": res.clarification is not None,
        "warnings": list(res.notes),
        "truncated": False,
    }
    if res.clarification is None:
        try:
            got = ask(res)
        except MaskNotFound as err:
            res = Resolution(res.task, None, clarification=str(err))
            out.update(resolved=None, region=None, finding=None, clarify=True)
        else:
            out.update(
                answer=str(got["answer"]),
                mask_source=got.get("mask_source"),
                truncated=bool(got.get("truncated")),
            )
            out["warnings"] += [str(w) for w in got.get("warnings") or []]
    if res.clarification is not None:
        out["answer"] = res.clarification
    turn = {k: out[k] for k in ("question", "answer", "resolved", "task", "region", "finding")}
    turn["clarify"] = out["clarify"]
    out["history"] = [_as_turn(t, names) for t in history] + [turn]
    return out


def _as_turn(turn: Mapping[str, Any] | Sequence[str], names: Iterable[str]) -> dict:
    """A history entry as a turn dict (a ``[question, answer]`` pair keeps only those)."""
    if isinstance(turn, Mapping):
        return dict(turn)
    return {"question": str(turn[0]), "answer": str(turn[1])}
