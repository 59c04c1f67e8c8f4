"""CAM maths: normalisation, rotate & fuse (Eq. 3), threshold, opening, resizing, presets."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg_epsam.functional.cam import (CAM_POSTPROCESS_PRESETS, CAMPostprocess,
                                        binary_opening, cam_postprocess,
                                        initial_mask_from_cam, normalize_cam,
                                        quantile_threshold, quantize_uint8_levels,
                                        resize_maps, rotate_and_fuse_cams)


class EquivariantStandIn(nn.Module):
    """Stand-in for the classifier's ``compute_cam``, rotation-equivariant by construction.

    A 1x1 convolution, ReLU and a 4x4 average pool aligned with the image grid: rotating the
    input by 90 degrees rotates the CAM by 90 degrees (H and W divisible by 4).
    """

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.tensor([1.0, -0.5, 0.3]).reshape(1, 3, 1, 1))
            self.proj.bias.fill_(-0.2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.relu(F.avg_pool2d(self.proj(inputs), 4))[:, 0]


class BatchCountingStandIn(nn.Module):
    """Stand-in ``compute_cam`` that is NOT rotation-equivariant (a position ramp and a
    strided 3x3 conv with BatchNorm in eval mode) and records the batch size of each call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 1, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(1)
        self.bn.running_mean.fill_(0.1)
        self.bn.running_var.fill_(2.0)
        self.eval()
        self.calls = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls.append(inputs.shape[0])
        out = self.bn(self.conv(inputs))[:, 0]
        ramp = torch.linspace(0, 1, out.shape[-1])
        return F.relu(out + ramp)


def reference_fuse(cam_fn, inputs: torch.Tensor, quantize: bool = False) -> np.ndarray:
    """Eq. 3 written out with NumPy rotations, one view per call."""
    views = []
    for k in range(4):
        rotated = torch.from_numpy(np.ascontiguousarray(np.rot90(inputs.numpy(), k, (2, 3))))
        cam = np.rot90(cam_fn(rotated).detach().numpy(), -k, (1, 2)).astype(np.float64)
        low = cam.min(axis=(1, 2), keepdims=True)
        span = cam.max(axis=(1, 2), keepdims=True) - low
        view = np.where(span > 0, (cam - low) / np.where(span > 0, span, 1), 0)
        views.append(np.floor(view * 255) / 255 if quantize else view)
    return np.mean(views, axis=0)


def test_normalize_cam_per_image_and_constant_maps():
    cam = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]],
                        [[0.0, 0.0], [0.0, 0.0]]])
    out = normalize_cam(cam)
    assert torch.equal(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))
    assert torch.equal(out[2], torch.zeros(2, 2))
    assert normalize_cam(torch.zeros(0, 3, 3)).shape == (0, 3, 3)
    with pytest.raises(ValueError, match='NaN'):
        normalize_cam(torch.tensor([[[0.0, float('nan')]]]))


def test_quantize_uint8_levels_floors_to_255ths():
    values = torch.tensor([0.0, 0.5, 1.0, 0.999])
    assert torch.equal(quantize_uint8_levels(values) * 255,
                       torch.tensor([0.0, 127.0, 255.0, 254.0]))


def test_rotate_fuse_of_equivariant_model_is_the_single_view_cam():
    model = EquivariantStandIn()
    inputs = torch.rand(2, 3, 16, 16)
    single = normalize_cam(model(inputs))
    assert single.abs().sum() > 0
    fused = rotate_and_fuse_cams(model, inputs)
    torch.testing.assert_close(fused, single, atol=1e-5, rtol=0)
    fused_q = rotate_and_fuse_cams(model, inputs, quantize_uint8=True)
    # Rotated views differ from the single view by float rounding, which can move a value
    # across a 1/255 step: allow one step.
    assert (fused_q - quantize_uint8_levels(single)).abs().max() <= 1 / 255 + 1e-6


def test_rotate_fuse_matches_eq3_written_out_for_a_non_equivariant_model():
    model = BatchCountingStandIn()
    inputs = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        for quantize in (False, True):
            fused = rotate_and_fuse_cams(model, inputs, quantize_uint8=quantize).numpy()
            np.testing.assert_allclose(fused, reference_fuse(model, inputs, quantize),
                                       atol=1e-5 if not quantize else 1 / 255 + 1e-6)
        single = normalize_cam(model(inputs)).numpy()
    assert np.abs(fused - single).max() > 0.05  # the views really differ for this model


@pytest.mark.parametrize('views_per_forward,expected_calls', [(1, [2, 2, 2, 2]), (2, [4, 4]),
                                                              (4, [8])])
def test_batched_views_equal_single_forwards(views_per_forward, expected_calls):
    model = BatchCountingStandIn()
    inputs = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        single = rotate_and_fuse_cams(model, inputs, views_per_forward=1)
        model.calls.clear()
        batched = rotate_and_fuse_cams(model, inputs, views_per_forward=views_per_forward)
    assert model.calls == expected_calls
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)


def test_non_square_inputs_group_views_by_shape():
    model = BatchCountingStandIn()
    inputs = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        single = rotate_and_fuse_cams(model, inputs, views_per_forward=1)
        paired = rotate_and_fuse_cams(model, inputs, views_per_forward=2)
        np.testing.assert_allclose(single.numpy(), reference_fuse(model, inputs), atol=1e-5)
    torch.testing.assert_close(paired, single, atol=1e-6, rtol=0)
    assert single.shape == (1, 6, 10)
    with pytest.raises(ValueError, match='different shapes'):
        rotate_and_fuse_cams(model, inputs, views_per_forward=4)


def test_single_view_fuse_and_bad_arguments():
    model = BatchCountingStandIn()
    inputs = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        plain = rotate_and_fuse_cams(model, inputs, quarter_turns=(0, ))
        torch.testing.assert_close(plain, normalize_cam(model(inputs)))
    with pytest.raises(ValueError, match='views_per_forward'):
        rotate_and_fuse_cams(model, inputs, views_per_forward=0)
    with pytest.raises(ValueError, match='quarter_turns'):
        rotate_and_fuse_cams(model, inputs, quarter_turns=(5, ))
    with pytest.raises(ValueError, match=r'\[N, h, w\]'):
        rotate_and_fuse_cams(lambda x: x[:, :1], inputs)


def test_constant_model_fuses_to_zeros():
    inputs = torch.rand(2, 3, 8, 8)
    fused = rotate_and_fuse_cams(lambda x: torch.full((x.shape[0], 2, 2), 3.0), inputs)
    assert torch.equal(fused, torch.zeros(2, 2, 2))


def test_quantile_threshold_hand_made():
    cam = torch.tensor([[0.0, 0.1, 0.2], [0.3, 0.4, 0.5], [0.0, 0.6, 0.7]])
    # 7 non-zero values; q=0.3 -> floor(2.1) = 2 lowest (0.1, 0.2) become 0.
    assert quantile_threshold(cam, 0.3).int().tolist() == [[0, 0, 0], [1, 1, 1], [0, 1, 1]]
    # q=0.1 -> floor(0.7) = 0: every non-zero activation stays.
    assert quantile_threshold(cam, 0.1).int().tolist() == [[0, 1, 1], [1, 1, 1], [0, 1, 1]]
    assert quantile_threshold(cam, 1.0).sum() == 0
    # Ties with the threshold stay: [.2, .5, .5, .5], q=0.5 -> k=2, t=.5 -> only .2 drops.
    ties = torch.tensor([[0.5, 0.5], [0.5, 0.2]])
    assert quantile_threshold(ties, 0.5).int().tolist() == [[1, 1], [1, 0]]
    # 10 distinct non-zero values, q=0.3: exactly 3 drop; batch maps are independent.
    batch = torch.stack([torch.arange(1, 11.0).reshape(2, 5), torch.zeros(2, 5)])
    out = quantile_threshold(batch, 0.3)
    assert out[0].int().tolist() == [[0, 0, 0, 1, 1], [1, 1, 1, 1, 1]]
    assert out[1].sum() == 0
    with pytest.raises(ValueError, match='quantile'):
        quantile_threshold(cam, 1.5)


def test_quantile_threshold_percentile_strict_rule():
    # 5 non-zero values [1, 2, 2, 2, 5]: the linear 20th percentile is at rank 0.2 * 4 = 0.8,
    # 1 + 0.8 * (2 - 1) = 1.8; strict '>' keeps the three 2s and the 5.
    cam = torch.tensor([[0.0, 1.0, 2.0], [2.0, 2.0, 5.0]])
    assert quantile_threshold(cam, 0.2, 'percentile_strict').int().tolist() == \
        [[0, 0, 1], [1, 1, 1]]
    # at q = 0.4 the percentile lands on a tie (2.0): strict '>' drops every 2, 'rank' keeps them
    assert quantile_threshold(cam, 0.4, 'percentile_strict').int().tolist() == \
        [[0, 0, 0], [0, 0, 1]]
    assert quantile_threshold(cam, 0.4, 'rank').int().tolist() == [[0, 0, 1], [1, 1, 1]]
    # uint8 levels with many ties: numpy's percentile with '>' on the non-zero values
    levels = torch.from_numpy(np.random.default_rng(0).integers(0, 12, (3, 9, 9))).float()
    masks = quantile_threshold(levels, 0.2, 'percentile_strict')
    for level_map, mask in zip(levels.numpy(), masks.numpy()):
        threshold = np.percentile(level_map[level_map != 0], 20)
        np.testing.assert_array_equal(mask, level_map > threshold)
    assert quantile_threshold(torch.zeros(4, 4), 0.2, 'percentile_strict').sum() == 0
    with pytest.raises(ValueError, match='rule'):
        quantile_threshold(cam, 0.2, 'median')


def test_reference_mirror_preset_follows_its_description():
    """docs/cam_presets.md: per-view uint8 CAMs averaged and stored as uint8, the 20th
    percentile of the non-zero values with '>', a 5x5 opening (OpenCV) at feature
    resolution, then a bilinear upsampling of the 0/1 mask rounded to uint8."""
    settings = CAM_POSTPROCESS_PRESETS['reference_mirror']
    torch.manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing='ij')
    blob = torch.exp(-((rows - 6) ** 2 + (cols - 9) ** 2) / 32)
    views = torch.relu(blob + 0.1 * torch.randn(4, 16, 16) - 0.2) * torch.rand(4, 1, 1) * 5
    fused = rotate_and_fuse_cams(lambda x: views, torch.zeros(1, 3, 16, 16),
                                 quarter_turns=settings.quarter_turns,
                                 quantize_uint8=settings.quantize_uint8)
    _, mask = initial_mask_from_cam(fused, (32, 32), settings)
    # the same steps written out with numpy and OpenCV
    uint8_views = []
    for k, view in enumerate(views.numpy().astype(np.float32)):
        normalised = (view - view.min()) / (view.max() - view.min())
        uint8_views.append(np.rot90(np.uint8(255 * normalised), -k))
    fused_uint8 = np.uint8(np.mean(uint8_views, axis=0))
    binary = (fused_uint8 > np.percentile(fused_uint8[fused_uint8 != 0], 20)).astype(np.uint8)
    opened = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    expected = cv2.resize(opened, (32, 32), interpolation=cv2.INTER_LINEAR) != 0
    assert 0 < expected.sum() < expected.size  # a non-trivial mask
    np.testing.assert_array_equal(mask[0].numpy(), expected)
    assert (settings.quantile, settings.opening_size, settings.resolution) == \
        (0.20, (5, 5), 'feature')


def test_binary_opening_hand_made():
    mask = np.zeros((8, 8), np.uint8)
    mask[0:3, 0:3] = 1   # 3x3 block touching the border: kept
    mask[1:3, 5:8] = 1   # 2x3 bar: thinner than the kernel, removed
    mask[4:7, 3:7] = 1   # 3x4 block: kept
    mask[7, 0] = 1       # single pixel: removed
    expected = np.zeros((8, 8), np.uint8)
    expected[0:3, 0:3] = 1
    expected[4:7, 3:7] = 1
    opened = binary_opening(torch.from_numpy(mask), 3)
    assert opened.dtype == torch.bool
    np.testing.assert_array_equal(opened.numpy().astype(np.uint8), expected)
    # A 1x3 kernel only removes things narrower than 3 columns.
    wide = binary_opening(torch.from_numpy(mask), (1, 3)).numpy().astype(np.uint8)
    expected_wide = mask.copy()
    expected_wide[7, 0] = 0
    np.testing.assert_array_equal(wide, expected_wide)
    assert torch.equal(binary_opening(torch.from_numpy(mask), 1), torch.from_numpy(mask > 0))
    with pytest.raises(ValueError, match='odd'):
        binary_opening(torch.from_numpy(mask), 4)
    # As in OpenCV, outside the image counts as foreground for the erosion: a 2-row bar
    # along the border is not eroded from that side and stays.
    edge = torch.zeros(6, 6, dtype=torch.bool)
    edge[0:2] = True
    assert torch.equal(binary_opening(edge, 3), edge)


@pytest.mark.parametrize('kernel', [(3, 3), (5, 3), (21, 21)])
def test_binary_opening_matches_opencv(kernel):
    rng = np.random.default_rng(kernel[0])
    blobs = cv2.resize(rng.random((3, 4, 4)).transpose(1, 2, 0), (96, 96)) > 0.5
    masks = (blobs.transpose(2, 0, 1) | (rng.random((3, 96, 96)) > 0.97)).astype(np.uint8)
    ours = binary_opening(torch.from_numpy(masks), kernel).numpy().astype(np.uint8)
    for mask, opened in zip(masks, ours):
        expected = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones(kernel, np.uint8))
        np.testing.assert_array_equal(opened, expected)
    assert 0 < ours.sum() < masks.sum()


def test_resize_maps_interpolations():
    cam = torch.tensor([[0.0, 1.0], [0.5, 0.25]])
    nearest = resize_maps(cam, (4, 4), 'nearest')
    assert torch.equal(nearest, cam.repeat_interleave(2, 0).repeat_interleave(2, 1))
    bilinear = resize_maps(cam, (4, 4), 'bilinear')
    assert bilinear[0, 0] == 0.0 and bilinear[0, 3] == 1.0
    assert bilinear[0, 1] == pytest.approx(0.25)  # a quarter of the way from 0 to 1
    spike = torch.zeros(4, 4)
    spike[1:3, 1:3] = 1.0
    bicubic = resize_maps(spike, (16, 16), 'bicubic')
    assert bicubic.min() >= 0.0 and bicubic.max() <= 1.0
    assert torch.equal(resize_maps(cam, (2, 2)), cam)
    with pytest.raises(ValueError, match='interpolation'):
        resize_maps(cam, (4, 4), 'lanczos')


def test_initial_mask_feature_resolution_then_upsampled():
    cam = torch.zeros(1, 8, 8)
    cam[0, 2:6, 2:6] = torch.linspace(0.5, 1.0, 16).reshape(4, 4)
    cam[0, 7, 7] = 1.0  # isolated activation, removed by the 3x3 opening
    settings = CAMPostprocess(quantile=0.0, opening_size=(3, 3), resolution='feature')
    full_cam, mask = initial_mask_from_cam(cam, (16, 16), settings)
    expected = np.zeros((16, 16), bool)
    expected[4:12, 4:12] = True
    np.testing.assert_array_equal(mask[0].numpy(), expected)
    assert full_cam.shape == (1, 16, 16) and full_cam.max() <= 1.0
    nearest = CAMPostprocess(quantile=0.0, opening_size=(3, 3), resolution='feature',
                             mask_interpolation='nearest')
    np.testing.assert_array_equal(initial_mask_from_cam(cam, (16, 16), nearest)[1][0].numpy(),
                                  expected)


def test_initial_mask_full_resolution_thresholds_the_upsampled_cam():
    cam = torch.zeros(1, 4, 4)
    cam[0, 1:3, 1:3] = 1.0
    settings = CAMPostprocess(quantile=0.5, opening_size=(1, 1), resolution='full',
                              cam_interpolation='nearest')
    full_cam, mask = initial_mask_from_cam(cam, (8, 8), settings)
    # All 16 non-zero upsampled values are equal (ties): all stay.
    np.testing.assert_array_equal(mask[0].numpy(), full_cam[0].numpy() > 0)
    assert mask.sum() == 16


@pytest.mark.parametrize('preset', sorted(CAM_POSTPROCESS_PRESETS))
@pytest.mark.parametrize('value', [0.0, 2.5])
def test_empty_and_constant_cams_give_empty_masks(preset, value):
    settings = CAM_POSTPROCESS_PRESETS[preset]
    fused = rotate_and_fuse_cams(lambda x: torch.full((x.shape[0], 4, 4), value),
                                 torch.rand(1, 3, 8, 8), quarter_turns=settings.quarter_turns,
                                 quantize_uint8=settings.quantize_uint8)
    full_cam, mask = initial_mask_from_cam(fused, (32, 32), settings)
    assert not torch.isnan(full_cam).any()
    assert mask.sum() == 0 and mask.shape == (1, 32, 32)


def test_presets_hold_the_reference_values():
    c16, c17 = CAM_POSTPROCESS_PRESETS['camelyon16'], CAM_POSTPROCESS_PRESETS['camelyon17']
    assert (c16.quantile, c16.opening_size, c16.resolution) == (0.10, (21, 21), 'full')
    assert (c17.quantile, c17.opening_size, c17.resolution) == (0.30, (5, 5), 'feature')
    reference = CAM_POSTPROCESS_PRESETS['reference']
    assert reference.quantize_uint8 and reference.cam_interpolation == 'bilinear'
    assert CAM_POSTPROCESS_PRESETS['none'].quarter_turns == (0, )
    mirror = CAM_POSTPROCESS_PRESETS['reference_mirror']
    assert (mirror.quantile_rule, mirror.quantize_uint8, mirror.quantize_fused_uint8) == \
        ('percentile_strict', True, True)
    assert c16.quantile_rule == 'rank' and not c16.quantize_fused_uint8
    with pytest.raises(ValueError, match='quantile_rule'):
        CAMPostprocess(quantile_rule='median')
    assert c16.quarter_turns == (0, 1, 2, 3)
    custom = cam_postprocess('camelyon17', quantile=0.2, opening_size=[3, 3])
    assert (custom.quantile, custom.opening_size, custom.resolution) == (0.2, (3, 3), 'feature')
    with pytest.raises(KeyError, match='unknown CAM post-processing preset'):
        cam_postprocess('camelyon18')
    with pytest.raises(KeyError, match='setting'):
        cam_postprocess('camelyon16', kernel=3)
    with pytest.raises(ValueError, match='exactly one'):
        CAMPostprocess(quantile=0.1, fixed_threshold=0.5)
    with pytest.raises(ValueError, match='odd'):
        CAMPostprocess(opening_size=(4, 4))
