"""Tests for the Attention Dropout Layer maths (mmseg_epsam/functional/adl.py)."""
import pytest
import torch

from mmseg_epsam.functional.adl import (adl_attention, adl_drop_mask, adl_importance_map,
                                        attention_dropout)


def test_attention_and_importance_map():
    features = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    attention = adl_attention(features)
    # channel mean of [k, k+4, k+8] is k+4 (per sample)
    torch.testing.assert_close(attention[0, 0], torch.tensor([[4., 5.], [6., 7.]]))
    torch.testing.assert_close(adl_importance_map(attention), torch.sigmoid(features.mean(1, True)))


def test_drop_mask_zeroes_exactly_positions_at_or_above_threshold():
    attention = torch.tensor([[[[0.0, 1.0, 7.9], [8.0, 9.0, 10.0]]],
                              [[[-1.0, 0.5, 0.79], [0.8, 0.81, 1.0]]]])
    mask = adl_drop_mask(attention, drop_threshold=0.8)
    # sample 0: max 10 -> threshold 8; sample 1: max 1 -> threshold 0.8 (per-sample max)
    expected = torch.tensor([[[[1., 1., 1.], [0., 0., 0.]]], [[[1., 1., 1.], [0., 0., 0.]]]])
    torch.testing.assert_close(mask, expected)


def test_attention_dropout_chooses_by_random_draw():
    features = torch.rand(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    attention = features.mean(1, keepdim=True)
    drop_mask = (attention < 0.8 * attention.amax(dim=(2, 3), keepdim=True)).float()
    dropped = attention_dropout(features, drop_rate=0.75, drop_threshold=0.8, random_draw=0.74)
    torch.testing.assert_close(dropped, features * drop_mask)
    assert (dropped.sum(1) == 0).sum() >= 2  # at least the maximum of each sample is dropped
    kept = attention_dropout(features, drop_rate=0.75, drop_threshold=0.8, random_draw=0.75)
    torch.testing.assert_close(kept, features * torch.sigmoid(attention))
    with pytest.raises(ValueError, match='drop_rate'):
        attention_dropout(features, drop_rate=1.5, drop_threshold=0.8, random_draw=0.1)
