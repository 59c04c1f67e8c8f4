"""CAM generation (stage 1): files, manifest, evaluation, resume, hook and tool.

The classifier is a small stand-in with ``EPSAMPatchClassifier``'s interface
(``compute_cam`` and predict mode with ``pred_score``), so that the outputs are known: its CAM
is the image brightness above 0.4 pooled by 8, its tumour probability grows with the mean
brightness. Patches are 64x64: positives carry a bright rectangle exactly where their GT
mask is; negatives carry a smaller bright blob (a false positive for the CAM, which the
classifier gate removes).
"""
import importlib.util
import json
import os
import os.path as osp
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import write_patch_dataset
from mmengine.config import Config
from mmengine.logging import HistoryBuffer, MessageHub, MMLogger
from mmengine.model import BaseModel

import mmseg_epsam  # noqa: F401
from mmseg.registry import DATASETS, MODELS
from mmseg.utils import register_all_modules
from mmseg_epsam.engine.cam_generation import (generate_cams, generation_dataset_cfg,
                                               load_classifier_checkpoint, read_manifest)
from mmseg_epsam.engine.hooks import CAMGeneratorHook
from mmseg_epsam.functional.cam import cam_postprocess

register_all_modules(init_default_scope=True)
META_KEYS = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'img_label', 'patch_name')
SIZE = 64
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@MODELS.register_module(name='CAMTestStandInClassifier', force=True)
class StandInClassifier(BaseModel):
    """Stand-in for EPSAMPatchClassifier (same interface), used until / instead of the real
    EVP-ADL classifier so that the expected CAMs are known."""

    def __init__(self, gain: float = 20.0) -> None:
        super().__init__(data_preprocessor=MODELS.build(
            dict(type='SegDataPreProcessor', mean=[0.0] * 3, std=[255.0] * 3, bgr_to_rgb=True)))
        self.gain = nn.Parameter(torch.tensor(float(gain)))
        self.cam_batches = []

    def compute_cam(self, inputs: torch.Tensor) -> torch.Tensor:
        self.cam_batches.append(inputs.shape[0])
        return F.relu(F.avg_pool2d(inputs.mean(1, keepdim=True), 8)[:, 0] - 0.4)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        logits = self.gain * (inputs.mean(dim=(1, 2, 3)) - 0.25)
        if mode == 'tensor':
            return logits
        for data_sample, probability in zip(data_samples, torch.sigmoid(logits)):
            data_sample.pred_score = probability.reshape(1)
        return data_samples


def write_dataset(root: str) -> dict:
    """Train and test splits (2 positives, 2 negatives each) with telling images."""
    rng = np.random.default_rng(0)
    entries = {}
    for split in ('train', 'test'):
        entries[split] = write_patch_dataset(root, split, size=SIZE)
        for name, label, mask in entries[split]:
            image = rng.integers(0, 48, (SIZE, SIZE, 3), dtype=np.uint8)
            if label:
                image[mask == 1] = 220
            else:
                image[:24, :24] = 200
            cv2.imwrite(osp.join(root, 'img_dir', split, name + '.png'), image)
    return entries


def make_cfg(root: str) -> Config:
    """A classifier-like config whose train pipeline augments (generation must not)."""
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                     dict(type='PackSegInputs', meta_keys=META_KEYS)]
    train_pipeline = [dict(type='LoadImageFromFile'),
                      dict(type='RandomFlip', prob=1.0, direction='horizontal'),
                      dict(type='PackSegInputs', meta_keys=META_KEYS)]

    def loader(split, pipeline):
        return dict(batch_size=2, dataset=dict(
            type='HistoPatchDataset', data_root=root, ann_file=f'splits/{split}.txt',
            data_prefix=dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
            masks='required', pipeline=pipeline))

    return Config(dict(default_scope='mmseg', model=dict(type='CAMTestStandInClassifier'),
                       train_dataloader=loader('train', train_pipeline),
                       test_dataloader=loader('test', test_pipeline)))


def build_datasets(cfg: Config, splits=('train', 'test')) -> dict:
    return {split: DATASETS.build(generation_dataset_cfg(cfg, split)) for split in splits}


def file_state(out_dir: str) -> dict:
    """Modification times of every output file, by path relative to ``out_dir``."""
    state = {}
    for folder, _, files in os.walk(out_dir):
        for name in files:
            path = osp.join(folder, name)
            state[osp.relpath(path, out_dir)] = os.stat(path).st_mtime_ns
    return state


def test_generation_dataset_cfg_uses_test_pipeline_without_annotations(tmp_path):
    cfg = make_cfg(str(tmp_path))
    cfg.train_dataloader.dataset.data_root = 'train_root'
    # Classifier configs may point the test loader at the val split.
    cfg.test_dataloader.dataset.ann_file = 'splits/val.txt'
    train = generation_dataset_cfg(cfg, 'train')
    assert train['data_root'] == 'train_root'
    assert train['ann_file'] == 'splits/train.txt'
    assert [t['type'] for t in train['pipeline']] == ['LoadImageFromFile', 'PackSegInputs']
    assert train['masks'] == 'optional'
    for split in ('test', 'extra'):
        dataset = generation_dataset_cfg(cfg, split)
        assert dataset['data_root'] == str(tmp_path)
        assert dataset['ann_file'] == f'splits/{split}.txt'
        assert dataset['data_prefix'] == dict(img_path=f'img_dir/{split}',
                                              seg_map_path=f'ann_dir/{split}')
    # The config itself is untouched.
    assert cfg.test_dataloader.dataset.pipeline[1]['type'] == 'LoadAnnotations'
    assert cfg.test_dataloader.dataset.ann_file == 'splits/val.txt'


def test_generation_writes_outputs_evaluates_and_resumes(tmp_path):
    root, out_dir = str(tmp_path / 'data'), str(tmp_path / 'stage1')
    entries = write_dataset(root)
    model = StandInClassifier()
    datasets = build_datasets(make_cfg(root))
    summaries = generate_cams(model, datasets, out_dir, cam_postprocess('camelyon16'),
                              views_per_forward=4, batch_size=3, show=True)
    assert model.cam_batches == [8, 12, 4]  # train: 2 positives; test: 3 + 1 patches, 4 views

    # Train: only the positive patches, in split order.
    train_rows = list(read_manifest(osp.join(out_dir, 'manifest_train.csv')).values())
    positives = [name for name, label, _ in entries['train'] if label]
    assert [row['name'] for row in train_rows] == positives
    assert sorted(os.listdir(osp.join(out_dir, 'cams', 'train'))) == [p + '.npy' for p in positives]

    for split in ('train', 'test'):
        rows = read_manifest(osp.join(out_dir, f'manifest_{split}.csv'))
        for name, label, gt in entries[split]:
            if name not in rows:
                continue
            row = rows[name]
            cam = np.load(osp.join(out_dir, 'cams', split, name + '.npy'))
            mask = cv2.imread(osp.join(out_dir, 'initial_masks', split, name + '.png'),
                              cv2.IMREAD_UNCHANGED)
            assert cam.dtype == np.float16 and cam.shape == (SIZE, SIZE)
            assert 0.0 <= cam.min() and cam.max() <= 1.0
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
            assert int(row['label']) == label
            assert float(row['mask_area']) == pytest.approx(mask.mean(), abs=1e-6)
            assert float(row['cam_area']) == pytest.approx(cam.astype(np.float64).mean(),
                                                           abs=1e-3)
            assert (float(row['cls_score']) >= 0.5) == bool(label)
            if label:  # the CAM's bright rectangle is the GT
                dice = 2 * (mask & gt).sum() / (mask.sum() + gt.sum())
                assert dice > 0.85
            else:  # the negative's bright blob is a false positive of the CAM
                assert mask[:24, :24].mean() > 0.8 and mask[32:, 32:].sum() == 0
            picture = cv2.imread(osp.join(out_dir, 'vis', split, name + '.png'))
            assert picture.shape == (SIZE, 4 * SIZE, 3)
            np.testing.assert_array_equal(picture[40:, 2 * SIZE + 40:3 * SIZE] > 0,
                                          (mask[40:, 40:] > 0)[..., None].repeat(3, 2)
                                          & (np.arange(3) == 2))

    test_summary = summaries['test']
    assert test_summary['positives_scored'] == 2 and test_summary['negatives_scored'] == 2
    assert test_summary["ungated"]["dice"] > 0.85
    assert test_summary['gated']['dice'] == test_summary['ungated']['dice']
    assert test_summary['ungated']['fp_area'] > 0.1
    assert test_summary['gated']['fp_area'] == 0.0
    assert test_summary['positives_passing_gate'] == 2
    assert test_summary['negatives_passing_gate'] == 0
    assert osp.isfile(osp.join(out_dir, 'eval_test.json'))

    # Resume: nothing to do, nothing rewritten except the manifests and settings.
    before = file_state(out_dir)
    manifest_text = open(osp.join(out_dir, 'manifest_test.csv')).read()
    model.cam_batches.clear()
    generate_cams(model, datasets, out_dir, cam_postprocess('camelyon16'), show=True)
    assert model.cam_batches == []
    after = file_state(out_dir)
    assert {k: v for k, v in after.items() if k.startswith(('cams', 'initial_masks', 'vis'))} \
        == {k: v for k, v in before.items() if k.startswith(('cams', 'initial_masks', 'vis'))}

    # A deleted output, a missing picture and a lost manifest row are regenerated.
    test_names = [name for name, _, _ in entries['test']]
    os.remove(osp.join(out_dir, 'cams', 'test', test_names[1] + '.npy'))
    os.remove(osp.join(out_dir, 'vis', 'test', test_names[2] + '.png'))
    lines = manifest_text.splitlines(keepends=True)
    with open(osp.join(out_dir, 'manifest_test.csv'), 'w') as f:
        f.writelines(lines[:4] + lines[5:])  # drops the row of test_names[3]
    generate_cams(model, {'test': datasets['test']}, out_dir, cam_postprocess('camelyon16'),
                  views_per_forward=1, batch_size=8, show=True)
    assert model.cam_batches == [3, 3, 3, 3]
    assert osp.isfile(osp.join(out_dir, 'cams', 'test', test_names[1] + '.npy'))
    assert open(osp.join(out_dir, 'manifest_test.csv')).read() == manifest_text
    assert not [f for f in os.listdir(osp.join(out_dir, 'cams', 'test')) if '.tmp.' in f]


def test_a_shared_cam_cache_computes_each_view_once_and_changes_no_output(tmp_path):
    """Post-processing variants over one model share raw CAMs (paper Table 3 ablation)."""
    root = str(tmp_path / 'data')
    write_dataset(root)
    model = StandInClassifier()
    datasets = build_datasets(make_cfg(root), ('test', ))
    variants = {'full': cam_postprocess('camelyon16'),
                'no_opening': cam_postprocess('camelyon16', opening_size=(1, 1)),
                'one_view': cam_postprocess('camelyon16', rotate_fuse=False)}
    cache = {}
    for variant, postprocess in variants.items():
        generate_cams(model, datasets, str(tmp_path / 'cached' / variant), postprocess,
                      batch_size=3, cam_cache=cache)
    # 4 test patches in batches of 3: two batches of 4 views, then the one-view batches once
    assert model.cam_batches == [12, 4, 3, 1]
    model.cam_batches.clear()
    generate_cams(model, datasets, str(tmp_path / 'cached_again'), variants['full'],
                  batch_size=3, cam_cache=cache)
    assert model.cam_batches == []
    # another model (its fingerprint differs) does not read the first one's maps
    other = StandInClassifier(gain=5.0)
    generate_cams(other, datasets, str(tmp_path / 'other'), variants['full'], batch_size=3,
                  cam_cache=cache)
    assert other.cam_batches == [12, 4]

    for variant, postprocess in variants.items():
        plain_dir = str(tmp_path / 'plain' / variant)
        generate_cams(model, datasets, plain_dir, postprocess, batch_size=3)
        for folder in ('cams', 'initial_masks'):
            for name in sorted(os.listdir(osp.join(plain_dir, folder, 'test'))):
                plain = open(osp.join(plain_dir, folder, 'test', name), 'rb').read()
                cached = open(osp.join(str(tmp_path / 'cached' / variant), folder, 'test',
                                       name), 'rb').read()
                assert cached == plain, (variant, folder, name)


def test_refuses_outputs_of_other_settings_or_model(tmp_path):
    root, out_dir = str(tmp_path / 'data'), str(tmp_path / 'stage1')
    write_dataset(root)
    datasets = build_datasets(make_cfg(root), ('train', ))
    model = StandInClassifier()
    generate_cams(model, datasets, out_dir, cam_postprocess('camelyon16'), evaluate=False)
    settings_file = osp.join(out_dir, 'settings_train.json')
    with pytest.raises(RuntimeError, match=settings_file):
        generate_cams(model, datasets, out_dir, cam_postprocess('camelyon17'))
    other_model = StandInClassifier(gain=5.0)
    with pytest.raises(RuntimeError, match='another model'):
        generate_cams(other_model, datasets, out_dir, cam_postprocess('camelyon16'))
    # An overwrite that stops half-way must not leave the old outputs looking complete.
    stopping_model = StandInClassifier(gain=5.0)
    stopping_model.compute_cam = lambda inputs: (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        generate_cams(stopping_model, datasets, out_dir, cam_postprocess('camelyon16'),
                      overwrite=True)
    generate_cams(other_model, datasets, out_dir, cam_postprocess('camelyon16'),
                  evaluate=False)
    assert other_model.cam_batches == [8]


def save_checkpoint(path: str, model: nn.Module) -> None:
    """An MMEngine-like checkpoint, with a HistoryBuffer as MMEngine's message hub holds."""
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict(),
                    message_hub=dict(
                        log_scalars={'train/loss': HistoryBuffer([1.0, 0.5], [1, 1])})),
               path)


def test_load_classifier_checkpoint_and_clear_errors(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    save_checkpoint(path, StandInClassifier(gain=-3.0))
    model = StandInClassifier()
    load_classifier_checkpoint(model, path)
    assert model.gain.item() == -3.0
    wrong = str(tmp_path / 'wrong.pth')
    torch.save(dict(state_dict={'backbone.conv1.weight': torch.zeros(1)}), wrong)
    with pytest.raises(RuntimeError, match=f'{wrong}: its weights do not fit'):
        load_classifier_checkpoint(model, wrong)
    bare = str(tmp_path / 'bare.pth')
    torch.save([1, 2], bare)
    with pytest.raises(RuntimeError, match=f'{bare}: not an MMEngine checkpoint'):
        load_classifier_checkpoint(model, bare)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_classifier_checkpoint(model, str(tmp_path / 'missing.pth'))


def test_hook_uses_best_checkpoint_without_touching_the_runner_model(tmp_path):
    root, work_dir = str(tmp_path / 'data'), str(tmp_path / 'work')
    entries = write_dataset(root)
    best = str(tmp_path / 'best_img_label_auc_epoch_1.pth')
    save_checkpoint(best, StandInClassifier(gain=-20.0))  # inverted scores
    message_hub = MessageHub.get_instance('test_cam_generator_hook')
    message_hub.update_info('best_ckpt', best)
    runner = SimpleNamespace(model=StandInClassifier(), cfg=make_cfg(root), work_dir=work_dir,
                             message_hub=message_hub,
                             logger=MMLogger.get_instance('test_cam_generator_hook'))
    hook = CAMGeneratorHook(splits=('train', ), preset='camelyon17',
                            postprocess=dict(quantile=0.2, opening_size=(3, 3)))
    hook.after_train(runner)
    rows = read_manifest(osp.join(work_dir, 'stage1', 'manifest_train.csv'))
    assert sorted(rows) == sorted(name for name, label, _ in entries['train'] if label)
    assert all(float(row['cls_score']) < 0.5 for row in rows.values())
    assert runner.model.gain.item() == 20.0 and runner.model.cam_batches == []
    assert '"quantile": 0.2' in open(osp.join(work_dir, 'stage1', 'settings_train.json')).read()


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'generate_cams_tool', osp.join(REPO, 'tools', 'generate_cams.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_generates_from_config_and_checkpoint(tmp_path, monkeypatch):
    root, out_dir = str(tmp_path / 'data'), str(tmp_path / 'out')
    write_dataset(root)
    config = str(tmp_path / 'classifier.py')
    make_cfg(root).dump(config)
    checkpoint = str(tmp_path / 'epoch_1.pth')
    save_checkpoint(checkpoint, StandInClassifier())
    tool = load_tool()
    monkeypatch.setattr(sys, 'argv', [
        'generate_cams.py', config, checkpoint, '--splits', 'test', '--out-dir', out_dir,
        '--preset', 'reference', '--views-per-forward', '2', '--num-workers', '0',
        '--device', 'cpu', '--cfg-options', 'test_dataloader.batch_size=1'])
    tool.main()
    rows = read_manifest(osp.join(out_dir, 'manifest_test.csv'))
    assert len(rows) == 4
    assert osp.isfile(osp.join(out_dir, 'eval_test.json'))
    assert '"quantize_uint8": true' in open(osp.join(out_dir, 'settings_test.json')).read()

    wrong = str(tmp_path / 'unet.pth')
    torch.save(dict(state_dict={'decode_head.conv_seg.weight': torch.zeros(1)}), wrong)
    monkeypatch.setattr(sys, 'argv', ['generate_cams.py', config, wrong, '--device', 'cpu',
                                      '--out-dir', out_dir])
    with pytest.raises(RuntimeError, match=wrong):
        tool.main()


def test_real_classifier_plugs_into_generation(tmp_path):
    """EPSAMPatchClassifier (random EVP-ADL ResNet-50) through the same code path."""
    root, out_dir = str(tmp_path / 'data'), str(tmp_path / 'stage1')
    write_dataset(root)
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='EPSAMPatchClassifier', backbone=dict(type='EVPADLResNet'),
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0.0] * 3, std=[255.0] * 3,
                               bgr_to_rgb=True)))
    datasets = build_datasets(make_cfg(root), ('train', ))
    summary = generate_cams(model, datasets, out_dir, cam_postprocess('camelyon17'),
                            batch_size=2)['train']
    rows = read_manifest(osp.join(out_dir, 'manifest_train.csv'))
    assert len(rows) == 2 and summary['positives_scored'] == 2
    for name, row in rows.items():
        cam = np.load(osp.join(out_dir, 'cams', 'train', name + '.npy'))
        assert cam.shape == (SIZE, SIZE) and 0.0 <= cam.min() and cam.max() <= 1.0
        assert 0.0 < float(row['cls_score']) < 1.0
    # another CAM method (paper Table 3) is part of the settings: refused in the same folder
    pytest.importorskip('pytorch_grad_cam')
    with pytest.raises(RuntimeError, match='other settings'):
        generate_cams(model, datasets, out_dir, cam_postprocess('camelyon17'),
                      method='eigencam')
    eigen_dir = str(tmp_path / 'stage1_eigencam')
    generate_cams(model, datasets, eigen_dir, cam_postprocess('camelyon17'), method='eigencam',
                  batch_size=2, evaluate=False)
    settings = json.load(open(osp.join(eigen_dir, 'settings_train.json')))
    assert settings['method'] == 'eigencam'
    name = next(iter(rows))
    eigen = np.load(osp.join(eigen_dir, 'cams', 'train', name + '.npy'))
    assert eigen.shape == (SIZE, SIZE) and not np.array_equal(
        eigen, np.load(osp.join(out_dir, 'cams', 'train', name + '.npy')))
    with pytest.raises(ValueError, match='unknown CAM method'):
        generate_cams(model, datasets, eigen_dir, cam_postprocess('camelyon17'), method='cam2')


def test_a_gate_that_passes_every_negative_is_warned_about(tmp_path, monkeypatch):
    """A classifier gate that lets every negative patch through filters nothing (as with an
    uncalibrated best-AUC checkpoint); CAM generation says so, naming the split and file."""
    root, out_dir = str(tmp_path / 'data'), str(tmp_path / 'stage1')
    write_dataset(root)
    warnings = []
    logger = MMLogger.get_current_instance()
    monkeypatch.setattr(logger, 'warning', lambda message, *args, **kwargs:
                        warnings.append(message))
    datasets = build_datasets(make_cfg(root), splits=('test',))
    calibrated = generate_cams(StandInClassifier(), datasets, out_dir,
                               cam_postprocess('camelyon16'))['test']
    assert calibrated['negatives_passing_gate'] == 0 and not warnings
    summary = generate_cams(StandInClassifier(), datasets, str(tmp_path / 'open_gate'),
                            cam_postprocess('camelyon16'), gate_threshold=0.0)['test']
    assert summary['negatives_passing_gate'] == summary['negatives_scored'] == 2
    assert summary['gated']['fp_area'] == summary['ungated']['fp_area'] > 0.1
    assert len(warnings) == 1
    assert "split 'test'" in warnings[0] and 'passes all 2 negative patches' in warnings[0]
    assert osp.join('open_gate', 'eval_test.json') in warnings[0]
