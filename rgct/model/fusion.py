"""Early fusion: write visual embeddings where the placeholder tokens stand."""

from __future__ import annotations

import torch


def fuse_embeddings(
    text_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    visual_embeds: torch.Tensor,
    placeholder_ids: torch.Tensor,
) -> torch.Tensor:
    """Replace placeholder positions with visual embeddings, in order, without Python loops.

    Args:
        text_embeds: (B, T, H) token embeddings.
        input_ids: (B, T) token ids.
        visual_embeds: (B, V, H) visual embeddings, in the order their placeholders appear.
        placeholder_ids: (K,) token ids that mark visual positions.

    Returns:
        (B, T, H) embeddings with row b's placeholders filled by ``visual_embeds[b]``.

    Raises:
        ValueError: if a row does not hold exactly V placeholders.
    """
    is_visual = torch.isin(input_ids, placeholder_ids.to(input_ids.device))  # (B, T)
    counts = is_visual.sum(dim=1)
    expected = visual_embeds.shape[1]
    if (counts != expected).any():
        raise ValueError(
            f"placeholder count mismatch: rows hold {counts.tolist()} placeholder tokens but "
            f"{expected} visual embeddings were given per row"
        )
    mask = is_visual.unsqueeze(-1).expand_as(text_embeds)
    return text_embeds.masked_scatter(mask, visual_embeds.to(text_embeds.dtype))
