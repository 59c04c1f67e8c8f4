"""Losses of the SAM mask decoder: soft Dice and soft IoU (docs/method.md §5)."""
from .sam_soft_dice_loss import SAMSoftDiceLoss
from .sam_soft_iou_loss import SAMSoftIoULoss
from .soft_overlap_loss import SoftOverlapLoss

__all__ = ['SAMSoftDiceLoss', 'SAMSoftIoULoss', 'SoftOverlapLoss']
