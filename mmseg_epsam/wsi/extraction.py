"""Per-slide patch extraction: scan a slide into candidate patches, then write the kept ones.

Two steps per slide, each runnable in a worker process (everything here pickles):

1. :func:`scan_slide` opens the slide, detects tissue at a low resolution, lays a stride grid
   at the patch level, and measures for every grid patch its tissue fraction (from the
   tissue mask) and tumour fraction (the patch's rasterised annotation mask at full patch
   resolution, the same mask that is saved), then labels it (:func:`label_patches`).
2. :func:`extract_patches` reads the chosen patches, writes ``img_dir/<split>/<name>.png``
   and ``ann_dir/<split>/<name>.png`` (0/1) atomically, removes this slide's patches that
   are no longer chosen, and finally writes the slide's manifest (every candidate, kept or
   not). A slide whose manifest exists is complete.

:func:`run_scan_job` and :func:`run_extract_job` wrap both for a process pool: they never
raise for a bad slide but return a :class:`JobResult` whose message names the file.
"""
from __future__ import annotations

import csv
import io
import os
import re
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from mmseg_epsam.utils import io as atomic_io
from mmseg_epsam.utils.io import write_text

from .annotations import (DEFAULT_EXCLUSION_GROUPS, DEFAULT_TUMOUR_GROUPS, AnnotationError,
                          SlideAnnotations, parse_asap_xml)
from .patch_grid import grid_coordinates, label_patches, window_fractions
from .slide_reader import SlideInfo, SlideReader, SlideReadError
from .tissue import tissue_mask

MANIFEST_FIELDS = ('name', 'slide', 'split', 'x', 'y', 'level', 'tissue_fraction',
                   'tumour_fraction', 'label', 'kept')
_DECIMALS = 6  # fractions are stored (and used) rounded to this many decimals


class ManifestError(ValueError):
    """A manifest file that cannot be read back; the message names the file."""


@dataclass(frozen=True)
class PatchParams:
    """Everything that decides a slide's candidate patches and their labels.

    Attributes:
        level: pyramid level patches are read from (0 = full resolution, 40x on Camelyon).
        patch_size: patch side in pixels of ``level``.
        stride: grid step in pixels of ``level`` (a true grid: x and y both step by it).
        pos_range: tumour fraction range of positive patches.
        pos_inclusive: whether the lower / upper bound of ``pos_range`` is included.
        min_tissue: least tissue fraction of a negative patch.
        tissue_downsample: downsample (relative to level 0) of the tissue mask.
        closing_size: tissue mask closing diameter, pixels of the tissue mask.
        median_size: tissue mask median aperture, pixels of the tissue mask (odd).
        min_saturation: floor of the Otsu saturation threshold.
    """

    level: int = 0
    patch_size: int = 512
    stride: int = 256
    pos_range: tuple[float, float] = (0.2, 0.9)
    pos_inclusive: tuple[bool, bool] = (True, True)
    min_tissue: float = 0.5
    tissue_downsample: float = 32.0
    closing_size: int = 5
    median_size: int = 5
    min_saturation: int = 20


@dataclass
class Candidates:
    """Candidate patches of one slide: grid patches holding tissue or tumour.

    Attributes:
        slide: slide id (file stem).
        level: level the patches are read from.
        xy: ``(N, 2)`` int64 level-0 top-left corners.
        tissue_fraction, tumour_fraction: ``(N,)`` float64, rounded to 6 decimals.
        label: ``(N,)`` int8, 1 positive / 0 negative / -1 ignored.
    """

    slide: str
    level: int
    xy: np.ndarray
    tissue_fraction: np.ndarray
    tumour_fraction: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def names(self) -> list[str]:
        """Patch names, ``<slide>_x<x>_y<y>`` (level-0 coordinates)."""
        return [patch_name(self.slide, int(x), int(y)) for x, y in self.xy]


def patch_name(slide: str, x: int, y: int) -> str:
    """Patch name from its slide and level-0 top-left corner, e.g. ``tumor_001_x12288_y4096``."""
    return f'{slide}_x{x}_y{y}'


def _round_fractions(values: np.ndarray) -> np.ndarray:
    """Round to the stored precision exactly as a manifest round trip does."""
    return np.array([float(f'{v:.{_DECIMALS}f}') for v in values], np.float64)


def scan_slide(reader: SlideReader, annotations: Optional[SlideAnnotations],
               params: PatchParams, slide_id: Optional[str] = None) -> Candidates:
    """Candidate patches of a slide with their tissue and tumour fractions and labels.

    Args:
        reader: the opened slide.
        annotations: its tumour/exclusion polygons; None for a slide without tumour.
        params: grid, tissue and labelling parameters.
        slide_id: name used in patch names; defaults to the file stem.

    Returns:
        Candidates: grid patches (row-major) with tissue fraction > 0 or tumour fraction > 0.
    """
    slide_id = slide_id or os.path.splitext(os.path.basename(reader.path))[0]
    reader.check_level(params.level)
    info = reader.info
    level_ds = info.level_downsamples[params.level]
    xy = grid_coordinates(info.level_dimensions[params.level], params.patch_size, params.stride,
                          level_ds)
    size0 = params.patch_size * level_ds
    thumb, thumb_ds = reader.read_downsampled(params.tissue_downsample)
    tissue = tissue_mask(thumb, params.closing_size, params.median_size, params.min_saturation)
    tissue_fraction = window_fractions(tissue, xy, size0, thumb_ds)
    tumour_fraction = np.zeros(len(xy))
    if annotations is not None and not annotations.is_empty:
        for i in np.flatnonzero(annotations.windows_touching_tumour(xy, size0)):
            mask = annotations.window_mask(xy[i], (params.patch_size, params.patch_size), level_ds)
            tumour_fraction[i] = mask.mean()
    keep = (tissue_fraction > 0) | (tumour_fraction > 0)
    tissue_fraction = _round_fractions(tissue_fraction[keep])
    tumour_fraction = _round_fractions(tumour_fraction[keep])
    labels = label_patches(tumour_fraction, tissue_fraction, params.pos_range,
                           params.pos_inclusive, params.min_tissue)
    return Candidates(slide_id, params.level, xy[keep], tissue_fraction, tumour_fraction, labels)


def split_dirs(out_root: str, split: str) -> tuple[str, str]:
    """``(img_dir/<split>, ann_dir/<split>)`` under ``out_root``."""
    return (os.path.join(out_root, 'img_dir', split), os.path.join(out_root, 'ann_dir', split))


def manifest_path(out_root: str, slide_id: str) -> str:
    """Where a slide's manifest lives: ``<out_root>/manifests/<slide>.csv``."""
    return os.path.join(out_root, 'manifests', f'{slide_id}.csv')


def extract_patches(reader: SlideReader, annotations: Optional[SlideAnnotations],
                    candidates: Candidates, kept: np.ndarray, split: str, out_root: str,
                    patch_size: int, png_compression: int = 1) -> int:
    """Write the kept patches and masks of one slide, drop its stale ones, write its manifest.

    Args:
        reader: the opened slide.
        annotations: its polygons (None: all-zero masks).
        candidates: the slide's candidates (from :func:`scan_slide` or its manifest).
        kept: ``(N,)`` bool, which candidates to write.
        split: split name (output sub-directory).
        out_root: dataset root (``img_dir``, ``ann_dir``, ``manifests`` below it).
        patch_size: patch side in pixels of ``candidates.level``.
        png_compression: PNG zlib level.

    Returns:
        The number of patches written.
    """
    img_dir, ann_dir = split_dirs(out_root, split)
    manifest = manifest_path(out_root, candidates.slide)
    if os.path.exists(manifest):  # a manifest exists only while the files on disk match it
        os.unlink(manifest)
    names = candidates.names
    level_ds = reader.info.level_downsamples[candidates.level]
    wanted = {names[i] for i in np.flatnonzero(kept)}
    _remove_stale_patches(out_root, candidates.slide, wanted, split)
    written = 0
    for i in np.flatnonzero(kept):
        x, y = (int(v) for v in candidates.xy[i])
        image = reader.read_region((x, y), candidates.level, (patch_size, patch_size))
        if annotations is None or annotations.is_empty:
            mask = np.zeros((patch_size, patch_size), np.uint8)
        else:
            mask = annotations.window_mask((x, y), (patch_size, patch_size), level_ds)
        write_png(os.path.join(img_dir, names[i] + '.png'), image, png_compression)
        write_png(os.path.join(ann_dir, names[i] + '.png'), mask, png_compression)
        written += 1
    write_manifest(manifest, candidates, split, kept)
    return written


def _remove_stale_patches(out_root: str, slide_id: str, wanted: set[str], split: str) -> None:
    """Delete this slide's unwanted patch files (any split) and interrupted-write temporaries.

    Temporaries are ``.<name>.png.tmp.*`` files (``mmseg_epsam.utils.io.atomic_write``).
    """
    patch = re.compile(re.escape(slide_id) + r'_x\d+_y\d+\.png$')
    temporary = re.compile(r'\.' + re.escape(slide_id) + r'_x\d+_y\d+\.png\.tmp\.')
    for kind in ('img_dir', 'ann_dir'):
        base = os.path.join(out_root, kind)
        if not os.path.isdir(base):
            continue
        for sub in sorted(os.listdir(base)):
            directory = os.path.join(base, sub)
            if not os.path.isdir(directory):
                continue
            for entry in os.scandir(directory):
                stale = patch.match(entry.name) and (sub != split or entry.name[:-4] not in wanted)
                if stale or temporary.match(entry.name):
                    os.unlink(entry.path)


def write_png(path: str, image: np.ndarray, compression: int = 1) -> None:
    """Write a slide patch (RGB ``HxWx3``, as slide readers give) or a mask (``HxW``) as PNG."""
    atomic_io.write_png(path, image, channel_order='rgb', compression=compression)


def write_manifest(path: str, candidates: Candidates, split: str, kept: np.ndarray) -> None:
    """Write a slide's manifest CSV atomically: one row per candidate (:data:`MANIFEST_FIELDS`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(MANIFEST_FIELDS)
    for i, name in enumerate(candidates.names):
        writer.writerow([name, candidates.slide, split, int(candidates.xy[i, 0]),
                         int(candidates.xy[i, 1]), candidates.level,
                         f'{candidates.tissue_fraction[i]:.{_DECIMALS}f}',
                         f'{candidates.tumour_fraction[i]:.{_DECIMALS}f}',
                         int(candidates.label[i]), int(bool(kept[i]))])
    write_text(path, buffer.getvalue())


def read_manifest(path: str) -> tuple[Candidates, str, np.ndarray]:
    """Read a manifest back: ``(candidates, split, kept)``.

    Raises:
        ManifestError: unreadable file, wrong header, or a malformed row (message names it).
    """
    try:
        with open(path, newline='', encoding='utf-8') as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f'{path}: cannot read manifest ({err})') from err
    if not rows or tuple(rows[0]) != MANIFEST_FIELDS:
        header = rows[0] if rows else 'missing'
        raise ManifestError(f'{path}: not a patch manifest (header {header})')
    body = rows[1:]
    slide = os.path.splitext(os.path.basename(path))[0]
    try:
        if any(len(r) != len(MANIFEST_FIELDS) for r in body):
            raise ValueError('a row has the wrong number of fields')
        splits = {r[2] for r in body}
        levels = {int(r[5]) for r in body}
        if len(splits) > 1 or len(levels) > 1 or any(r[1] != slide for r in body):
            raise ValueError('rows disagree on slide, split or level')
        xy = np.array([[int(r[3]), int(r[4])] for r in body], np.int64).reshape(-1, 2)
        candidates = Candidates(
            slide=slide, level=levels.pop() if levels else 0, xy=xy,
            tissue_fraction=np.array([float(r[6]) for r in body], np.float64),
            tumour_fraction=np.array([float(r[7]) for r in body], np.float64),
            label=np.array([int(r[8]) for r in body], np.int8))
        kept = np.array([r[9] == '1' for r in body], bool)
    except ValueError as err:
        raise ManifestError(f'{path}: malformed manifest ({err})') from err
    if candidates.names != [r[0] for r in body]:
        raise ManifestError(f'{path}: patch names do not match their coordinates')
    return candidates, (splits.pop() if splits else ''), kept


# ---- process-pool jobs -------------------------------------------------------------------


@dataclass(frozen=True)
class SlideJob:
    """One slide to process: where it is, its annotations, and the parameters.

    Attributes:
        slide_id: slide name used in patch names.
        slide_path: slide file.
        annotation_path: ASAP XML, or None for a slide without tumour.
        params: candidate parameters.
        tumour_groups, exclusion_groups: ASAP group names (case-insensitive).
        outside_tolerance: level-0 pixels a polygon may overshoot the slide.
    """

    slide_id: str
    slide_path: str
    annotation_path: Optional[str]
    params: PatchParams
    tumour_groups: Sequence[str] = DEFAULT_TUMOUR_GROUPS
    exclusion_groups: Sequence[str] = DEFAULT_EXCLUSION_GROUPS
    outside_tolerance: float = 64.0


@dataclass
class JobResult:
    """Outcome of a job for one slide: ``ok`` or a ``message`` naming the bad file."""

    slide_id: str
    ok: bool
    message: str = ''
    warnings: list[str] = field(default_factory=list)
    candidates: Optional[Candidates] = None
    info: Optional[SlideInfo] = None
    written: int = 0
    seconds: float = 0.0


def _load_annotations(job: SlideJob, reader: SlideReader) -> tuple[Optional[SlideAnnotations],
                                                                   list[str]]:
    """Parse and check a job's annotations; return them with warnings to report."""
    if job.annotation_path is None:
        return None, []
    annotations = parse_asap_xml(job.annotation_path, job.tumour_groups, job.exclusion_groups)
    annotations.check_inside(*reader.info.dimensions, tolerance=job.outside_tolerance)
    warnings = [f'{job.annotation_path}: unknown annotation group {group!r} ({count} '
                f'annotation(s)) ignored; tumour groups are {list(job.tumour_groups)}, exclusion '
                f'groups {list(job.exclusion_groups)}'
                for group, count in sorted(annotations.unknown_groups.items())]
    warnings += [f'{job.annotation_path}: {message}' for message in annotations.skipped]
    return annotations, warnings


def _failure(job: SlideJob, err: Exception, started: float) -> JobResult:
    if isinstance(err, (SlideReadError, AnnotationError)):
        message = str(err)
    else:
        message = f'{job.slide_path}: {type(err).__name__}: {err}'
    return JobResult(job.slide_id, False, message, seconds=time.perf_counter() - started)


def run_scan_job(job: SlideJob) -> JobResult:
    """Scan one slide (:func:`scan_slide`); failures come back as a message, not an exception."""
    started = time.perf_counter()
    try:
        with SlideReader(job.slide_path) as reader:
            annotations, warnings = _load_annotations(job, reader)
            candidates = scan_slide(reader, annotations, job.params, job.slide_id)
            return JobResult(job.slide_id, True, warnings=warnings, candidates=candidates,
                             info=reader.info, seconds=time.perf_counter() - started)
    except Exception as err:  # noqa: BLE001  (one bad slide must not stop the others)
        return _failure(job, err, started)


@dataclass(frozen=True)
class ExtractTask:
    """A slide job plus what to write: the candidates, which to keep, the split, the output."""

    job: SlideJob
    candidates: Candidates
    kept: np.ndarray
    split: str
    out_root: str
    png_compression: int = 1


def run_extract_job(task: ExtractTask) -> JobResult:
    """Write one slide's patches (:func:`extract_patches`); failures come back as a message."""
    started = time.perf_counter()
    job = task.job
    try:
        with SlideReader(job.slide_path) as reader:
            annotations, _ = _load_annotations(job, reader)
            written = extract_patches(reader, annotations, task.candidates, task.kept, task.split,
                                      task.out_root, job.params.patch_size, task.png_compression)
            return JobResult(job.slide_id, True, info=reader.info, written=written,
                             seconds=time.perf_counter() - started)
    except Exception as err:  # noqa: BLE001
        return _failure(job, err, started)
