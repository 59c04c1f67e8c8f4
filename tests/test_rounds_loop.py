"""PseudoLabelRoundsLoop: Algorithm 1's rounds declared in the decoder config and run by
one MMEngine runner (tiny random SAM, stage-1 outputs written from the masks)."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, write_patch_dataset
from mmengine.config import Config
from mmengine.hooks import Hook

from mmseg.registry import HOOKS
from mmseg.utils import register_all_modules
from mmseg_epsam.utils.config_tree import set_data_root, set_hook, set_stage1_dir
from mmseg_epsam.datasets.ids_pseudo_label_dataset import EmptyPseudoLabelSelection
from mmseg_epsam.engine.loops.pseudo_label_rounds_loop import FINAL_ROUND_KEY
from mmseg_epsam.engine.runner import EPSAMRunner
from mmseg_epsam.utils.layout import round_paths, round_targets, stage1_paths

register_all_modules(init_default_scope=True)
DECODER_CONFIG = osp.join(ROOT, 'tests/configs/sam_decoder_tiny.py')


@HOOKS.register_module()
class DecoderAtRoundStart(Hook):
    """Records the mask decoder's weights at the start of every round (after any reset)."""

    priority = 'LOW'

    def __init__(self) -> None:
        self.weights = {}

    def before_train_round(self, runner, round_index, resumed):
        self.weights[round_index] = {k: v.clone() for k, v in
                                     runner.model.mask_decoder.state_dict().items()}


def write_stage1(data_root, stage1_dir, entries):
    """Stage-1 outputs of the train split: the ground truth as CAM and initial mask."""
    paths = stage1_paths(stage1_dir, 'train')
    os.makedirs(paths['cam_dir'])
    os.makedirs(paths['initial_mask_dir'])
    rows = ['name,label,cls_score,cam_area,mask_area\n']
    for name, label, mask in entries:
        np.save(osp.join(paths['cam_dir'], f'{name}.npy'), mask.astype(np.float16))
        cv2.imwrite(osp.join(paths['initial_mask_dir'], f'{name}.png'), mask)
        rows.append(f'{name},{label},{float(label)},{mask.mean()},{mask.mean()}\n')
    with open(paths['manifest_file'], 'w') as f:
        f.writelines(rows)


@pytest.fixture(scope='module')
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp('rounds')
    data_root, stage1_dir = str(root / 'data'), str(root / 'stage1')
    write_stage1(data_root, stage1_dir,
                 write_patch_dataset(data_root, 'train', n_pos=3, n_neg=1, size=64))
    return data_root, stage1_dir


def decoder_config(stage1, work_dir, reset='pretrained', ids_threshold=0.0, **loop):
    """The tiny decoder config on the fixture's data: 2 iterations per round, 2 rounds."""
    data_root, stage1_dir = stage1
    cfg = Config.fromfile(DECODER_CONFIG)
    set_data_root(cfg._cfg_dict, data_root)
    set_stage1_dir(cfg._cfg_dict, stage1_dir)
    cfg.train_dataloader.dataset.rounds = [dict(
        pseudo_label_dir=stage1_paths(stage1_dir, 'train')['initial_mask_dir'],
        table_file=None)]
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg.update(num_rounds=2, iters_per_round=2, **loop)
    cfg.model.embedding_cache = None
    set_hook(cfg, 'DecoderResetHook', mode=reset)
    set_hook(cfg, 'PseudoLabelGeneratorHook', ids_threshold=ids_threshold)
    set_hook(cfg, 'ResumableRandomnessHook')
    set_hook(cfg, 'DecoderAtRoundStart')
    cfg.work_dir = str(work_dir)
    return cfg


def train(cfg, resume=False):
    cfg.resume = resume
    runner = EPSAMRunner.from_cfg(cfg)
    runner.train()
    return runner


def recorder(runner):
    return next(h for h in runner.hooks if isinstance(h, DecoderAtRoundStart))


def decoder_weights(path):
    state = torch.load(path, map_location='cpu', weights_only=False)['state_dict']
    return {k[len('mask_decoder.'):]: v for k, v in state.items()
            if k.startswith('mask_decoder.')}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_the_config_declares_the_rounds():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/epsam/sam_decoder_demo.py'))
    assert cfg.train_cfg.type == 'PseudoLabelRoundsLoop' and cfg.train_cfg.num_rounds == 3
    assert [h['type'] for h in cfg.custom_hooks] == ['DecoderResetHook',
                                                     'PseudoLabelGeneratorHook']
    camelyon = Config.fromfile(osp.join(ROOT, 'configs/epsam/sam_decoder_camelyon.py'))
    assert camelyon.train_cfg.epochs_per_round == 20  # paper: 20 epochs per round


def test_every_round_trains_on_its_own_targets_and_saves_its_decoder(stage1, tmp_path):
    runner = train(decoder_config(stage1, tmp_path))
    for k in range(3):
        checkpoint = torch.load(tmp_path / f'decoder_r{k}.pth', map_location='cpu',
                                weights_only=False)
        assert checkpoint['meta']['iter'] == 2 * (k + 1)
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read() == str(tmp_path / 'decoder_r2.pth')
    for k in (1, 2):  # pseudo-labels of every positive train patch, by the decoder before
        paths = round_paths(str(tmp_path / f'round_{k}'))
        assert sorted(os.listdir(paths['pseudo_label_dir'])) == [
            f'train_{i:03d}.png' for i in range(3)]
        assert osp.isfile(paths['table_file'])
    assert not osp.exists(tmp_path / 'round_3')  # num_rounds = 2: no labels after the last
    assert runner.train_loop.dataloader.dataset.rounds == round_targets(str(tmp_path), 2)
    assert runner.message_hub.get_info(FINAL_ROUND_KEY) == 2
    # 'pretrained' reset: every round starts from the same (checkpoint) decoder
    starts = recorder(runner).weights
    assert_same(starts[1], starts[0])
    assert_same(starts[2], starts[0])
    assert any(not torch.equal(v, starts[0][k])
               for k, v in decoder_weights(tmp_path / 'decoder_r0.pth').items())


def test_previous_reset_continues_from_the_last_decoder(stage1, tmp_path):
    runner = train(decoder_config(stage1, tmp_path, reset='previous', last_round=1))
    assert_same(recorder(runner).weights[1], decoder_weights(tmp_path / 'decoder_r0.pth'))
    assert not osp.exists(tmp_path / 'decoder_r2.pth')


def test_a_run_stopped_at_a_round_boundary_resumes_to_the_same_decoders(stage1, tmp_path):
    train(decoder_config(stage1, tmp_path / 'whole'))
    train(decoder_config(stage1, tmp_path / 'stopped', last_round=0))
    assert osp.isfile(tmp_path / 'stopped' / 'round_1' / 'ids_table.csv')
    runner = train(decoder_config(stage1, tmp_path / 'stopped'), resume=True)
    assert runner.message_hub.get_info(FINAL_ROUND_KEY) == 2
    for k in range(3):
        assert_same(decoder_weights(tmp_path / 'stopped' / f'decoder_r{k}.pth'),
                    decoder_weights(tmp_path / 'whole' / f'decoder_r{k}.pth'))


def test_an_empty_selection_ends_the_rounds_with_the_previous_decoder(stage1, tmp_path):
    # IDS > 1 never holds: round 1 keeps nothing, so decoder_r0 stays the final decoder
    runner = train(decoder_config(stage1, tmp_path / 'run', ids_threshold=1.0))
    assert runner.message_hub.get_info(FINAL_ROUND_KEY) == 0
    assert osp.isfile(tmp_path / 'run' / 'decoder_r0.pth')
    assert not osp.exists(tmp_path / 'run' / 'decoder_r1.pth')
    # a run that starts at such a round has nothing to train
    cfg = decoder_config(stage1, tmp_path / 'later', first_round=1,
                         rounds_dir=str(tmp_path / 'run'))
    with pytest.raises(EmptyPseudoLabelSelection, match='no training patch selected'):
        train(cfg)


def test_bad_loop_settings_are_named(stage1, tmp_path):
    for loop, message in ((dict(epochs_per_round=1), 'exactly one of iters_per_round'),
                          (dict(first_round=2, last_round=1), 'first_round <= last_round')):
        with pytest.raises(ValueError, match=message):
            train(decoder_config(stage1, tmp_path, **loop))
