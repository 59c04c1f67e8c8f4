"""Image-label classification figures: accuracy at a threshold, ROC-AUC, cross-entropy (NumPy)."""
import numpy as np


def _check_scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple:
    """Return ``scores`` (float) and ``labels`` (bool) as 1-D arrays of equal length."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f'scores and labels differ in length: {scores.size} vs {labels.size}')
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f'labels must be 0/1, got values {np.unique(labels)[:5]}')
    if np.isnan(scores).any():
        raise ValueError('scores contain NaN')
    return scores, labels.astype(bool)


def accuracy_at_threshold(scores: np.ndarray, labels: np.ndarray,
                          threshold: float = 0.5) -> float:
    """Fraction of samples with ``(score >= threshold) == label``; NaN for no samples."""
    scores, labels = _check_scores_labels(scores, labels)
    if scores.size == 0:
        return float('nan')
    return float(np.mean((scores >= threshold) == labels))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U), ties counted as one half.

    ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with ``R_pos`` the sum of the
    average ranks (1-based) of the positive samples. Returns NaN when either class is absent
    (the AUC is undefined); the caller decides whether to warn.
    """
    scores, labels = _check_scores_labels(scores, labels)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float('nan')
    unique_scores, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # average rank of each distinct score: ranks before it + (count + 1) / 2
    first_rank = np.cumsum(counts) - counts
    average_rank = first_rank + (counts + 1) / 2.0
    rank_sum_pos = average_rank[inverse][labels].sum()
    return float((rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_cross_entropy(scores: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy (negative log-likelihood) of probabilities ``scores``.

    ``-mean(y log p + (1 - y) log(1 - p))`` with ``p`` clipped to ``[eps, 1 - eps]``, so one
    confident mistake costs at most ``-log(eps)`` (about 16). Unlike the AUC, which only ranks,
    it also scores calibration: a classifier whose probabilities all lie on one side of the
    0.5 gate has a high cross-entropy even when it ranks perfectly. NaN for no samples.
    """
    scores, labels = _check_scores_labels(scores, labels)
    if scores.size == 0:
        return float('nan')
    probabilities = np.clip(scores, eps, 1.0 - eps)
    return float(-np.mean(np.where(labels, np.log(probabilities), np.log1p(-probabilities))))
