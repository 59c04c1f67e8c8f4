"""The EP-SAM evaluation metric: paper per-patch scores, negative-patch false positives and
MMSeg's dataset-level mIoU / mDice (docs/method.md §8)."""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

from mmseg_epsam.functional.metrics import false_positive_fraction, patch_dice_iou
from mmseg_epsam.utils.io import write_png

TUMOUR = 1


@METRICS.register_module()
class EPSAMMetric(BaseMetric):
    """Per-patch Dice / IoU on positives, false positives on negatives, and mIoU / mDice.

    For every data sample the predicted label map ``pred_sem_seg`` (at the ground truth's
    size, as MMSeg's segmentors return it) is compared with ``gt_sem_seg``; pixels equal to
    ``ignore_index`` are left out. A patch is positive when its metainfo ``img_label`` is 1
    or, without that key, when its ground truth holds tumour. Reported, all in percent
    except the counts (MMSeg's convention):

    - ``Dice`` / ``IoU``: the paper's smoothed per-patch scores
      (:func:`~mmseg_epsam.functional.metrics.patch_dice_iou`) averaged over positive
      patches (NaN when there is none);
    - ``neg_fp_area``: mean fraction of a negative patch predicted tumour;
      ``neg_fp_rate``: share of negative patches with any tumour pixel predicted
      (both NaN when there is no negative);
    - ``mIoU`` / ``mDice``: dataset-level scores over both classes from summed intersections
      and unions, exactly as :class:`mmseg.evaluation.IoUMetric` computes them;
      ``tumour_IoU`` / ``tumour_Dice``: the same for the tumour class alone; ``aAcc``;
    - ``num_pos`` / ``num_neg``: how many patches of each kind were scored.

    Args:
        smooth: Smoothing constant of the per-patch scores (the paper's 1e-3).
        ignore_index: Ground-truth value left out of every score.
        output_dir: If given, each predicted mask is written there as ``<name>.png``
            (uint8, 0 background / 1 tumour), as MMSeg's ``tools/test.py --out`` expects.
        keep_results: Accepted for MMSeg's ``tools/test.py --out``, which sets it; masks are
            always written when ``output_dir`` is set.
        collect_device: See :class:`mmengine.evaluator.BaseMetric`.
        prefix: Metric name prefix (default none: the names read as above).
    """

    default_prefix = ''  # names read like IoUMetric's ('mIoU'), without its prefix warning

    def __init__(self,
                 smooth: float = 1e-3,
                 ignore_index: int = 255,
                 output_dir: Optional[str] = None,
                 keep_results: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.smooth = smooth
        self.ignore_index = ignore_index
        self.output_dir = output_dir
        self.keep_results = keep_results

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Score each sample and keep the per-patch numbers and area histograms."""
        num_classes = len(self.dataset_meta['classes']) if self.dataset_meta else 2
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            pred = sample['pred_sem_seg']['data'].squeeze()
            gt = sample['gt_sem_seg']['data'].squeeze().to(pred)
            name = sample.get('patch_name') or osp.splitext(
                osp.basename(sample.get('img_path') or f'patch_{len(self.results)}'))[0]
            if pred.shape != gt.shape:
                raise ValueError(f'{name}: prediction shape {tuple(pred.shape)} differs from '
                                 f'ground truth shape {tuple(gt.shape)}')
            valid = gt != self.ignore_index
            pred_t = (pred[valid] == TUMOUR).cpu().numpy()
            gt_t = (gt[valid] == TUMOUR).cpu().numpy()
            label = sample.get('img_label')
            label = int(gt_t.any()) if label is None else int(label)
            result = dict(label=label, areas=IoUMetric.intersect_and_union(
                pred, gt, num_classes, self.ignore_index))
            if label:
                result['dice'], result['iou'] = patch_dice_iou(pred_t, gt_t, self.smooth)
            else:
                result['fp'] = false_positive_fraction(pred_t) if pred_t.size else 0.0
            self.results.append(result)
            if self.output_dir is not None:
                write_png(osp.join(self.output_dir, f'{name}.png'),
                          pred.cpu().numpy().astype(np.uint8), channel_order='bgr')

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Average the per-patch scores and turn the summed areas into mIoU / mDice."""
        pos = [r for r in results if r['label']]
        neg = [r for r in results if not r['label']]

        def pct_mean(values: List[float]) -> float:
            return float(np.mean(values) * 100) if values else float('nan')

        inter, union, area_pred, area_gt = (sum(r['areas'][i] for r in results)
                                            for i in range(4))
        per_class = IoUMetric.total_area_to_metrics(inter, union, area_pred, area_gt,
                                                    ['mIoU', 'mDice'])
        metrics = dict(
            Dice=pct_mean([r['dice'] for r in pos]),
            IoU=pct_mean([r['iou'] for r in pos]),
            neg_fp_area=pct_mean([r['fp'] for r in neg]),
            neg_fp_rate=pct_mean([float(r['fp'] > 0) for r in neg]),
            mIoU=float(np.nanmean(per_class['IoU']) * 100),
            mDice=float(np.nanmean(per_class['Dice']) * 100),
            tumour_IoU=float(per_class['IoU'][TUMOUR] * 100),
            tumour_Dice=float(per_class['Dice'][TUMOUR] * 100),
            aAcc=float(per_class['aAcc'] * 100),
            num_pos=len(pos),
            num_neg=len(neg))
        print_log('EP-SAM metric: ' + ', '.join(
            f'{k} {v:.2f}' if isinstance(v, float) else f'{k} {v}' for k, v in metrics.items()),
            logger='current')
        if self.output_dir is not None:
            print_log(f'predicted masks written to {osp.abspath(self.output_dir)}',
                      logger='current')
        return metrics

