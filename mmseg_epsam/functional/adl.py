"""Attention Dropout Layer (ADL) maths (Choe & Shim, CVPR 2019; docs/method.md §2).

ADL is active in training only. From a feature map ``F`` of shape ``[B, C, H, W]``:

- attention ``A = mean_c F``, shape ``[B, 1, H, W]``;
- importance map ``I = sigmoid(A)``;
- drop mask ``M = [A < gamma * max_{h,w} A]`` (per sample), which zeroes the most
  discriminative region;
- with probability ``p`` (the drop rate) the output is ``F * M``, otherwise ``F * I``.

The random draw is an argument, so the maths is deterministic and testable; the module that
uses it draws one number per forward pass, shared by the whole batch (as the EP-SAM reference).
"""
import torch


def adl_attention(features: torch.Tensor) -> torch.Tensor:
    """Self-attention map of ADL: the channel mean, ``[B, C, H, W] -> [B, 1, H, W]``."""
    if features.ndim != 4:
        raise ValueError(f'features must be [B, C, H, W], got shape {tuple(features.shape)}')
    return features.mean(dim=1, keepdim=True)


def adl_importance_map(attention: torch.Tensor) -> torch.Tensor:
    """Importance map of ADL: ``sigmoid(attention)``, same shape as ``attention``."""
    return torch.sigmoid(attention)


def adl_drop_mask(attention: torch.Tensor, drop_threshold: float) -> torch.Tensor:
    """Drop mask of ADL: 1 where ``attention < drop_threshold * max(attention)``, else 0.

    The maximum is taken per sample over the spatial positions of ``attention`` ``[B, 1, H, W]``.
    Returns a tensor of the dtype and shape of ``attention``.
    """
    per_sample_max = attention.amax(dim=(1, 2, 3), keepdim=True)
    return (attention < drop_threshold * per_sample_max).to(attention.dtype)


def attention_dropout(features: torch.Tensor, drop_rate: float, drop_threshold: float,
                      random_draw: float) -> torch.Tensor:
    """Apply ADL (training mode) to ``features`` ``[B, C, H, W]``.

    Args:
        features: Feature map.
        drop_rate: Probability ``p`` of using the drop mask instead of the importance map.
        drop_threshold: ``gamma``; positions with attention ``>= gamma * max`` are dropped.
        random_draw: A number drawn uniformly from [0, 1); the drop mask is used when
            ``random_draw < drop_rate`` (so with probability ``drop_rate``).

    Returns:
        ``features * drop_mask`` or ``features * importance_map`` (broadcast over channels).
    """
    if not 0.0 <= drop_rate <= 1.0:
        raise ValueError(f'drop_rate must lie in [0, 1], got {drop_rate}')
    attention = adl_attention(features)
    if random_draw < drop_rate:
        return features * adl_drop_mask(attention, drop_threshold)
    return features * adl_importance_map(attention)
