"""Pseudo-label rounds reuse masks on disk only when the same decoder made them
(mmseg_epsam/engine/pseudo_labels.py)."""
import csv
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmseg_epsam.engine.pseudo_labels import generate_pseudo_labels
from mmseg_epsam.utils.layout import round_paths

SIZE = 8


class RowsDecoder(nn.Module):
    """Stands in for the SAM segmentor: predicts the top ``rows`` rows of every patch."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = nn.Parameter(torch.tensor(float(rows)))
        self.test_cfg = dict(classifier_gate=0.5)
        self.predicted = []  # patch names of every test_step, in order

    def test_step(self, data):
        outputs = []
        for sample in data['data_samples']:
            self.predicted.append(sample.metainfo['patch_name'])
            mask = torch.zeros(1, SIZE, SIZE, dtype=torch.uint8)
            mask[:, :int(self.rows.item())] = 1
            outputs.append(SegDataSample(pred_sem_seg=PixelData(data=mask)))
        return outputs


@pytest.fixture
def positives(tmp_path):
    """Two positive patches whose initial masks are the top 4 rows."""
    initial = np.zeros((SIZE, SIZE), np.uint8)
    initial[:4] = 1
    items = []
    for name in ('p0', 'p1'):
        path = str(tmp_path / f'{name}_initial.png')
        cv2.imwrite(path, initial)
        sample = SegDataSample(metainfo=dict(patch_name=name, initial_mask_path=path))
        items.append(dict(inputs=torch.zeros(3, SIZE, SIZE), data_samples=sample))
    return items


def read_table(round_dir):
    with open(round_paths(round_dir)['table_file'], newline='') as f:
        return {row['name']: row for row in csv.DictReader(f)}


def test_same_decoder_resumes_without_predicting_again(positives, tmp_path):
    round_dir = str(tmp_path / 'round_1')
    first = RowsDecoder(4)
    summary = generate_pseudo_labels(first, positives, round_dir)
    assert first.predicted == ['p0', 'p1'] and summary['kept'] == 2
    assert first.test_cfg == dict(classifier_gate=0.5)  # the gate is restored afterwards
    settings = json.load(open(round_paths(round_dir)['settings_file']))
    assert settings['test_cfg'] == {}  # the gate is not part of the fingerprint
    again = RowsDecoder(4)
    again.test_cfg['classifier_gate'] = 0.9
    generate_pseudo_labels(again, positives, round_dir)
    assert again.predicted == []  # same weights and settings: masks read back


def test_retrained_decoder_regenerates_the_round(positives, tmp_path):
    round_dir = str(tmp_path / 'round_1')
    generate_pseudo_labels(RowsDecoder(4), positives, round_dir)
    assert {r['kept'] for r in read_table(round_dir).values()} == {'1'}
    retrained = RowsDecoder(8)  # other weights: every mask is the whole patch
    summary = generate_pseudo_labels(retrained, positives, round_dir)
    assert retrained.predicted == ['p0', 'p1']
    mask = cv2.imread(osp.join(round_paths(round_dir)['pseudo_label_dir'], 'p0.png'), -1)
    assert mask.sum() == SIZE * SIZE
    rows = read_table(round_dir)
    # IDS = |SAM & CAM| / |SAM| = 32 / 64: the new masks are rejected at t = 0.9
    assert float(rows['p0']['ids']) == pytest.approx(0.5) and summary['kept'] == 0


def test_masks_of_unknown_origin_or_other_settings_are_not_reused(positives, tmp_path):
    round_dir = str(tmp_path / 'round_1')
    label_dir = round_paths(round_dir)['pseudo_label_dir']
    generate_pseudo_labels(RowsDecoder(4), positives, round_dir)
    # an older version left masks without settings.json: they are of unknown origin
    for name in ('p0', 'p1'):
        cv2.imwrite(osp.join(label_dir, f'{name}.png'), np.ones((SIZE, SIZE), np.uint8))
    os.remove(round_paths(round_dir)['settings_file'])
    decoder = RowsDecoder(4)
    generate_pseudo_labels(decoder, positives, round_dir)
    assert decoder.predicted == ['p0', 'p1']
    assert cv2.imread(osp.join(label_dir, 'p0.png'), -1).sum() == 4 * SIZE
    # other test settings (e.g. prompts) with the same weights also regenerate
    prompted = RowsDecoder(4)
    prompted.test_cfg['num_points'] = 10
    generate_pseudo_labels(prompted, positives, round_dir)
    assert prompted.predicted == ['p0', 'p1']
    # and so does other provenance given by the caller (the hook passes the configs)
    configured = RowsDecoder(4)
    configured.test_cfg['num_points'] = 10
    generate_pseudo_labels(configured, positives, round_dir, provenance=dict(dataset='other'))
    assert configured.predicted == ['p0', 'p1']
