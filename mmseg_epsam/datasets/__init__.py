"""Registered datasets, dataset wrappers and transforms."""
from . import transforms  # noqa: F401
from .histo_patch import HistoPatchDataset, PatchDatasetError, read_split_file
from .ids_pseudo_label_dataset import EmptyPseudoLabelSelection, IDSPseudoLabelDataset
from .masks import (LoadPatchMask, MaskValueError, binarise_mask, parse_mask_values,
                    read_mask)

__all__ = ['EmptyPseudoLabelSelection', 'HistoPatchDataset', 'IDSPseudoLabelDataset',
           'LoadPatchMask', 'MaskValueError', 'PatchDatasetError', 'binarise_mask',
           'parse_mask_values', 'read_mask', 'read_split_file']
