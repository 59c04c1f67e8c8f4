"""Per-patch segmentation scores of the paper (docs/method.md §8), pure numpy.

Masks are arrays of any shape where non-zero means tumour. The paper scores each positive
test patch with a smoothed Dice and IoU and averages them; the smoothing makes both defined
(and equal to 1) when prediction and ground truth are both empty.
"""
from __future__ import annotations

import numpy as np


def _binary(mask: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.size == 0:
        raise ValueError(f'{name} is empty (shape {arr.shape})')
    return arr.astype(bool)


def patch_dice_iou(pred: np.ndarray, gt: np.ndarray, smooth: float = 1e-3
                   ) -> tuple[float, float]:
    """Smoothed Dice and IoU of one patch (docs/method.md §8, the paper's per-patch metric).

    ``dice = (2|P∩G| + s) / (|P| + |G| + s)`` and ``iou = (|P∩G| + s) / (|P∪G| + s)`` with
    ``s = smooth``; both are 1 when P and G are empty and about ``s / |G|`` when only P is.

    Args:
        pred: Predicted mask, non-zero = tumour.
        gt: Ground-truth mask of the same shape, non-zero = tumour.
        smooth: The smoothing constant ``s`` (the paper uses 1e-3).

    Returns:
        ``(dice, iou)`` as Python floats in [0, 1].
    """
    p, g = _binary(pred, 'pred'), _binary(gt, 'gt')
    if p.shape != g.shape:
        raise ValueError(f'pred shape {p.shape} differs from gt shape {g.shape}')
    inter = float(np.count_nonzero(p & g))
    area_p, area_g = float(np.count_nonzero(p)), float(np.count_nonzero(g))
    dice = (2 * inter + smooth) / (area_p + area_g + smooth)
    iou = (inter + smooth) / (area_p + area_g - inter + smooth)
    return dice, iou


def false_positive_fraction(pred: np.ndarray) -> float:
    """Fraction of a (tumour-free) patch's pixels that are predicted tumour.

    On a negative patch every predicted tumour pixel is a false positive, so this is the
    false-positive area reported beside the paper's Dice (docs/method.md §8).
    """
    p = _binary(pred, 'pred')
    return float(np.count_nonzero(p)) / p.size
