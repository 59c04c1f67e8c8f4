"""Registered datasets, dataset wrappers and transforms."""
from . import transforms  # noqa: F401
from .histo_patch import HistoPatchDataset, PatchDatasetError, read_split_file
from .ids_pseudo_label_dataset import EmptyPseudoLabelSelection, IDSPseudoLabelDataset

__all__ = ['EmptyPseudoLabelSelection', 'HistoPatchDataset', 'IDSPseudoLabelDataset',
           'PatchDatasetError', 'read_split_file']
