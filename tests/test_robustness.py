"""Faults a hostile but fair user meets: each is injected and must give a clear error naming
the file (or be repaired with a warning), never a silent wrong result."""
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, write_patch_dataset
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

import mmseg_epsam  # noqa: F401
from mmseg.registry import DATASETS, HOOKS
from mmseg.utils import register_all_modules
from mmseg_epsam.apis import EPSAMPipeline, PipelineConfigError, StageChanged
from mmseg_epsam.apis.stage_records import describe_changes
from mmseg_epsam.cache.embedding_cache import EmbeddingCache
from mmseg_epsam.datasets import MaskValueError, PatchDatasetError, read_mask
from mmseg_epsam.datasets.masks import parse_mask_values
from mmseg_epsam.datasets.transforms.load_cam import load_cam, load_initial_mask
from mmseg_epsam.engine.cam_generation import SplitWriter
from mmseg_epsam.utils import io as atomic_io
from mmseg_epsam.utils.checkpoint import trusted_mmengine_checkpoints
from mmseg_epsam.utils.lock import WorkDirLock, WorkDirLocked

register_all_modules(init_default_scope=True)
DEMO_CONFIG = osp.join(ROOT, 'configs', 'epsam', 'epsam_demo.py')


def _dataset(root, split='val', **kwargs):
    cfg = dict(type='HistoPatchDataset', data_root=root, ann_file=f'splits/{split}.txt',
               data_prefix=dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
               pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadPatchMask'),
                         dict(type='PackSegInputs')])
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def _as_0_255(root, split='val'):
    ann_dir = osp.join(root, 'ann_dir', split)
    for name in os.listdir(ann_dir):
        path = osp.join(ann_dir, name)
        cv2.imwrite(path, cv2.imread(path, cv2.IMREAD_UNCHANGED) * 255)


# ---------------------------------------------------------------- masks: one convention
def test_mask_of_0_255_is_an_error_naming_file_and_values(tmp_path):
    root = str(tmp_path)
    write_patch_dataset(root, 'val', n_pos=1, n_neg=0)
    _as_0_255(root)
    path = osp.join(root, 'ann_dir', 'val', 'val_000.png')
    with pytest.raises(MaskValueError, match=r'val_000\.png: mask values must be 0 .* and 1 '
                                              r'.*found 0, 255.*--mask-values 0,255'):
        read_mask(path)
    with pytest.raises(MaskValueError, match='val_000.png'):  # through the data pipeline
        _dataset(root)[0]


def test_declared_mask_values_map_to_0_1(tmp_path):
    root = str(tmp_path)
    entries = write_patch_dataset(root, 'val', n_pos=2, n_neg=1)
    _as_0_255(root)
    dataset = _dataset(root, mask_values=(0, 255))
    for i, (_, _, mask) in enumerate(entries):
        np.testing.assert_array_equal(dataset[i]['data_samples'].gt_sem_seg.data[0].numpy(),
                                      mask)
    # 1 is not a declared value of a 0/255 dataset
    bad = osp.join(root, 'ann_dir', 'val', 'val_002.png')
    cv2.imwrite(bad, np.ones((32, 32), np.uint8))
    with pytest.raises(MaskValueError, match=r'val_002\.png.*must be 0 .* and 255.*found 1'):
        dataset[2]


def test_parse_mask_values():
    assert parse_mask_values('0,255') == (0, 255)
    assert parse_mask_values(None) == (0, 1)
    for bad in ('0', '1,1', '0,256', 'a,b'):
        with pytest.raises(ValueError, match='mask values'):
            parse_mask_values(bad)


def test_verify_files_names_undecodable_image_and_empty_mask(tmp_path):
    root = str(tmp_path)
    write_patch_dataset(root, 'test')
    image = osp.join(root, 'img_dir', 'test', 'test_001.png')
    with open(image, 'r+b') as f:
        f.truncate(20)  # a half-copied file
    dataset = _dataset(root, 'test', check_sizes=False)  # headers only would not see it
    with pytest.raises(PatchDatasetError, match=r'test_001\.png: not a decodable image'):
        dataset.verify_files()
    write_patch_dataset(root, 'test')
    open(osp.join(root, 'ann_dir', 'test', 'test_002.png'), 'wb').close()
    with pytest.raises((MaskValueError, PatchDatasetError), match=r'test_002\.png'):
        _dataset(root, 'test', check_sizes=False).verify_files()


# ---------------------------------------------------------------- atomic I/O
@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_keep_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_io.write_json(str(tmp_path / 'a.json'), dict(x=1))
        atomic_io.write_png(str(tmp_path / 'a.png'), np.zeros((4, 4), np.uint8), 'bgr')
    finally:
        os.umask(previous)
    for name in ('a.json', 'a.png'):
        assert os.stat(tmp_path / name).st_mode & 0o777 == mode


def test_atomic_write_fsyncs_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(fd) or real_fsync(fd))
    atomic_io.write_text(str(tmp_path / 'a.txt'), 'hello')
    assert len(synced) == 2  # the file, then its folder


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / 'a.txt')
    atomic_io.write_text(path, 'old')
    with pytest.raises(RuntimeError):
        with atomic_io.atomic_write(path) as tmp:
            open(tmp, 'w').write('half')
            raise RuntimeError('stopped')
    assert open(path).read() == 'old'
    assert os.listdir(tmp_path) == ['a.txt']


def test_png_channel_order_is_explicit(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    atomic_io.write_png(str(tmp_path / 'rgb.png'), rgb, channel_order='rgb')
    atomic_io.write_png(str(tmp_path / 'bgr.png'), rgb, channel_order='bgr')
    assert cv2.imread(str(tmp_path / 'rgb.png'))[0, 0].tolist() == [0, 0, 200]  # BGR read
    assert cv2.imread(str(tmp_path / 'bgr.png'))[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(ValueError, match='channel_order'):
        atomic_io.write_png(str(tmp_path / 'x.png'), rgb, channel_order='RGBA')


# ---------------------------------------------------------------- work-dir lock
def test_second_lock_fails_naming_the_holder(tmp_path):
    with WorkDirLock(str(tmp_path)):
        with pytest.raises(WorkDirLocked, match=rf'pid={os.getpid()} host='
                                                rf'{socket.gethostname()}'):
            WorkDirLock(str(tmp_path)).acquire()
    with WorkDirLock(str(tmp_path)) as lock:  # released: free again, and not stale
        assert lock.stale_holder is None


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; sys.path.insert(0, sys.argv[1]); '
         'from mmseg_epsam.utils.lock import WorkDirLock; '
         'WorkDirLock(sys.argv[2]).acquire(); print("held", flush=True); time.sleep(60)',
         ROOT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        with pytest.raises(WorkDirLocked, match=f'pid={holder.pid} '):
            WorkDirLock(str(tmp_path)).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with WorkDirLock(str(tmp_path)) as lock:
        assert lock.stale_holder.startswith(f'pid={holder.pid} host=')


def test_run_pipeline_refuses_a_locked_work_dir(tmp_path):
    start = time.monotonic()
    with WorkDirLock(str(tmp_path / 'work')):
        result = subprocess.run(
            [sys.executable, 'tools/run_pipeline.py', DEMO_CONFIG, '--work-dir',
             str(tmp_path / 'work')], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'is in use by another run' in result.stderr and f'pid={os.getpid()}' in result.stderr
    assert not osp.exists(tmp_path / 'work' / 'classifier')
    assert time.monotonic() - start < 120


# ---------------------------------------------------------------- pipeline keys
@pytest.mark.parametrize('key, value, message', [
    ('rounds.ids_treshold', 0.0, "'rounds.ids_treshold'; did you mean rounds.ids_threshold"),
    ('rounds.num_round', 2, "'rounds.num_round'; did you mean rounds.num_rounds"),
    ('cam.preset', 'camelyon61', "unknown CAM post-processing preset 'camelyon61'"),
    ('rounds.reset', 'fresh', 'rounds.reset must be one of'),
    ('export.labels', 'sam', "export.labels must be one of ('last_targets', 'final_decoder')"),
    ('export.label', 'sam', "'export.label'; did you mean export.labels"),
    ('export.negative_patches', 'all',
     "export.negative_patches must be one of (None, 'skip', 'empty_target')"),
    ('test.num_pictures', -1, 'test.num_pictures must be an integer >= 0'),
])
def test_bad_pipeline_keys_and_values_are_errors(tmp_path, key, value, message):
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict({key: value, 'work_dir': str(tmp_path)})
    with pytest.raises(PipelineConfigError) as info:
        EPSAMPipeline(cfg, DEMO_CONFIG)
    assert message in str(info.value)


def test_run_pipeline_names_a_misspelt_key(tmp_path):
    result = subprocess.run(
        [sys.executable, 'tools/run_pipeline.py', DEMO_CONFIG, '--work-dir', str(tmp_path),
         '--cfg-options', 'rounds.ids_treshold=0.0'], cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert result.returncode != 0
    assert 'did you mean rounds.ids_threshold?' in result.stderr


# ---------------------------------------------------------------- inputs checked at start
def _pipeline(tmp_path, data_root, **options):
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(dict(work_dir=str(tmp_path / 'work'), data_root=data_root, **options))
    return EPSAMPipeline(cfg, DEMO_CONFIG)


def test_inputs_are_checked_before_any_training(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1)
    _as_0_255(data_root, 'test')
    pipeline = _pipeline(tmp_path, data_root)
    with pytest.raises(MaskValueError, match=r'ann_dir/test/test_000\.png.*found 0, 255'):
        pipeline.check_inputs(pipeline.stage_names())
    _as_0_255(data_root, 'train')
    _as_0_255(data_root, 'val')
    _pipeline(tmp_path, data_root, mask_values='0,255').check_inputs(pipeline.stage_names())
    os.remove(osp.join(data_root, 'ann_dir', 'test', 'test_001.png'))
    with pytest.raises(PatchDatasetError, match=r"'test_001' has no mask"):
        _pipeline(tmp_path, data_root, mask_values='0,255').check_inputs(['test'])
    assert not osp.exists(tmp_path / 'work' / 'classifier')


def test_run_pipeline_rejects_0_255_masks_before_training(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1)
    _as_0_255(data_root, 'val')
    result = subprocess.run(
        [sys.executable, 'tools/run_pipeline.py', DEMO_CONFIG, '--work-dir',
         str(tmp_path / 'work'), '--data-root', data_root], cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert result.returncode != 0
    assert 'ann_dir/val/val_000.png: mask values must be 0 (background) and 1 (tumour); ' \
           'found 0, 255' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not osp.exists(tmp_path / 'work' / 'classifier')


def test_a_bad_sam_checkpoint_is_found_at_start(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1)
    bad = tmp_path / 'sam.pth'
    bad.write_bytes(b'not a checkpoint')
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(dict(work_dir=str(tmp_path / 'work'), data_root=data_root))
    pipeline = EPSAMPipeline(cfg, DEMO_CONFIG, sam_checkpoint=str(bad))
    with pytest.raises(Exception, match='sam.pth'):
        pipeline.check_inputs(pipeline.stage_names())


def test_a_bad_classifier_initialisation_is_found_at_start(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1)
    bad = tmp_path / 'imagenet_resnet50.pth'
    torch.save({'backbone.weight': torch.zeros(1)}, bad)
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(dict(work_dir=str(tmp_path / 'work'), data_root=data_root))
    cfg.classifier.cfg_options = {'model.backbone.pretrained': str(bad)}
    pipeline = EPSAMPipeline(cfg, DEMO_CONFIG)
    with pytest.raises(KeyError, match='imagenet_resnet50.pth'):
        pipeline.check_inputs(pipeline.stage_names())


# ---------------------------------------------------------------- stage records
def _finish_fake(pipeline, stage, **record):
    """Record ``stage`` as finished with its current fingerprint (no training)."""
    os.makedirs(osp.join(pipeline.work_dir, stage), exist_ok=True)
    pipeline._finish(stage, dict(record, fingerprint=pipeline.stage_fingerprint(stage)))


def test_a_changed_setting_stops_with_what_changed_and_force(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1)
    pipeline = _pipeline(tmp_path, data_root)
    _finish_fake(pipeline, 'classifier')
    pipeline._run_stage('classifier')  # same settings: skipped, no training
    changed = _pipeline(tmp_path, data_root, **{
        'classifier.cfg_options': {'train_cfg.max_epochs': 7}})
    with pytest.raises(StageChanged) as info:
        changed._run_stage('classifier')
    assert 'setting train_cfg.max_epochs:' in str(info.value) and '-> 7' in str(info.value)
    assert '--force classifier' in str(info.value)
    # a changed image changes the classifier's inputs
    image = osp.join(data_root, 'img_dir', 'train', 'train_000.png')
    os.utime(image, ns=(1, 1))
    with pytest.raises(StageChanged, match='input split train changed'):
        _pipeline(tmp_path, data_root)._run_stage('classifier')


def test_a_record_without_fingerprint_is_adopted_once(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1)
    pipeline = _pipeline(tmp_path, data_root)
    os.makedirs(osp.join(pipeline.work_dir, 'classifier'))
    pipeline._finish('classifier', dict(checkpoint=None, selection='last'))
    pipeline._run_stage('classifier')  # skipped, not retrained
    record = pipeline.stage_record('classifier')
    assert record['selection'] == 'last'
    assert record['fingerprint'] == pipeline.stage_fingerprint('classifier')


def test_adding_a_sam_checkpoint_is_a_change_of_the_decoder_stages(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1)
    pipeline = _pipeline(tmp_path, data_root)
    for stage in ('classifier', 'cams'):
        _finish_fake(pipeline, stage)
    old = pipeline.stage_fingerprint('decoder_r0')
    from mmseg_epsam.models.sam_encoders import litemedsam_checkpoint_path
    sam = litemedsam_checkpoint_path()  # a real SAM file given as a path
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(dict(work_dir=str(tmp_path / 'work'), data_root=data_root))
    new = EPSAMPipeline(cfg, DEMO_CONFIG, sam_checkpoint=str(sam)).stage_fingerprint(
        'decoder_r0')
    changes = describe_changes(old, new)
    assert any(line.startswith("input sam_checkpoint changed (none (set by the decoder config)")
               for line in changes), changes
    assert any(line.startswith('setting model.checkpoint:') for line in changes), changes


def test_force_deletes_the_stage_and_every_later_one(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1)
    pipeline = _pipeline(tmp_path, data_root)
    for folder in ('classifier', 'cams', 'decoder_r0', 'round_1', 'test'):
        os.makedirs(osp.join(pipeline.work_dir, folder))
    # stage 1 linked from another run, as benchmarks/sam_stages_seeds.py shares it
    shared = tmp_path / 'other_run' / 'stage1'
    shared.mkdir(parents=True)
    (shared / 'eval_test.json').write_text('{}')
    os.symlink(shared, osp.join(pipeline.work_dir, 'stage1'))
    pipeline.clear_from('cams')
    assert [name for name in sorted(os.listdir(pipeline.work_dir))
            if not name.endswith('.log')] == ['classifier']
    assert (shared / 'eval_test.json').read_text() == '{}'  # the linked run keeps its outputs


# ---------------------------------------------------------------- intermediates
def test_zero_length_stage1_files_name_the_file(tmp_path):
    cam, mask = tmp_path / 'p.npy', tmp_path / 'p.png'
    cam.write_bytes(b'')
    mask.write_bytes(b'')
    with pytest.raises(ValueError, match=r'p\.npy: not a readable \.npy'):
        load_cam(str(cam))
    with pytest.raises(ValueError, match=r'p\.png'):
        load_initial_mask(str(mask))


def test_a_truncated_cam_is_regenerated(tmp_path):
    writer = SplitWriter(str(tmp_path), 'train', show=False)
    rows = {'p': {}}
    atomic_io.write_npy(writer.cam_path('p'), np.full((8, 8), 0.5, np.float16))
    atomic_io.write_png(writer.mask_path('p'), np.ones((8, 8), np.uint8), 'bgr')
    assert writer.is_complete('p', rows)
    with open(writer.cam_path('p'), 'r+b') as f:
        f.truncate(100)
    assert not writer.is_complete('p', rows)
    atomic_io.write_npy(writer.cam_path('p'), np.full((8, 8), np.nan, np.float16))
    assert not writer.is_complete('p', rows)


@pytest.mark.parametrize('damage', ['garbage', 'nan', 'empty'])
def test_damaged_cache_entries_are_misses(tmp_path, damage):
    cache = EmbeddingCache(str(tmp_path))
    embedding = np.random.default_rng(0).standard_normal((4, 2, 2)).astype(np.float16)
    path = cache.save('f' * 40, 'ab' * 20, 'identity', embedding)
    np.testing.assert_array_equal(cache.load('f' * 40, 'ab' * 20), embedding)
    data = path.read_bytes()
    if damage == 'garbage':  # same size, other bytes
        path.write_bytes(data[:-60] + bytes(60))
    elif damage == 'nan':
        cache.save('f' * 40, 'ab' * 20, 'identity', np.full((4, 2, 2), np.nan, np.float16))
    else:
        path.write_bytes(b'')
    assert cache.load('f' * 40, 'ab' * 20) is None
    assert cache.misses == 1 and cache.hits == 1


def test_summary_is_deleted_when_a_run_starts(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=1, n_neg=1)
    pipeline = _pipeline(tmp_path, data_root)
    summary = osp.join(pipeline.work_dir, 'summary.json')
    with open(summary, 'w') as f:
        json.dump(dict(test=dict(Dice=100.0)), f)
    _as_0_255(data_root, 'test')  # the run fails at its input check
    with pytest.raises(MaskValueError):
        pipeline.run()
    assert not osp.exists(summary)


# ---------------------------------------------------------------- checkpoint vs config
def test_checkpoint_trained_with_another_model_lists_the_keys():
    from mmseg_epsam.utils.checkpoint import checkpoint_config_differences
    trained = Config(dict(model=dict(type='EPSAMPatchClassifier', init_cfg=dict(a=1),
                                     backbone=dict(type='EVPADLResNet', dilate_layer4=True,
                                                   evp=dict(square_size=32)))))
    given = Config(dict(model=dict(type='EPSAMPatchClassifier', init_cfg=dict(a=2),
                                   backbone=dict(type='EVPADLResNet', dilate_layer4=False,
                                                 evp=dict(square_size=16)))))
    checkpoint = dict(meta=dict(cfg=trained.pretty_text), state_dict={})
    assert checkpoint_config_differences(checkpoint, given) == [
        'model.backbone.dilate_layer4: true -> false',
        'model.backbone.evp.square_size: 32 -> 16']
    assert checkpoint_config_differences(checkpoint, trained) == []
    assert checkpoint_config_differences(dict(state_dict={}), given) == []  # nothing recorded


# ---------------------------------------------------------------- resume = no interruption
class _AugmentedNumbers(torch.utils.data.Dataset):
    """Eight vectors with a NumPy-random augmentation, as image transforms draw."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(inputs=torch.full((4, ), float(index)) + torch.from_numpy(
            np.random.rand(4).astype(np.float32)))


class _DropoutModel(BaseModel):
    """A linear model with an ADL-like torch draw in every training step."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        drop = float(torch.rand(()) < 0.5)
        out = self.linear(inputs * (1.0 + drop))
        return dict(loss=(out - 1).pow(2).mean()) if mode == 'loss' else out


@HOOKS.register_module(force=True)
class KillAtHook(Hook):
    """Stops training at an epoch start or after an iteration (after its checkpoint), as a
    kill -9 would."""

    priority = 'LOWEST'

    def __init__(self, epoch=None, iteration=None):
        self.epoch, self.iteration = epoch, iteration

    def before_train_epoch(self, runner):
        if runner.epoch == self.epoch:
            raise KeyboardInterrupt

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            raise KeyboardInterrupt


def _train_toy(work_dir, by_epoch, hooks, resume=False):
    loop = dict(by_epoch=True, max_epochs=3) if by_epoch else dict(by_epoch=False,
                                                                    max_iters=10)
    torch.manual_seed(0)  # the same initial weights in every run
    runner = Runner(
        model=_DropoutModel(), work_dir=work_dir,
        train_dataloader=dict(
            dataset=_AugmentedNumbers(), batch_size=2, num_workers=1,
            sampler=dict(type='DefaultSampler' if by_epoch else 'InfiniteSampler',
                         shuffle=True),
            collate_fn=dict(type='default_collate'),
            worker_init_fn=dict(type='seed_worker_from_torch')),
        train_cfg=loop, optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                           by_epoch=by_epoch)),
        custom_hooks=hooks, randomness=dict(seed=3), resume=resume, default_scope='mmseg',
        experiment_name=f'toy_{osp.basename(work_dir)}_{len(hooks)}_{resume}')
    with trusted_mmengine_checkpoints():
        runner.train()
    return runner.model.linear.weight.detach().clone()


@pytest.mark.parametrize('by_epoch, kill', [(True, dict(epoch=1)),
                                            (False, dict(iteration=4))])
def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, by_epoch, kill):
    weights = {}
    for hooked in (True, False):
        randomness = [dict(type='ResumableRandomnessHook')] if hooked else []
        uninterrupted = _train_toy(str(tmp_path / f'whole{hooked}'), by_epoch, randomness)
        killed_dir = str(tmp_path / f'killed{hooked}')
        with pytest.raises(KeyboardInterrupt):
            _train_toy(killed_dir, by_epoch, randomness + [dict(type='KillAtHook', **kill)])
        resumed = _train_toy(killed_dir, by_epoch, randomness, resume=True)
        weights[hooked] = (uninterrupted, resumed)
    assert torch.equal(*weights[True])
    # without the hook the resumed run restarts the random streams: other weights
    assert not torch.equal(*weights[False])


def test_the_run_records_its_config_with_absolute_paths(tmp_path):
    data_root = str(tmp_path / 'data')
    pipeline = _pipeline(tmp_path, data_root, **{'rounds.ids_threshold': 0.5})
    path = tmp_path / 'pipeline_config.py'
    path.write_text(pipeline.recorded_config().pretty_text)
    recorded = Config.fromfile(str(path))
    assert recorded.rounds.ids_threshold == 0.5
    assert recorded.classifier.config == osp.join(ROOT, 'configs', 'epsam',
                                                  'classifier_demo.py')
    assert recorded.work_dir == str(tmp_path / 'work') and recorded.data_root == data_root
    # a pipeline built from the recorded file finds the same stage configs
    EPSAMPipeline(recorded, str(path)).stage_config(recorded.classifier, 'classifier')


def test_weights_of_another_shape_name_the_checkpoint(tmp_path):
    from mmseg_epsam.engine.cam_generation import load_classifier_checkpoint
    path = str(tmp_path / 'other_fusion.pth')
    state_dict = {'weight': torch.zeros(3, 5), 'bias': torch.zeros(3)}
    torch.save(dict(meta=dict(), state_dict=state_dict), path)
    with pytest.raises(RuntimeError, match=r'(?s)other_fusion\.pth: its weights do not fit '
                                           r'the configured Linear.*size mismatch'):
        load_classifier_checkpoint(torch.nn.Linear(4, 3), path)



def test_infer_wsi_uses_the_settings_the_run_recorded(tmp_path, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'infer_wsi_tool', osp.join(ROOT, 'tools', 'infer_wsi.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    used = []

    def stop(config, *args, **kwargs):
        used.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(tool, 'build_epsam_tile_predictor', stop)
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    argv = [DEMO_CONFIG, str(work_dir), 'slide.svs', '--out', str(tmp_path / 'out')]
    for recorded in (False, True):
        if recorded:
            (work_dir / 'pipeline_config.py').write_text("cam = dict(preset='reference')\n")
        with pytest.raises(KeyboardInterrupt):
            tool.main(argv)
    with pytest.raises(KeyboardInterrupt):
        tool.main(argv + ['--use-given-config'])
    assert used == [DEMO_CONFIG, str(work_dir / 'pipeline_config.py'), DEMO_CONFIG]
