"""Synthetic pyramidal slides for the tests and benchmarks (tifffile, tiled, µm/px set).

:func:`write_pyramidal_tiff` writes a tiled TIFF whose levels are successive IFDs with
resolution tags, which OpenSlide opens as a ``generic-tiff`` slide with correct levels and
µm/px. Tiles are rendered on demand by a callable, so a 20k x 20k slide is written with one
tile in memory at a time. :class:`SyntheticTissue` renders H&E-like tissue (saturated pink
with dark dots) inside ellipses on a white background, tumour (purple) where an annotation
mask says so. :func:`corrupt_tiles` damages a copy's tile data to exercise read errors.
"""
from __future__ import annotations

import os
import shutil
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import tifffile

from mmseg_epsam.utils.io import atomic_write
from mmseg_epsam.wsi.annotations import SlideAnnotations

#: render(x0, y0, width, height, downsample) -> (height, width, 3) uint8 RGB, where output
#: pixel (i, j) covers level-0 [x0 + j*downsample, x0 + (j+1)*downsample) x [y0 + i*d, ...).
Renderer = Callable[[float, float, int, int, float], np.ndarray]


def write_pyramidal_tiff(path: str | os.PathLike, size: tuple[int, int], render: Renderer,
                         mpp: float = 0.25, n_levels: int = 4, tile_size: int = 256,
                         compression: Optional[str] = 'zlib', compression_level: int = 6) -> None:
    """Write a tiled pyramidal RGB TIFF (levels downsample by 2), atomically.

    Args:
        path: output ``.tif``.
        size: level-0 ``(width, height)``.
        render: tile renderer (see :data:`Renderer`).
        mpp: µm per level-0 pixel (stored as resolution tags in pixels/cm).
        n_levels: number of levels, level k has downsample ``2**k``.
        tile_size: tile side (multiple of 16).
        compression: ``'zlib'`` (deflate), ``None``, or any tifffile codec available
            (``'jpeg'`` needs imagecodecs).
        compression_level: codec level.
    """
    width, height = size
    kwargs = {} if compression is None else dict(
        compression=compression, compressionargs={'level': compression_level})
    with atomic_write(os.fspath(path), suffix='.tif') as tmp, \
            tifffile.TiffWriter(tmp, bigtiff=width * height * 3 > 2 ** 31) as tiff:
        for level in range(n_levels):
            ds = 2 ** level
            lw, lh = -(-width // ds), -(-height // ds)
            pixels_per_cm = 1e4 / (mpp * ds)
            tiff.write(_tiles(render, lw, lh, ds, tile_size), shape=(lh, lw, 3), dtype=np.uint8,
                       tile=(tile_size, tile_size), photometric='rgb',
                       resolution=(pixels_per_cm, pixels_per_cm), resolutionunit='CENTIMETER',
                       subfiletype=0 if level == 0 else 1, **kwargs)


def _tiles(render: Renderer, width: int, height: int, ds: float,
           tile_size: int) -> Iterator[np.ndarray]:
    """Row-major full-size tiles of one level (edge tiles padded white)."""
    for ty in range(0, height, tile_size):
        for tx in range(0, width, tile_size):
            tile = np.full((tile_size, tile_size, 3), 255, np.uint8)
            h, w = min(tile_size, height - ty), min(tile_size, width - tx)
            tile[:h, :w] = render(tx * ds, ty * ds, w, h, ds)
            yield tile


class SyntheticTissue:
    """H&E-like renderer: tissue ellipses, tumour from annotations, white background.

    Args:
        ellipses: ``(cx, cy, rx, ry)`` level-0 tissue ellipses.
        annotations: tumour/exclusion polygons painted purple (inside tissue or not).
        background, tissue, tumour: RGB colours.
        dot_density: fraction of 8x8 level-0 cells holding a dark "nucleus" dot in tissue.
        noise: amplitude of per-pixel texture noise in tissue (uniform in ±noise, seeded by
            the level-0 position), to make patches as costly to compress as stained tissue.
    """

    def __init__(self, ellipses: Sequence[tuple[float, float, float, float]],
                 annotations: Optional[SlideAnnotations] = None,
                 background: tuple[int, int, int] = (244, 244, 246),
                 tissue: tuple[int, int, int] = (232, 164, 204),
                 tumour: tuple[int, int, int] = (150, 70, 170),
                 dot_density: float = 0.15, noise: float = 0.0) -> None:
        self.ellipses = [tuple(float(v) for v in e) for e in ellipses]
        self.annotations = annotations
        self.colours = (np.array(background, np.uint8), np.array(tissue, np.uint8),
                        np.array(tumour, np.uint8))
        self.dot_threshold = int(dot_density * 256)
        self.noise = float(noise)

    def __call__(self, x0: float, y0: float, width: int, height: int,
                 downsample: float) -> np.ndarray:
        """Render a tile (see :data:`Renderer`), sampling at output pixel centres."""
        xs = x0 + (np.arange(width) + 0.5) * downsample
        ys = y0 + (np.arange(height) + 0.5) * downsample
        gx, gy = np.meshgrid(xs, ys)
        in_tissue = np.zeros((height, width), bool)
        for cx, cy, rx, ry in self.ellipses:
            in_tissue |= ((gx - cx) / rx) ** 2 + ((gy - cy) / ry) ** 2 <= 1.0
        background, tissue, tumour = self.colours
        image = np.empty((height, width, 3), np.uint8)
        image[:] = background
        image[in_tissue] = tissue
        if self.annotations is not None and not self.annotations.is_empty:
            in_tumour = self.annotations.window_mask((x0, y0), (width, height), downsample) > 0
            image[in_tumour] = tumour
            in_tissue |= in_tumour
        cells = (gx // 8).astype(np.int64) * 73856093 ^ (gy // 8).astype(np.int64) * 19349663
        cells = (cells * 2654435761) >> 16  # mix the bits so the dots do not line up
        dots = in_tissue & ((cells & 0xFF) < self.dot_threshold)
        image[dots] = (image[dots] * 0.55).astype(np.uint8)
        if self.noise > 0:
            pixels = gx.astype(np.int64) * 83492791 ^ gy.astype(np.int64) * 2971215073
            pixels = ((pixels * 2654435761) >> 13) & 0xFF
            shift = (pixels[in_tissue] / 255.0 - 0.5) * (2 * self.noise)
            image[in_tissue] = np.clip(image[in_tissue] + shift[:, None], 0, 255).astype(np.uint8)
        return image


def corrupt_tiles(source: str | os.PathLike, target: str | os.PathLike, level: int = 0) -> None:
    """Copy a tiled TIFF and overwrite the compressed bytes of every tile of one level.

    The file still opens (its structure and the other levels are intact) but any read of
    that level fails, as with a slide whose tile data was damaged in transfer.
    """
    shutil.copyfile(source, target)
    with tifffile.TiffFile(target) as tif:
        page = tif.pages[level]
        spans = list(zip(page.dataoffsets, page.databytecounts))
    with open(target, 'r+b') as handle:
        for offset, count in spans:
            handle.seek(offset)
            handle.write(b'\xff' * count)
