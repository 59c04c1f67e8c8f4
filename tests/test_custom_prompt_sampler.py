"""A user's prompt policy is one class registered in TASK_UTILS plus one config line."""
from typing import Optional

import numpy as np
import pytest
import torch

pytest.importorskip('segment_anything')
from mmengine.structures import PixelData  # noqa: E402

from mmseg.registry import MODELS, TASK_UTILS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402
from mmseg_epsam.functional.prompts import PromptSet, build_prompt_set  # noqa: E402
from mmseg_epsam.models.prompt_samplers import BasePromptSampler  # noqa: E402


@TASK_UTILS.register_module(force=True)
class PatchCentrePromptSampler(BasePromptSampler):
    """One positive point at the centre of the patch, in training and at inference."""

    @staticmethod
    def _centre(shape: tuple[int, int], target_length: int) -> PromptSet:
        height, width = shape
        return build_prompt_set(np.array([[width / 2, height / 2]], np.float32), (height, width),
                                target_length)

    def train_prompts(self, target_mask: np.ndarray, target_length: int,
                      negative_patch: bool = False) -> PromptSet:
        return self._centre(np.shape(target_mask), target_length)

    def inference_prompts(self, metainfo: dict, target_length: int,
                          gt_mask: Optional[np.ndarray] = None) -> PromptSet:
        return self._centre(tuple(metainfo['img_shape'][:2]), target_length)


def _batch(shapes):
    rng = np.random.default_rng(0)
    inputs = torch.from_numpy(rng.integers(0, 256, (len(shapes), 3, 48, 64))).float()
    samples = []
    for shape in shapes:
        sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
        mask = np.zeros((48, 64), np.int64)
        mask[10:30, 20:40] = 1
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(mask)[None])
        samples.append(sample)
    return inputs, samples


def test_custom_sampler_from_config_prompts_predict_and_loss():
    torch.manual_seed(0)
    model = MODELS.build(dict(type='SAMDecoderSegmentor',
                              image_encoder=dict(type='MetaSAMViTEncoder', arch='tiny'),
                              prompt_head=dict(type='PatchCentrePromptSampler')))
    assert isinstance(model.prompt_head, PatchCentrePromptSampler)
    inputs, samples = _batch([(48, 64), (40, 30)])
    for sample in model.predict(inputs, samples):
        height, width = sample.metainfo['img_shape']
        np.testing.assert_array_equal(sample.metainfo['prompt_points'],
                                      [[width / 2, height / 2]])
        assert not sample.metainfo['prompt_empty']
        assert sample.seg_logits.data.shape == (1, height, width)
    losses = model.loss(*_batch([(48, 64), (48, 64)]))
    assert set(losses) == {'loss_dice', 'loss_iou'}
    sum(losses.values()).backward()
    assert any(p.grad is not None for p in model.mask_decoder.parameters())


def test_prompt_head_must_be_a_prompt_sampler():
    TASK_UTILS.register_module(name='NotAPromptSampler', force=True, module=dict)
    with pytest.raises(TypeError, match='BasePromptSampler'):
        MODELS.build(dict(type='SAMDecoderSegmentor',
                          image_encoder=dict(type='MetaSAMViTEncoder', arch='tiny'),
                          prompt_head=dict(type='NotAPromptSampler')))
