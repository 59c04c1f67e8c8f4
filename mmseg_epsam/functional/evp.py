"""Explicit visual prompt (EVP): the high-frequency component of an image (docs/method.md §1).

The EVP of an RGB image is computed per channel: 2-D FFT, shift the zero frequency to the
centre, zero a centred square of low frequencies, shift back, inverse FFT, take the absolute
value of the real part, and average over the channels. EP-SAM feeds it to the classifier as a
fourth input channel (or adds it to the image).
"""
import math
from typing import Literal, Optional

import torch

FFTNorm = Literal['forward', 'backward', 'ortho']


def low_frequency_square_size(height: int, width: int, mask_size: Optional[int] = 2,
                              mask_ratio: Optional[float] = None) -> int:
    """Side, in frequency bins, of the centred low-frequency square that the EVP zeroes.

    Exactly one of ``mask_size`` and ``mask_ratio`` is used:

    - ``mask_size``: the side in bins (the EP-SAM reference uses 2: the DC bin and its three
      neighbours towards negative frequencies).
    - ``mask_ratio`` (tau of the EVP paper, Liu et al. CVPR 2023, e.g. 0.25): the square covers
      about ``tau * height * width`` bins; its side is ``2 * floor(sqrt(tau * H * W) / 2)``.

    Args:
        height: Image height in pixels (= frequency bins).
        width: Image width in pixels.
        mask_size: Side of the square in bins, or None when ``mask_ratio`` is given.
        mask_ratio: Area fraction of the square in (0, 1], or None when ``mask_size`` is given.

    Returns:
        The side of the square, clipped to ``min(height, width)``.
    """
    if (mask_size is None) == (mask_ratio is None):
        raise ValueError('give exactly one of mask_size (bins) and mask_ratio (area fraction), '
                         f'got mask_size={mask_size!r}, mask_ratio={mask_ratio!r}')
    if mask_size is not None:
        if mask_size < 0:
            raise ValueError(f'mask_size must be >= 0 bins, got {mask_size}')
        side = int(mask_size)
    else:
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f'mask_ratio must lie in (0, 1], got {mask_ratio}')
        side = 2 * int(math.sqrt(mask_ratio * height * width) // 2)
    return min(side, height, width)


def evp_high_frequency(images: torch.Tensor, mask_size: Optional[int] = 2,
                       mask_ratio: Optional[float] = None,
                       norm: FFTNorm = 'forward') -> torch.Tensor:
    """Explicit visual prompt: high-frequency magnitude of a batch of images (docs/method.md §1).

    For each channel ``x_c``: ``X = fftshift(fft2(x_c))``; ``X[r0:r0+s, c0:c0+s] = 0`` with
    ``r0 = H//2 - s//2``, ``c0 = W//2 - s//2`` (the DC bin sits at ``(H//2, W//2)`` after the
    shift); ``e_c = |Re(ifft2(ifftshift(X)))|``. The EVP is ``mean_c e_c``.

    ``norm`` is used for both the forward and the inverse transform (the reference's
    ``"forward"``); since the pair is then an exact inverse, the result does not depend on it
    beyond float rounding.

    Args:
        images: Float tensor ``[B, C, H, W]`` with values in [0, 1] (no mean/std normalisation).
        mask_size: Side of the zeroed low-frequency square in bins (default 2, the reference).
        mask_ratio: Alternatively, the area fraction of the square (tau, e.g. 0.25).
        norm: FFT normalisation mode, ``"forward"``, ``"backward"`` or ``"ortho"``.

    Returns:
        Tensor ``[B, 1, H, W]`` in the dtype of ``images``.
    """
    if images.ndim != 4:
        raise ValueError(f'images must be [B, C, H, W], got shape {tuple(images.shape)}')
    if not images.is_floating_point():
        raise TypeError(f'images must be a float tensor in [0, 1], got {images.dtype}')
    height, width = images.shape[-2:]
    side = low_frequency_square_size(height, width, mask_size, mask_ratio)
    # FFTs in at least float32 (half-precision FFTs need power-of-two sizes).
    work = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
    spectrum = torch.fft.fftshift(torch.fft.fft2(work, norm=norm), dim=(-2, -1))
    if side > 0:
        row0, col0 = height // 2 - side // 2, width // 2 - side // 2
        keep = torch.ones((height, width), dtype=torch.bool, device=images.device)
        keep[row0:row0 + side, col0:col0 + side] = False
        spectrum = spectrum * keep
    high_pass = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1)), norm=norm)
    return high_pass.real.abs().mean(dim=1, keepdim=True).to(images.dtype)
