"""EP-SAM's test path on whole-slide tiles, and the predictor interface the inferencer uses.

* :class:`TilePredictor` / :class:`TilePrediction`: what the whole-slide inferencer
  (:class:`~.wsi_inference.WSIInferencer`) asks of a predictor: a batch of RGB tiles in, one
  state and probability map per tile out.
* :class:`EPSAMTilePredictor`: the classifier's tumour probability and fused CAM (rotate &
  fuse, paper Eq. 3) give the initial mask; the SAM segmentor gates on the probability
  (``test_cfg.classifier_gate``), draws PEPM points (Eq. 4) from CAM and initial mask and
  decodes one mask per tile from one image embedding per tile.
* :func:`build_epsam_tile_predictor`: that predictor from a pipeline run's checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import time
import warnings
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg_epsam.cache.embedding_cache import ModuleFingerprint
from mmseg_epsam.engine.cam_generation import generation_dataset_cfg, load_classifier_checkpoint
from mmseg_epsam.functional.cam import (CAMPostprocess, cam_postprocess, initial_mask_from_cam,
                                        rotate_and_fuse_cams)
from mmseg_epsam.utils.checkpoint import checkpoint_config_differences, load_from_trusted_local

from .pipeline import EPSAMPipeline


@dataclass
class TilePrediction:
    """What a predictor says about one tile.

    Attributes:
        cls_score: tumour probability of the classifier (or of the stand-in).
        state: one of :data:`~mmseg_epsam.wsi.tile_store.TILE_STATES`.
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
def score_and_first_view_cam(classifier: torch.nn.Module, inputs: torch.Tensor,
                             data_samples: Sequence[SegDataSample]
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tumour probability and the raw CAM of the unrotated view from ONE forward pass.

    The predict forward runs through the classifier's CAM layer on its way to the logit;
    a forward hook keeps that layer's output, from which the CAM is formed as
    ``compute_cam`` forms it (``ReLU(sum_c w_c F_c)``, docs/method.md §3). In eval mode ADL is
    the identity, so the hooked block output is what ``compute_cam`` would see.

    Returns:
        ``(scores [B] float32, raw CAM [B, h, w])``.
    """
    if classifier.training:
        raise RuntimeError('score_and_first_view_cam needs the classifier in eval mode')
    captured = []
    layer = classifier.backbone.get_submodule(classifier.cam_layer)
    handle = layer.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        results = classifier(inputs, list(data_samples), mode='predict')
    finally:
        handle.remove()
    scores = torch.stack([r.pred_score.reshape(-1)[0].float() for r in results])
    cam = F.relu(torch.einsum('bchw,c->bhw', captured[0], classifier.fc.weight[0]))
    return scores, cam


class _FirstViewGiven:
    """A ``cam_fn`` for :func:`rotate_and_fuse_cams` whose unrotated view is known already.

    ``rotate_and_fuse_cams`` puts the quarter turn 0 first in its first call (its turns
    start with 0); that call gets ``first`` for its leading ``len(first)`` images and the
    classifier's ``compute_cam`` for the rest; later calls go to ``compute_cam`` whole.
    """

    def __init__(self, compute_cam, first: torch.Tensor) -> None:
        self.compute_cam = compute_cam
        self.first: Optional[torch.Tensor] = first

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        if self.first is None:
            return self.compute_cam(views)
        first, self.first = self.first, None
        rest = views[len(first):]
        return torch.cat([first, self.compute_cam(rest)]) if len(rest) else first


@torch.no_grad()
def classify_with_cam(classifier: torch.nn.Module, inputs: torch.Tensor,
                      data_samples: Sequence[SegDataSample], full_size: tuple[int, int],
                      postprocess: CAMPostprocess, views_per_forward: int = 4,
                      gate: Optional[float] = None
                      ) -> tuple[torch.Tensor, list[int], torch.Tensor, torch.Tensor]:
    """In-memory stage 1 for a batch: tumour probability, then fused CAM and initial mask
    for the tiles the classifier gate lets through.

    The same steps as the CAM generator (:mod:`mmseg_epsam.engine.cam_generation`) without
    files: the score and the unrotated view's CAM come from one forward
    (:func:`score_and_first_view_cam`); the other rotated views (paper Eq. 3) and
    :func:`initial_mask_from_cam` (resize to ``full_size``, threshold, opening; docs/method.md
    §3) run only for tiles whose score reaches ``gate``, since SAM never sees the others.

    Args:
        classifier: an ``EPSAMPatchClassifier`` in eval mode.
        inputs: preprocessed batch ``[B, 3, h, w]`` (the classifier's data preprocessor).
        data_samples: the batch's data samples.
        full_size: ``(height, width)`` of the tiles (the CAM and mask resolution).
        postprocess: CAM post-processing settings.
        views_per_forward: rotated views per forward pass.
        gate: classifier gate (``test_cfg.classifier_gate``); None: every tile passes.

    Returns:
        ``(scores [B], passing tile indices [P], full_cam [P, H, W] float32 in [0, 1],
        initial_mask [P, H, W] bool)``.
    """
    scores, first_view = score_and_first_view_cam(classifier, inputs, data_samples)
    passing = [i for i, score in enumerate(scores.tolist()) if gate is None or score >= gate]
    if not passing:
        empty = inputs.new_zeros((0, *full_size))
        return scores, passing, empty, empty.bool()
    if len(passing) < len(scores):
        index = torch.tensor(passing, device=inputs.device)
        inputs, first_view = inputs[index], first_view[index]
    cams = rotate_and_fuse_cams(_FirstViewGiven(classifier.compute_cam, first_view), inputs,
                                views_per_forward, postprocess.quarter_turns,
                                postprocess.quantize_uint8)
    full_cam, initial_mask = initial_mask_from_cam(cams, full_size, postprocess)
    return scores, passing, full_cam, initial_mask


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def config_sha256(config: dict) -> str:
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
        channels_last: run the classifier in the channels-last memory format (about 1.35x
            faster convolutions on a CPU, and the layout tensor cores want); the CAM then
            differs from the default layout's by float rounding (~1e-5 relative).
    """

    def __init__(self, classifier: torch.nn.Module, segmentor: torch.nn.Module,
                 classifier_pipeline: Sequence[dict], postprocess: CAMPostprocess,
                 views_per_forward: int = 4, description: Optional[dict] = None,
                 channels_last: bool = True) -> None:
        self.classifier = classifier.eval()
        self.channels_last = channels_last
        if channels_last:
            self.classifier.to(memory_format=torch.channels_last)
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
                    channels_last=self.channels_last,
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
        inputs = data['inputs']
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        gate = self.segmentor.test_cfg.get('classifier_gate')
        scores, passing, full_cams, initial_masks = classify_with_cam(
            self.classifier, inputs, data['data_samples'], full_size,
            self.postprocess, self.views_per_forward, gate)
        # Round the CAM to float16 as stage 1 stores it, so a tile gets the prompts the
        # patch path (cams/*.npy -> PEPM) would draw for the same image.
        full_cams = full_cams.half().float().cpu().numpy()
        initial_masks = initial_masks.cpu().numpy().astype(np.uint8)
        scores = scores.cpu().tolist()
        self._sync()
        sam_start = time.perf_counter()
        self.timings['classifier_s'] += sam_start - start
        encoder_before = self.timings['sam_encoder_s']
        predictions = [TilePrediction(score, 'gated') for score in scores]
        if passing:
            samples = [SegDataSample(metainfo=dict(
                img_shape=full_size, ori_shape=full_size, patch_name=keys[i], cam=cam,
                initial_mask=mask, cls_score=scores[i]))
                for i, cam, mask in zip(passing, full_cams, initial_masks)]
            inputs = torch.from_numpy(np.stack([tiles[i] for i in passing])).permute(
                0, 3, 1, 2).float().to(self.device)
            for i, result in zip(passing, self.segmentor.predict(inputs, samples)):
                # The segmentor applies the same gate, so these tiles pass it there too.
                if result.metainfo['prompt_empty']:
                    predictions[i] = TilePrediction(scores[i], 'empty_prompt')
                else:
                    probability = result.seg_logits.data[0].float().sigmoid().cpu().numpy()
                    predictions[i] = TilePrediction(scores[i], 'segmented', probability)
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
                               device: str = 'cpu',
                               channels_last: bool = True) -> EPSAMTilePredictor:
    """The trained classifier and SAM decoder of a pipeline run, as a tile predictor.

    Args:
        pipeline_config: the pipeline config (e.g. ``configs/epsam/epsam_demo.py``); its
            stage configs give the models, its ``cam`` section the CAM settings.
        work_dir: the pipeline run's work dir (overrides the config's ``work_dir``).
        classifier_checkpoint: default: the finished ``classifier`` stage's checkpoint.
        decoder_checkpoint: default: the decoder of the last trained round. It is an MMEngine
            checkpoint of the whole segmentor (frozen encoders included), loaded strictly.
        sam_checkpoint: a SAM checkpoint to build SAM with (default: the pipeline config's
            SAM, LiteMedSAM for the demo); required where the config requires it. The
            decoder checkpoint's own weights win (they are what the decoder trained with).
        classifier_gate: overrides the decoder config's ``test_cfg.classifier_gate``
            (``0`` lets every tile through).
        device: torch device.
        channels_last: see :class:`EPSAMTilePredictor`.

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
    decoder_cfg = pipeline._decoder_config('decoder')
    for path, stage_cfg in ((classifier_checkpoint, classifier_cfg),
                            (decoder_checkpoint, decoder_cfg)):
        differences = checkpoint_config_differences(
            load_from_trusted_local(path, map_location='cpu'), stage_cfg)
        if differences:
            raise ValueError(f'{path} was trained with another model than {pipeline_config} '
                             'gives (checkpoint -> config):\n  ' + '\n  '.join(differences))
    classifier = MODELS.build(classifier_cfg.model)
    load_classifier_checkpoint(classifier, classifier_checkpoint)
    test_pipeline = generation_dataset_cfg(classifier_cfg, 'test')['pipeline']
    if not test_pipeline or test_pipeline[0].get('type') != 'LoadImageFromFile':
        raise ValueError(f'{pipeline_config}: the classifier test pipeline must start with '
                         f'LoadImageFromFile, got {test_pipeline[:1]}')
    classifier_pipeline = [dict(type='LoadImageFromNDArray')] + test_pipeline[1:]

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
        classifier_model_sha256=config_sha256(classifier_cfg.model.to_dict()),
        decoder_model_sha256=config_sha256(decoder_cfg.model.to_dict()),
        sam_model=pipeline.describe_sam(),
        sam_image_encoder_sha1=encoder_fingerprint,
        checkpoints={name: dict(path=osp.abspath(path), sha256=file_sha256(path))
                     for name, path in checkpoints.items()})
    return EPSAMTilePredictor(classifier.to(device), segmentor.to(device), classifier_pipeline,
                              postprocess, int(cam.get('views_per_forward', 4)), description,
                              channels_last)



