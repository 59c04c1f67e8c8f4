"""Whole-slide inference: tissue -> tiles -> classifier gate + CAM + PEPM + SAM -> stitched map.

One slide goes through these steps (:class:`WSIInferencer`):

1. **Resolution.** µm/px comes from the slide, else from the caller (``--mpp``); a slide
   with neither is refused (:class:`MissingResolutionError`), since areas in mm² and the
   outputs' µm/px need it.
2. **Tissue.** The slide is read at ``tissue_mpp`` µm/px (about 8 µm/px: a 100k-pixel slide
   is a few thousand pixels) and thresholded with Otsu on saturation
   (:func:`mmseg_epsam.wsi.tissue.tissue_mask`).
3. **Tiles.** A regular grid of ``tile_size`` x ``tile_size`` tiles at pyramid ``level``,
   step ``tile_size - overlap`` (:class:`TileGrid`); a tile is processed when its tissue
   fraction is at least ``min_tissue_fraction``. Tiles stream through in batches: only one
   batch of pixels is in memory at a time, never the slide.
4. **Prediction** (:class:`EPSAMTilePredictor`): the classifier's tumour probability and
   fused CAM (rotate & fuse, paper Eq. 3) give the initial mask; the SAM segmentor gates on
   the probability (``test_cfg.classifier_gate``), draws PEPM points (Eq. 4) from CAM and
   initial mask and decodes one mask per tile from one image embedding per tile.
5. **Checkpointing.** Each finished batch is committed to a per-slide SQLite file (one
   transaction per batch, so a stopped run keeps whole batches only); a rerun skips the
   tiles found there, and refuses a file made with other settings or weights.
6. **Stitching** (the seam rule). Every tile carries the weight ``w(x, y) = r(x) r(y)``,
   ``r`` a raised-cosine ramp over the overlap: ``r(u) = sin^2(pi u / (2 overlap))`` for a
   pixel centre at distance ``u < overlap`` from the tile edge, 1 inside
   (:func:`overlap_ramp`). Over an overlap the ramps of two neighbours sum to exactly 1,
   so the stitched tumour probability ``p = sum_t w_t p_t / sum_t w_t`` (``p_t`` the
   sigmoid of SAM's logits, 0 for gated tiles) moves smoothly from one tile's prediction to
   the other's, and a region cut by a seam comes out as one region. Pixels that no processed
   tile covers get ``p = 0``, and so (``clip_to_tissue``, default) do pixels outside the
   detected tissue. The label map is ``p > 0.5`` (SAM's ``logits > 0``).
7. **Output resolution** (:func:`plan_tile_grid`). The stitched map is kept at
   ``output_factor`` x the tiling level's pixel size (default 4: a 512-pixel tile is 128
   map pixels), doubled until the map has at most ``max_output_pixels`` pixels; the factor
   must divide the tile size and the overlap so that tiles land on whole map pixels. Each
   tile's weighted probability is area-averaged onto that grid before it is stored, so
   memory is two float32 maps of that size plus one batch of tiles.

Outputs (:mod:`mmseg_epsam.wsi.export`, all written atomically) go to ``<out_dir>/<slide
stem>/``: ``<stem>_mask.tif`` and ``<stem>_probability.tif`` (pyramidal, µm/px set),
``<stem>_tumour.geojson`` (QuPath annotations, level-0 pixels), ``<stem>_thumbnail.png``,
``<stem>_summary.json`` and the tile checkpoint ``<stem>_tiles.sqlite``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import os.path as osp
import sqlite3
import time
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.utils import ProgressBar

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg_epsam.apis import EPSAMPipeline
from mmseg_epsam.cache.embedding_cache import ModuleFingerprint
from mmseg_epsam.engine.cam_generation import generation_dataset_cfg, load_classifier_checkpoint
from mmseg_epsam.functional.cam import (CAMPostprocess, cam_postprocess, initial_mask_from_cam,
                                        rotate_and_fuse_cams)

from .export import (mask_polygons, overlay_thumbnail, tumour_geojson, write_json,
                     write_png, write_pyramidal_map_tiff)
from .patch_grid import window_fractions
from .slide_reader import SlideInfo, SlideReader, SlideReadError
from .tissue import tissue_mask

#: Tile outcomes: stopped by the classifier gate, no PEPM point (empty initial mask),
#: decoded by SAM.
TILE_STATES = ('gated', 'empty_prompt', 'segmented')
#: Stitched probability above which a map pixel is tumour (SAM's ``logits > 0``).
LABEL_THRESHOLD = 0.5
SUMMARY_VERSION = 1


class MissingResolutionError(ValueError):
    """A slide that does not record its µm/px, and none was given; the message names it."""


# --------------------------------------------------------------------------- geometry
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


def stitch_tiles(records: Iterator['TileRecord'], grid: TileGrid) -> np.ndarray:
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


# --------------------------------------------------------------------------- predictors
@dataclass
class TilePrediction:
    """What a predictor says about one tile.

    Attributes:
        cls_score: tumour probability of the classifier (or of the stand-in).
        state: one of :data:`TILE_STATES`.
        probability: ``(tile_size, tile_size)`` float32 tumour probability (sigmoid of
            SAM's logits) when ``state == 'segmented'``, else None (all zero).
    """

    cls_score: float
    state: str
    probability: Optional[np.ndarray] = None


class TilePredictor(Protocol):
    """Maps a batch of RGB tiles to :class:`TilePrediction` s."""

    timings: dict

    def __call__(self, tiles: Sequence[np.ndarray],
                 keys: Sequence[str]) -> list[TilePrediction]:
        """``tiles``: HxWx3 uint8 RGB arrays; ``keys``: a stable name per tile (seeds PEPM)."""

    def describe(self) -> dict:
        """JSON-able description (weights, settings); it enters the resume fingerprint."""


@torch.no_grad()
def classify_with_cam(classifier: torch.nn.Module, inputs: torch.Tensor,
                      data_samples: Sequence[SegDataSample], full_size: tuple[int, int],
                      postprocess: CAMPostprocess, views_per_forward: int = 4
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """In-memory stage 1 for a batch: tumour probability, fused CAM and initial mask.

    The same steps as the CAM generator (:mod:`mmseg_epsam.engine.cam_generation`) without
    files: the classifier's predict mode gives ``pred_score``; rotate & fuse (paper Eq. 3)
    gives the CAM at feature resolution; :func:`initial_mask_from_cam` resizes it to
    ``full_size`` and thresholds and opens it (docs/method.md §3).

    Args:
        classifier: an ``EPSAMPatchClassifier`` in eval mode.
        inputs: preprocessed batch ``[B, 3, h, w]`` (the classifier's data preprocessor).
        data_samples: the batch's data samples.
        full_size: ``(height, width)`` of the tiles (the CAM and mask resolution).
        postprocess: CAM post-processing settings.
        views_per_forward: rotated views per forward pass.

    Returns:
        ``(scores [B], full_cam [B, H, W] float32 in [0, 1], initial_mask [B, H, W] bool)``.
    """
    results = classifier(inputs, list(data_samples), mode='predict')
    scores = torch.stack([r.pred_score.reshape(-1)[0].float() for r in results])
    cams = rotate_and_fuse_cams(classifier.compute_cam, inputs, views_per_forward,
                                postprocess.quarter_turns, postprocess.quantize_uint8)
    full_cam, initial_mask = initial_mask_from_cam(cams, full_size, postprocess)
    return scores, full_cam, initial_mask


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def _config_sha256(config: dict) -> str:
    """SHA-256 of a config dict in canonical JSON form (sorted keys)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class EPSAMTilePredictor:
    """EP-SAM's test path on tiles: gate -> CAM -> PEPM -> SAM (docs/method.md §9).

    Args:
        classifier: ``EPSAMPatchClassifier`` with its weights, in eval mode.
        segmentor: ``SAMDecoderSegmentor`` with its weights; its ``test_cfg`` gives the
            classifier gate; no embedding cache (each tile is encoded once, in memory).
        classifier_pipeline: the classifier config's test transforms after image loading
            (e.g. the resize of the demo config), starting with ``LoadImageFromNDArray``.
        postprocess: CAM post-processing of the pipeline's ``cam`` section.
        views_per_forward: rotated views per classifier forward pass.
        description: JSON-able facts for the summary (configs, checkpoint hashes).
    """

    def __init__(self, classifier: torch.nn.Module, segmentor: torch.nn.Module,
                 classifier_pipeline: Sequence[dict], postprocess: CAMPostprocess,
                 views_per_forward: int = 4, description: Optional[dict] = None) -> None:
        self.classifier = classifier.eval()
        self.segmentor = segmentor.eval()
        self.classifier_pipeline = Compose(list(classifier_pipeline))
        self.postprocess = postprocess
        self.views_per_forward = views_per_forward
        self.description = dict(description or {})
        self.device = next(segmentor.parameters()).device
        self.timings = dict(classifier_s=0.0, sam_encoder_s=0.0, sam_decoder_s=0.0,
                            sam_encoded_tiles=0)
        self._encoder_start = 0.0
        encoder = segmentor.image_encoder
        encoder.register_forward_pre_hook(self._encoder_started)
        encoder.register_forward_hook(self._encoder_finished)

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def _encoder_started(self, module, args) -> None:
        self._sync()
        self._encoder_start = time.perf_counter()

    def _encoder_finished(self, module, args, output) -> None:
        self._sync()
        self.timings['sam_encoder_s'] += time.perf_counter() - self._encoder_start
        self.timings['sam_encoded_tiles'] += int(args[0].shape[0])

    def describe(self) -> dict:
        """Configs, checkpoint hashes, gate and CAM settings (JSON-able)."""
        return dict(self.description, postprocess=self.postprocess.to_dict(),
                    views_per_forward=self.views_per_forward,
                    classifier_gate=self.segmentor.test_cfg.get('classifier_gate'))

    @torch.no_grad()
    def __call__(self, tiles: Sequence[np.ndarray],
                 keys: Sequence[str]) -> list[TilePrediction]:
        """Predict a batch of equally sized HxWx3 uint8 RGB tiles."""
        start = time.perf_counter()
        full_size = tuple(tiles[0].shape[:2])
        # LoadImageFromFile gives BGR, and the classifier's preprocessor converts to RGB.
        packed = [self.classifier_pipeline(dict(img=np.ascontiguousarray(tile[..., ::-1])))
                  for tile in tiles]
        data = self.classifier.data_preprocessor(pseudo_collate(packed), False)
        scores, full_cams, initial_masks = classify_with_cam(
            self.classifier, data['inputs'], data['data_samples'], full_size,
            self.postprocess, self.views_per_forward)
        # Round the CAM to float16 as stage 1 stores it, so a tile gets the prompts the
        # patch path (cams/*.npy -> PEPM) would draw for the same image.
        full_cams = full_cams.half().float().cpu().numpy()
        initial_masks = initial_masks.cpu().numpy().astype(np.uint8)
        scores = scores.cpu().tolist()
        self._sync()
        sam_start = time.perf_counter()
        self.timings['classifier_s'] += sam_start - start
        encoder_before = self.timings['sam_encoder_s']
        samples = [SegDataSample(metainfo=dict(
            img_shape=full_size, ori_shape=full_size, patch_name=key, cam=cam,
            initial_mask=mask, cls_score=score))
            for key, cam, mask, score in zip(keys, full_cams, initial_masks, scores)]
        inputs = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float().to(self.device)
        results = self.segmentor.predict(inputs, samples)
        predictions = []
        for result, score in zip(results, scores):
            meta = result.metainfo
            if meta['classifier_gated']:
                predictions.append(TilePrediction(score, 'gated'))
            elif meta['prompt_empty']:
                predictions.append(TilePrediction(score, 'empty_prompt'))
            else:
                probability = result.seg_logits.data[0].float().sigmoid().cpu().numpy()
                predictions.append(TilePrediction(score, 'segmented', probability))
        self._sync()
        sam_time = time.perf_counter() - sam_start
        self.timings['sam_decoder_s'] += sam_time - (self.timings['sam_encoder_s'] -
                                                     encoder_before)
        return predictions


def _open_pipeline(cfg: Config, config_path: str,
                   sam_checkpoint: Optional[str]) -> EPSAMPipeline:
    """An :class:`EPSAMPipeline` for reading a run, without emptying its ``pipeline.log``.

    The pipeline opens ``<work_dir>/pipeline.log`` through ``MMLogger``, whose default file
    mode ``'w'`` would truncate the run's log; the logger is created first in append mode.
    """
    work_dir = osp.abspath(cfg.work_dir)
    if not MMLogger.check_instance_created('epsam_pipeline'):
        os.makedirs(work_dir, exist_ok=True)
        MMLogger.get_instance('epsam_pipeline', log_file=osp.join(work_dir, 'pipeline.log'),
                              log_level='INFO', file_mode='a')
    with warnings.catch_warnings():  # "instance ... has been created" from get_instance
        warnings.simplefilter('ignore', UserWarning)
        return EPSAMPipeline(cfg, config_path, sam_checkpoint=sam_checkpoint)


def build_epsam_tile_predictor(pipeline_config: str, work_dir: str,
                               classifier_checkpoint: Optional[str] = None,
                               decoder_checkpoint: Optional[str] = None,
                               sam_checkpoint: Optional[str] = None,
                               classifier_gate: Optional[float] = None,
                               device: str = 'cpu') -> EPSAMTilePredictor:
    """The trained classifier and SAM decoder of a pipeline run, as a tile predictor.

    Args:
        pipeline_config: the pipeline config (e.g. ``configs/epsam/epsam_demo.py``); its
            stage configs give the models, its ``cam`` section the CAM settings.
        work_dir: the pipeline run's work dir (overrides the config's ``work_dir``).
        classifier_checkpoint: default: the finished ``classifier`` stage's checkpoint.
        decoder_checkpoint: default: the decoder of the last trained round. It is an MMEngine
            checkpoint of the whole segmentor (frozen encoders included), loaded strictly.
        sam_checkpoint: Meta's ``sam_vit_*.pth`` to build SAM with (default: the pipeline
            config's ``decoder.sam_checkpoint``); required where the config requires it.
        classifier_gate: overrides the decoder config's ``test_cfg.classifier_gate``
            (``0`` lets every tile through).
        device: torch device.

    Raises:
        FileNotFoundError / RuntimeError / ValueError naming the missing stage or file.
    """
    if not osp.isfile(pipeline_config):
        raise FileNotFoundError(f'{pipeline_config}: pipeline config not found')
    cfg = Config.fromfile(pipeline_config)
    cfg.work_dir = work_dir
    pipeline = _open_pipeline(cfg, pipeline_config, sam_checkpoint)
    init_default_scope('mmseg')
    if classifier_checkpoint is None:
        record = pipeline.stage_record('classifier')
        if record is None or not record.get('checkpoint'):
            raise FileNotFoundError(
                f'{work_dir}: no finished classifier stage (classifier/stage_done.json); '
                'run tools/run_pipeline.py first or pass --classifier-checkpoint')
        classifier_checkpoint = record['checkpoint']
    if decoder_checkpoint is None:
        try:
            decoder_checkpoint = pipeline.final_checkpoint()
        except RuntimeError as err:
            raise RuntimeError(f'{err}, or pass --decoder-checkpoint') from err

    classifier_cfg = pipeline.stage_config(cfg.classifier, 'classifier')
    classifier = MODELS.build(classifier_cfg.model)
    load_classifier_checkpoint(classifier, classifier_checkpoint)
    test_pipeline = generation_dataset_cfg(classifier_cfg, 'test')['pipeline']
    if not test_pipeline or test_pipeline[0].get('type') != 'LoadImageFromFile':
        raise ValueError(f'{pipeline_config}: the classifier test pipeline must start with '
                         f'LoadImageFromFile, got {test_pipeline[:1]}')
    classifier_pipeline = [dict(type='LoadImageFromNDArray')] + test_pipeline[1:]

    decoder_cfg = pipeline.stage_config(cfg.decoder, 'decoder')
    decoder_cfg.model.checkpoint = pipeline.sam_checkpoint
    decoder_cfg.model.embedding_cache = None
    segmentor = MODELS.build(decoder_cfg.model)
    sam_encoder = ModuleFingerprint(segmentor.image_encoder).value()
    # The decoder checkpoint is this project's own MMEngine checkpoint of the whole
    # segmentor (frozen encoders included): the same strict, named-error loader as the
    # classifier's. Its weights are the ones the decoder was trained with, so they win.
    load_classifier_checkpoint(segmentor, decoder_checkpoint)
    encoder_fingerprint = ModuleFingerprint(segmentor.image_encoder).value()
    if pipeline.sam_checkpoint and encoder_fingerprint != sam_encoder:
        MMLogger.get_current_instance().warning(
            f'{decoder_checkpoint}: its SAM image encoder differs from '
            f'{pipeline.sam_checkpoint}; using the decoder checkpoint\'s (trained with it)')
    if classifier_gate is not None:
        segmentor.test_cfg['classifier_gate'] = classifier_gate

    cam = dict(cfg.cam)
    postprocess = cam_postprocess(cam.get('preset', 'camelyon16'), **cam.get('postprocess', {}))
    checkpoints = dict(classifier=classifier_checkpoint, decoder=decoder_checkpoint)
    if pipeline.sam_checkpoint:
        checkpoints['sam'] = pipeline.sam_checkpoint
    description = dict(
        pipeline_config=dict(path=osp.abspath(pipeline_config),
                             sha256=file_sha256(pipeline_config)),
        classifier_model_sha256=_config_sha256(classifier_cfg.model.to_dict()),
        decoder_model_sha256=_config_sha256(decoder_cfg.model.to_dict()),
        sam_arch=decoder_cfg.model.get('arch'),
        sam_image_encoder_sha1=encoder_fingerprint,
        checkpoints={name: dict(path=osp.abspath(path), sha256=file_sha256(path))
                     for name, path in checkpoints.items()})
    return EPSAMTilePredictor(classifier.to(device), segmentor.to(device), classifier_pipeline,
                              postprocess, int(cam.get('views_per_forward', 4)), description)


# --------------------------------------------------------------------------- checkpoints
@dataclass
class TileRecord:
    """One finished tile as checkpointed: its map-grid probability (None: all zero)."""

    index: int
    cls_score: float
    state: str
    probability: Optional[np.ndarray]


class TileStore:
    """Per-slide SQLite checkpoint of finished tiles (one transaction per batch).

    Args:
        path: the ``.sqlite`` file.
        fingerprint: JSON-able settings, weights and slide identity; a file made with
            another fingerprint is refused unless ``overwrite``.
        tile_map_size: side of a stored tile probability (map pixels).
        overwrite: start afresh, discarding earlier tiles.
    """

    def __init__(self, path: str, fingerprint: dict, tile_map_size: int,
                 overwrite: bool = False) -> None:
        self.path = path
        self.side = tile_map_size
        if overwrite and osp.exists(path):
            os.remove(path)
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        self.connection = sqlite3.connect(path)
        text = json.dumps(fingerprint, sort_keys=True, default=str)
        with self.connection:
            self.connection.execute(
                'CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)')
            self.connection.execute(
                'CREATE TABLE IF NOT EXISTS tiles (idx INTEGER PRIMARY KEY, cls_score REAL, '
                'state TEXT, probability BLOB)')
            row = self.connection.execute(
                "SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            if row is None:
                self.connection.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (text,))
        if row is not None and row[0] != text:
            self.close()
            raise RuntimeError(
                f'{path}: these checkpointed tiles were made with other settings, weights or '
                f'another version of the slide ({_differences(json.loads(row[0]), fingerprint)}'
                '); use another --out folder or --overwrite')

    def done(self) -> set[int]:
        """Indices of the checkpointed tiles."""
        return {row[0] for row in self.connection.execute('SELECT idx FROM tiles')}

    def put(self, records: Sequence[TileRecord]) -> None:
        """Store a batch of tiles in one transaction (all or nothing)."""
        rows = [(r.index, float(r.cls_score), r.state,
                 None if r.probability is None else r.probability.astype(np.float16).tobytes())
                for r in records]
        with self.connection:
            self.connection.executemany('INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?)', rows)

    def state_counts(self) -> dict[str, int]:
        """Number of stored tiles in each of :data:`TILE_STATES`."""
        counts = {state: 0 for state in TILE_STATES}
        counts.update(self.connection.execute(
            'SELECT state, COUNT(*) FROM tiles GROUP BY state').fetchall())
        return counts

    def records(self) -> Iterator[TileRecord]:
        """Every stored tile in index order (probabilities as float32)."""
        cursor = self.connection.execute(
            'SELECT idx, cls_score, state, probability FROM tiles ORDER BY idx')
        for index, score, state, blob in cursor:
            probability = None if blob is None else np.frombuffer(blob, np.float16).astype(
                np.float32).reshape(self.side, self.side)
            yield TileRecord(index, score, state, probability)

    def close(self) -> None:
        """Close the database."""
        self.connection.close()


def _without_paths(description):
    """A description without its ``path`` entries (files are identified by their hashes)."""
    if isinstance(description, dict):
        return {k: _without_paths(v) for k, v in description.items() if k != 'path'}
    return description


def _differences(old: dict, new: dict) -> str:
    """Short text naming the top-level keys whose values differ."""
    new = json.loads(json.dumps(new, sort_keys=True, default=str))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return 'differs in ' + ', '.join(keys) if keys else 'same keys'


# --------------------------------------------------------------------------- inferencer
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
            fingerprint_sha = _config_sha256(fingerprint)
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
                   overwrite: bool = False) -> list[dict]:
        """Infer several slides; a failing slide is reported and the others continue.

        Returns one ``dict(slide, ok, status, error, summary)`` per slide, in order; the
        list is also written to ``out_dir/run_summary.json``. Expected problems (unreadable
        slide, missing µm/px, settings that do not fit the slide, checkpointed tiles of other
        settings) are reported by their message; anything else also with its traceback.
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
        write_json(osp.join(out_dir, 'run_summary.json'), dict(slides=results))
        return results
