"""Registered datasets, dataset wrappers and transforms."""
from . import transforms  # noqa: F401
from .histo_patch import HistoPatchDataset, PatchDatasetError, read_split_file

__all__ = ['HistoPatchDataset', 'PatchDatasetError', 'read_split_file']
