"""Whole-slide reading with OpenSlide: open with clear errors, µm/px, RGB regions.

Every error raised here is a :class:`SlideReadError` whose message starts with the slide's
path and says what is wrong (missing, empty, unsupported or truncated, unreadable tiles,
level out of range), so batch tools can report it per slide and carry on.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import openslide

#: File extensions OpenSlide reads (used to find slides in a directory tree).
SLIDE_EXTENSIONS = ('.tif', '.tiff', '.svs', '.ndpi', '.mrxs', '.scn', '.vms', '.vmu', '.bif',
                    '.svslide')


class SlideReadError(RuntimeError):
    """A slide that is missing, unreadable, truncated or corrupt; the message names the file."""


@dataclass(frozen=True)
class SlideInfo:
    """Geometry and resolution of an opened slide.

    Attributes:
        path: the slide file.
        level_dimensions: ``(width, height)`` of every pyramid level, level 0 first.
        level_downsamples: downsample of every level relative to level 0.
        mpp: ``(x, y)`` micrometres per level-0 pixel, or None when the file does not say.
        vendor: OpenSlide's vendor string (``aperio``, ``generic-tiff``, ...).
    """

    path: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: Optional[tuple[float, float]]
    vendor: str

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA uint8 image (straight alpha, as OpenSlide returns it) onto white.

    Transparent pixels (outside the scanned area, missing tiles) become white, which the
    tissue detector reads as background.
    """
    rgb = rgba[..., :3]
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32) / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _read_mpp(properties) -> Optional[tuple[float, float]]:
    """µm/px from OpenSlide's standard properties, or None when absent or not positive."""
    values = []
    for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y):
        try:
            value = float(properties[key])
        except (KeyError, ValueError):
            return None
        if not math.isfinite(value) or value <= 0:
            return None
        values.append(value)
    return values[0], values[1]


class SlideReader:
    """An opened whole-slide image (OpenSlide) with RGB reads and errors that name the file.

    Use as a context manager, or call :meth:`close`. One reader per process: OpenSlide
    handles are not shared across processes.

    Args:
        path: slide file.

    Raises:
        SlideReadError: the file is missing, empty, not a slide OpenSlide reads, or truncated.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise SlideReadError(f'{self.path}: slide file does not exist')
        if not os.path.isfile(self.path):
            raise SlideReadError(f'{self.path}: not a regular file')
        if os.path.getsize(self.path) == 0:
            raise SlideReadError(f'{self.path}: slide file is empty (0 bytes)')
        try:
            self._slide = openslide.OpenSlide(self.path)
        except openslide.OpenSlideUnsupportedFormatError as err:
            raise SlideReadError(
                f'{self.path}: OpenSlide cannot open it: not a supported slide format, or the '
                f'file is truncated or corrupt ({err})') from err
        except (openslide.OpenSlideError, OSError) as err:
            raise SlideReadError(
                f'{self.path}: slide is unreadable, probably truncated or corrupt ({err})') from err
        self.info = SlideInfo(
            path=self.path,
            level_dimensions=tuple(tuple(int(v) for v in d) for d in self._slide.level_dimensions),
            level_downsamples=tuple(float(d) for d in self._slide.level_downsamples),
            mpp=_read_mpp(self._slide.properties),
            vendor=str(self._slide.properties.get(openslide.PROPERTY_NAME_VENDOR, 'unknown')),
        )

    def __enter__(self) -> 'SlideReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the OpenSlide handle."""
        self._slide.close()

    def check_level(self, level: int) -> None:
        """Raise :class:`SlideReadError` when ``level`` is not a level of this slide."""
        if not 0 <= level < self.info.level_count:
            raise SlideReadError(
                f'{self.path}: level {level} requested but the slide has levels '
                f'0..{self.info.level_count - 1} (downsamples {self.info.level_downsamples})')

    def read_region(self, location: tuple[int, int], level: int,
                    size: tuple[int, int]) -> np.ndarray:
        """Read an RGB region, composited onto white.

        Args:
            location: ``(x, y)`` of the top-left corner in level-0 pixels.
            level: pyramid level to read from.
            size: ``(width, height)`` in pixels of ``level``.

        Returns:
            ``(height, width, 3)`` uint8 RGB array.

        Raises:
            SlideReadError: the level does not exist or the tile data cannot be decoded
            (truncated or corrupt file).
        """
        self.check_level(level)
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        try:
            region = self._slide.read_region((x, y), level, (w, h))
        except openslide.OpenSlideError as err:
            raise SlideReadError(
                f'{self.path}: cannot read region x={x} y={y} level={level} size={w}x{h}: '
                f'tile data truncated or corrupt ({err})') from err
        return composite_on_white(np.asarray(region))

    def read_downsampled(self, downsample: float, max_pixels_per_read: int = 1 << 24
                         ) -> tuple[np.ndarray, tuple[float, float]]:
        """Read the whole slide at (about) ``downsample`` × level 0, in strips.

        The best pyramid level at or below ``downsample`` is read strip by strip and
        area-averaged down to the requested downsample, so memory stays bounded by
        ``max_pixels_per_read`` level pixels per read plus the output.

        Returns:
            ``(image, (downsample_x, downsample_y))``: the RGB image and its exact downsample
            relative to level 0 (level-0 size / image size), used to map coordinates back.
        """
        if downsample < 1:
            raise ValueError(f'downsample must be >= 1, got {downsample}')
        level = self._slide.get_best_level_for_downsample(downsample)
        level_w, level_h = self.info.level_dimensions[level]
        factor = downsample / self.info.level_downsamples[level]
        if factor < 1.01:  # the level itself is close enough
            factor = 1.0
        out_w = max(1, int(round(level_w / factor)))
        out_h = max(1, int(round(level_h / factor)))
        scale_y = level_h / out_h
        rows_per_read = max(1, int(max_pixels_per_read // max(1.0, level_w * scale_y)))
        image = np.empty((out_h, out_w, 3), np.uint8)
        level_ds = self.info.level_downsamples[level]
        for o0 in range(0, out_h, rows_per_read):
            o1 = min(out_h, o0 + rows_per_read)
            r0 = int(math.floor(o0 * scale_y))
            r1 = min(level_h, max(r0 + 1, int(math.ceil(o1 * scale_y))))
            strip = self.read_region((0, int(round(r0 * level_ds))), level, (level_w, r1 - r0))
            if strip.shape[:2] != (o1 - o0, out_w):
                strip = cv2.resize(strip, (out_w, o1 - o0), interpolation=cv2.INTER_AREA)
            image[o0:o1] = strip
        w0, h0 = self.info.dimensions
        return image, (w0 / out_w, h0 / out_h)
