"""Tissue detection on a downsampled slide image: Otsu on saturation, closing, median filter.

Pure functions on numpy arrays (OpenCV for the image operations). Stained tissue is
saturated (pink/purple) while glass and background are white or grey, so an Otsu threshold
on the HSV saturation channel separates them (docs/method.md §7). A morphological closing fills
small gaps between nuclei and a median filter removes isolated specks.
"""
from __future__ import annotations

import cv2
import numpy as np


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (uint8, 0..255) of an RGB uint8 image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}')
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of a uint8 image (the value maximising between-class variance)."""
    threshold, _ = cv2.threshold(np.ascontiguousarray(values), 0, 255,
                                 cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(threshold)


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
