"""DenseCRF binarisation of CAMs (mmseg_epsam/functional/crf.py), an optional step: these
tests run where the optional pydensecrf2 package is installed."""
import numpy as np
import pytest
import torch

from mmseg_epsam.functional.cam import CAMPostprocess, cam_postprocess, initial_mask_from_cam
from mmseg_epsam.functional.crf import DenseCRF, dense_crf_mask

SIZE = 32


def two_colour_patch():
    """Left half red, right half blue; a CAM that is right on each half except for dots."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:, :SIZE // 2] = (200, 40, 40)
    image[:, SIZE // 2:] = (40, 40, 200)
    probability = np.full((SIZE, SIZE), 0.3, np.float32)
    probability[:, :SIZE // 2] = 0.7
    dots = np.random.default_rng(0).random((SIZE, SIZE)) < 0.1
    probability[dots] = 1.0 - probability[dots]  # confidently wrong pixels
    tumour = np.zeros((SIZE, SIZE), bool)
    tumour[:, :SIZE // 2] = True
    return image, probability, tumour


def test_settings_are_checked_without_the_package():
    with pytest.raises(ValueError, match='iterations'):
        DenseCRF(iterations=0)
    with pytest.raises(ValueError, match='bilateral_srgb'):
        DenseCRF(bilateral_srgb=0)
    with pytest.raises(ValueError, match='exactly one'):
        cam_postprocess('camelyon16', crf=dict())  # the quantile is still set
    with pytest.raises(ValueError, match='crf must be'):
        cam_postprocess('camelyon16', quantile=None, crf='{}')
    with pytest.raises(ValueError, match="resolution='full'"):
        cam_postprocess('camelyon17', quantile=None, crf=dict())
    settings = cam_postprocess('camelyon16', quantile=None, crf=dict(iterations=3))
    assert settings.crf == DenseCRF(iterations=3)
    assert settings.to_dict()['crf']['iterations'] == 3  # JSON-able for settings files
    with pytest.raises(ValueError, match='RGB image'):
        initial_mask_from_cam(torch.rand(1, 4, 4), (16, 16), settings)


def test_unary_only_crf_is_the_half_cut():
    pytest.importorskip('pydensecrf')
    image, probability, _ = two_colour_patch()
    mask = dense_crf_mask(image, probability,
                          DenseCRF(gaussian_compat=0, bilateral_compat=0))
    np.testing.assert_array_equal(mask, probability > 0.5)


def test_appearance_kernel_cleans_the_dots_along_the_colour_edge():
    pytest.importorskip('pydensecrf')
    image, probability, tumour = two_colour_patch()
    assert ((probability > 0.5) != tumour).sum() > 50  # the thresholded CAM is noisy
    crf = DenseCRF(iterations=10, bilateral_sxy=20, bilateral_compat=10)
    np.testing.assert_array_equal(dense_crf_mask(image, probability, crf), tumour)
    # the same through the initial-mask settings (CRF instead of the quantile, no opening)
    settings = CAMPostprocess(quantile=None, crf=crf, opening_size=(1, 1))
    _, mask = initial_mask_from_cam(torch.from_numpy(probability)[None], (SIZE, SIZE),
                                    settings, [image])
    np.testing.assert_array_equal(mask[0].numpy(), tumour)
