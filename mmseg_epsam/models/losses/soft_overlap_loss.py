"""Base of the soft overlap losses of SAM's single-mask logits (docs/method.md §5)."""
from __future__ import annotations

from typing import Callable, ClassVar, Optional

from torch import Tensor, nn


class SoftOverlapLoss(nn.Module):
    """``loss_weight * loss_fn(logits, target, smooth)`` of one image.

    Subclasses set :attr:`loss_fn` (a function of :mod:`mmseg_epsam.functional.soft_losses`,
    which scores an all-zero target on the background) and :attr:`default_loss_name`.

    Args:
        loss_weight: weight of the loss (1: the paper weighs Dice and IoU 1:1).
        smooth: smoothing ``s`` of the soft loss.
        loss_name: key of the loss in the segmentor's loss dict (MMSeg convention: the
            name starts with ``loss_`` so that ``parse_losses`` sums it); None: the class's
            :attr:`default_loss_name`.
    """

    loss_fn: ClassVar[Callable[[Tensor, Tensor, float], Tensor]]
    default_loss_name: ClassVar[str]

    def __init__(self, loss_weight: float = 1.0, smooth: float = 1e-3,
                 loss_name: Optional[str] = None) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.smooth = smooth
        self._loss_name = loss_name or self.default_loss_name

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Weighted loss of one image's logits (e.g. ``[1, 1, H, W]``) and binary target
        (e.g. ``[1, H, W]``)."""
        return self.loss_weight * type(self).loss_fn(logits, target, self.smooth)

    @property
    def loss_name(self) -> str:
        """Key of the loss in the loss dict."""
        return self._loss_name
