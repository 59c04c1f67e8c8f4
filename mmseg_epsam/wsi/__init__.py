"""Whole-slide images: reading (OpenSlide), tissue detection, ASAP annotations, patch grids.

Plain functions and small classes with no registry entries, shared by the Camelyon converter
(tools/dataset_converters/camelyon.py) and whole-slide inference.
"""
from . import annotations, extraction, patch_grid, slide_reader, tissue  # noqa: F401
