"""Pseudo-label generation for one EP-SAM round (docs/method.md §4, §6; paper Algorithm 1).

The decoder of the previous round predicts every positive training patch from PEPM prompts
(no augmentation, dataset order); IDS against the patch's initial mask decides which SAM
masks become pseudo-labels. Written under ``round_dir``
(:func:`mmseg_epsam.utils.layout.round_paths`)::

    pseudo_labels/<name>.png   the SAM mask (0/1) of every positive patch, kept or not
    ids_table.csv              name,cam_area,sam_area,ids,kept,sam_dice_gt,initial_dice_gt
    summary.json               counts and, where training masks exist, Dice against them
    settings.json              what made the masks: the decoder's weights (SHA-1 of its
                               state dict), its test settings and the caller's provenance

``IDSPseudoLabelDataset`` reads ``pseudo_labels/`` with ``ids_table.csv``. A stopped run
resumes: masks already on disk are read back instead of predicted again, but only when
``settings.json`` says the same decoder and settings made them. Masks of another decoder
(e.g. ``decoder_rk`` retrained), of other settings or of unknown origin are deleted with
the table and summary, and the round is generated again. IDS threshold and variant are not
part of the fingerprint: the table is always recomputed from the masks.
"""
import csv
import glob
import io
import json
import os
import os.path as osp
from typing import List, Optional

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.logging import MMLogger
from mmengine.utils import ProgressBar

from ..datasets.masks import DEFAULT_MASK_VALUES, read_mask
from ..datasets.transforms.load_cam import load_initial_mask
from ..functional.ids import ids_select
from ..functional.metrics import patch_dice_iou
from ..utils.io import write_json, write_png, write_text
from ..utils.layout import round_paths
from .fingerprint import model_fingerprint

TABLE_FIELDS = ('name', 'cam_area', 'sam_area', 'ids', 'kept', 'sam_dice_gt',
                'initial_dice_gt')


def pseudo_label_settings(model: torch.nn.Module, provenance: Optional[dict] = None) -> dict:
    """The fingerprint of a round's masks: decoder weights, test settings, provenance.

    ``model.test_cfg`` enters without ``classifier_gate`` (generation never gates: every
    patch is a known positive). ``provenance`` is anything else the caller knows to shape
    the masks (e.g. the model and dataset configs); it is normalised through JSON.
    """
    test_cfg = {k: v for k, v in dict(getattr(model, 'test_cfg', None) or {}).items()
                if k != 'classifier_gate'}
    settings = dict(decoder=model_fingerprint(model), test_cfg=test_cfg,
                    provenance=provenance or {})
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def claim_round_dir(round_dir: str, settings: dict) -> bool:
    """Make ``round_dir`` hold only outputs of ``settings``; True when earlier ones were kept.

    Outputs whose ``settings.json`` differs, or that have none (unknown origin), are deleted
    (masks first, then table and summary) before the new settings are written, so a stop
    in between never leaves masks labelled with settings that did not make them.
    """
    paths = round_paths(round_dir)
    previous = None
    if osp.isfile(paths['settings_file']):
        with open(paths['settings_file'], encoding='utf-8') as f:
            previous = json.load(f)
    if previous == settings:
        return True
    stale = sorted(glob.glob(osp.join(paths['pseudo_label_dir'], '*.png')))
    if stale or osp.isfile(paths['table_file']):
        if previous is None:
            reason = 'of unknown origin (no settings.json)'
        else:
            changed = sorted(k for k in set(previous) | set(settings)
                             if previous.get(k) != settings.get(k))
            reason = (f'made by another decoder or with other settings ({paths["settings_file"]}'
                      f' differs in {", ".join(changed)})')
        MMLogger.get_current_instance().warning(
            f'{round_dir}: {len(stale)} pseudo-label masks {reason}; deleting them and '
            f'generating the round again')
        for path in stale:
            os.remove(path)
        for key in ('table_file', 'summary_file'):
            if osp.isfile(paths[key]):
                os.remove(paths[key])
    os.makedirs(round_dir, exist_ok=True)
    write_json(paths['settings_file'], settings)  # keys sorted by pseudo_label_settings
    return False


def _read_finished_label(path: str) -> Optional[np.ndarray]:
    """A pseudo-label written by an earlier (interrupted) run, or None to make it again.

    A file that is empty, undecodable or not 0/1 is regenerated, with a warning naming it.
    """
    if not osp.isfile(path):
        return None
    try:
        return read_mask(path)
    except ValueError as exc:
        MMLogger.get_current_instance().warning(f'{exc}: regenerating this pseudo-label')
        return None


def _mean(values: List[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None


@torch.no_grad()
def generate_pseudo_labels(model: torch.nn.Module,
                           dataset,
                           round_dir: str,
                           ids_threshold: float = 0.9,
                           ids_variant: str = 'paper',
                           batch_size: int = 1,
                           provenance: Optional[dict] = None) -> dict:
    """Predict, score by IDS and write one round's pseudo-labels; return its summary.

    Args:
        model: a ``SAMDecoderSegmentor`` (its ``test_step`` gives PEPM-prompted masks).
        dataset: the positive training patches, with a pipeline WITHOUT augmentation that
            runs ``LoadCAMAndInitialMask`` and packs ``initial_mask_path`` (and the CAM
            keys) into the metainfo.
        round_dir: output folder of this round (see the module docstring).
        ids_threshold: keep a SAM mask when IDS > ``ids_threshold`` (paper: 0.9).
        ids_variant: ``'paper'`` or ``'reference'`` (see ``functional.ids``).
        batch_size: patches per forward.
        provenance: what else shapes the masks, for the fingerprint
            (:func:`pseudo_label_settings`), e.g. the model and dataset configs.

    Returns:
        ``dict(positives, kept, kept_fraction, sam_dice_gt, kept_dice_gt, initial_dice_gt,
        gt_patches)``; the Dice means (per patch, over patches with a training mask, in
        [0, 1]) are None when no training mask exists.
    """
    paths = round_paths(round_dir)
    logger = MMLogger.get_current_instance()
    if claim_round_dir(round_dir, pseudo_label_settings(model, provenance)):
        logger.info(f'{round_dir}: resuming; masks on disk come from this decoder')
    os.makedirs(paths['pseudo_label_dir'], exist_ok=True)
    was_training = model.training
    model.eval()
    # Every patch here is a known positive: the classifier gate is for unlabelled patches.
    classifier_gate = model.test_cfg.pop('classifier_gate', None)
    rows = []
    progress = ProgressBar(len(dataset))
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            samples = [item['data_samples'] for item in items]
            names = [s.metainfo['patch_name'] for s in samples]
            label_paths = [osp.join(paths['pseudo_label_dir'], f'{n}.png') for n in names]
            done = [_read_finished_label(p) for p in label_paths]
            todo = [i for i, mask in enumerate(done) if mask is None]
            if todo:
                outputs = model.test_step(pseudo_collate([items[i] for i in todo]))
                for i, output in zip(todo, outputs):
                    done[i] = output.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
                    write_png(label_paths[i], done[i], channel_order='bgr')
            for sample, name, sam_mask in zip(samples, names, done):
                rows.append(_table_row(sample.metainfo, name, sam_mask, ids_threshold,
                                       ids_variant))
                progress.update()
    finally:
        model.train(was_training)
        if classifier_gate is not None:
            model.test_cfg['classifier_gate'] = classifier_gate
    _write_table(paths['table_file'], rows)
    summary = _summarise(rows)
    write_json(paths['summary_file'], summary)
    logger.info(f'\npseudo-labels: kept {summary["kept"]} of {summary["positives"]} positive '
                f'patches (IDS > {ids_threshold}); masks in {paths["pseudo_label_dir"]}, '
                f'table {paths["table_file"]}')
    return summary


def _table_row(metainfo: dict, name: str, sam_mask: np.ndarray, ids_threshold: float,
               ids_variant: str) -> dict:
    """One ``ids_table.csv`` row: areas, IDS, decision, and Dice against GT when known."""
    initial_mask = load_initial_mask(metainfo['initial_mask_path'])
    if initial_mask.shape != sam_mask.shape:
        raise ValueError(f'{metainfo["initial_mask_path"]}: initial mask shape '
                         f'{initial_mask.shape} differs from the SAM mask {sam_mask.shape} '
                         f'of {name}')
    result = ids_select(sam_mask, initial_mask, ids_threshold, ids_variant)
    row = dict(name=name, cam_area=result.cam_area, sam_area=result.sam_area,
               ids=round(result.ids, 6), kept=int(result.kept), sam_dice_gt='',
               initial_dice_gt='')
    gt_path = metainfo.get('seg_map_path')
    gt = read_mask(gt_path, metainfo.get('mask_values', DEFAULT_MASK_VALUES)) \
        if gt_path and osp.isfile(gt_path) else None
    if gt is not None:
        row['sam_dice_gt'] = round(patch_dice_iou(sam_mask, gt)[0], 6)
        row['initial_dice_gt'] = round(patch_dice_iou(initial_mask, gt)[0], 6)
    return row


def _write_table(path: str, rows: List[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TABLE_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _summarise(rows: List[dict]) -> dict:
    with_gt = [r for r in rows if r['sam_dice_gt'] != '']
    kept = [r for r in rows if r['kept']]
    return dict(
        positives=len(rows),
        kept=len(kept),
        kept_fraction=len(kept) / len(rows) if rows else 0.0,
        gt_patches=len(with_gt),
        sam_dice_gt=_mean([r['sam_dice_gt'] for r in with_gt]),
        kept_dice_gt=_mean([r['sam_dice_gt'] for r in with_gt if r['kept']]),
        initial_dice_gt=_mean([r['initial_dice_gt'] for r in with_gt]))
