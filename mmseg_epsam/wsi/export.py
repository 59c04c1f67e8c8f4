"""Whole-slide outputs that QuPath and OpenSlide read: pyramidal TIFF, GeoJSON, thumbnail, JSON.

Every writer goes through :mod:`mmseg_epsam.utils.io` (atomic, fsynced, umask
permissions), so a stopped run leaves either the previous file or the complete new one.

* :func:`write_pyramidal_map_tiff`: a single-channel uint8 map as a tiled pyramidal TIFF
  (levels halve until they fit one tile, successive IFDs, resolution tags in pixels/cm),
  which OpenSlide opens as ``generic-tiff`` with the right levels and ``openslide.mpp-x``.
* :func:`mask_polygons` + :func:`tumour_geojson`: the label map's regions as GeoJSON
  polygons (outer ring and holes, ``cv2.findContours`` with ``RETR_CCOMP``) in level-0
  pixel coordinates, with QuPath's ``objectType`` and ``classification`` properties, so
  File > Import objects (or drag and drop) in QuPath shows them as "Tumor" annotations.
* :func:`overlay_thumbnail`: a small RGB picture of the slide with the mask overlaid.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import tifffile

from mmseg_epsam.utils import io as atomic_io
from mmseg_epsam.utils.io import atomic_write, write_json

__all__ = ['mask_polygons', 'overlay_thumbnail', 'tumour_geojson', 'write_json', 'write_png',
           'write_pyramidal_map_tiff']

#: QuPath's built-in tumour class and its default colour.
TUMOUR_CLASS = 'Tumor'
TUMOUR_COLOUR = (200, 0, 0)
RESAMPLINGS = ('area', 'majority')


def _half(image: np.ndarray, resampling: str) -> np.ndarray:
    """The next pyramid level: half the size (rounded up), area-averaged.

    ``'majority'`` (for 0/255 masks) keeps a pixel when at least half its area is set.
    """
    height, width = image.shape
    half = cv2.resize(image, (math.ceil(width / 2), math.ceil(height / 2)),
                      interpolation=cv2.INTER_AREA)
    if resampling == 'majority':
        half = np.where(half >= 128, 255, 0).astype(np.uint8)
    return half


def write_pyramidal_map_tiff(path: str, image: np.ndarray, mpp: tuple[float, float],
                             tile_size: int = 256, resampling: str = 'area',
                             compression: str = 'zlib') -> list[tuple[int, int]]:
    """Write a single-channel uint8 map as a tiled pyramidal TIFF, atomically.

    Args:
        path: output ``.tif``.
        image: ``(H, W)`` uint8 map (e.g. a 0/255 mask or a probability times 255).
        mpp: ``(x, y)`` µm per pixel of ``image``; each level's resolution tags carry its
            own µm/px (pixels/cm), as OpenSlide and QuPath read them.
        tile_size: TIFF tile side (a multiple of 16).
        resampling: how levels are made: ``'area'`` (averages) or ``'majority'`` (masks).
        compression: tifffile codec (``'zlib'``: deflate, no extra package needed).

    Returns:
        ``(width, height)`` of every level, level 0 first.
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f'{path}: expected an (H, W) uint8 map, got {image.shape} {image.dtype}')
    if resampling not in RESAMPLINGS:
        raise ValueError(f'resampling must be one of {RESAMPLINGS}, got {resampling!r}')
    if tile_size % 16:
        raise ValueError(f'TIFF tile size must be a multiple of 16, got {tile_size}')
    height, width = image.shape
    sizes = []
    with atomic_write(path, suffix='.tif') as tmp, tifffile.TiffWriter(tmp) as tiff:
        level = np.ascontiguousarray(image)
        while True:
            level_h, level_w = level.shape
            sizes.append((level_w, level_h))
            pixels_per_cm = (1e4 / (mpp[0] * width / level_w), 1e4 / (mpp[1] * height / level_h))
            tiff.write(level, tile=(tile_size, tile_size), photometric='minisblack',
                       compression=compression, resolution=pixels_per_cm,
                       resolutionunit='CENTIMETER', subfiletype=0 if len(sizes) == 1 else 1)
            if max(level_w, level_h) <= tile_size:
                break
            level = _half(level, resampling)
    return sizes


def mask_polygons(mask: np.ndarray, downsample: float) -> list[list[np.ndarray]]:
    """Regions of a label map as polygons with holes, in level-0 pixel coordinates.

    ``cv2.findContours(RETR_CCOMP)`` gives each region's outer boundary and its holes; a
    contour vertex at map pixel ``(c, r)`` becomes level-0 ``((c + 0.5) D, (r + 0.5) D)``
    (pixel centres, ``D = downsample``), so each boundary lies half a map pixel inside the
    region's pixel edges. A region with no area in that form (a single pixel or a
    one-pixel-wide line) is given the rectangle of its pixels' edges instead.

    Returns:
        One ``[outer, hole, hole, ...]`` list per region; rings are ``(N, 2)`` float64
        ``(x, y)`` arrays, not closed (the first vertex is not repeated).
    """
    contours, hierarchy = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8),
                                           cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    links = hierarchy[0]  # next, previous, first child, parent
    polygons = []
    for index, contour in enumerate(contours):
        if links[index][3] != -1:
            continue  # a hole: emitted with its parent
        outer = contour.reshape(-1, 2).astype(np.float64)
        if cv2.contourArea(contour) == 0:
            (x0, y0), (x1, y1) = outer.min(axis=0), outer.max(axis=0) + 1  # pixel edges
            rings = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])]
        else:
            rings = [outer + 0.5]
        child = links[index][2]
        while child != -1:
            rings.append(contours[child].reshape(-1, 2).astype(np.float64) + 0.5)
            child = links[child][0]
        polygons.append([ring * downsample for ring in rings])
    return polygons


def tumour_geojson(polygons: Sequence[Sequence[np.ndarray]], name: str = TUMOUR_CLASS,
                   colour: tuple[int, int, int] = TUMOUR_COLOUR, decimals: int = 2) -> dict:
    """A GeoJSON FeatureCollection of QuPath annotations, one Polygon feature per region.

    Each feature's properties are ``objectType: "annotation"`` and
    ``classification: {"name": name, "color": [r, g, b]}``; rings are closed (the first
    vertex repeated), coordinates rounded to ``decimals``.
    """
    features = []
    for rings in polygons:
        coordinates = []
        for ring in rings:
            points = np.round(np.asarray(ring, np.float64), decimals).tolist()
            coordinates.append(points + points[:1])
        features.append(dict(
            type='Feature', geometry=dict(type='Polygon', coordinates=coordinates),
            properties=dict(objectType='annotation', isLocked=False,
                            classification=dict(name=name, color=list(colour)))))
    return dict(type='FeatureCollection', features=features)


def write_png(path: str, image_bgr: np.ndarray) -> None:
    """Write a BGR (or grey) uint8 picture, such as :func:`overlay_thumbnail`'s, as PNG."""
    atomic_io.write_png(path, image_bgr, channel_order='bgr')


def overlay_thumbnail(thumbnail_rgb: np.ndarray, label: np.ndarray, map_downsample: float,
                      thumbnail_downsample: tuple[float, float],
                      colour: tuple[int, int, int] = TUMOUR_COLOUR,
                      alpha: float = 0.4) -> np.ndarray:
    """The thumbnail (BGR) with the label map blended in ``colour`` and outlined.

    Args:
        thumbnail_rgb: ``(h, w, 3)`` uint8 RGB slide thumbnail.
        label: ``(H, W)`` bool label map.
        map_downsample: level-0 pixels per label-map pixel.
        thumbnail_downsample: ``(x, y)`` level-0 pixels per thumbnail pixel.
    """
    height, width = thumbnail_rgb.shape[:2]
    scaled = cv2.resize(label.astype(np.uint8),
                        (max(1, round(label.shape[1] * map_downsample / thumbnail_downsample[0])),
                         max(1, round(label.shape[0] * map_downsample / thumbnail_downsample[1]))),
                        interpolation=cv2.INTER_NEAREST)
    on_thumb = np.zeros((height, width), np.uint8)
    h, w = min(height, scaled.shape[0]), min(width, scaled.shape[1])
    on_thumb[:h, :w] = scaled[:h, :w]
    picture = np.ascontiguousarray(thumbnail_rgb[..., ::-1])
    bgr = np.array(colour[::-1], np.float32)
    inside = on_thumb > 0
    picture[inside] = np.round(picture[inside] * (1 - alpha) + bgr * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(on_thumb, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(picture, contours, -1, tuple(int(c) for c in colour[::-1]), 1)
    return picture
