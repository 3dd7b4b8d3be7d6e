"""The class-balanced BCE shared by the CT dense head and the radiograph finding detector."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rgct.model.losses import balanced_bce


def _by_hand(logits, target, hard_fraction=64):
    """The formula written out per class: positive mean + negative mean + hardest negatives."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2)
    t = target.flatten(2)
    terms = []
    for k in range(logits.shape[1]):
        b, y = bce[:, k], t[:, k]
        pos = (b * y).sum() / y.sum().clamp(min=1)
        neg = (b * (1 - y)).sum() / (1 - y).sum().clamp(min=1)
        n = math.ceil(b.shape[-1] / hard_fraction)
        hard = (b * (1 - y)).topk(n, dim=-1).values.mean()
        terms.append(pos + neg + hard)
    return torch.stack(terms).mean()


def test_it_is_the_per_class_sum_of_positive_negative_and_hard_negative_means(seed):
    logits = torch.randn(3, 2, 4, 6, 8)
    target = (torch.rand(3, 2, 4, 6, 8) > 0.9).float()
    torch.testing.assert_close(balanced_bce(logits, target), _by_hand(logits, target))


def test_a_tiny_finding_weighs_as_much_as_the_background(seed):
    target = torch.zeros(1, 1, 64, 64)
    target[..., 10:12, 10:12] = 1.0  # 4 of 4096 pixels
    missed = torch.full_like(target, -4.0)  # says "nothing" everywhere
    found = missed.clone()
    found[..., 10:12, 10:12] = 4.0
    assert balanced_bce(missed, target) > 4.0 > 10 * balanced_bce(found, target)


def test_unannotated_channels_are_left_out(seed):
    logits = torch.randn(2, 3, 16, 16)
    target = (torch.rand(2, 3, 16, 16) > 0.8).float()
    valid = torch.tensor([[True, True, False], [True, False, False]])
    got = balanced_bce(logits, target, valid)
    # class 0: both samples; class 1: the first; class 2: none (not counted)
    want = (_by_hand(logits[:, :1], target[:, :1]) + _by_hand(logits[:1, 1:2], target[:1, 1:2])) / 2
    torch.testing.assert_close(got, want)
    # changing what an unannotated channel says changes nothing
    logits2 = logits.clone()
    logits2[1, 1] += 5.0
    logits2[:, 2] -= 3.0
    torch.testing.assert_close(balanced_bce(logits2, target, valid), got)


def test_shapes_that_do_not_match_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        balanced_bce(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 8, 8))
