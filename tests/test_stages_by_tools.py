"""Stage by stage through the mm-style tools alone: the classifier config writes stage 1
(its CAMGeneratorHook), the decoder config trains every round (its PseudoLabelRoundsLoop)."""
import os.path as osp

from conftest import ROOT, run_tool, write_patch_dataset

from mmseg_epsam.utils.layout import round_paths, stage1_paths


def test_classifier_then_decoder_rounds_with_tools_train(tmp_path):
    data_root = str(tmp_path / 'data')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=3, n_neg=2, size=64)
    classifier_dir = str(tmp_path / 'classifier')
    # seed 1: on these noise patches seed 0's CAMs are empty after one epoch
    log = run_tool('tools/train.py', osp.join(ROOT, 'configs/epsam/classifier_demo.py'),
                   '--work-dir', classifier_dir, '--cfg-options', 'randomness.seed=1',
                   'train_cfg.max_epochs=1', 'train_dataloader.batch_size=2',
                   *[f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader',
                                                           'test_dataloader')
                     for key in (f'dataset.data_root={data_root}', 'num_workers=0',
                                 'persistent_workers=False')])
    stage1_dir = osp.join(classifier_dir, 'stage1')
    for split in ('train', 'val', 'test'):
        assert osp.isfile(stage1_paths(stage1_dir, split)['manifest_file']), log[-3000:]
    with open(stage1_paths(stage1_dir, 'val')['manifest_file']) as f:
        assert len(f.readlines()) == 1 + 5  # header + this data's val patches
    assert osp.isfile(stage1_paths(stage1_dir, 'test')['eval_file'])

    decoder_dir = str(tmp_path / 'decoder')
    initial_masks = stage1_paths(stage1_dir, 'train')['initial_mask_dir']
    datasets = ('train_dataloader.dataset.dataset', 'pseudo_label_dataset',
                'test_dataloader.dataset')
    log = run_tool('tools/train.py', osp.join(ROOT, 'tests/configs/sam_decoder_tiny.py'),
                   '--work-dir', decoder_dir, '--cfg-options',
                   *[f'{d}.{key}' for d in datasets
                     for key in (f'data_root={data_root}', f'stage1_root={stage1_dir}')],
                   f'train_dataloader.dataset.rounds.0.pseudo_label_dir={initial_masks}',
                   'train_dataloader.batch_size=2',
                   'model.embedding_cache=None', 'train_cfg.num_rounds=1',
                   'train_cfg.iters_per_round=1', 'custom_hooks.1.ids_threshold=0.0')
    for name in ('decoder_r0.pth', 'decoder_r1.pth'):
        assert osp.isfile(osp.join(decoder_dir, name)), log[-3000:]
    assert osp.isfile(round_paths(osp.join(decoder_dir, 'round_1'))['table_file'])
    assert 'round 1: training the decoder for 1 iterations' in log
