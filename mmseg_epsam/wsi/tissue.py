"""Tissue detection on a downsampled slide image: Otsu on saturation, closing, median filter.

Pure functions on numpy arrays (OpenCV for the image operations). Stained tissue is
saturated (pink/purple) while glass and background are white or grey, so an Otsu threshold
on the HSV saturation channel separates them (docs/method.md §7). A morphological closing fills
small gaps between nuclei and a median filter removes isolated specks.
"""
from __future__ import annotations

import cv2
import numpy as np


def saturation(rgb: np.ndarray, as_fraction: bool = False) -> np.ndarray:
    """HSV saturation ``(max - min) / max`` of an RGB uint8 image (0 where max is 0).

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image.
        as_fraction: False: uint8 0..255 as OpenCV rounds it; True: the exact float32
            fraction in [0, 1].
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}')
    if not as_fraction:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    hi = rgb.max(axis=-1).astype(np.float32)
    lo = rgb.min(axis=-1).astype(np.float32)
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1), 0.0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance
    ``w0 w1 (mu0 - mu1)^2`` of the values' histogram; values above it form the upper class.

    uint8 values: OpenCV's Otsu over the 256 levels (``bins`` unused). Float values in
    [0, 1]: a ``bins``-bin histogram over [0, 1]; the threshold is the upper edge of the
    lower class's last bin.
    """
    if values.dtype == np.uint8:
        threshold, _ = cv2.threshold(np.ascontiguousarray(values), 0, 255,
                                     cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return float(threshold)
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    w1 = 1 - w0
    between = (m0[-1] * w0 - m0) ** 2 / np.maximum(w0 * w1, 1e-12)
    return float(edges[int(np.argmax(between[:-1])) + 1])


def tissue_mask(rgb: np.ndarray, closing_size: int = 5, median_size: int = 5,
                min_saturation: int = 20) -> np.ndarray:
    """Boolean tissue mask of a downsampled RGB slide image.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image (background white).
        closing_size: diameter in pixels of the elliptical closing element; 0 or 1 disables.
        median_size: median filter aperture in pixels (odd); 0 or 1 disables.
        min_saturation: floor on the threshold, so that a slide with no tissue (where Otsu
            splits sensor noise) yields an empty mask.

    Returns:
        ``(H, W)`` bool array, True on tissue: saturation > max(Otsu, min_saturation), then
        closed, then median filtered.
    """
    sat = saturation(rgb)
    threshold = max(otsu_threshold(sat), float(min_saturation))
    mask = (sat > threshold).astype(np.uint8)
    if closing_size > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (closing_size, closing_size))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    if median_size > 1:
        if median_size % 2 == 0:
            raise ValueError(f'median_size must be odd, got {median_size}')
        mask = cv2.medianBlur(mask * 255, median_size) > 127
    return mask.astype(bool)
