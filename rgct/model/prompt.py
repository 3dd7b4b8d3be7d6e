"""Prompt formatting and tokenisation: chat template, placeholders, answer-only labels."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from rgct.constants import IGNORE_INDEX, REGION_TOKEN, VOLUME_TOKEN
from rgct.model.llm import SYSTEM_PROMPT


def format_prompt(
    tokenizer: PreTrainedTokenizerBase, text: str, num_global: int, num_region: int
) -> str:
    """The full prompt string (chat template applied) with the visual placeholders up front."""
    visual = VOLUME_TOKEN * num_global + REGION_TOKEN * num_region
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{visual}\n{text}"},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


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
    for prompt, answer in zip(prompts, answers):
        p = _ids(tokenizer, format_prompt(tokenizer, prompt, num_global, num_region))
        a = _ids(tokenizer, answer)[:max_answer_tokens] + [tokenizer.eos_token_id]
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
    rows = [_ids(tokenizer, format_prompt(tokenizer, p, num_global, num_region)) for p in prompts]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r) :] = torch.tensor(r)
        attn[i, width - len(r) :] = 1
    return {"input_ids": input_ids, "attention_mask": attn}
