"""Prompt sampling (training, PEPM Eq. 4), scaling to SAM's frame, and the PEPM head."""
import numpy as np
import pytest

from mmseg_epsam.functional.prompts import (build_prompt_set, mask_bounding_box, patch_rng,
                                            sam_input_shape, sample_negative_points,
                                            sample_pepm_points, sample_uniform_points,
                                            scale_coords_to_sam)


def _in_mask(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    cols, rows = points[:, 0].astype(int), points[:, 1].astype(int)
    return mask[rows, cols] > 0


def _as_set(points: np.ndarray) -> set:
    return {tuple(p) for p in points.astype(int).tolist()}


def test_uniform_points_inside_unique_and_seeded():
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 20:50] = 1
    points = sample_uniform_points(mask, 50, np.random.default_rng(0))
    assert points.shape == (50, 2) and points.dtype == np.float32
    assert _in_mask(points, mask).all()
    assert len(_as_set(points)) == 50  # without replacement
    again = sample_uniform_points(mask, 50, np.random.default_rng(0))
    other = sample_uniform_points(mask, 50, np.random.default_rng(1))
    np.testing.assert_array_equal(points, again)
    assert not np.array_equal(points, other)


def test_empty_and_tiny_masks():
    empty = np.zeros((16, 16), np.uint8)
    assert sample_uniform_points(empty, 50, np.random.default_rng(0)).shape == (0, 2)
    assert sample_pepm_points(np.ones((16, 16)), empty, 50,
                              np.random.default_rng(0)).shape == (0, 2)
    prompts = build_prompt_set(np.zeros((0, 2)), (16, 16), 1024)
    assert prompts.is_empty and prompts.point_coords.shape == (0, 2)

    tiny = np.zeros((16, 16), np.uint8)
    tiny[3, 4:14] = 1  # 10 pixels
    all_points = sample_uniform_points(tiny, 50, np.random.default_rng(0), 'all')
    assert _as_set(all_points) == {(x, 3) for x in range(4, 14)} and len(all_points) == 10
    replaced = sample_uniform_points(tiny, 50, np.random.default_rng(0), 'replace')
    assert replaced.shape == (50, 2) and _in_mask(replaced, tiny).all()
    with pytest.raises(ValueError, match='small_mask_policy'):
        sample_uniform_points(tiny, 50, np.random.default_rng(0), 'pad')


def test_pepm_probability_follows_eq4():
    """One point per draw: frequencies match S_ij = A_ij / sum(A) inside the mask."""
    mask = np.array([[1, 1, 1, 0]], np.uint8)
    cam = np.array([[1.0, 2.0, 5.0, 100.0]])  # the big value lies outside the mask
    rng = np.random.default_rng(0)
    draws = [int(sample_pepm_points(cam, mask, 1, rng)[0, 0]) for _ in range(4000)]
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [1 / 8, 2 / 8, 5 / 8, 0], atol=0.025)


def test_pepm_without_replacement_and_zero_cam_fill():
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :2] = 1  # 64 pixels
    cam = np.zeros((32, 32))
    cam[:20, 0] = np.linspace(0.1, 1.0, 20)  # 20 positive-CAM pixels
    points = sample_pepm_points(cam, mask, 50, np.random.default_rng(0))
    assert len(points) == 50 and len(_as_set(points)) == 50
    assert _in_mask(points, mask).all()
    positive = {(0, y) for y in range(20)}
    assert positive <= _as_set(points)  # every positive-CAM pixel before any zero-CAM one

    cam_hot = np.zeros((32, 32))
    cam_hot[:, 0] = 1.0
    cam_hot[:, 1] = 1e-3
    hot = sample_pepm_points(cam_hot, mask, 10, np.random.default_rng(0))
    assert (hot[:, 0] == 0).sum() >= 9  # sampled where the CAM is high


def test_pepm_rejects_bad_cam():
    mask = np.ones((4, 4), np.uint8)
    with pytest.raises(ValueError, match='shape'):
        sample_pepm_points(np.ones((4, 5)), mask, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match='non-negative'):
        sample_pepm_points(-np.ones((4, 4)), mask, 5, np.random.default_rng(0))


def test_scaling_to_sam_frame_matches_resize_longest_side():
    transforms = pytest.importorskip('segment_anything.utils.transforms')
    coords = np.array([[300.0, 100.0], [0.0, 0.0], [511.0, 511.0]])
    scaled = scale_coords_to_sam(coords, (512, 512), 1024)
    np.testing.assert_allclose(scaled, [[600, 200], [0, 0], [1022, 1022]])
    for shape in [(512, 512), (300, 500), (123, 77)]:
        ref = transforms.ResizeLongestSide(1024).apply_coords(coords.copy(), shape)
        np.testing.assert_allclose(scale_coords_to_sam(coords, shape, 1024), ref, rtol=1e-6)
        assert sam_input_shape(*shape, 1024) == transforms.ResizeLongestSide.get_preprocess_shape(
            shape[0], shape[1], 1024)


def test_reference_bug_flag_keeps_points_in_top_left_quadrant():
    mask = np.ones((512, 512), np.uint8)
    points = sample_uniform_points(mask, 50, np.random.default_rng(0))
    fixed = build_prompt_set(points, (512, 512), 1024)
    buggy = build_prompt_set(points, (512, 512), 1024, reference_unscaled_coords=True)
    assert (buggy.point_coords < 512).all()
    np.testing.assert_array_equal(buggy.point_coords, points)
    np.testing.assert_allclose(fixed.point_coords, points * 2)
    assert (fixed.point_coords >= 512).any(axis=1).sum() > 25  # spread over the whole frame


def test_negative_points_and_box():
    mask = np.zeros((20, 40), np.uint8)
    mask[5:10, 8:30] = 1
    negatives = sample_negative_points(mask, 30, np.random.default_rng(0))
    assert len(negatives) == 30 and not _in_mask(negatives, mask).any()
    box = mask_bounding_box(mask)
    np.testing.assert_array_equal(box, [8, 5, 29, 9])
    assert mask_bounding_box(np.zeros((4, 4))) is None
    prompts = build_prompt_set(np.array([[10, 6]]), (20, 40), 80, negative_xy=negatives,
                               box_xyxy=box)
    np.testing.assert_array_equal(prompts.point_labels, [1] + [0] * 30)
    np.testing.assert_allclose(prompts.box, np.array([8, 5, 29, 9]) * 2)  # 40 -> 80: x2


def test_patch_rng_depends_on_seed_and_key_only():
    a = patch_rng(0, 'patch_001').random(3)
    np.testing.assert_array_equal(a, patch_rng(0, 'patch_001').random(3))
    assert not np.array_equal(a, patch_rng(0, 'patch_002').random(3))
    assert not np.array_equal(a, patch_rng(1, 'patch_001').random(3))


def test_pepm_head_from_arrays_pipeline_and_explicit(tmp_path):
    cv2 = pytest.importorskip('cv2')
    from mmseg_epsam.models.prompt_samplers import PEPMPromptSampler

    cam = np.zeros((64, 64), np.float32)
    cam[16:48, 16:48] = 0.5
    initial_mask = (cam > 0).astype(np.uint8)
    head = PEPMPromptSampler(num_points=50, seed=3)
    meta = dict(cam=cam, initial_mask=initial_mask, patch_name='p1', img_shape=(64, 64))
    from_arrays = head.prompts_for_sample(meta, 'predict', 128)
    assert from_arrays.point_coords.shape == (50, 2)
    np.testing.assert_allclose(from_arrays.point_coords, from_arrays.frame_coords * 2)
    assert _in_mask(from_arrays.frame_coords, initial_mask).all()

    # stage-1 files reach the head as arrays through the data pipeline; the head reads no file
    from mmseg_epsam.datasets.transforms.load_cam import LoadCAMAndInitialMask
    (tmp_path / 'cams' / 'val').mkdir(parents=True)
    (tmp_path / 'initial_masks' / 'val').mkdir(parents=True)
    np.save(tmp_path / 'cams' / 'val' / 'p1.npy', cam.astype(np.float16))
    cv2.imwrite(str(tmp_path / 'initial_masks' / 'val' / 'p1.png'), initial_mask)
    from mmseg_epsam.utils.layout import stage1_paths, stage1_sample_paths
    paths = stage1_paths(str(tmp_path), 'val')
    loaded = LoadCAMAndInitialMask().transform(dict(
        patch_name='p1', img_path='p1.png', **stage1_sample_paths(
            dict(cam_path=paths['cam_dir'], initial_mask_path=paths['initial_mask_dir']), 'p1')))
    from_pipeline = head.prompts_for_sample(loaded, 'predict', 128)
    np.testing.assert_array_equal(from_arrays.point_coords, from_pipeline.point_coords)
    with pytest.raises(KeyError, match='LoadCAMAndInitialMask'):
        head.prompts_for_sample({k: loaded[k] for k in ('cam_path', 'initial_mask_path',
                                                        'patch_name')}, 'predict', 128)

    explicit = head.prompts_for_sample(
        dict(point_coords=np.array([[3, 4]]), point_labels=np.array([0]), img_shape=(64, 64)),
        'predict', 128)
    np.testing.assert_array_equal(explicit.point_coords, [[6, 8]])
    assert explicit.is_empty  # a negative point alone is no positive prompt

    train = head.prompts_for_sample({}, 'train', 128, target_mask=initial_mask)
    assert _in_mask(train.frame_coords, initial_mask).all()
    coords, labels, box = PEPMPromptSampler.to_tensors(train, 'cpu')
    assert tuple(coords.shape) == (1, 50, 2) and tuple(labels.shape) == (1, 50) and box is None
    with_box = PEPMPromptSampler(num_negative_points=5, prompt_kind='box+points').train_prompts(
        initial_mask, 128)
    np.testing.assert_allclose(with_box.box, [32, 32, 94, 94])
    assert (with_box.point_labels == 0).sum() == 5


def _cam_and_masks(size=64):
    """A CAM that rises to the right, its initial mask (left-centre block) and a GT mask."""
    cam = np.tile(np.linspace(0.0, 1.0, size, dtype=np.float32), (size, 1))
    initial_mask = np.zeros((size, size), np.uint8)
    initial_mask[16:48, 8:40] = 1
    gt = np.zeros((size, size), np.uint8)
    gt[40:60, 40:60] = 1
    return cam, initial_mask, gt


@pytest.mark.parametrize('source', ['pepm', 'pepm_whole_map', 'mask_uniform', 'patch_uniform',
                                    'ground_truth'])
def test_point_sources_draw_from_their_region(source):
    from mmseg_epsam.models.prompt_samplers import PEPMPromptSampler
    cam, initial_mask, gt = _cam_and_masks()
    head = PEPMPromptSampler(num_points=40, point_source=source)
    prompts = head.pepm_prompts(cam, initial_mask, 128, 'p', gt_mask=gt)
    points = prompts.frame_coords
    assert points.shape == (40, 2) and prompts.box is None
    inside_initial = _in_mask(points, initial_mask)
    if source in ('pepm', 'mask_uniform'):
        assert inside_initial.all()
    elif source == 'ground_truth':
        assert _in_mask(points, gt).all()
    else:
        assert not inside_initial.all()  # the whole patch is the region
    if source == 'pepm_whole_map':  # P ∝ CAM over the map: x is biased to the right
        assert points[:, 0].mean() > 36  # E[x] = 42.3 under P ∝ x, 31.5 uniform
    if source == 'patch_uniform':
        assert 20 < points[:, 0].mean() < 44
    again = head.pepm_prompts(cam, initial_mask, 128, 'p', gt_mask=gt)
    np.testing.assert_array_equal(points, again.frame_coords)  # seeded by the patch key


def test_box_kinds_and_empty_masks():
    from mmseg_epsam.models.prompt_samplers import PEPMPromptSampler
    cam, initial_mask, _ = _cam_and_masks()
    box_only = PEPMPromptSampler(prompt_kind='box').pepm_prompts(cam, initial_mask, 128, 'p')
    assert box_only.point_coords.shape == (0, 2) and not box_only.is_empty
    np.testing.assert_allclose(box_only.box, [16, 32, 78, 94])  # (8,16,39,47) scaled x2
    both = PEPMPromptSampler(prompt_kind='box+points', num_points=10).pepm_prompts(
        cam, initial_mask, 128, 'p')
    assert both.point_coords.shape == (10, 2) and both.box is not None
    train_box = PEPMPromptSampler(prompt_kind='box').train_prompts(initial_mask, 64)
    np.testing.assert_allclose(train_box.box, [8, 16, 39, 47])
    empty = np.zeros_like(initial_mask)
    for kind in ('points', 'box', 'box+points'):
        for source in ('pepm', 'patch_uniform'):
            prompts = PEPMPromptSampler(prompt_kind=kind, point_source=source).pepm_prompts(
                cam, empty, 128, 'p')
            assert prompts.is_empty  # an empty initial mask means "no tumour" for every mode
    with pytest.raises(ValueError, match='ground-truth'):
        PEPMPromptSampler(point_source='ground_truth').pepm_prompts(cam, initial_mask, 128, 'p')
    with pytest.raises(ValueError, match='prompt_kind'):
        PEPMPromptSampler(prompt_kind='boxes')
    with pytest.raises(ValueError, match='point_source'):
        PEPMPromptSampler(point_source='random')


def test_negative_patch_with_empty_target_is_prompted_over_the_whole_patch():
    """IDSPseudoLabelDataset(negative_patches='empty_target'): a negative patch's training
    prompt covers the patch; a positive patch with an empty target still gets no prompt."""
    from mmseg_epsam.models.prompt_samplers import PEPMPromptSampler
    empty = np.zeros((32, 64), np.uint8)
    head = PEPMPromptSampler(num_points=200, prompt_kind='box+points', seed=1)
    prompts = head.prompts_for_sample(dict(img_label=0), 'train', 64, target_mask=empty)
    assert prompts.point_coords.shape == (200, 2) and (prompts.point_labels == 1).all()
    xy = prompts.frame_coords
    assert xy[:, 0].min() < 8 and xy[:, 0].max() > 56 and xy[:, 1].max() > 24  # spread out
    np.testing.assert_allclose(prompts.box, [0, 0, 63, 31])  # frame 64 wide: scale 1
    assert head.prompts_for_sample(dict(img_label=1), 'train', 64, target_mask=empty).is_empty
    mask = np.zeros_like(empty)
    mask[4:10, 4:10] = 1
    on_target = head.prompts_for_sample(dict(img_label=0), 'train', 64, target_mask=mask)
    assert _in_mask(on_target.frame_coords, mask).all()  # a non-empty target keeps its region
