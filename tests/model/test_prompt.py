"""Prompt formatting: the chat template rendered once per tokenizer gives the same strings and
token ids as rendering and tokenising each prompt on its own."""

from __future__ import annotations

import pytest

from rgct.constants import IGNORE_INDEX
from rgct.model.llm import build_tiny_tokenizer
from rgct.model.prompt import _render, _template, encode_for_training, format_prompt

TEXTS = [
    "Describe the findings in the lung.",
    "  leading and trailing spaces  ",
    "line one\nline two\n",
    "",
    "Ünïcödé → 5 mm {braces} <|im_end|>",
]


def per_row_reference(tok, prompts, answers, g, r, max_answer):
    """encode_for_training as it was written before batching: one render and two tokenizer
    calls per row."""
    rows, labels = [], []
    for prompt, answer in zip(prompts, answers):
        p = tok(_render(tok, prompt, g, r), add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"][:max_answer] + [tok.eos_token_id]
        rows.append(p + a)
        labels.append([IGNORE_INDEX] * len(p) + a)
    return rows, labels


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_slot_rendering_equals_full_rendering(tok, text):
    assert _template(tok, 8, 3) is not None
    assert format_prompt(tok, text, 8, 3) == _render(tok, text, 8, 3)


def test_batched_training_tokens_equal_per_row_tokens(tok):
    answers = ["Yes.", "A 5 mm nodule in the right upper lobe.", "No.", "", "x " * 80]
    enc = encode_for_training(tok, TEXTS, answers, 8, 3, 48)
    rows, labels = per_row_reference(tok, TEXTS, answers, 8, 3, 48)
    for i, (row, lab) in enumerate(zip(rows, labels)):
        n = len(row)
        assert enc["input_ids"][i, :n].tolist() == row
        assert enc["labels"][i, :n].tolist() == lab
        assert enc["attention_mask"][i].sum() == n
        assert (enc["labels"][i, n:] == IGNORE_INDEX).all()


def test_template_that_changes_its_content_is_rendered_per_prompt():
    tok = build_tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | trim }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    assert _template(tok, 2, 1) is None  # the slot's whitespace is trimmed: not verbatim
    for text in TEXTS:
        assert format_prompt(tok, text, 2, 1) == _render(tok, text, 2, 1)


def test_prompts_and_answers_must_pair(tok):
    with pytest.raises(ValueError, match="1 prompts but 0 answers"):
        encode_for_training(tok, ["a"], [], 8, 3, 48)


def test_shipped_smollm2_tokenizer_renders_the_same():
    """The SmolLM2 chat template of the shipped model folder (no download)."""
    from transformers import AutoTokenizer

    from rgct.inference import DEMO_MODEL_DIR

    smol = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    assert _template(smol, 8, 3) is not None
    for text in TEXTS:
        assert format_prompt(smol, text, 8, 3) == _render(smol, text, 8, 3)
    enc = encode_for_training(smol, TEXTS, TEXTS[::-1], 8, 3, 64)
    rows, _ = per_row_reference(smol, TEXTS, TEXTS[::-1], 8, 3, 64)
    assert [enc["input_ids"][i, : len(r)].tolist() for i, r in enumerate(rows)] == rows
