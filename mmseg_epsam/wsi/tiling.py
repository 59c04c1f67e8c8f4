"""Tiling and stitching of whole-slide inference: the tile grid, the seam weights, the map.

* :class:`TileGrid` / :func:`plan_tile_grid`: a regular grid of ``tile_size`` x
  ``tile_size`` tiles at one pyramid level, step ``tile_size - overlap``, and the resolution
  of the stitched map (the output resolution rule).
* The seam rule: every tile carries the weight ``w(x, y) = r(x) r(y)``, ``r`` a
  raised-cosine ramp over the overlap (:func:`overlap_ramp`); over an overlap the ramps of
  two neighbours sum to exactly 1, so the stitched probability
  ``p = sum_t w_t p_t / sum_t w_t`` (:func:`stitch_tiles`) moves smoothly from one tile's
  prediction to the other's.
* Each tile's weighted probability is area-averaged onto the map grid before it is stored
  (:func:`tile_map_probability`), so memory is two float32 maps plus one batch of tiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .slide_reader import SlideInfo
from .tile_store import TileRecord


@dataclass(frozen=True)
class TileGrid:
    """Tiles of one slide level and the stitched output grid.

    Tile ``(col, row)`` covers level pixels ``[col * stride, col * stride + tile_size)`` (and
    likewise in y); the last column and row may extend past the slide, where the slide reads
    as white. Map pixel ``(i, j)`` covers level-0 ``[j D, (j + 1) D) x [i D, (i + 1) D)``
    with ``D = output_downsample``.

    Attributes:
        level: pyramid level the tiles are read from.
        level_downsample: that level's downsample relative to level 0.
        level_size: ``(width, height)`` of the level.
        tile_size: tile side in level pixels.
        overlap: pixels shared by neighbouring tiles (``2 * overlap <= tile_size``).
        output_factor: level pixels per map pixel (a power of two dividing ``tile_size``
            and ``overlap``).
    """

    level: int
    level_downsample: float
    level_size: tuple[int, int]
    tile_size: int
    overlap: int
    output_factor: int

    @property
    def stride(self) -> int:
        """Step between neighbouring tiles, level pixels."""
        return self.tile_size - self.overlap

    @property
    def columns(self) -> int:
        """Tiles per row: enough that their union covers the level's width."""
        return max(1, math.ceil((self.level_size[0] - self.overlap) / self.stride))

    @property
    def rows(self) -> int:
        """Tiles per column."""
        return max(1, math.ceil((self.level_size[1] - self.overlap) / self.stride))

    @property
    def num_tiles(self) -> int:
        """Tiles in the whole grid (with or without tissue)."""
        return self.columns * self.rows

    @property
    def output_downsample(self) -> float:
        """Level-0 pixels per map pixel."""
        return self.output_factor * self.level_downsample

    @property
    def map_size(self) -> tuple[int, int]:
        """``(width, height)`` of the stitched map (covers the level, rounded up)."""
        return (math.ceil(self.level_size[0] / self.output_factor),
                math.ceil(self.level_size[1] / self.output_factor))

    @property
    def tile_map_size(self) -> int:
        """Side of one tile on the map."""
        return self.tile_size // self.output_factor

    def tile_level_origin(self, index: int) -> tuple[int, int]:
        """Level ``(x, y)`` of tile ``index`` (row-major)."""
        row, col = divmod(int(index), self.columns)
        return col * self.stride, row * self.stride

    def tile_level0_origins(self) -> np.ndarray:
        """``(num_tiles, 2)`` int64 level-0 ``(x, y)`` of every tile, row-major."""
        rows, cols = np.meshgrid(np.arange(self.rows), np.arange(self.columns), indexing='ij')
        level_xy = np.stack([cols.ravel(), rows.ravel()], axis=1) * self.stride
        return np.round(level_xy * self.level_downsample).astype(np.int64)


def _is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


def plan_tile_grid(info: SlideInfo, level: int = 0, tile_size: int = 512, overlap: int = 64,
                   output_factor: int = 4, max_output_pixels: int = 1 << 25) -> TileGrid:
    """The tile grid of a slide and the resolution of its stitched map.

    Output resolution rule: the map has ``f`` level pixels per pixel, ``f`` the requested
    ``output_factor`` doubled until the map holds at most ``max_output_pixels`` pixels.
    ``f`` must divide ``tile_size`` and ``overlap`` (tiles then start and end on whole map
    pixels and the blending is exact); otherwise a ``ValueError`` says what to change.
    """
    if level < 0 or level >= info.level_count:
        raise ValueError(f'{info.path}: level {level} requested but the slide has levels '
                         f'0..{info.level_count - 1}')
    if tile_size < 16:
        raise ValueError(f'tile_size must be at least 16, got {tile_size}')
    if overlap < 0 or 2 * overlap > tile_size:
        raise ValueError(f'overlap must lie in [0, tile_size / 2] = [0, {tile_size // 2}], '
                         f'got {overlap}')
    if not _is_power_of_two(output_factor):
        raise ValueError(f'output_factor must be a power of two, got {output_factor}')
    level_size = info.level_dimensions[level]
    factor = output_factor
    while math.ceil(level_size[0] / factor) * math.ceil(level_size[1] / factor) \
            > max_output_pixels:
        factor *= 2
    if tile_size % factor or overlap % factor:
        raise ValueError(
            f'{info.path}: the stitched map needs {factor} level-{level} pixels per map pixel '
            f'(output_factor {output_factor}, at most {max_output_pixels} map pixels), which '
            f'must divide tile_size ({tile_size}) and overlap ({overlap}); choose multiples '
            f'of {factor}, a smaller output factor, or a coarser level')
    return TileGrid(level=level, level_downsample=float(info.level_downsamples[level]),
                    level_size=tuple(level_size), tile_size=tile_size, overlap=overlap,
                    output_factor=factor)


# --------------------------------------------------------------------------- blending
def overlap_ramp(tile_size: int, overlap: int) -> np.ndarray:
    """Raised-cosine edge ramp ``r`` of a tile side (the seam-blending weight, per axis).

    For the pixel centre at distance ``u = min(i + 0.5, tile_size - i - 0.5)`` from the
    nearer tile edge, ``r = sin^2(pi u / (2 overlap))`` when ``u < overlap``, else 1. Two
    neighbours overlapping by ``overlap`` pixels have ramps summing to exactly 1 over the
    overlap (``sin^2 + cos^2``); ``overlap = 0`` gives all ones. Values are positive, so a
    pixel covered by one tile only gets that tile's prediction after normalisation.
    """
    u = np.minimum(np.arange(tile_size) + 0.5, tile_size - np.arange(tile_size) - 0.5)
    if overlap == 0:
        return np.ones(tile_size)
    return np.where(u < overlap, np.sin(np.pi * u / (2 * overlap)) ** 2, 1.0)


def area_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of a 2-D array whose sides ``factor`` divides."""
    if factor == 1:
        return image.astype(np.float64)
    h, w = image.shape
    return image.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def tile_map_weight(tile_size: int, overlap: int, factor: int) -> np.ndarray:
    """The tile weight ``r(x) r(y)`` averaged onto the map grid, float64 ``(t, t)``."""
    ramp = overlap_ramp(tile_size, overlap)
    return area_downsample(np.outer(ramp, ramp), factor)


def tile_map_probability(probability: np.ndarray, weight: np.ndarray, map_weight: np.ndarray,
                         factor: int) -> np.ndarray:
    """A tile's probability on the map grid: ``down(w p) / down(w)`` (float32).

    Averaging ``w p`` and ``w`` separately keeps the stitched result equal to the
    full-resolution weighted mean averaged over each map pixel.
    """
    return (area_downsample(weight * probability, factor) / map_weight).astype(np.float32)


def tissue_on_map(tissue: np.ndarray, downsample: tuple[float, float],
                  grid: TileGrid) -> np.ndarray:
    """The tissue mask sampled on the map grid (nearest: the tissue pixel under each map
    pixel's centre; outside the mask counts as no tissue)."""
    width, height = grid.map_size
    centre = (np.arange(max(width, height)) + 0.5) * grid.output_downsample
    cols = np.floor(centre[:width] / downsample[0]).astype(np.int64)
    rows = np.floor(centre[:height] / downsample[1]).astype(np.int64)
    inside_cols, inside_rows = cols < tissue.shape[1], rows < tissue.shape[0]
    on_map = np.zeros((height, width), bool)
    on_map[np.ix_(inside_rows, inside_cols)] = tissue[np.ix_(rows[inside_rows],
                                                             cols[inside_cols])]
    return on_map


def stitch_tiles(records: Iterator[TileRecord], grid: TileGrid) -> np.ndarray:
    """The stitched tumour probability map ``(H, W)`` float32 from tile records.

    ``p = sum_t w_t p_t / sum_t w_t`` over the processed tiles covering a map pixel, with
    the raised-cosine weights of :func:`tile_map_weight`; 0 where no processed tile lies.
    Records are accumulated in the order given (tile order), so reruns give identical bits.
    """
    width, height = grid.map_size
    numerator = np.zeros((height, width), np.float32)
    denominator = np.zeros((height, width), np.float32)
    weight = tile_map_weight(grid.tile_size, grid.overlap, grid.output_factor).astype(np.float32)
    side = grid.tile_map_size
    for record in records:
        x, y = grid.tile_level_origin(record.index)
        x0, y0 = x // grid.output_factor, y // grid.output_factor
        w, h = min(side, width - x0), min(side, height - y0)
        if w <= 0 or h <= 0:
            continue
        denominator[y0:y0 + h, x0:x0 + w] += weight[:h, :w]
        if record.probability is not None:
            numerator[y0:y0 + h, x0:x0 + w] += weight[:h, :w] * record.probability[:h, :w]
    covered = denominator > 0
    numerator[covered] /= denominator[covered]
    return numerator

