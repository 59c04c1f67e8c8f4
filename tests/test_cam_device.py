"""Device-side CAM post-processing: the loop-free quantile threshold and the max-pool
opening, bit for bit against the reference implementations (kthvalue loop, OpenCV)."""
import cv2
import numpy as np
import pytest
import torch

from mmseg_epsam.functional.cam import binary_opening, quantile_threshold
from mmseg_epsam.functional.cam_device import quantile_threshold_sorted


def random_cams(seed: int, batch: int, height: int, width: int) -> torch.Tensor:
    """CAM-like maps: a quarter of the pixels exactly 0, uint8-level ties, one all-zero map."""
    rng = np.random.default_rng(seed)
    cams = np.floor(rng.random((batch, height, width)) * 255) / 255
    cams[rng.random(cams.shape) < 0.25] = 0
    cams[-1] = 0
    return torch.from_numpy(cams.astype(np.float32))


@pytest.mark.parametrize('quantile', [0.0, 0.1, 0.3, 0.5, 0.999, 1.0])
def test_sorted_quantile_threshold_equals_the_kthvalue_loop(quantile):
    cams = random_cams(int(quantile * 1000), 4, 64, 48)
    expected = quantile_threshold(cams, quantile)
    ours = quantile_threshold_sorted(cams, quantile)
    assert ours.dtype == torch.bool and ours.shape == cams.shape
    assert torch.equal(ours, expected)
    assert not ours[-1].any()  # the all-zero map
    if 0 < quantile < 1:
        assert 0 < ours[0].sum() < (cams[0] > 0).sum()


def test_sorted_quantile_threshold_at_patch_size_and_hand_made():
    cam = random_cams(7, 2, 512, 512)
    assert torch.equal(quantile_threshold_sorted(cam, 0.1), quantile_threshold(cam, 0.1))
    assert torch.equal(quantile_threshold_sorted(cam[0], 0.1), quantile_threshold(cam[0], 0.1))
    # 7 non-zero values; q=0.3 -> floor(2.1) = 2 lowest (0.1, 0.2) become 0.
    small = torch.tensor([[0.0, 0.1, 0.2], [0.3, 0.4, 0.5], [0.0, 0.6, 0.7]])
    assert quantile_threshold_sorted(small, 0.3).int().tolist() == [[0, 0, 0], [1, 1, 1],
                                                                    [0, 1, 1]]
    # Ties with the threshold stay: [.2, .5, .5, .5], q=0.5 -> k=2, t=.5 -> only .2 drops.
    ties = torch.tensor([[0.5, 0.5], [0.5, 0.2]])
    assert quantile_threshold_sorted(ties, 0.5).int().tolist() == [[1, 1], [1, 0]]
    assert quantile_threshold_sorted(torch.zeros(0, 4, 4), 0.1).shape == (0, 4, 4)
    with pytest.raises(ValueError, match='quantile'):
        quantile_threshold_sorted(small, -0.1)
    with pytest.raises(ValueError, match=r'\[\.\.\., H, W\]'):
        quantile_threshold_sorted(torch.ones(4), 0.1)


@pytest.mark.parametrize('kernel', [(5, 5), (21, 21), (7, 21), (1, 5)])
@pytest.mark.parametrize('density', [0.5, 0.9])
def test_max_pool_opening_equals_opencv_on_random_masks(kernel, density):
    """Pure random masks (sparse and dense, so borders matter) on a non-square grid."""
    rng = np.random.default_rng(kernel[0] * 100 + kernel[1])
    masks = (rng.random((3, 150, 203)) < density).astype(np.uint8)
    masks[1] = cv2.dilate(masks[1], np.ones((9, 9), np.uint8))  # blobs that survive
    ours = binary_opening(torch.from_numpy(masks), kernel).numpy().astype(np.uint8)
    for mask, opened in zip(masks, ours):
        expected = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones(kernel, np.uint8))
        np.testing.assert_array_equal(opened, expected)
    assert 0 < ours.sum() < masks.sum()
