"""Prompt formatting and tokenisation: chat template, placeholders, answer-only labels."""

from __future__ import annotations

import functools

import torch
from transformers import PreTrainedTokenizerBase

from rgct.constants import IGNORE_INDEX, REGION_TOKEN, VOLUME_TOKEN
from rgct.model.llm import SYSTEM_PROMPT

_SLOT = " \n\ue000rgct-text\ue000\n "
"""Stands for the user's text when the chat template is rendered once per tokenizer: private-use
characters with whitespace on both sides, so a template that trims or escapes its content is
detected (the slot then does not come back verbatim) and rendered per prompt instead."""


@functools.lru_cache(maxsize=16)
def _template(
    tokenizer: PreTrainedTokenizerBase, num_global: int, num_region: int
) -> tuple[str, str] | None:
    """(before, after) the user's text in the rendered chat template, or None when the template
    does not insert the text verbatim."""
    rendered = _render(tokenizer, _SLOT, num_global, num_region)
    if rendered.count(_SLOT) != 1:
        return None
    before, after = rendered.split(_SLOT)
    return before, after


def _render(tokenizer: PreTrainedTokenizerBase, text: str, num_global: int, num_region: int) -> str:
    visual = VOLUME_TOKEN * num_global + REGION_TOKEN * num_region
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{visual}\n{text}"},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_prompt(
    tokenizer: PreTrainedTokenizerBase, text: str, num_global: int, num_region: int
) -> str:
    """The full prompt string (chat template applied) with the visual placeholders up front.

    The template is rendered once per (tokenizer, placeholder counts) and the text put in its
    slot (the same string as rendering each prompt; a template that alters its content is
    rendered per prompt). A tokenizer's ``chat_template`` is read at its first use: set it
    before formatting."""
    parts = _template(tokenizer, num_global, num_region)
    if parts is None:
        return _render(tokenizer, text, num_global, num_region)
    return parts[0] + text + parts[1]


def _ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text (one batched tokenizer call)."""
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_for_training(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    answers: list[str],
    num_global: int,
    num_region: int,
    max_answer_tokens: int,
) -> dict[str, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels); labels cover the answer + EOS only."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    rows, labels = [], []
    formatted = [format_prompt(tokenizer, p, num_global, num_region) for p in prompts]
    for p, a in zip(_ids(tokenizer, formatted), _ids(tokenizer, list(answers))):
        a = a[:max_answer_tokens] + [tokenizer.eos_token_id]
        rows.append(p + a)
        labels.append([IGNORE_INDEX] * len(p) + a)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    label_t = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)] = torch.tensor(r)
        label_t[i, : len(lab)] = torch.tensor(lab)
        attn[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": attn, "labels": label_t}


def encode_for_generation(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], num_global: int, num_region: int
) -> dict[str, torch.Tensor]:
    """Left-padded (input_ids, attention_mask) ready for batched generation."""
    rows = _ids(tokenizer, [format_prompt(tokenizer, p, num_global, num_region) for p in prompts])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r) :] = torch.tensor(r)
        attn[i, width - len(r) :] = 1
    return {"input_ids": input_ids, "attention_mask": attn}
