"""Drafted greedy decoding: the phrase bank's drafts, same text as plain greedy, fewer passes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rgct.config import ConfigError, GenerationConfig, load_config
from rgct.model import drafting
from rgct.model.builder import build_model
from rgct.model.checkpoint import load_checkpoint, save_checkpoint
from rgct.model.drafting import PHRASES_FILE, PhraseBank, drafted_greedy

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "model" / "tiny.yaml"
PROMPTS = [
    "Describe the findings in the lung.",
    "Can nodule be identified in the lung?",
    "Where?",
]


def tiny_model():
    return build_model(load_config([TINY], [])).eval()


def tiny_inputs(model, b: int = 3):
    """Random volumes, each row's region the whole volume."""
    image = torch.rand(b, 1, *model.input_shape, generator=torch.Generator().manual_seed(0))
    return image, torch.ones_like(image)


class Tok:
    """Whitespace 'tokenizer' over a fixed vocabulary (ids are word positions)."""

    eos_token_id = 0
    pad_token_id = 0

    def __init__(self, words: str) -> None:
        self.vocab = {w: i + 1 for i, w in enumerate(dict.fromkeys(words.split()))}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocab[w] for w in text.split()]}


def test_bank_drafts_the_continuation_of_the_longest_known_tail():
    texts = ["no pleural effusion was detected .", "no nodule was detected in the lung ."]
    tok = Tok(" ".join(texts))
    ids = tok.vocab
    bank = PhraseBank(tok, texts)
    assert len(bank) == 2
    # the start of an answer: the first (most frequent) text's beginning
    assert bank.draft([], 3) == [ids["no"], ids["pleural"], ids["effusion"]]
    # "was detected" is in both texts: the 3-gram "nodule was detected" picks the second
    ctx = [ids["no"], ids["nodule"], ids["was"], ids["detected"]]
    assert bank.draft(ctx, 3) == [ids["in"], ids["the"], ids["lung"]]
    # a draft stops at its text's end, the end token included
    assert bank.draft([ids["effusion"], ids["was"], ids["detected"]], 8) == [ids["."], 0]
    assert bank.draft([ids["lung"] + 100], 4) == [
        ids["no"],
        ids["pleural"],
        ids["effusion"],
        ids["was"],
    ]
    assert bank.draft(ctx, 0) == []


def test_bank_from_targets_orders_by_frequency_and_learning_is_bounded(monkeypatch):
    tok = Tok("a b c d")
    bank = PhraseBank.from_targets(tok, ["a b", "c d", "c d", " ", ""], limit=1)
    assert bank.phrases == ["c d"]
    monkeypatch.setattr(drafting, "MAX_SESSION_TOKENS", 3)
    bank.learn([1, 2])
    assert bank.draft([1], 2) == [2, 0]
    bank.learn([5, 6])  # over the bound: not learned, 5 drafts from the start instead
    assert bank.draft([5], 1) == [3]
    with pytest.raises(ConfigError, match="draft_tokens"):
        GenerationConfig(draft_tokens=-1)


@pytest.mark.parametrize("bank_from", ["own_text", "other_text", "empty"])
def test_drafted_text_equals_plain_greedy_in_fewer_passes(seed, bank_from):
    model = tiny_model()
    image, mask = tiny_inputs(model)
    plain = GenerationConfig(max_new_tokens=24, draft_tokens=0)
    want = model.generate(image, mask, PROMPTS, plain)
    if bank_from == "own_text":
        model.drafts = PhraseBank(model.tokenizer, want)
    elif bank_from == "other_text":
        model.drafts = PhraseBank(model.tokenizer, ["There is no pleural effusion.", "Yes."])
    passes = []
    forward = model.llm.forward
    model.llm.forward = lambda *a, **k: passes.append(1) or forward(*a, **k)
    got = model.generate(image, mask, PROMPTS, replace(plain, draft_tokens=6))
    assert got == want
    # what it wrote is learned: the same prompts again draft it all, 7 tokens a pass
    # (one prefill, then ceil(24 / 7) passes for all rows together instead of 23)
    passes.clear()
    assert model.generate(image, mask, PROMPTS, replace(plain, draft_tokens=6)) == want
    assert len(passes) <= 1 + 4


def test_beam_search_and_sampling_do_not_draft(seed, monkeypatch):
    from rgct.model import rgct_model

    model = tiny_model()
    image, mask = tiny_inputs(model, 1)
    called = []
    original = rgct_model.drafted_greedy
    monkeypatch.setattr(
        rgct_model, "drafted_greedy", lambda *a, **k: called.append(1) or original(*a, **k)
    )
    for gen in (
        GenerationConfig(max_new_tokens=4, num_beams=2),
        GenerationConfig(max_new_tokens=4, do_sample=True),
    ):
        model.generate(image, mask, PROMPTS[:1], gen)
    assert not called
    model.generate(image, mask, PROMPTS[:1], GenerationConfig(max_new_tokens=4))
    assert called == [1]


def test_right_padding_is_refused(seed):
    model = tiny_model()
    hidden = model.llm.get_input_embeddings().embedding_dim
    with pytest.raises(ValueError, match="left-padded"):
        drafted_greedy(
            model.llm,
            torch.randn(2, 5, hidden),
            torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
            max_new_tokens=4,
            eos_ids={0},
            suppress_ids=[],
            bank=PhraseBank(model.tokenizer),
            draft_tokens=4,
        )


def test_checkpoint_keeps_its_phrase_bank(seed, tmp_path):
    cfg = load_config([TINY], [])
    model = build_model(cfg).eval()
    model.drafts = PhraseBank(model.tokenizer, ["No pleural effusion.", "Yes."])
    ckpt = save_checkpoint(model, cfg, tmp_path / "ckpt")
    assert (ckpt / PHRASES_FILE).read_text().splitlines() == ["No pleural effusion.", "Yes."]
    loaded, _ = load_checkpoint(ckpt)
    assert loaded.drafts.phrases == ["No pleural effusion.", "Yes."]
    (ckpt / PHRASES_FILE).unlink()  # an older checkpoint: an empty bank, decoding still drafts
    assert len(load_checkpoint(ckpt)[0].drafts) == 0
