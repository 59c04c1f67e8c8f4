"""tools/run_pipeline.py end to end on generated patches with the tiny random SAM."""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import pytest

from conftest import ROOT, run_tool, write_patch_dataset

STAGES = ('classifier', 'cams', 'decoder_r0', 'decoder_r1', 'pseudo_label_dataset', 'test')
CLASSIFIER_OPTIONS = ('classifier.cfg_options.randomness.seed=1',
                      'classifier.cfg_options.train_cfg.max_epochs=1',
                      'classifier.cfg_options.train_dataloader.batch_size=2')


def run_pipeline(data_root, work_dir, *extra):
    # The generated patches are noise, so after one epoch whether a CAM is positive anywhere
    # is down to the seed; seed 1 gives non-empty initial masks (seed 0 gives none with the
    # 256-px demo classifier, and decoder_r0 then stops with its 'every one is empty' error).
    return run_tool('tools/run_pipeline.py', 'tests/configs/epsam_tiny_sam.py',
           '--work-dir', work_dir, '--data-root', data_root, '--cfg-options',
           *CLASSIFIER_OPTIONS,
           'decoder.cfg_options.train_cfg.iters_per_round=2',
           'decoder.cfg_options.train_dataloader.batch_size=2',
           'rounds.num_rounds=1', 'rounds.ids_threshold=0.0', *extra)


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory):
    data_root = str(tmp_path_factory.mktemp('data'))
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=3, n_neg=2, size=64)
    work_dir = str(tmp_path_factory.mktemp('work'))
    log = run_pipeline(data_root, work_dir)
    return data_root, work_dir, log


def test_every_stage_writes_its_outputs(pipeline_run):
    data_root, work_dir, log = pipeline_run
    # the SAM in use is named, and random weights are flagged
    assert 'SAM stages: MetaSAMViTEncoder(arch=tiny) with RANDOM weights (tests only)' in log
    summary = json.load(open(osp.join(work_dir, 'summary.json')))
    assert summary['sam_model'] == 'MetaSAMViTEncoder(arch=tiny) with RANDOM weights (tests only)'
    for stage in STAGES:
        assert osp.isfile(osp.join(work_dir, stage, 'stage_done.json')), stage
    for split, count in (('train', 3), ('val', 5), ('test', 5)):
        names = [line.split()[0] for line in open(osp.join(data_root, 'splits', f'{split}.txt'))]
        expected = names[:count]
        for name in expected:
            assert osp.isfile(osp.join(work_dir, 'stage1', 'cams', split, f'{name}.npy'))
            assert osp.isfile(osp.join(work_dir, 'stage1', 'initial_masks', split, f'{name}.png'))
    table = open(osp.join(work_dir, 'round_1', 'ids_table.csv')).read().splitlines()
    assert table[0] == 'name,cam_area,sam_area,ids,kept,sam_dice_gt,initial_dice_gt'
    assert len(table) == 1 + 3
    # threshold 0 keeps every non-empty SAM mask, so decoder_r1 trained on them
    record = json.load(open(osp.join(work_dir, 'decoder_r1', 'stage_done.json')))
    kept = sum(int(row.split(',')[4]) for row in table[1:])
    assert record['status'] == ('trained' if kept else 'no_pseudo_labels')
    summary = json.load(open(osp.join(work_dir, 'summary.json')))
    assert summary['test']['num_pos'] == 3 and summary['test']['num_neg'] == 2
    assert 0 <= summary['test']['Dice'] <= 100
    assert len(os.listdir(osp.join(work_dir, "test", "masks"))) == 5
    assert len(os.listdir(osp.join(work_dir, "test", "pictures"))) == 5
    assert 'EP-SAM summary' in log
    # Tables 5-6: the zero-shot SAM and every trained round, on val and test, gated or not
    every = summary['every_decoder']
    final = 'decoder_r1' if record['status'] == 'trained' else 'decoder_r0'
    decoders = ['zero-shot', 'decoder_r0'] + (['decoder_r1'] if final == 'decoder_r1' else [])
    assert [(r['decoder'], r['split'], r['gated']) for r in every] == [
        (d, split, gated) for d in decoders for split in ('val', 'test') for gated in (True, False)]
    final_test = [r for r in every if r['decoder'] == final and r['split'] == 'test']
    assert final_test[0]['Dice'] == pytest.approx(summary['test']['Dice'])
    assert final_test[1]['Dice'] == pytest.approx(summary['test_ungated']['Dice'])
    assert 'Every decoder' in log
    # each stage's wall time, from its record, in the summary and its text table
    walls = summary['stage_wall_s']
    assert list(walls) == ['classifier', 'cams', 'decoder_r0', 'decoder_r1',
                           'pseudo_label_dataset', 'test']
    assert all(wall >= 0 for wall in walls.values()) and walls['classifier'] > 0
    assert 'Stage wall time (s, the run that finished each stage): classifier ' in log


def test_second_run_skips_every_stage(pipeline_run):
    data_root, work_dir, _ = pipeline_run
    log = run_pipeline(data_root, work_dir)
    for stage in STAGES:
        assert f'[{stage}] done earlier: skipped' in log
    assert 'Iter(train)' not in log


def test_until_stops_after_the_stage_and_a_rerun_continues(tmp_path):
    data_root, work_dir = str(tmp_path / 'data'), str(tmp_path / 'work')
    for split in ('train', 'val', 'test'):
        write_patch_dataset(data_root, split, n_pos=2, n_neg=1, size=64)
    log = run_pipeline(data_root, work_dir, '--until', 'classifier')
    assert "Stopped after stage 'classifier'" in log
    for stage in STAGES:
        assert osp.isfile(osp.join(work_dir, stage, 'stage_done.json')) == (
            stage == 'classifier'), stage
    # q = 1 drops every activation: all initial masks empty, so decoder_r0 has nothing
    # to train on and must say so (naming stage 1) instead of failing obscurely
    # the classifier settings are those of the first run (other ones would be refused)
    result = subprocess.run(
        [sys.executable, 'tools/run_pipeline.py', 'tests/configs/epsam_tiny_sam.py', '--work-dir',
         work_dir, '--data-root', data_root, '--until', 'decoder_r0', '--cfg-options',
         *CLASSIFIER_OPTIONS, 'cam.postprocess.quantile=1.0',
         'decoder.cfg_options.train_cfg.iters_per_round=2'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert '[classifier] done earlier: skipped' in result.stdout + result.stderr
    assert osp.isfile(osp.join(work_dir, 'cams', 'stage_done.json'))
    masks_dir = osp.join(work_dir, 'stage1', 'initial_masks', 'train')
    assert sorted(os.listdir(masks_dir)) and all(
        not cv2.imread(osp.join(masks_dir, name), cv2.IMREAD_UNCHANGED).any()
        for name in os.listdir(masks_dir))
    assert 'decoder_r0: IDSPseudoLabelDataset: no training patch selected' in result.stderr
    assert 'every one is empty' in result.stderr and 'manifest_train.csv' in result.stderr
    assert not osp.isfile(osp.join(work_dir, 'decoder_r0', 'stage_done.json'))


def test_until_an_unknown_stage_names_the_stages(tmp_path):
    result = subprocess.run(
        [sys.executable, 'tools/run_pipeline.py', 'tests/configs/epsam_tiny_sam.py', '--work-dir',
         str(tmp_path), '--until', 'decoder'], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert result.returncode != 0
    assert "--until 'decoder': unknown stage" in result.stderr
    assert 'classifier, cams, decoder_r0' in result.stderr


def test_a_deleted_initial_mask_is_regenerated_and_nothing_else_reruns(pipeline_run):
    data_root, work_dir, _ = pipeline_run
    mask_dir = osp.join(work_dir, 'stage1', 'initial_masks', 'train')
    name = sorted(os.listdir(mask_dir))[0]
    before = open(osp.join(mask_dir, name), 'rb').read()
    os.remove(osp.join(mask_dir, name))
    log = run_pipeline(data_root, work_dir)
    assert 'were deleted, added or resized: regenerating what is missing' in log
    assert open(osp.join(mask_dir, name), 'rb').read() == before
    for stage in STAGES[2:]:  # the same files again: nothing downstream is redone
        assert f'[{stage}] done earlier: skipped' in log


def test_a_changed_decoder_setting_is_refused_then_forced(pipeline_run):
    data_root, work_dir, _ = pipeline_run
    result = subprocess.run(
        [sys.executable, 'tools/run_pipeline.py', 'configs/epsam/epsam_demo.py', '--work-dir',
         work_dir, '--data-root', data_root, '--cfg-options', *CLASSIFIER_OPTIONS,
         'decoder.cfg_options.train_cfg.iters_per_round=3', 'decoder.cfg_options.train_dataloader'
         '.batch_size=2', 'rounds.num_rounds=1', 'rounds.ids_threshold=0.0'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert '[decoder_r0] its outputs were made with other settings' in result.stderr
    assert 'setting train_cfg.iters_per_round: 2 -> 3' in result.stderr
    assert '--force decoder_r0' in result.stderr
    assert not osp.exists(osp.join(work_dir, 'summary.json'))  # never a stale summary
    assert osp.isfile(osp.join(work_dir, 'decoder_r0', 'stage_done.json'))  # kept


def test_raising_num_rounds_continues_a_finished_run(pipeline_run):
    data_root, work_dir, _ = pipeline_run
    last = json.load(open(osp.join(work_dir, 'decoder_r1', 'stage_done.json')))
    log = run_pipeline(data_root, work_dir, 'rounds.num_rounds=2')
    for stage in ('classifier', 'cams', 'decoder_r0'):
        assert f'[{stage}] done earlier: skipped' in log
    summary = json.load(open(osp.join(work_dir, 'summary.json')))
    if last['status'] == 'trained':
        assert '[decoder_r1] continuing: rounds.num_rounds=2' in log
        assert osp.isfile(osp.join(work_dir, 'round_2', 'ids_table.csv'))
        assert osp.isfile(osp.join(work_dir, 'decoder_r2', 'stage_done.json'))
        assert [row['what'] for row in summary['rounds']][-1].startswith('round 2 ')
    else:  # round 1 kept nothing: the rounds stopped there, and still do
        assert '[decoder_r2] not run: an earlier round kept no pseudo-label' in log
    assert '[test] recomputing' in log or '[test] done earlier' in log
    assert summary['test']['num_pos'] == 3


def test_negative_patches_train_the_decoder_and_are_exported(pipeline_run, tmp_path):
    """decoder.cfg_options...negative_patches=empty_target (beyond the paper): the decoder
    trains on the 2 negative training patches too, and the exported pseudo-label dataset
    lists them as label 0 with all-zero masks. Stage 1 is shared by links, as
    benchmarks/sam_stages_seeds.py does."""
    data_root, source, _ = pipeline_run
    work_dir = tmp_path / 'negatives'
    work_dir.mkdir()
    for name in ('classifier', 'cams', 'stage1'):
        os.symlink(osp.join(source, name), work_dir / name)
    log = run_pipeline(data_root, str(work_dir), 'rounds.num_rounds=0',
                       'decoder.cfg_options.train_dataloader.dataset.negative_patches'
                       '=empty_target', '--until', 'pseudo_label_dataset')
    assert 'negatives=2' in log and '[classifier] done earlier: skipped' in log
    export = work_dir / 'pseudo_label_dataset'
    lines = dict(line.split() for line in open(export / 'splits' / 'train.txt'))
    train = dict(line.split() for line in open(osp.join(data_root, 'splits', 'train.txt')))
    negatives = [name for name, label in train.items() if label == '0']
    assert len(negatives) == 2 and all(lines[name] == '0' for name in negatives)
    for name in negatives:
        mask = cv2.imread(str(export / 'ann_dir' / 'train' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (64, 64) and not mask.any()
    assert sum(label == '1' for label in lines.values()) >= 1


def test_final_decoder_masks_are_exported_when_asked(pipeline_run, tmp_path):
    """export.labels=final_decoder with no rounds: the exported train labels are decoder_r0's
    own masks on the positive patches, bit for bit the masks that round-1 generation wrote
    in the shared run (stage 1 is shared by links; decoder_r0 retrains with the same seed).
    export.negative_patches=empty_target adds the negatives with all-zero masks, although
    this decoder trained on positives only."""
    data_root, source, _ = pipeline_run
    work_dir = tmp_path / 'final'
    work_dir.mkdir()
    for name in ('classifier', 'cams', 'stage1'):
        os.symlink(osp.join(source, name), work_dir / name)
    run_pipeline(data_root, str(work_dir), 'rounds.num_rounds=0',
                 'export.labels=final_decoder', 'export.negative_patches=empty_target',
                 '--until', 'pseudo_label_dataset')
    masks_dir = work_dir / 'final_decoder_masks' / 'pseudo_labels'
    round_1 = osp.join(source, 'round_1', 'pseudo_labels')
    train = dict(line.split() for line in open(osp.join(data_root, 'splits', 'train.txt')))
    positives = sorted(name for name, label in train.items() if label == '1')
    assert sorted(p[:-4] for p in os.listdir(masks_dir)) == positives
    export = work_dir / 'pseudo_label_dataset'
    exported = dict(line.split() for line in open(export / 'splits' / 'train.txt'))
    for name in positives:
        mask = cv2.imread(str(masks_dir / f'{name}.png'), cv2.IMREAD_UNCHANGED)
        assert (mask == cv2.imread(osp.join(round_1, f'{name}.png'),
                                   cv2.IMREAD_UNCHANGED)).all()
        # every positive with a non-empty mask is exported with that mask, no IDS filter
        assert (name in exported) == bool(mask.any())
        if mask.any():
            assert exported[name] == '1'
            assert (cv2.imread(str(export / 'ann_dir' / 'train' / f'{name}.png'),
                               cv2.IMREAD_UNCHANGED) == mask).all()
    assert '1' in exported.values()
    negatives = [name for name, label in train.items() if label == '0']
    assert len(negatives) == 2 and all(exported[name] == '0' for name in negatives)
    for name in negatives:
        assert not cv2.imread(str(export / 'ann_dir' / 'train' / f'{name}.png'),
                              cv2.IMREAD_UNCHANGED).any()
    record = json.load(open(export / 'stage_done.json'))
    assert record['labels'] == 'final_decoder' and record['patches'] == len(exported)
    assert record['counts']['negatives'] == 2
    expected = json.load(open(osp.join(source, 'round_1', 'summary.json')))['sam_dice_gt']
    assert record['final_decoder_masks']['sam_dice_gt'] == pytest.approx(expected)
    summary = json.load(open(work_dir / 'summary.json'))
    row = [r for r in summary['rounds'] if r['what'].startswith('decoder_r0 masks')]
    assert row and row[0]['dice'] == pytest.approx(expected)
