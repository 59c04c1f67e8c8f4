"""tools/train.py, --resume and tools/test.py under torch >= 2.6 on a stock MMSeg UNet."""
import glob
from fractions import Fraction
import os.path as osp

import pytest
import torch

from conftest import ROOT, run_tool, write_patch_dataset
from mmseg_epsam.utils import load_foreign_state_dict, trusted_mmengine_checkpoints
from mmengine.runner.checkpoint import CheckpointLoader

CONFIG = osp.join(ROOT, 'configs', 'epsam', 'unet_demo.py')


def overrides(data_root, max_iters):
    opts = [f'{loader}.dataset.data_root={data_root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    opts += [f'{loader}.num_workers=0' for loader in
             ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    opts += [f'{loader}.persistent_workers=False' for loader in
             ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    opts += [f'train_cfg.max_iters={max_iters}', 'train_cfg.val_interval=2',
             'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=2',
             'default_hooks.logger.interval=1']
    return opts


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    data_root = str(tmp_path_factory.mktemp('data'))
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, size=64)
    work_dir = str(tmp_path_factory.mktemp('work'))
    run_tool('tools/train.py', CONFIG, '--work-dir', work_dir, '--cfg-options',
             *overrides(data_root, 2))
    return data_root, work_dir


def test_train_writes_mmengine_checkpoint_that_needs_trusted_loading(trained):
    _, work_dir = trained
    ckpt = osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(ckpt)
    # MMEngine checkpoints hold HistoryBuffer pickles: torch's safe default refuses them ...
    with pytest.raises(Exception):
        torch.load(ckpt, map_location='cpu', weights_only=True)
    # ... and the scoped loader accepts them, then restores the safe default.
    default_loader = CheckpointLoader._schemes['']
    with trusted_mmengine_checkpoints():
        state = CheckpointLoader.load_checkpoint(ckpt, map_location='cpu')
    assert CheckpointLoader._schemes[''] is default_loader
    assert state['meta']['iter'] == 2 and 'message_hub' in state


def test_resume_continues_from_last_iteration(trained):
    data_root, work_dir = trained
    log = run_tool('tools/train.py', CONFIG, '--work-dir', work_dir, '--resume',
                   '--cfg-options', *overrides(data_root, 4))
    assert 'resumed epoch: 0, iter: 2' in log
    assert osp.isfile(osp.join(work_dir, 'iter_4.pth'))


def test_test_tool_loads_checkpoint_reports_metrics_and_writes_masks(trained, tmp_path):
    data_root, work_dir = trained
    out_dir = str(tmp_path / 'masks')
    log = run_tool('tools/test.py', CONFIG, osp.join(work_dir, 'iter_2.pth'), '--work-dir',
                   str(tmp_path), '--out', out_dir, '--cfg-options',
                   *overrides(data_root, 2))
    assert 'mDice' in log and 'neg_fp_area' in log
    assert len(glob.glob(osp.join(out_dir, '*.png'))) == 4


def test_foreign_weights_load_weights_only(tmp_path):
    plain = tmp_path / 'plain.pth'
    torch.save({'model': {'conv.weight': torch.ones(2, 2)}}, plain)
    state = load_foreign_state_dict(str(plain), required_prefix='conv.')
    assert torch.equal(state['conv.weight'], torch.ones(2, 2))
    with pytest.raises(KeyError, match=r'plain\.pth: no key starts with .mask_decoder'):
        load_foreign_state_dict(str(plain), required_prefix='mask_decoder.')
    unsafe = tmp_path / 'unsafe.pth'
    torch.save({'w': torch.ones(1), 'obj': Fraction(1, 3)}, unsafe)
    with pytest.raises(RuntimeError, match=r'unsafe\.pth: not a plain tensor checkpoint'):
        load_foreign_state_dict(str(unsafe))
    with pytest.raises(FileNotFoundError, match=r'missing\.pth: weight file not found'):
        load_foreign_state_dict(str(tmp_path / 'missing.pth'))
