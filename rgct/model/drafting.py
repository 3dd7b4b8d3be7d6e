"""Drafted greedy decoding: the same text as plain greedy decoding, in fewer LLM passes.

Reports are written in a small, repetitive language ("No pleural effusion was detected.").
On a CPU the language model's cost per pass is reading its weights, nearly the same for one
new token as for ten, so each greedy step here also proposes the next ``k`` tokens from a
:class:`PhraseBank` (token n-grams of texts the model was taught to write, plus what it wrote
this session) and checks them all in that one pass: drafted tokens the model itself would
have chosen (its argmax) are kept, the first disagreement is replaced by the model's token.
Rows of a batch are checked together, each at its own position, so a report's regions take
as many passes as its longest region needs. The output equals greedy decoding's (prompt-lookup /
n-gram speculative decoding; only the floating-point order of a multi-token pass differs).

A checkpoint keeps its bank in ``phrases.txt`` (one text per line, most frequent first),
written from the training targets by the training loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

PHRASES_FILE = "phrases.txt"
MAX_PHRASES = 5000
"""Texts kept from the training targets (the most frequent)."""
MAX_SESSION_TOKENS = 200_000
"""Tokens of generated text the bank learns in one process, at most (memory stays bounded)."""
NGRAM = 3
"""Longest context n-gram looked up (then shorter ones)."""


class PhraseBank:
    """Token n-gram index of texts: ``draft(context, k)`` proposes the next ``k`` tokens.

    The first text holding an n-gram wins, so texts given most frequent first draft the most
    likely continuation. ``learn`` adds generated texts (bounded by ``MAX_SESSION_TOKENS``).
    """

    def __init__(self, tokenizer, phrases: Iterable[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.phrases: list[str] = []
        self._corpus: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}
        self._learned = 0
        eos = tokenizer.eos_token_id
        self._end = int(eos if eos is not None else tokenizer.pad_token_id)
        for text in phrases:
            self.add_phrase(text)

    def __len__(self) -> int:
        return len(self.phrases)

    @classmethod
    def from_targets(cls, tokenizer, texts: Iterable[str], limit: int = MAX_PHRASES) -> PhraseBank:
        """A bank of the ``limit`` most frequent distinct non-empty texts."""
        counts = Counter(t.strip() for t in texts if t and t.strip())
        return cls(tokenizer, [t for t, _ in counts.most_common(limit)])

    def add_phrase(self, text: str) -> None:
        """Add a text the model was taught to write (saved with the checkpoint)."""
        text = " ".join(text.split())
        if not text:
            return
        self.phrases.append(text)
        self._add(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def learn(self, ids: Sequence[int]) -> None:
        """Add a generated token sequence (not saved), while under the session bound."""
        if ids and self._learned + len(ids) <= MAX_SESSION_TOKENS:
            self._learned += len(ids)
            self._add(list(ids))

    def _add(self, ids: list[int]) -> None:
        start = len(self._corpus)
        self._corpus.extend(ids)
        self._corpus.append(self._end)
        self._index.setdefault((), start)  # what an answer most often starts with
        for pos in range(start, len(self._corpus) - 1):
            for n in range(1, NGRAM + 1):
                if pos - n + 1 < start:
                    break
                self._index.setdefault(tuple(self._corpus[pos - n + 1 : pos + 1]), pos + 1)

    def draft(self, context: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` tokens that followed the longest known tail of ``context``."""
        if k <= 0:
            return []
        for n in range(min(NGRAM, len(context)), -1, -1):
            pos = self._index.get(tuple(context[len(context) - n :]) if n else ())
            if pos is not None:
                out = self._corpus[pos : pos + k]
                if self._end in out:  # a draft stops at its text's end (the end included)
                    out = out[: out.index(self._end) + 1]
                return out
        return []

    # -- files -----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``phrases.txt`` into a checkpoint folder (nothing when the bank is empty)."""
        if self.phrases:
            (Path(directory) / PHRASES_FILE).write_text("\n".join(self.phrases) + "\n")

    @classmethod
    def load(cls, tokenizer, directory: str | Path) -> PhraseBank:
        """The bank of a checkpoint folder (empty without ``phrases.txt``)."""
        path = Path(directory) / PHRASES_FILE
        if not path.is_file():
            return cls(tokenizer)
        return cls(tokenizer, [line for line in path.read_text().splitlines() if line.strip()])


@torch.no_grad()
def drafted_greedy(
    llm,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    suppress_ids: Sequence[int],
    bank: PhraseBank,
    draft_tokens: int,
    pad_id: int = 0,
) -> list[list[int]]:
    """Greedy decoding of left-padded prompts (B, T, hidden) with drafts from ``bank``.

    Every pass feeds each unfinished row its next token and its draft (rows padded to the
    longest); a row keeps the drafted tokens its argmax agrees with, and the slots of the rest
    are masked out of the cache for later passes (positions are counted per row). Returns the
    generated ids per row (an end token included when one was produced), as
    ``llm.generate(do_sample=False, num_beams=1)`` would.
    """
    mask = attention_mask.long()
    if (mask.cummax(-1).values != mask).any():
        raise ValueError("drafted_greedy needs left-padded prompts (padding first, then tokens)")
    device = embeds.device
    suppress = torch.as_tensor(list(suppress_ids), dtype=torch.long, device=device)

    def choose(scores: torch.Tensor) -> list:
        if suppress.numel():
            scores = scores.index_fill(-1, suppress, float("-inf"))
        return scores.argmax(-1).tolist()

    rows = embeds.shape[0]
    out = llm(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
    )
    cache = out.past_key_values
    position = mask.sum(-1)  # the next token's position, per row
    generated: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows

    def push(i: int, tok: int) -> None:
        generated[i].append(tok)
        done[i] = tok in eos_ids or len(generated[i]) >= max_new_tokens

    nxt = choose(out.logits[:, -1])
    for i in range(rows):
        push(i, nxt[i])
    while not all(done):
        drafts = [
            []
            if done[i]
            else bank.draft(generated[i], min(draft_tokens, max_new_tokens - len(generated[i])))
            for i in range(rows)
        ]
        width = 1 + max(len(d) for d in drafts)
        ids = torch.full((rows, width), pad_id, dtype=torch.long)
        fed = torch.zeros((rows, width), dtype=torch.long)
        for i in range(rows):
            if not done[i]:
                ids[i, : 1 + len(drafts[i])] = torch.tensor([nxt[i], *drafts[i]])
                fed[i, : 1 + len(drafts[i])] = 1
        start = mask.shape[1]
        mask = torch.cat([mask, fed.to(device)], dim=1)
        out = llm(
            input_ids=ids.to(device),
            attention_mask=mask,
            position_ids=position[:, None] + torch.arange(width, device=device),
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        preds = choose(out.logits)
        for i in range(rows):
            if done[i]:
                continue
            draft, row_preds = drafts[i], preds[i]
            accepted = 0
            while accepted < len(draft) and draft[accepted] == row_preds[accepted]:
                accepted += 1
            mask[i, start + 1 + accepted :] = 0  # the rejected drafts' slots
            position[i] += 1 + accepted
            for tok in draft[:accepted]:
                push(i, tok)
                if done[i]:
                    break
            if not done[i]:
                nxt[i] = row_preds[accepted]
                push(i, nxt[i])
    return generated
