"""IDS: the agreement score that selects SAM pseudo-labels (paper §3.4, docs/method.md §6).

``IDS = |SAM ∩ CAM| / |SAM|`` where SAM is SAM's predicted mask and CAM the CAM-derived
(initial) mask of the same patch; a pseudo-label is kept when ``IDS > t`` (t = 0.9).
An empty SAM mask is rejected (its IDS is reported as 0).

``variant='reference'`` reproduces the reference code: ``|SAM ∩ CAM| / (|SAM| + 1)`` and
``IDS >= t``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

IDSVariant = Literal['paper', 'reference']
IDS_VARIANTS = ('paper', 'reference')


@dataclass(frozen=True)
class IDSResult:
    """IDS of one patch: the score, the decision and the two areas (pixels)."""

    ids: float
    kept: bool
    sam_area: int
    cam_area: int


def _binary(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f'{what} must be a 2-D HxW array, got shape {mask.shape}')
    return mask > 0


def ids_score(sam_mask: np.ndarray, cam_mask: np.ndarray,
              variant: IDSVariant = 'paper') -> float:
    """IDS = |SAM ∩ CAM| / |SAM| (``'reference'``: / (|SAM| + 1)); 0 for an empty SAM mask.

    Args:
        sam_mask: ``HxW`` SAM prediction (pixels > 0 are foreground).
        cam_mask: ``HxW`` CAM-derived initial mask of the same patch.
        variant: ``'paper'`` or ``'reference'``.
    """
    if variant not in IDS_VARIANTS:
        raise ValueError(f'variant must be one of {IDS_VARIANTS}, got {variant!r}')
    sam = _binary(sam_mask, 'sam_mask')
    cam = _binary(cam_mask, 'cam_mask')
    if sam.shape != cam.shape:
        raise ValueError(f'sam_mask shape {sam.shape} differs from cam_mask shape {cam.shape}')
    sam_area = int(sam.sum())
    intersection = int(np.logical_and(sam, cam).sum())
    if variant == 'reference':
        return intersection / (sam_area + 1)
    return intersection / sam_area if sam_area else 0.0


def ids_select(sam_mask: np.ndarray, cam_mask: np.ndarray, threshold: float = 0.9,
               variant: IDSVariant = 'paper') -> IDSResult:
    """Score a SAM prediction and decide whether it becomes a pseudo-label.

    ``'paper'``: kept iff the SAM mask is non-empty and IDS > ``threshold``.
    ``'reference'``: kept iff IDS >= ``threshold`` (an empty SAM mask has IDS 0).
    """
    ids = ids_score(sam_mask, cam_mask, variant)
    sam_area = int(_binary(sam_mask, 'sam_mask').sum())
    if variant == 'reference':
        kept = ids >= threshold
    else:
        kept = sam_area > 0 and ids > threshold
    return IDSResult(ids=float(ids), kept=bool(kept), sam_area=sam_area,
                     cam_area=int(_binary(cam_mask, 'cam_mask').sum()))
