"""Whole-slide images: reading (OpenSlide), tissue detection, ASAP annotations, patch grids,
tiling and stitching, the tile store and the exported outputs.

Plain functions and small classes with no registry entries, shared by the Camelyon converter
(tools/dataset_converters/camelyon.py) and whole-slide inference
(:mod:`mmseg_epsam.apis.wsi_inference`).
"""
from . import (annotations, export, extraction, patch_grid, slide_reader,  # noqa: F401
               tile_store, tiling, tissue)
