"""Tests for the explicit visual prompt (mmseg_epsam/functional/evp.py)."""
import numpy as np
import pytest
import torch

from mmseg_epsam.functional.evp import evp_high_frequency, low_frequency_square_size


def numpy_evp(images: np.ndarray, side: int) -> np.ndarray:
    """Direct NumPy implementation of the EVP definition for a [B, C, H, W] array."""
    batch, channels, height, width = images.shape
    out = np.zeros((batch, 1, height, width))
    for b in range(batch):
        for c in range(channels):
            spectrum = np.fft.fftshift(np.fft.fft2(images[b, c]))
            cy, cx = height // 2, width // 2
            for r in range(cy - side // 2, cy - side // 2 + side):
                for q in range(cx - side // 2, cx - side // 2 + side):
                    spectrum[r, q] = 0
            out[b, 0] += np.abs(np.real(np.fft.ifft2(np.fft.ifftshift(spectrum)))) / channels
    return out


@pytest.mark.parametrize('shape,side', [((2, 3, 16, 16), 2), ((1, 3, 15, 20), 2),
                                        ((1, 3, 16, 12), 5), ((2, 3, 8, 8), 0)])
def test_evp_matches_numpy(shape, side):
    rng = np.random.default_rng(0)
    images = rng.random(shape)
    expected = numpy_evp(images, side)
    got = evp_high_frequency(torch.from_numpy(images), mask_size=side).numpy()
    assert got.shape == (shape[0], 1) + shape[2:]
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_evp_ratio_matches_numpy_and_norms_agree():
    rng = np.random.default_rng(1)
    images = rng.random((1, 3, 16, 16)).astype(np.float32)
    # tau = 0.25 of 16x16 -> 64 bins -> side 8
    assert low_frequency_square_size(16, 16, mask_size=None, mask_ratio=0.25) == 8
    expected = numpy_evp(images.astype(np.float64), 8)
    tensor = torch.from_numpy(images)
    for norm in ('forward', 'backward', 'ortho'):
        got = evp_high_frequency(tensor, mask_size=None, mask_ratio=0.25, norm=norm)
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_evp_removes_constant_and_default_is_two_bins():
    constant = torch.full((1, 3, 8, 8), 0.7, dtype=torch.float64)
    assert evp_high_frequency(constant).abs().max() < 1e-12
    # Zeroing only DC gives |x - mean(x)|; the 2x2 default also removes three neighbours,
    # so it differs from that on a generic image.
    images = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    dc_only = evp_high_frequency(images, mask_size=1)
    centred = (images - images.mean(dim=(-2, -1), keepdim=True)).abs().mean(1, keepdim=True)
    torch.testing.assert_close(dc_only, centred)
    assert not torch.allclose(evp_high_frequency(images), centred)


def test_evp_bad_arguments():
    with pytest.raises(ValueError, match='exactly one'):
        evp_high_frequency(torch.rand(1, 3, 8, 8), mask_size=2, mask_ratio=0.25)
    with pytest.raises(ValueError, match='mask_ratio'):
        evp_high_frequency(torch.rand(1, 3, 8, 8), mask_size=None, mask_ratio=1.5)
    with pytest.raises(ValueError, match=r'\[B, C, H, W\]'):
        evp_high_frequency(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match='float'):
        evp_high_frequency(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
