"""Colour jitter with torchvision ``ColorJitter`` semantics for BGR uint8 images."""
from typing import Optional, Tuple

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


def shift_hue(img: np.ndarray, hue_factor: float) -> np.ndarray:
    """Rotate the hue of a BGR uint8 image by ``hue_factor`` turns (in [-0.5, 0.5]).

    Same maths as ``mmcv.adjust_hue`` (HSV with 256 hue steps, shift wrapped modulo 256),
    which fails for negative factors under NumPy 2 (``np.uint8`` of a negative number).
    """
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL)
    hue = hsv[..., 0].astype(np.int32) + int(hue_factor * 255)
    hsv[..., 0] = np.mod(hue, 256).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL)


@TRANSFORMS.register_module()
class HistoColorJitter(BaseTransform):
    """Randomly change brightness, contrast, saturation and hue, in a random order.

    Same parameters and meaning as torchvision's ``ColorJitter``: each factor is drawn
    uniformly from ``[max(0, 1 - x), 1 + x]`` (hue: a shift drawn from ``[-hue, hue]``, at
    most 0.5), and a value of 0 disables that adjustment. The defaults are the reference
    code's ``ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2)`` (the
    paper's "colour jitter 0.2"); the demo presets use ``hue=0`` (docs/classifier_presets.md). The blends are mmcv's BGR-aware
    ``adjust_brightness`` / ``adjust_contrast`` / ``adjust_color`` and :func:`shift_hue`,
    so they act on the image as loaded by ``LoadImageFromFile``. Only ``img`` changes (masks do
    not depend on colour). Randomness comes from ``np.random`` (seeded by MMEngine).

    Args:
        brightness: Brightness jitter amount (>= 0).
        contrast: Contrast jitter amount (>= 0).
        saturation: Saturation jitter amount (>= 0).
        hue: Hue shift amount in [0, 0.5].
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2,
                 saturation: float = 0.2, hue: float = 0.2) -> None:
        super().__init__()
        for name, value in (('brightness', brightness), ('contrast', contrast),
                            ('saturation', saturation)):
            if value < 0:
                raise ValueError(f'HistoColorJitter: {name} must be >= 0, got {value}')
        if not 0 <= hue <= 0.5:
            raise ValueError(f'HistoColorJitter: hue must lie in [0, 0.5], got {hue}')
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue

    @staticmethod
    def _factor(amount: float) -> Optional[float]:
        """A multiplicative factor from ``[max(0, 1 - amount), 1 + amount]``, or None."""
        if amount == 0:
            return None
        return float(np.random.uniform(max(0.0, 1.0 - amount), 1.0 + amount))

    def _draw(self) -> Tuple[np.ndarray, list]:
        """The order of the four adjustments and their parameters (None = skip)."""
        hue_shift = float(np.random.uniform(-self.hue, self.hue)) if self.hue else None
        params = [self._factor(self.brightness), self._factor(self.contrast),
                  self._factor(self.saturation), hue_shift]
        return np.random.permutation(4), params

    def transform(self, results: dict) -> dict:
        """Jitter ``results['img']`` (BGR uint8, H x W x 3)."""
        img = results['img']
        order, params = self._draw()
        adjust = (mmcv.adjust_brightness, mmcv.adjust_contrast, mmcv.adjust_color, shift_hue)
        for index in order:
            if params[index] is not None:
                img = adjust[index](img, params[index])
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(brightness={self.brightness}, contrast='
                f'{self.contrast}, saturation={self.saturation}, hue={self.hue})')
