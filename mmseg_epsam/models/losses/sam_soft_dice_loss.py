"""Soft Dice loss of SAM's single-mask logits (docs/method.md §5)."""
from __future__ import annotations

from mmseg.registry import MODELS
from mmseg_epsam.functional.soft_losses import soft_dice_loss

from .soft_overlap_loss import SoftOverlapLoss


@MODELS.register_module()
class SAMSoftDiceLoss(SoftOverlapLoss):
    """``loss_weight * (1 - (2 I + s) / (T + s))`` of one image, key ``'loss_dice'``
    (:class:`SoftOverlapLoss` for the arguments)."""

    loss_fn = staticmethod(soft_dice_loss)
    default_loss_name = 'loss_dice'
