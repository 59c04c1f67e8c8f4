"""Whole-slide inference: tissue -> tiles -> classifier gate + CAM + PEPM + SAM -> stitched map.

One slide goes through these steps (:class:`WSIInferencer`):

1. **Resolution.** µm/px comes from the slide, else from the caller (``--mpp``); a slide
   with neither is refused (:class:`MissingResolutionError`), since areas in mm² and the
   outputs' µm/px need it.
2. **Tissue.** The slide is read at ``tissue_mpp`` µm/px (about 8 µm/px: a 100k-pixel slide
   is a few thousand pixels) and thresholded with Otsu on saturation
   (:func:`mmseg_epsam.wsi.tissue.tissue_mask`).
3. **Tiles** (:mod:`mmseg_epsam.wsi.tiling`). A regular grid of ``tile_size`` x
   ``tile_size`` tiles at pyramid ``level``, step ``tile_size - overlap``; a tile is
   processed when its tissue fraction is at least ``min_tissue_fraction``. Tiles stream
   through in batches: only one batch of pixels is in memory at a time, never the slide.
4. **Prediction** (:mod:`mmseg_epsam.apis.tile_predictor`): the classifier's tumour
   probability and fused CAM (rotate & fuse, paper Eq. 3) give the initial mask; the SAM
   segmentor gates on the probability (``test_cfg.classifier_gate``), draws PEPM points
   (Eq. 4) from CAM and initial mask and decodes one mask per tile from one image
   embedding per tile.
5. **Checkpointing** (:mod:`mmseg_epsam.wsi.tile_store`). Each finished batch is committed
   to a per-slide SQLite file (one transaction per batch, so a stopped run keeps whole
   batches only); a rerun skips the tiles found there, and refuses a file made with other
   settings or weights.
6. **Stitching** (the seam rule). Every tile carries the weight ``w(x, y) = r(x) r(y)``,
   ``r`` a raised-cosine ramp over the overlap: ``r(u) = sin^2(pi u / (2 overlap))`` for a
   pixel centre at distance ``u < overlap`` from the tile edge, 1 inside
   (:func:`~mmseg_epsam.wsi.tiling.overlap_ramp`). Over an overlap the ramps of two
   neighbours sum to exactly 1, so the stitched tumour probability
   ``p = sum_t w_t p_t / sum_t w_t`` (``p_t`` the sigmoid of SAM's logits, 0 for gated
   tiles) moves smoothly from one tile's prediction to the other's, and a region cut by a
   seam comes out as one region. Pixels that no processed tile covers get ``p = 0``, and so
   (``clip_to_tissue``, default) do pixels outside the detected tissue. The label map is
   ``p > 0.5`` (SAM's ``logits > 0``).
7. **Output resolution** (:func:`~mmseg_epsam.wsi.tiling.plan_tile_grid`). The stitched
   map is kept at ``output_factor`` x the tiling level's pixel size (default 4: a 512-pixel
   tile is 128 map pixels), doubled until the map has at most ``max_output_pixels`` pixels;
   the factor must divide the tile size and the overlap so that tiles land on whole map
   pixels. Each tile's weighted probability is area-averaged onto that grid before it is
   stored, so memory is two float32 maps of that size plus one batch of tiles.

Outputs (:mod:`mmseg_epsam.wsi.export`, all written atomically) go to ``<out_dir>/<slide
stem>/``: ``<stem>_mask.tif`` and ``<stem>_probability.tif`` (pyramidal, µm/px set),
``<stem>_tumour.geojson`` (QuPath annotations, level-0 pixels), ``<stem>_thumbnail.png``,
``<stem>_summary.json`` and the tile checkpoint ``<stem>_tiles.sqlite``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import os.path as osp
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch.distributed as dist
from mmengine.logging import MMLogger
from mmengine.utils import ProgressBar

from mmseg_epsam.wsi.export import (mask_polygons, overlay_thumbnail, tumour_geojson, write_json,
                                    write_png, write_pyramidal_map_tiff)
from mmseg_epsam.wsi.patch_grid import window_fractions
from mmseg_epsam.wsi.slide_reader import SlideReader, SlideReadError
from mmseg_epsam.wsi.tile_store import TILE_STATES, TileRecord, TileStore
from mmseg_epsam.wsi.tiling import (TileGrid, overlap_ramp, plan_tile_grid, stitch_tiles,
                                    tile_map_probability, tile_map_weight, tissue_on_map)
from mmseg_epsam.wsi.tissue import tissue_mask

from .tile_predictor import TilePredictor, config_sha256

#: Stitched probability above which a map pixel is tumour (SAM's ``logits > 0``).
LABEL_THRESHOLD = 0.5
SUMMARY_VERSION = 1


class MissingResolutionError(ValueError):
    """A slide that does not record its µm/px, and none was given; the message names it."""


def _without_paths(description):
    """A description without its ``path`` entries (files are identified by their hashes)."""
    if isinstance(description, dict):
        return {k: _without_paths(v) for k, v in description.items() if k != 'path'}
    return description




@dataclass(frozen=True)
class WSIInferenceSettings:
    """How slides are tiled, stitched and exported.

    Attributes:
        level: pyramid level the tiles are read from.
        tile_size: tile side, pixels of ``level`` (512 as the training patches).
        overlap: pixels shared by neighbouring tiles (seams blended over it).
        batch_size: tiles per predictor call.
        output_factor: level pixels per stitched-map pixel (a power of two; doubled until
            the map fits ``max_output_pixels``).
        max_output_pixels: the largest stitched map (two float32 maps are held).
        tissue_mpp: µm/px at which tissue is detected.
        min_tissue_fraction: least tissue fraction of a processed tile.
        clip_to_tissue: set the stitched probability to 0 outside the detected tissue, so
            predictions on glass or background inside a tile are dropped (their area is still
            reported as ``tumour_outside_tissue_mm2``).
        thumbnail_size: longest side of the thumbnail PNG.
        max_tiles: process at most this many tissue tiles per call (benchmarks, previews;
            None: all). A partial slide is resumed by the next call.
    """

    level: int = 0
    tile_size: int = 512
    overlap: int = 64
    batch_size: int = 4
    output_factor: int = 4
    max_output_pixels: int = 1 << 25
    tissue_mpp: float = 8.0
    min_tissue_fraction: float = 0.02
    clip_to_tissue: bool = True
    thumbnail_size: int = 1024
    max_tiles: Optional[int] = None

    def result_settings(self) -> dict:
        """The settings that decide the outputs (not batch size nor ``max_tiles``)."""
        settings = dataclasses.asdict(self)
        for key in ('batch_size', 'max_tiles'):
            settings.pop(key)
        return settings


def output_paths(out_dir: str, stem: str) -> dict[str, str]:
    """The files written for slide ``stem`` under ``out_dir/stem``."""
    folder = osp.join(out_dir, stem)
    return dict(mask_tiff=osp.join(folder, f'{stem}_mask.tif'),
                probability_tiff=osp.join(folder, f'{stem}_probability.tif'),
                geojson=osp.join(folder, f'{stem}_tumour.geojson'),
                thumbnail=osp.join(folder, f'{stem}_thumbnail.png'),
                summary=osp.join(folder, f'{stem}_summary.json'),
                tiles=osp.join(folder, f'{stem}_tiles.sqlite'))


def slide_stem(path: str) -> str:
    """Slide file name without its extension."""
    return osp.splitext(osp.basename(path))[0]


class WSIInferencer:
    """Runs a :class:`TilePredictor` over whole slides and writes QuPath-ready outputs.

    Args:
        predictor: the tile predictor (:func:`build_epsam_tile_predictor`, or a stand-in).
        settings: tiling, stitching and export settings.
        progress: show an mmengine ``ProgressBar`` per slide.
        logger: where messages go (default: MMEngine's current logger).
    """

    def __init__(self, predictor: TilePredictor,
                 settings: WSIInferenceSettings = WSIInferenceSettings(),
                 progress: bool = True, logger: Optional[MMLogger] = None) -> None:
        self.predictor = predictor
        self.settings = settings
        self.progress = progress
        self.logger = logger or MMLogger.get_current_instance()

    def infer(self, slide_path: str, out_dir: str, mpp: Optional[float] = None,
              overwrite: bool = False) -> dict:
        """Infer one slide; return its summary (also written as ``<stem>_summary.json``).

        Args:
            slide_path: any slide OpenSlide reads.
            out_dir: output root; files go to ``out_dir/<stem>/``.
            mpp: µm/px to use when the slide records none.
            overwrite: discard checkpointed tiles and finished outputs of this slide.

        Raises:
            SlideReadError: the slide is missing, unreadable or truncated.
            MissingResolutionError: no µm/px in the slide and none given.
            RuntimeError: checkpointed tiles of other settings in ``out_dir``.
        """
        total_start = time.perf_counter()
        settings = self.settings
        paths = output_paths(out_dir, slide_stem(slide_path))
        with SlideReader(slide_path) as reader:
            info = reader.info
            slide_mpp, mpp_source = info.mpp, 'slide'
            if slide_mpp is None:
                if mpp is None:
                    raise MissingResolutionError(
                        f'{slide_path}: the slide does not record its resolution (µm/px); '
                        'pass --mpp MPP (e.g. 0.25 for a 40x scan, 0.5 for 20x)')
                if not mpp > 0:
                    raise ValueError(f'--mpp must be positive, got {mpp}')
                slide_mpp, mpp_source = (float(mpp), float(mpp)), '--mpp'
            grid = plan_tile_grid(info, settings.level, settings.tile_size, settings.overlap,
                                  settings.output_factor, settings.max_output_pixels)
            fingerprint = dict(
                version=SUMMARY_VERSION, settings=settings.result_settings(),
                predictor=_without_paths(self.predictor.describe()), mpp=list(slide_mpp),
                slide=dict(size=os.path.getsize(slide_path),
                           mtime_ns=os.stat(slide_path).st_mtime_ns,
                           level_dimensions=info.level_dimensions))
            fingerprint_sha = config_sha256(fingerprint)
            finished = self._finished_summary(paths, fingerprint_sha, overwrite)
            if finished is not None:
                self.logger.info(f'{slide_path}: done earlier, outputs in '
                                 f'{osp.dirname(paths["summary"])} (skipped)')
                return finished

            start = time.perf_counter()
            tissue, tissue_downsample = self._detect_tissue(reader, slide_mpp)
            tissue_tiles = self._tissue_tiles(tissue, tissue_downsample, grid)
            tissue_area_mm2 = float(tissue.sum() * tissue_downsample[0] * tissue_downsample[1]
                                    * slide_mpp[0] * slide_mpp[1] / 1e6)
            timings = dict(tissue_s=time.perf_counter() - start)
            store = TileStore(paths['tiles'], fingerprint, grid.tile_map_size, overwrite)
            try:
                computed, tile_timings = self._run_tiles(reader, grid, tissue_tiles, store,
                                                         slide_stem(slide_path))
                timings.update(tile_timings)
                start = time.perf_counter()
                probability = stitch_tiles(store.records(), grid)
                counts = store.state_counts()
            finally:
                store.close()
            timings['stitch_s'] = time.perf_counter() - start
            start = time.perf_counter()
            thumbnail_ds = max(1.0, max(info.dimensions) / settings.thumbnail_size)
            thumbnail, thumbnail_downsample = reader.read_downsampled(thumbnail_ds)
        label = probability > LABEL_THRESHOLD
        outside = ~tissue_on_map(tissue, tissue_downsample, grid)
        outside_tissue_pixels = int((label & outside).sum())
        if settings.clip_to_tissue:
            probability[outside] = 0
            label[outside] = False
        map_mpp = (slide_mpp[0] * grid.output_downsample, slide_mpp[1] * grid.output_downsample)
        tiff_levels, num_polygons = self._export(paths, probability, label, grid, map_mpp,
                                                 thumbnail, thumbnail_downsample)
        timings['export_s'] = time.perf_counter() - start
        timings['total_s'] = time.perf_counter() - total_start

        tumour_pixels = int(label.sum())
        done = sum(counts.values())
        complete = done == len(tissue_tiles)
        summary = dict(
            slide=osp.abspath(slide_path),
            status=('no_tissue' if len(tissue_tiles) == 0 else
                    'complete' if complete else 'partial'),
            slide_size=list(info.dimensions), slide_levels=info.level_count,
            mpp=list(slide_mpp), mpp_source=mpp_source,
            tumour_area_mm2=tumour_pixels * map_mpp[0] * map_mpp[1] / 1e6,
            tissue_area_mm2=tissue_area_mm2,
            tumour_outside_tissue_mm2=outside_tissue_pixels * map_mpp[0] * map_mpp[1] / 1e6,
            tumour_polygons=num_polygons,
            tiles=dict(grid=grid.num_tiles, total=int(len(tissue_tiles)), done=done,
                       gated=counts['gated'], empty_prompt=counts['empty_prompt'],
                       segmented=counts['segmented'], computed_this_run=computed,
                       resumed=done - computed),
            tiling=dict(level=grid.level, level_downsample=grid.level_downsample,
                        tile_size=grid.tile_size, overlap=grid.overlap, stride=grid.stride,
                        columns=grid.columns, rows=grid.rows,
                        blending='raised-cosine ramp over the overlap; weighted mean of '
                                 'SAM tumour probabilities'),
            output=dict(downsample=grid.output_downsample, factor=grid.output_factor,
                        size=list(grid.map_size), mpp=list(map_mpp),
                        tiff_levels=[list(s) for s in tiff_levels],
                        label_rule=f'stitched probability > {LABEL_THRESHOLD}' + (
                            ', inside detected tissue' if settings.clip_to_tissue else ''),
                        mask_values=dict(background=0, tumour=255),
                        geojson_coordinates='level-0 pixels, vertices at map pixel centres'),
            tissue=dict(mpp=settings.tissue_mpp, downsample=list(tissue_downsample),
                        min_tissue_fraction=settings.min_tissue_fraction),
            settings=dataclasses.asdict(settings),
            timings_s=timings,
            predictor=self.predictor.describe(),
            fingerprint=fingerprint_sha,
            outputs={k: osp.abspath(v) for k, v in paths.items() if k != 'summary'})
        write_json(paths['summary'], summary)
        self.logger.info(
            f'{slide_path}: {summary["status"]}, tumour {summary["tumour_area_mm2"]:.3f} mm² '
            f'of {tissue_area_mm2:.3f} mm² tissue, {done}/{len(tissue_tiles)} tissue tiles '
            f'({counts["segmented"]} segmented, {counts["gated"]} gated); outputs in '
            f'{osp.dirname(paths["summary"])}')
        return summary

    def _detect_tissue(self, reader: SlideReader, slide_mpp: tuple[float, float]
                       ) -> tuple[np.ndarray, tuple[float, float]]:
        """The tissue mask at about ``tissue_mpp`` µm/px and its ``(x, y)`` downsample."""
        tissue_rgb, downsample = reader.read_downsampled(
            max(1.0, self.settings.tissue_mpp / max(slide_mpp)))
        return tissue_mask(tissue_rgb), downsample

    def _tissue_tiles(self, tissue: np.ndarray, downsample: tuple[float, float],
                      grid: TileGrid) -> np.ndarray:
        """Indices of the tiles whose tissue fraction reaches ``min_tissue_fraction``."""
        fractions = window_fractions(tissue, grid.tile_level0_origins(),
                                     grid.tile_size * grid.level_downsample, downsample)
        return np.flatnonzero((fractions > 0) & (fractions >= self.settings.min_tissue_fraction))

    @staticmethod
    def _export(paths: dict, probability: np.ndarray, label: np.ndarray, grid: TileGrid,
                map_mpp: tuple[float, float], thumbnail: np.ndarray,
                thumbnail_downsample: tuple[float, float]) -> tuple[list, int]:
        """Write the TIFFs, GeoJSON and thumbnail; return the TIFF level sizes and the
        number of polygons."""
        tiff_levels = write_pyramidal_map_tiff(paths['mask_tiff'],
                                               label.astype(np.uint8) * 255, map_mpp,
                                               resampling='majority')
        write_pyramidal_map_tiff(paths['probability_tiff'],
                                 np.round(probability * 255).astype(np.uint8), map_mpp,
                                 resampling='area')
        polygons = mask_polygons(label, grid.output_downsample)
        write_json(paths['geojson'], tumour_geojson(polygons))
        write_png(paths['thumbnail'], overlay_thumbnail(thumbnail, label, grid.output_downsample,
                                                        thumbnail_downsample))
        return tiff_levels, len(polygons)

    @staticmethod
    def _finished_summary(paths: dict, fingerprint_sha: str, overwrite: bool) -> Optional[dict]:
        """The summary of an earlier complete run with the same fingerprint, else None."""
        if overwrite or not osp.isfile(paths['summary']):
            return None
        with open(paths['summary'], encoding='utf-8') as f:
            summary = json.load(f)
        outputs_exist = all(osp.isfile(p) for k, p in paths.items() if k != 'tiles')
        if (summary.get('fingerprint') == fingerprint_sha and outputs_exist
                and summary.get('status') in ('complete', 'no_tissue')):
            return summary
        return None

    def _run_tiles(self, reader: SlideReader, grid: TileGrid, tissue_tiles: np.ndarray,
                   store: TileStore, stem: str) -> tuple[int, dict]:
        """Predict the tissue tiles not yet in ``store``; return (count, timings)."""
        settings = self.settings
        done = store.done()
        todo = [int(i) for i in tissue_tiles if int(i) not in done]
        if done:
            self.logger.info(f'{reader.path}: {len(tissue_tiles) - len(todo)} of '
                             f'{len(tissue_tiles)} tissue tiles done earlier, {len(todo)} to do')
        if settings.max_tiles is not None:
            todo = todo[:settings.max_tiles]
        timings = dict(read_s=0.0, predict_s=0.0, store_s=0.0)
        before = {k: v for k, v in self.predictor.timings.items()}
        map_weight = tile_map_weight(grid.tile_size, grid.overlap, grid.output_factor)
        ramp = overlap_ramp(grid.tile_size, grid.overlap)
        weight = np.outer(ramp, ramp)
        progress = ProgressBar(len(todo)) if self.progress and todo else None
        origins = grid.tile_level0_origins()
        start_tiles = time.perf_counter()
        for first in range(0, len(todo), settings.batch_size):
            batch = todo[first:first + settings.batch_size]
            start = time.perf_counter()
            tiles = [reader.read_region(tuple(origins[i]), grid.level,
                                        (grid.tile_size, grid.tile_size)) for i in batch]
            keys = [f'{stem}_L{grid.level}_x{origins[i][0]}_y{origins[i][1]}' for i in batch]
            timings['read_s'] += time.perf_counter() - start
            start = time.perf_counter()
            predictions = self.predictor(tiles, keys)
            timings['predict_s'] += time.perf_counter() - start
            if len(predictions) != len(batch):
                raise RuntimeError(f'the tile predictor returned {len(predictions)} '
                                   f'predictions for {len(batch)} tiles')
            start = time.perf_counter()
            records = []
            for index, prediction in zip(batch, predictions):
                if prediction.state not in TILE_STATES:
                    raise ValueError(f'tile predictor state must be one of {TILE_STATES}, '
                                     f'got {prediction.state!r}')
                probability = None
                if prediction.probability is not None:
                    probability = tile_map_probability(prediction.probability, weight,
                                                       map_weight, grid.output_factor)
                records.append(TileRecord(index, prediction.cls_score, prediction.state,
                                          probability))
            store.put(records)
            timings['store_s'] += time.perf_counter() - start
            if progress is not None:
                for _ in batch:
                    progress.update()
        if progress is not None:
            progress.file.write('\n')
        timings['tiles_s'] = time.perf_counter() - start_tiles
        for key, value in self.predictor.timings.items():
            timings[key] = value - before.get(key, 0)
        timings['tiles_per_s'] = len(todo) / timings['tiles_s'] if todo else None
        return len(todo), timings

    def infer_many(self, slide_paths: Sequence[str], out_dir: str, mpp: Optional[float] = None,
                   overwrite: bool = False, write_summary: bool = True) -> list[dict]:
        """Infer several slides; a failing slide is reported and the others continue.

        Returns one ``dict(slide, ok, status, error, summary)`` per slide, in order; the
        list is also written to ``out_dir/run_summary.json`` (unless ``write_summary`` is
        False). Expected problems (unreadable slide, missing µm/px, settings that do not fit
        the slide, checkpointed tiles of other settings) are reported by their message;
        anything else also with its traceback.
        """
        results = []
        seen: dict[str, str] = {}
        for slide_path in slide_paths:
            stem = slide_stem(slide_path)
            result = dict(slide=slide_path, ok=False, status='failed', error=None, summary=None)
            try:
                if stem in seen:
                    raise ValueError(f'{slide_path}: same file name as {seen[stem]}; its outputs '
                                     f'would overwrite that slide\'s in {osp.join(out_dir, stem)}'
                                     '; rename it or run it with another --out')
                seen[stem] = slide_path
                summary = self.infer(slide_path, out_dir, mpp=mpp, overwrite=overwrite)
                result.update(ok=True, status=summary['status'], summary=summary['outputs'])
            except (SlideReadError, ValueError, RuntimeError, OSError) as err:
                result['error'] = str(err)
                self.logger.error(f'FAILED: {err}')  # the message starts with the slide
            except Exception as err:  # noqa: BLE001  (report it, carry on with the others)
                result['error'] = f'{type(err).__name__}: {err}'
                self.logger.exception(f'FAILED {slide_path}: unexpected error')
            results.append(result)
        if write_summary:
            write_run_summary(out_dir, results)
        return results

    def infer_sharded(self, slide_paths: Sequence[str], out_dir: str,
                      mpp: Optional[float] = None, overwrite: bool = False) -> list[dict]:
        """:meth:`infer_many` across the ranks of the ``torch.distributed`` process group.

        Each rank infers its share (:func:`shard_slides`); the results are gathered so that
        every rank returns, and rank 0 writes, the run summary of all slides in the order
        given, as one process would. Outputs are per slide, so a rerun resumes each slide
        whatever the number of ranks. Without an initialised process group this is
        :meth:`infer_many`.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self.infer_many(slide_paths, out_dir, mpp=mpp, overwrite=overwrite)
        rank, world_size = dist.get_rank(), dist.get_world_size()
        mine = shard_slides(slide_paths, rank, world_size)
        self.logger.info(f'rank {rank} of {world_size}: {len(mine)} of {len(slide_paths)} '
                         'slides')
        results = self.infer_many([slide_paths[i] for i in mine], out_dir, mpp=mpp,
                                  overwrite=overwrite, write_summary=False)
        gathered: list = [None] * world_size
        dist.all_gather_object(gathered, list(zip(mine, results)))
        merged = [result for _, result in sorted(
            (pair for share in gathered for pair in share), key=lambda pair: pair[0])]
        if rank == 0:
            write_run_summary(out_dir, merged)
        return merged


def shard_slides(slide_paths: Sequence[str], rank: int, world_size: int) -> list[int]:
    """Indices (in order) of the slides that rank ``rank`` of ``world_size`` infers.

    Slide names (file stems) are dealt round-robin in order of first appearance, so the
    slides that share a name, which would share an output folder, fall to one rank, whose
    :meth:`WSIInferencer.infer_many` processes the first and reports the others, as one
    process does. The split depends on the list and ``world_size`` only.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f'rank must lie in [0, {world_size}), got {rank}')
    turn: dict[str, int] = {}
    for path in slide_paths:
        turn.setdefault(slide_stem(path), len(turn) % world_size)
    return [i for i, path in enumerate(slide_paths) if turn[slide_stem(path)] == rank]


def write_run_summary(out_dir: str, results: Sequence[dict]) -> None:
    """``out_dir/run_summary.json``: the per-slide results of a run, in slide order."""
    write_json(osp.join(out_dir, 'run_summary.json'), dict(slides=list(results)))

