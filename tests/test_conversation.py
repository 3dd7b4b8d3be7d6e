"""Follow-up questions resolved against the conversation into trained question forms."""

from __future__ import annotations

import pytest

from rgct.constants import QUESTION_TEMPLATES, REPORT_PROMPTS, WHOLE_SCAN
from rgct.conversation import (
    Focus,
    MaskNotFound,
    focus_after,
    focus_from,
    resolve,
    take_turn,
)

NODULE = [{"label": "Lung nodule", "region": "lung"}]
TWO = [*NODULE, {"label": "Consolidation", "region": "lung"}]


def _detected(found):
    return lambda where: [d for d in found if where is None or d["region"] == where]


def _talk(questions, answers, region="lung", detections=None):
    """Turns of a conversation whose model answers ``answers[k]`` to the k-th question."""
    history, turns = [], []
    for k, question in enumerate(questions):
        turn = take_turn(
            question,
            history,
            ask=lambda res, k=k: {"answer": answers[k], "mask_source": "dataset"},
            region=region,
            detections=detections,
        )
        history = turn["history"]
        turns.append(turn)
    return turns


@pytest.mark.parametrize(
    "question, task, region, finding",
    [
        ("What are the abnormalities in the lung?", "abnormality", "lung", None),
        ("Can nodule be identified in the lung?", "presence", "lung", "nodule"),
        ("Where is the nodule located in the image?", "location", WHOLE_SCAN, "nodule"),
        ("What is the approximate size of the nodule in the lung?", "size", "lung", "nodule"),
        ("What are the abnormalities in the scan?", "disorders", WHOLE_SCAN, None),
        ("Describe the findings in the heart.", "region_report", "heart", None),
    ],
)
def test_a_trained_question_is_asked_as_written(question, task, region, finding):
    res = resolve(question, Focus())
    assert (res.question, res.task, res.region, res.finding) == (question, task, region, finding)
    assert res.clarification is None and res.notes == ()


def test_three_turns_about_one_finding_keep_its_region():
    turns = _talk(
        ["What are the abnormalities in the lung?", "Where is it?", "How big is it?"],
        ["Nodule.", "lung/lung/right lung/right lung upper lobe", "13x11 mm"],
    )
    assert [t["resolved"] for t in turns] == [
        "What are the abnormalities in the lung?",
        QUESTION_TEMPLATES["location"].format(abnormality="nodule"),
        QUESTION_TEMPLATES["size"].format(abnormality="nodule", region="lung"),
    ]
    # location is trained on the whole scan (the region is its answer); the focus stays
    assert [t["region"] for t in turns] == ["lung", WHOLE_SCAN, "lung"]
    assert [t["mask_source"] for t in turns] == ["dataset"] * 3
    assert turns[-1]["finding"] == "nodule" and not any(t["clarify"] for t in turns)
    assert len(turns[-1]["history"]) == 3


def test_another_region_by_ellipsis_asks_the_same_kind_of_question():
    focus = Focus(region="lung", findings=("nodule",), task="abnormality")
    for question, region in (
        ("What about the heart?", "heart"),
        ("and the left lung?", "left lung"),
        ("And the right upper lobe?", "right lung upper lobe"),
        ("what about the airways?", "trachea and bronchie"),
    ):
        res = resolve(question, focus)
        assert res.question == QUESTION_TEMPLATES["abnormality"].format(region=region)
        assert res.region == region
    # a presence question carries over to another part of the lung, not to the heart
    focus = Focus(region="lung", findings=("nodule",), task="presence")
    res = resolve("and the left lung?", focus)
    assert res.question == "Can nodule be identified in the left lung?"
    assert resolve("and the heart?", focus).task == "abnormality"


def test_a_finding_named_alone_is_looked_for_in_its_region():
    res = resolve("Is there cardiomegaly?", Focus(region="lung"), region="lung")
    assert res.question == "Can cardiomegaly be identified in the heart?" and res.region == "heart"
    assert res.notes == ("Asked about the heart, the region of the cardiomegaly.",)
    # in the scan as a whole: the finding's region, said so
    res = resolve("Is there a nodule anywhere in the scan?", Focus())
    assert res.region == "lung" and res.notes
    # a detected finding is looked for where it was detected
    res = resolve(
        "how big is the consolidation?", Focus(region=WHOLE_SCAN), detections=_detected(TWO)
    )
    assert res.question == "What is the approximate size of the consolidation in the lung?"


def test_the_caller_region_wins_over_the_focus_and_a_named_region_over_both():
    focus = Focus(region="lung", task="abnormality")
    assert resolve("Anything else?", focus).region == "lung"
    assert resolve("Anything else?", focus, region="heart").region == "heart"
    assert resolve("Anything in the pleura?", focus, region="heart").region == "pleura"
    assert resolve("Anything abnormal?", focus, region=WHOLE_SCAN).task == "disorders"
    # an unnamed mask (a drawn box) gets the unnamed-region prompt
    res = resolve("what is in the drawn box?", Focus(), names=["drawn box"])
    assert res.region == "drawn box" and res.question == REPORT_PROMPTS["region_report_unnamed"]


def test_it_without_a_finding_in_focus_uses_the_one_detection_and_says_so():
    res = resolve("where is it?", Focus(region="lung"), detections=_detected(NODULE))
    assert res.question == QUESTION_TEMPLATES["location"].format(abnormality="nodule")
    assert res.notes == ("No finding was in focus: read as the nodule detected in the lung.",)


@pytest.mark.parametrize(
    "question, focus, detections, asks",
    [
        ("where is it?", Focus(region="lung"), TWO, "nodule or consolidation"),
        ("how big is it?", Focus(region="heart"), [], "none was detected in the heart"),
        (
            "where is it?",
            Focus(findings=("nodule", "consolidation")),
            [],
            "nodule or consolidation",
        ),
        ("is there a nodule or consolidation?", Focus(region="lung"), [], "One finding at a time"),
        ("what is in there?", Focus(), [], "Which region"),
        ("compare the heart and the lung", Focus(), [], "One region at a time"),
    ],
)
def test_an_unresolvable_reference_asks_back_never_guesses(question, focus, detections, asks):
    res = resolve(question, focus, detections=_detected(detections))
    assert res.question is None and res.region is None and asks in res.clarification


def test_the_reply_to_a_clarification_completes_its_task():
    turns = _talk(
        [
            "What are the abnormalities in the lung?",
            "where is it?",
            "the consolidation",
            "and how big?",
        ],
        ["Nodule, consolidation.", "", "lung/lung/left lung", "20 mm"],
    )
    assert turns[1]["clarify"] and "nodule or consolidation" in turns[1]["answer"]
    assert turns[1]["resolved"] is None and turns[1]["region"] is None
    assert turns[2]["resolved"] == "Where is the consolidation located in the image?"
    assert turns[3]["resolved"] == (
        "What is the approximate size of the consolidation in the lung?"
    )


def test_a_region_without_a_mask_is_a_question_back():
    def ask(res):
        raise MaskNotFound(f"There is no {res.region} mask.")

    turn = take_turn("What about the thyroid?", [], ask=ask, region="lung")
    assert turn["clarify"] and turn["answer"] == "There is no thyroid mask."
    assert turn["region"] is None and turn["resolved"] is None


def test_focus_follows_the_answer_of_a_region_question():
    res = resolve("What are the abnormalities in the heart?", Focus(region="lung"))
    assert focus_after(Focus(), res, "Cardiomegaly.").findings == ("cardiomegaly",)
    # a normal answer leaves no finding in focus: "it" must then be asked back
    assert focus_after(Focus(findings=("nodule",)), res, "No abnormality.").findings == ()
    assert focus_after(Focus(), res, "No pericardial effusion.").findings == ()


def test_focus_is_rebuilt_from_plain_question_answer_pairs():
    focus = focus_from([["What are the abnormalities in the lung?", "Nodule."]])
    assert focus == Focus(region="lung", findings=("nodule",), task="abnormality")
    with pytest.raises(ValueError, match="question, answer"):
        focus_from(["just a string"])


def test_free_questions_are_asked_as_written_with_a_note():
    res = resolve("Tell me a story", Focus(region="heart"))
    assert res.task == "free" and res.question == "Tell me a story" and res.region == "heart"
    assert "asked as written" in res.notes[0]
    with pytest.raises(ValueError, match="empty"):
        resolve("   ", Focus())


def test_a_new_question_after_a_question_back_is_not_read_as_the_reply():
    focus = Focus(region="lung", findings=("nodule", "consolidation"), task="abnormality")
    back = resolve("where is it?", focus)
    focus = focus_after(focus, back, back.clarification)
    assert focus.pending == "location" and focus.findings == ("nodule", "consolidation")
    # another region is not the finding asked for: the last answered task, there
    res = resolve("And the heart?", focus)
    assert res.question == "What are the abnormalities in the heart?"
    # a question with its own intent keeps it
    res = resolve("Is there pleural effusion?", focus)
    assert res.question == "Can pleural effusion be identified in the pleura?"
    assert resolve("the nodule", focus).question == "Where is the nodule located in the image?"
