"""Per-patch Dice/IoU, false-positive fraction and the registered EPSAMMetric."""
import math

import cv2
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample

import mmseg_epsam  # noqa: F401  (registers EPSAMMetric)
from mmseg_epsam.functional.metrics import false_positive_fraction, patch_dice_iou

S = 1e-3


def test_patch_dice_iou_hand_computed():
    pred = np.array([[1, 1, 0], [1, 0, 0]])
    gt = np.array([[1, 0, 0], [1, 1, 0]])
    # |P| = 3, |G| = 3, |P∩G| = 2, |P∪G| = 4
    dice, iou = patch_dice_iou(pred, gt)
    assert dice == pytest.approx((4 + S) / (6 + S), abs=1e-12)
    assert iou == pytest.approx((2 + S) / (4 + S), abs=1e-12)
    assert patch_dice_iou(pred, gt, smooth=0) == pytest.approx((2 / 3, 1 / 2))
    # any non-zero value counts as tumour
    assert patch_dice_iou(pred * 7, gt.astype(bool)) == (dice, iou)


def test_patch_dice_iou_empty_cases():
    gt = np.zeros((2, 3), np.uint8)
    gt[0] = 1                                                  # |G| = 3
    empty = np.zeros_like(gt)
    assert patch_dice_iou(empty, gt) == pytest.approx((S / (3 + S), S / (3 + S)))
    assert patch_dice_iou(gt, empty) == pytest.approx((S / (3 + S), S / (3 + S)))
    assert patch_dice_iou(empty, empty) == (1.0, 1.0)          # both empty: s / s
    assert patch_dice_iou(gt, gt) == (1.0, 1.0)


def test_patch_dice_iou_bad_input():
    with pytest.raises(ValueError, match='differs'):
        patch_dice_iou(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match='empty'):
        patch_dice_iou(np.zeros((0, 2)), np.zeros((0, 2)))


def test_false_positive_fraction():
    assert false_positive_fraction(np.array([[0, 1], [0, 0]])) == 0.25
    assert false_positive_fraction(np.zeros((3, 3))) == 0.0
    assert false_positive_fraction(np.ones((2, 5), bool)) == 1.0
    with pytest.raises(ValueError, match='empty'):
        false_positive_fraction(np.zeros(0))


def _sample(gt, pred, **meta):
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.as_tensor(gt, dtype=torch.long)[None])
    sample.pred_sem_seg = PixelData(data=torch.as_tensor(pred, dtype=torch.long)[None])
    sample.set_metainfo(meta)
    return sample


def _six_samples():
    z = np.zeros((4, 4), int)
    gt_a, pred_a = z.copy(), z.copy()
    gt_a[:2] = 1                       # 8 px
    pred_a[:3, :2] = 1                 # 6 px, 4 of them right
    gt_b, pred_b = z.copy(), z.copy()
    gt_b[0, 0] = 1                     # 1 px
    gt_b[3, 3] = 255                   # ignored ...
    pred_b[3, 3] = 1                   # ... so this prediction does not count: pred empty
    pred_c = z.copy()
    pred_c[1, 1:3] = 1                 # 2 false-positive px of 16
    gt_e = z.copy()
    gt_e[3] = 1
    return [
        _sample(gt_a, pred_a, img_label=1, patch_name='a'),
        _sample(gt_b, pred_b, img_label=1, patch_name='b'),
        _sample(z, pred_c, img_label=0, patch_name='c'),
        _sample(z, z, img_label=0, patch_name='d'),
        _sample(gt_e, gt_e, patch_name='e'),    # no img_label: tumour in GT -> positive
        _sample(z, z, patch_name='f'),          # no img_label: empty GT -> negative
    ]


def _build(**kwargs):
    metric = METRICS.build(dict(type='EPSAMMetric', **kwargs))
    metric.dataset_meta = dict(classes=('background', 'tumour'))
    return metric


def test_registered_metric_against_hand_computation(tmp_path):
    metric = _build(output_dir=str(tmp_path / 'pred'))
    samples = _six_samples()
    metric.process({}, [s.to_dict() for s in samples[:3]])
    metric.process({}, samples[3:])              # SegDataSample objects work as well
    result = metric.evaluate(len(samples))

    dice = [(8 + S) / (14 + S), S / (1 + S), 1.0]   # a, b (empty prediction), e
    iou = [(4 + S) / (10 + S), S / (1 + S), 1.0]
    assert result['num_pos'] == 3 and result['num_neg'] == 3
    assert result['Dice'] == pytest.approx(100 * np.mean(dice))
    assert result['IoU'] == pytest.approx(100 * np.mean(iou))
    assert result['neg_fp_area'] == pytest.approx(100 * (2 / 16) / 3)
    assert result['neg_fp_rate'] == pytest.approx(100 / 3)
    # dataset level over the 95 scored pixels: tumour I=8, P=12, G=13;
    # background I=78, P=83, G=82
    assert result['tumour_IoU'] == pytest.approx(100 * 8 / 17)
    assert result['tumour_Dice'] == pytest.approx(100 * 16 / 25)
    assert result['mIoU'] == pytest.approx(100 * (78 / 87 + 8 / 17) / 2)
    assert result['mDice'] == pytest.approx(100 * (156 / 165 + 16 / 25) / 2)
    assert result['aAcc'] == pytest.approx(100 * 86 / 95)
    # predicted masks written under their patch names, values 0/1
    written = cv2.imread(str(tmp_path / 'pred' / 'c.png'), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint8 and written.sum() == 2 and written[1, 1] == 1


def test_metric_without_negatives_or_positives_reports_nan():
    metric = _build()
    metric.process({}, _six_samples()[:2])
    result = metric.evaluate(2)
    assert result['num_neg'] == 0 and math.isnan(result['neg_fp_area'])
    assert result['Dice'] == pytest.approx(100 * ((8 + S) / (14 + S) + S / (1 + S)) / 2)
    metric.process({}, _six_samples()[2:4])
    result = metric.evaluate(2)
    assert result['num_pos'] == 0 and math.isnan(result['Dice'])
    assert result['neg_fp_area'] == pytest.approx(100 * (2 / 16) / 2)


def test_metric_rejects_prediction_of_other_size():
    metric = _build()
    with pytest.raises(ValueError, match='x: prediction shape'):
        metric.process({}, [_sample(np.zeros((4, 4)), np.zeros((2, 2)), patch_name='x')])
