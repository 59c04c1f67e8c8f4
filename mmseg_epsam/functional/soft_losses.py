"""Soft Dice and soft IoU losses of one image (paper §3.4; docs/method.md §5).

With ``p = sigmoid(logits)`` and ``g`` the binary target, both losses are built from the soft
intersection ``I = Σpg`` and the soft total ``T = Σp + Σg``:

- ``dice = 1 - (2 I + s) / (T + s)``;
- ``iou = 1 - (I + s) / (T - I + s)``.

An all-zero target (a negative patch, ``IDSPseudoLabelDataset(negative_patches=
'empty_target')``) is scored on the background, ``p -> 1 - p``, ``g -> 1 - g``: the
foreground form has a vanishing gradient there (``s / (Σp + s)^2``), while the background
IoU loss equals the mean of ``p``, the soft FP area.
"""
from __future__ import annotations

from torch import Tensor


def soft_overlap(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(I, T)``: soft intersection and soft total of logits and a binary target of any
    shape, on the background when the target is all zero (module docstring)."""
    prob = logits.sigmoid().reshape(-1)
    target = target.reshape(-1).to(prob.dtype)
    if not target.any():
        prob, target = 1 - prob, 1 - target
    return (prob * target).sum(), prob.sum() + target.sum()


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1e-3) -> Tensor:
    """``1 - (2 I + s) / (T + s)`` of one image (module docstring)."""
    intersection, total = soft_overlap(logits, target)
    return 1 - (2 * intersection + smooth) / (total + smooth)


def soft_iou_loss(logits: Tensor, target: Tensor, smooth: float = 1e-3) -> Tensor:
    """``1 - (I + s) / (T - I + s)`` of one image (module docstring)."""
    intersection, total = soft_overlap(logits, target)
    return 1 - (intersection + smooth) / (total - intersection + smooth)
