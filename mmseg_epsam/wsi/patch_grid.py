"""Patch grids on a slide, per-window fractions, patch labels and balanced sampling.

Pure numpy functions. Coordinates are level-0 pixels (what OpenSlide's ``read_region`` takes);
a patch of ``patch_size`` pixels at a level with downsample ``d`` covers ``patch_size * d``
level-0 pixels.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

LABEL_POSITIVE = 1
LABEL_NEGATIVE = 0
LABEL_IGNORED = -1


def grid_coordinates(level_size: tuple[int, int], patch_size: int, stride: int,
                     level_downsample: float = 1.0) -> np.ndarray:
    """Top-left corners of a true stride grid of patches lying wholly inside a level.

    Positions at the level are ``0, stride, 2*stride, ...`` up to ``size - patch_size`` on
    each axis (row-major: y outer, x inner), returned in level-0 pixels.

    Args:
        level_size: ``(width, height)`` of the level the patches are read from.
        patch_size: patch side in pixels of that level.
        stride: step in pixels of that level.
        level_downsample: the level's downsample relative to level 0.

    Returns:
        ``(N, 2)`` int64 array of level-0 ``(x, y)``; empty when the level is smaller than a patch.
    """
    if patch_size <= 0 or stride <= 0:
        raise ValueError(f'patch_size and stride must be positive, got {patch_size}, {stride}')
    width, height = level_size
    xs = np.arange(0, width - patch_size + 1, stride, dtype=np.int64)
    ys = np.arange(0, height - patch_size + 1, stride, dtype=np.int64)
    gy, gx = np.meshgrid(ys, xs, indexing='ij')
    level_xy = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return np.round(level_xy * float(level_downsample)).astype(np.int64)


def window_fractions(mask: np.ndarray, xy: np.ndarray, size: float,
                     downsample: tuple[float, float]) -> np.ndarray:
    """Fraction of True pixels of a low-resolution mask under square level-0 windows.

    Uses a summed-area table, so the cost is one pass over the mask plus O(1) per window.

    Args:
        mask: ``(H, W)`` bool/0-1 mask at ``downsample`` × level 0.
        xy: ``(N, 2)`` level-0 top-left corners.
        size: window side in level-0 pixels.
        downsample: ``(dx, dy)`` level-0 pixels per mask pixel.

    Returns:
        ``(N,)`` float64 in [0, 1]. Window edges are rounded to whole mask pixels (at least one
        pixel per window); parts outside the mask count as False.
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    height, width = mask.shape
    dtype = np.int32 if mask.size < 2 ** 31 else np.int64  # halves the table on big slides
    table = np.zeros((height + 1, width + 1), dtype)
    np.cumsum(np.cumsum(mask.astype(bool), axis=0, dtype=dtype), axis=1, out=table[1:, 1:])
    dx, dy = downsample
    x0 = np.round(xy[:, 0] / dx).astype(np.int64)
    y0 = np.round(xy[:, 1] / dy).astype(np.int64)
    x1 = np.maximum(np.round((xy[:, 0] + size) / dx).astype(np.int64), x0 + 1)
    y1 = np.maximum(np.round((xy[:, 1] + size) / dy).astype(np.int64), y0 + 1)
    area = (x1 - x0) * (y1 - y0)
    cx0, cx1 = np.clip(x0, 0, width), np.clip(x1, 0, width)
    cy0, cy1 = np.clip(y0, 0, height), np.clip(y1, 0, height)
    inside = table[cy1, cx1] - table[cy0, cx1] - table[cy1, cx0] + table[cy0, cx0]
    return inside / area


def label_patches(tumour_fraction: np.ndarray, tissue_fraction: np.ndarray,
                  pos_range: tuple[float, float] = (0.2, 0.9),
                  pos_inclusive: tuple[bool, bool] = (True, True),
                  min_tissue: float = 0.5) -> np.ndarray:
    """Image labels from tumour and tissue fractions (docs/method.md §7).

    * positive (1): ``lo <= tumour <= hi`` (each bound inclusive or not, ``pos_inclusive``);
    * negative (0): no tumour at all and ``tissue >= min_tissue``;
    * ignored (-1): anything else (a little tumour, mostly tumour, or mostly background).

    The tissue requirement applies to negatives only: positives are defined by the
    annotation, which already implies tissue.
    """
    tumour = np.asarray(tumour_fraction, np.float64)
    tissue = np.asarray(tissue_fraction, np.float64)
    lo, hi = pos_range
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f'pos_range must satisfy 0 < lo <= hi <= 1, got {pos_range}')
    above = tumour >= lo if pos_inclusive[0] else tumour > lo
    below = tumour <= hi if pos_inclusive[1] else tumour < hi
    labels = np.full(tumour.shape, LABEL_IGNORED, np.int8)
    labels[(tumour == 0) & (tissue >= min_tissue)] = LABEL_NEGATIVE
    labels[above & below] = LABEL_POSITIVE
    return labels


def fraction_bins(fractions: np.ndarray, pos_range: tuple[float, float], n_bins: int) -> np.ndarray:
    """Equal-width bin index in ``[0, n_bins)`` of each fraction within ``pos_range``.

    Bins are closed on the left: with (0.2, 0.9) and 7 bins, 0.3 is in bin 1 (a 1e-9 margin
    absorbs floating-point error such as ``(0.3 - 0.2) / 0.1 = 0.999...``).
    """
    lo, hi = pos_range
    width = (hi - lo) / n_bins if hi > lo else 1.0
    bins = np.floor((np.asarray(fractions, np.float64) - lo) / width + 1e-9).astype(np.int64)
    return np.clip(bins, 0, n_bins - 1)


def balanced_sample(groups: np.ndarray, target: Optional[int],
                    rng: np.random.Generator) -> np.ndarray:
    """Pick ``target`` items spread as evenly as possible over groups (water-filling).

    Every group contributes ``min(count, cap)`` items for the smallest common cap that reaches
    the target; the last few items go to randomly chosen groups that still have items. Items
    within a group are drawn uniformly at random.

    Args:
        groups: ``(N,)`` group key of each item (any sortable dtype).
        target: number of items wanted; None (or >= N) keeps everything.
        rng: the random generator (seeded by the caller).

    Returns:
        Sorted indices of the chosen items.
    """
    groups = np.asarray(groups)
    n = len(groups)
    if target is None or target >= n:
        return np.arange(n)
    if target <= 0:
        return np.zeros(0, np.int64)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    lo, hi = 0, int(counts.max())  # largest cap whose total does not exceed the target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() <= target:
            lo = mid
        else:
            hi = mid - 1
    take = np.minimum(counts, lo)
    extra = target - int(take.sum())
    if extra > 0:
        open_groups = np.flatnonzero(counts > lo)
        take[rng.choice(open_groups, size=extra, replace=False)] += 1
    members_by_group = np.split(np.argsort(inverse, kind='stable'), np.cumsum(counts)[:-1])
    chosen = [rng.permutation(members)[:k] for members, k in zip(members_by_group, take)]
    return np.sort(np.concatenate(chosen))


def select_patches(slide_ids: Sequence[str] | np.ndarray, labels: np.ndarray,
                   tumour_fraction: np.ndarray, target_pos: Optional[int],
                   target_neg: Optional[int], pos_range: tuple[float, float] = (0.2, 0.9),
                   pos_bins: int = 7, max_per_slide: Optional[int] = None,
                   seed: int | Sequence[int] = 0) -> np.ndarray:
    """Choose the patches to keep from the candidates of one split (seeded, balanced).

    Positives are balanced over ``pos_bins`` equal tumour-fraction bins of ``pos_range``
    (each bin capped, so that e.g. 20-30 % and 80-90 % patches are equally common), negatives
    over slides (each slide capped). With ``max_per_slide``, each slide first offers at most
    ``max_per_slide // 2`` positives and fills the rest of its cap with negatives, drawn at
    random, so no slide ends up with more than ``max_per_slide`` kept patches.

    Args:
        slide_ids: ``(N,)`` slide of each candidate.
        labels: ``(N,)`` 1 positive, 0 negative, -1 ignored (never kept).
        tumour_fraction: ``(N,)`` tumour fraction of each candidate.
        target_pos, target_neg: wanted counts; None keeps all.
        pos_range: the positive tumour-fraction range (for the bins).
        pos_bins: number of tumour-fraction bins for positives.
        max_per_slide: optional cap on kept patches per slide.
        seed: random seed (an int or a sequence of ints, as numpy's ``default_rng`` takes).

    Returns:
        ``(N,)`` bool, True for kept candidates.
    """
    slide_ids = np.asarray(slide_ids)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    pool = labels >= 0
    if max_per_slide is not None:
        pool = np.zeros(len(labels), bool)
        for slide in np.unique(slide_ids):
            in_slide = slide_ids == slide
            positives = rng.permutation(np.flatnonzero(in_slide & (labels == LABEL_POSITIVE)))
            positives = positives[:max_per_slide // 2]
            negatives = rng.permutation(np.flatnonzero(in_slide & (labels == LABEL_NEGATIVE)))
            pool[positives] = True
            pool[negatives[:max_per_slide - len(positives)]] = True
    kept = np.zeros(len(labels), bool)
    positives = np.flatnonzero(pool & (labels == LABEL_POSITIVE))
    bins = fraction_bins(tumour_fraction[positives], pos_range, pos_bins)
    kept[positives[balanced_sample(bins, target_pos, rng)]] = True
    negatives = np.flatnonzero(pool & (labels == LABEL_NEGATIVE))
    kept[negatives[balanced_sample(slide_ids[negatives], target_neg, rng)]] = True
    return kept
