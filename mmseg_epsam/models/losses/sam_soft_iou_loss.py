"""Soft IoU loss of SAM's single-mask logits (docs/method.md §5)."""
from __future__ import annotations

from mmseg.registry import MODELS
from mmseg_epsam.functional.soft_losses import soft_iou_loss

from .soft_overlap_loss import SoftOverlapLoss


@MODELS.register_module()
class SAMSoftIoULoss(SoftOverlapLoss):
    """``loss_weight * (1 - (I + s) / (T - I + s))`` of one image, key ``'loss_iou'``
    (:class:`SoftOverlapLoss` for the arguments)."""

    loss_fn = staticmethod(soft_iou_loss)
    default_loss_name = 'loss_iou'
