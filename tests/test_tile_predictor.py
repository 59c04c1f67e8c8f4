"""The tile predictor's stage 1: score and first CAM view from one forward, the gate first."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

from mmseg_epsam.apis.tile_predictor import classify_with_cam, score_and_first_view_cam
from mmseg_epsam.functional.cam import cam_postprocess, initial_mask_from_cam, rotate_and_fuse_cams

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='module')
def classifier():
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'epsam', 'classifier_demo.py'))
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def samples(count):
    return [SegDataSample() for _ in range(count)]


def test_one_forward_gives_the_predict_score_and_the_compute_cam_view(classifier):
    torch.manual_seed(1)
    inputs = torch.rand(3, 3, 32, 32)
    scores, cam = score_and_first_view_cam(classifier, inputs, samples(3))
    with torch.no_grad():
        expected = classifier(inputs, samples(3), mode='predict')
        assert torch.equal(scores, torch.cat([r.pred_score for r in expected]))
        assert torch.equal(cam, classifier.compute_cam(inputs))
    assert cam.shape == (3, 2, 2) and cam.max() > 0
    classifier.train()
    try:
        with pytest.raises(RuntimeError, match='eval mode'):
            score_and_first_view_cam(classifier, inputs, samples(3))
    finally:
        classifier.eval()


def test_classify_with_cam_equals_the_separate_passes_and_skips_gated_tiles(classifier):
    postprocess = cam_postprocess('camelyon16', opening_size=(5, 5))
    torch.manual_seed(1)
    inputs = torch.rand(4, 3, 32, 32)
    # One view per forward: the reference runs the same batches, so equality is exact.
    scores, passing, full_cam, mask = classify_with_cam(
        classifier, inputs, samples(4), (64, 64), postprocess, views_per_forward=1)
    with torch.no_grad():
        fused = rotate_and_fuse_cams(classifier.compute_cam, inputs, 1,
                                     postprocess.quarter_turns)
    expected_cam, expected_mask = initial_mask_from_cam(fused, (64, 64), postprocess)
    assert passing == [0, 1, 2, 3]
    assert torch.equal(full_cam, expected_cam) and torch.equal(mask, expected_mask)
    assert 0 < mask.float().mean() < 1

    gate = float(scores.median())
    gated = classify_with_cam(classifier, inputs, samples(4), (64, 64), postprocess,
                              views_per_forward=4, gate=gate)
    assert torch.equal(gated[0], scores)
    assert gated[1] == [i for i in range(4) if scores[i] >= gate] and 0 < len(gated[1]) < 4
    assert gated[2].shape == (len(gated[1]), 64, 64)
    torch.testing.assert_close(gated[2], expected_cam[gated[1]], atol=1e-5, rtol=0)
    closed = classify_with_cam(classifier, inputs, samples(4), (64, 64), postprocess,
                               gate=1.1)
    assert closed[1] == [] and closed[2].shape == (0, 64, 64) and closed[3].dtype == torch.bool
