"""Image-label metric of the patch classifier: accuracy at a threshold, ROC-AUC, cross-entropy."""
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmseg.registry import METRICS

from mmseg_epsam.functional.classification import (accuracy_at_threshold,
                                                    binary_cross_entropy, roc_auc)


@METRICS.register_module()
class ImageLabelMetric(BaseMetric):
    """Accuracy, ROC-AUC and cross-entropy of ``pred_score`` against the image label ``img_label``.

    Reads, per data sample, ``pred_score`` (tumour probability, as set by
    ``EPSAMPatchClassifier`` in predict mode) and the metainfo ``img_label`` (0/1). Reports,
    under the prefix ``img_label/``: ``accuracy`` (score >= ``threshold`` counts as tumour)
    and ``auc`` (rank-based, ties count one half), both as fractions in [0, 1],
    ``cross_entropy`` (mean binary cross-entropy or log loss, lower is better; it also
    scores calibration, which the 0.5 gate of the later stages depends on; not named
    ``*loss*``, which MMEngine's logger would print as a moving mean), and the class counts
    ``num_pos`` and ``num_neg``. With only one class the AUC is undefined: it is reported as
    NaN with a warning. Uses only image labels, never pixel ground truth, so it
    may select checkpoints in a weakly supervised run.

    Args:
        threshold: Probability at or above which a patch is called tumour (0.5).
        collect_device: See :class:`mmengine.evaluator.BaseMetric`.
        prefix: Metric name prefix (default ``'img_label'``).
    """

    default_prefix = 'img_label'

    def __init__(self, threshold: float = 0.5, collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.threshold = threshold

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store ``(score, label)`` of each data sample."""
        for data_sample in data_samples:
            if 'pred_score' not in data_sample or 'img_label' not in data_sample:
                name = data_sample.get('img_path', '<unknown image>')
                raise KeyError(f'{name}: ImageLabelMetric needs pred_score (classifier '
                               'predict mode) and img_label (PackSegInputs meta_keys)')
            score = float(np.asarray(data_sample['pred_score'].cpu()).reshape(-1)[0])
            self.results.append((score, int(data_sample['img_label'])))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        """Accuracy, AUC and class counts over all stored results."""
        scores = np.array([score for score, _ in results], dtype=np.float64)
        labels = np.array([label for _, label in results], dtype=np.int64)
        auc = roc_auc(scores, labels)
        num_pos = int(labels.sum())
        if np.isnan(auc):
            message = (f'ImageLabelMetric: ROC-AUC is undefined with {num_pos} positive and '
                       f'{labels.size - num_pos} negative patches; reported as nan')
            warnings.warn(message)
        return dict(accuracy=accuracy_at_threshold(scores, labels, self.threshold), auc=auc,
                    cross_entropy=binary_cross_entropy(scores, labels), num_pos=num_pos,
                    num_neg=int(labels.size - num_pos))
