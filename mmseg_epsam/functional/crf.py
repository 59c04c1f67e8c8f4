"""DenseCRF binarisation of a CAM (Krähenbühl & Koltun, NeurIPS 2011), an optional
post-processing step for the CAM ablation (paper Table 3; docs/cam_presets.md).

The fused CAM in [0, 1] is read as the tumour probability of each pixel; a fully connected
CRF with a Gaussian (smoothness) and a bilateral (appearance) kernel over the patch's RGB
image gives the mask. Inference runs in the ``pydensecrf2`` package (import name
``pydensecrf``, a maintained build of ``pydensecrf`` for NumPy 2), an optional dependency:
``pip install pydensecrf2`` (it compiles C++ at install time).
"""
import dataclasses

import numpy as np

# Kept away from 0 and 1 so that the unary energy -log(p) stays finite.
PROBABILITY_FLOOR = 1e-5


@dataclasses.dataclass(frozen=True)
class DenseCRF:
    """Kernel settings of the CRF; the defaults are pydensecrf's documented example.

    Attributes:
        iterations: Mean-field iterations.
        gaussian_sxy: Spatial scale (pixels) of the smoothness kernel.
        gaussian_compat: Weight of the smoothness kernel (0: off).
        bilateral_sxy: Spatial scale (pixels) of the appearance kernel.
        bilateral_srgb: Colour scale (0-255 units) of the appearance kernel.
        bilateral_compat: Weight of the appearance kernel (0: off).
    """

    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    def __post_init__(self) -> None:
        """Validate the settings."""
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f'CRF iterations must be a positive int, got {self.iterations!r}')
        for name in ('gaussian_sxy', 'bilateral_sxy', 'bilateral_srgb'):
            if getattr(self, name) <= 0:
                raise ValueError(f'CRF {name} must be positive, got {getattr(self, name)}')
        for name in ('gaussian_compat', 'bilateral_compat'):
            if getattr(self, name) < 0:
                raise ValueError(f'CRF {name} must be >= 0, got {getattr(self, name)}')


def dense_crf_mask(image_rgb: np.ndarray, tumour_probability: np.ndarray,
                   settings: DenseCRF) -> np.ndarray:
    """The CRF's most likely labelling of one patch: a bool mask ``H x W``.

    Args:
        image_rgb: The patch, uint8 ``H x W x 3`` in RGB order.
        tumour_probability: Per-pixel tumour probability ``H x W`` (the fused CAM, at the
            image's resolution); background is ``1 - p``.
        settings: Kernel settings.
    """
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f'CRF image must be uint8 H x W x 3, got {image_rgb.dtype} '
                         f'{image_rgb.shape}')
    if tumour_probability.shape != image_rgb.shape[:2]:
        raise ValueError(f'CRF probability map {tumour_probability.shape} does not match the '
                         f'image {image_rgb.shape[:2]}')
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise ImportError('DenseCRF post-processing needs the optional package pydensecrf2 '
                          '(pip install pydensecrf2)') from exc
    height, width = tumour_probability.shape
    probability = np.clip(tumour_probability.astype(np.float32), PROBABILITY_FLOOR,
                          1.0 - PROBABILITY_FLOOR)
    unary = -np.log(np.stack([1.0 - probability, probability]).reshape(2, -1))
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    if settings.gaussian_compat > 0:
        crf.addPairwiseGaussian(sxy=settings.gaussian_sxy, compat=settings.gaussian_compat)
    if settings.bilateral_compat > 0:
        crf.addPairwiseBilateral(sxy=settings.bilateral_sxy, srgb=settings.bilateral_srgb,
                                 rgbim=np.ascontiguousarray(image_rgb),
                                 compat=settings.bilateral_compat)
    marginals = np.array(crf.inference(settings.iterations)).reshape(2, height, width)
    return marginals[1] > marginals[0]
