"""Every component the plugin registers builds from a config dict; unknown types fail clearly."""
import os.path as osp

import pytest
from conftest import write_patch_dataset
from mmengine.config import Config

import mmseg_epsam  # noqa: F401
from mmseg import registry
from mmseg.utils import register_all_modules

register_all_modules(init_default_scope=True)
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
REGISTRIES = ('MODELS', 'TASK_UTILS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'HOOKS', 'RUNNERS',
              'LOOPS')


def registered_names():
    """``(registry name, component name)`` of every class registered by mmseg_epsam."""
    return sorted((reg_name, name) for reg_name in REGISTRIES
                  for name, cls in getattr(registry, reg_name).module_dict.items()
                  if cls.__module__.startswith('mmseg_epsam'))


def minimal_configs(data_root):
    """One small config per registered name."""
    patches = dict(type='HistoPatchDataset', data_root=data_root, ann_file='splits/train.txt',
                   data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                   pipeline=[])
    return {
        ('MODELS', 'EVPADLResNet'): dict(type='EVPADLResNet'),
        ('MODELS', 'EPSAMPatchClassifier'): Config.fromfile(
            osp.join(ROOT, 'configs/epsam/classifier_demo.py')).model,
        ('TASK_UTILS', 'PEPMPromptSampler'): dict(type='PEPMPromptSampler', num_points=5),
        ('MODELS', 'SAMSoftDiceLoss'): dict(type='SAMSoftDiceLoss', loss_weight=2.0),
        ('MODELS', 'SAMSoftIoULoss'): dict(type='SAMSoftIoULoss', smooth=1.0),
        ('MODELS', 'SAMDecoderSegmentor'): dict(
            type='SAMDecoderSegmentor', image_encoder=dict(type='MetaSAMViTEncoder', arch='tiny')),
        ('MODELS', 'MetaSAMViTEncoder'): dict(type='MetaSAMViTEncoder', arch='tiny'),
        ('MODELS', 'LiteMedSAMEncoder'): dict(type='LiteMedSAMEncoder'),
        ('DATASETS', 'HistoPatchDataset'): patches,
        ('DATASETS', 'IDSPseudoLabelDataset'): dict(
            type='IDSPseudoLabelDataset', dataset=patches,
            rounds=[dict(pseudo_label_dir=osp.join(data_root, 'ann_dir', 'train'),
                         table_file=None)]),
        ('TRANSFORMS', 'HistoColorJitter'): dict(type='HistoColorJitter', brightness=0.2),
        ('TRANSFORMS', 'LoadCAMAndInitialMask'): dict(
            type='LoadCAMAndInitialMask', with_cls_score=True),
        ('TRANSFORMS', 'RandomRot90'): dict(type='RandomRot90'),
        ('TRANSFORMS', 'LoadPatchMask'): dict(type='LoadPatchMask', mask_values=(0, 255)),
        ('METRICS', 'EPSAMMetric'): dict(type='EPSAMMetric'),
        ('METRICS', 'ImageLabelMetric'): dict(type='ImageLabelMetric'),
        ('HOOKS', 'CAMGeneratorHook'): dict(type='CAMGeneratorHook', preset='camelyon17'),
        ('HOOKS', 'DecoderResetHook'): dict(type='DecoderResetHook', mode='random'),
        ('HOOKS', 'ResumableRandomnessHook'): dict(type='ResumableRandomnessHook'),
        ('HOOKS', 'PseudoLabelGeneratorHook'): dict(
            type='PseudoLabelGeneratorHook', dataset=patches, ids_threshold=0.8),
        ('RUNNERS', 'EPSAMRunner'): None,  # built from a whole config in test_tools_train_test
        ('LOOPS', 'PseudoLabelRoundsLoop'): None,  # built by a runner in test_rounds_loop
    }


def test_every_registered_name_builds(tmp_path):
    data_root = str(tmp_path / 'data')
    write_patch_dataset(data_root, 'train', n_pos=2, n_neg=1, size=32)
    configs = minimal_configs(data_root)
    names = registered_names()
    assert set(names) == set(configs), 'a registered component has no build test here'
    for reg_name, name in names:
        cfg = configs[(reg_name, name)]
        if cfg is None:
            continue
        built = getattr(registry, reg_name).build(cfg)
        assert type(built).__name__ == name


def test_unknown_type_names_the_type():
    with pytest.raises(KeyError, match='EVPADLResNet50Typo is not in the mmseg::model registry'):
        registry.MODELS.build(dict(type='EVPADLResNet50Typo'))


def test_full_mmcv_with_compiled_ops():
    """The stack is full mmcv (compiled ops), not mmcv-lite: nms runs and is right."""
    import torch
    from mmcv.ops import nms
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
