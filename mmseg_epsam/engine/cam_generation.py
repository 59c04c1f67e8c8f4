"""Stage 1 of EP-SAM: fused CAMs, initial masks and a manifest for each patch of a split.

The one implementation behind :class:`~mmseg_epsam.engine.hooks.CAMGeneratorHook` (after
classifier training) and ``tools/generate_cams.py`` (from a checkpoint). For each patch of a
split (by default the positive patches of ``train``, every patch of other splits) it writes,
under ``out_dir`` (the stage-1 layout, docs/method.md §10, :mod:`mmseg_epsam.utils.layout`)::

    cams/<split>/<name>.npy            fused CAM, float16, H x W of the patch, in [0, 1]
    initial_masks/<split>/<name>.png   uint8 0/1, H x W of the patch
    manifest_<split>.csv               name,label,cls_score,cam_area,mask_area
    vis/<split>/<name>.png             image | CAM heat map | initial mask | GT (on request)
    eval_<split>.json                  initial masks against GT (where GT exists)
    settings_<split>.json              the CAM method, post-processing settings and model
                                       fingerprint

The CAM is the paper's (``method='cam'``) or GradCAM / GradCAM++ / EigenCAM of the same
classifier (:func:`mmseg_epsam.models.classifiers.cam_function`, paper Table 3).
``cls_score`` is the classifier's tumour probability on the unrotated patch; ``cam_area`` is
the mean of the fused CAM over the patch (its soft area, a fraction in [0, 1]);
``mask_area`` is the fraction of patch pixels in the initial mask.

Patches are processed in dataset (split-file) order. Every file is written atomically, and
the manifest is rewritten atomically at least every minute and at the end, so a stopped run
resumes: a patch counts as done when its manifest row, CAM and mask (and picture, when
pictures are asked for) exist. Outputs made by another model or other settings are refused
(``overwrite=True`` regenerates them).
"""
import copy
import csv
import functools
import hashlib
import io
import json
import os
import os.path as osp
import time
from typing import Callable, Dict, Hashable, List, MutableMapping, Optional, Sequence

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import MMLogger
from mmengine.utils import ProgressBar
from torch.utils.data import DataLoader, Subset

from mmseg_epsam.datasets.masks import DEFAULT_MASK_VALUES, read_mask
from mmseg_epsam.datasets.transforms.load_cam import load_cam, load_initial_mask
from mmseg_epsam.functional.cam import (CAMPostprocess, initial_mask_from_cam,
                                        rotate_and_fuse_cams)
from mmseg_epsam.functional.metrics import false_positive_fraction, patch_dice_iou
from mmseg_epsam.models.classifiers.cam_methods import CAM_METHODS, cam_function
from mmseg_epsam.utils.background import BackgroundWriter
from mmseg_epsam.utils.checkpoint import load_from_trusted_local
from mmseg_epsam.utils.io import write_npy, write_png, write_text
from mmseg_epsam.utils.layout import cam_file, initial_mask_file, stage1_paths
from mmseg_epsam.utils.pictures import render_panels
from .fingerprint import model_fingerprint

MANIFEST_FIELDS = ('name', 'label', 'cls_score', 'cam_area', 'mask_area')
DEFAULT_GATE_THRESHOLD = 0.5
MANIFEST_FLUSH_SECONDS = 60.0
# Splits whose negatives are skipped by default: the SAM stages need positive patches only.
POSITIVES_ONLY_SPLITS = ('train', )


def load_classifier_checkpoint(model: torch.nn.Module, checkpoint: str) -> None:
    """Load an MMEngine checkpoint of this project's own classifier runs into ``model``.

    The file is unpickled with ``weights_only=False`` for this call only: MMEngine
    checkpoints hold ``HistoryBuffer`` objects that no safe allow-list covers (see
    ``docs``/stack notes); never point it at a file from elsewhere.

    Raises:
        FileNotFoundError / RuntimeError naming ``checkpoint`` when it is missing, not an
        MMEngine checkpoint, or its keys do not match the model.
    """
    loaded = load_from_trusted_local(checkpoint, map_location='cpu')
    state_dict = loaded.get('state_dict') if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict):
        raise RuntimeError(f'{checkpoint}: not an MMEngine checkpoint (no "state_dict" entry)')
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v
                  for k, v in state_dict.items()}
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shapes of another architecture
        raise RuntimeError(f'{checkpoint}: its weights do not fit the configured '
                           f'{type(model).__name__} ({exc}); is it a checkpoint of this '
                           'config?') from exc
    if missing or unexpected:
        raise RuntimeError(
            f'{checkpoint}: its weights do not fit the configured {type(model).__name__}: '
            f'missing keys {missing[:5]} (of {len(missing)}), unexpected keys '
            f'{unexpected[:5]} (of {len(unexpected)}); is it a checkpoint of this config?')


def generation_dataset_cfg(cfg: Config, split: str) -> dict:
    """Dataset config of ``split`` for CAM generation: the config's test pipeline, no GT.

    The patches are those of the patch-dataset layout, named by the split:
    ``splits/<split>.txt``, ``img_dir/<split>``, ``ann_dir/<split>`` (configs may point
    ``test_dataloader`` at the val split, so the loaders' own split files are not used).
    The other dataset settings (type, ``data_root``, suffixes) come from
    ``train_dataloader`` for ``train`` and from ``test_dataloader`` otherwise. The pipeline
    is the test dataloader's (no augmentation) without ``LoadAnnotations``: ground truth is
    read by the evaluation from ``seg_map_path``, so splits without masks work too.
    """
    def unwrap(dataset):  # dataset wrappers (RepeatDataset, ...) hold the real one inside
        while 'pipeline' not in dataset and 'dataset' in dataset:
            dataset = dataset['dataset']
        return dataset

    test_dataset = unwrap(cfg.test_dataloader.dataset)
    source = unwrap(cfg.train_dataloader.dataset) if split == 'train' else test_dataset
    dataset = copy.deepcopy(dict(source))
    dataset.update(
        ann_file=f'splits/{split}.txt',
        data_prefix=dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
        pipeline=[copy.deepcopy(t) for t in test_dataset['pipeline']
                  if t.get('type') not in ('LoadAnnotations', 'LoadPatchMask')])
    if dataset.get('masks') == 'required':
        dataset['masks'] = 'optional'
    return dataset




def _write_manifest(path: str, rows: List[dict]) -> None:
    """Write the manifest CSV atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS, lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def read_manifest(path: str) -> Dict[str, dict]:
    """Rows of a manifest CSV keyed by patch name (empty when the file does not exist)."""
    if not osp.isfile(path):
        return {}
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise ValueError(f'{path}: expected manifest columns {",".join(MANIFEST_FIELDS)}, '
                             f'got {reader.fieldnames}')
        return {row['name']: row for row in reader}


def _read_gray(path: str) -> np.ndarray:
    """Read a single-channel PNG as uint8, naming the file when it cannot be read."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f'{path}: missing or unreadable image')
    if image.ndim != 2:
        raise ValueError(f'{path}: expected a single-channel mask, got shape {image.shape}')
    return image


class SplitWriter:
    """Paths, resume state and manifest of one split under ``out_dir``."""

    def __init__(self, out_dir: str, split: str, show: bool) -> None:
        self.split = split
        self.show = show
        paths = stage1_paths(out_dir, split)
        self.cam_dir = paths['cam_dir']
        self.mask_dir = paths['initial_mask_dir']
        self.vis_dir = paths['vis_dir']
        self.manifest_path = paths['manifest_file']
        self.settings_path = paths['settings_file']
        self.eval_path = paths['eval_file']

    def cam_path(self, name: str) -> str:
        return cam_file(self.cam_dir, name)

    def mask_path(self, name: str) -> str:
        return initial_mask_file(self.mask_dir, name)

    def vis_path(self, name: str) -> str:
        return osp.join(self.vis_dir, name + '.png')

    def is_complete(self, name: str, rows: Dict[str, dict]) -> bool:
        """Whether ``name`` has its manifest row and all its files, the CAM and mask
        readable (a damaged one is made again, with a warning naming it)."""
        paths = [self.cam_path(name), self.mask_path(name)]
        if self.show:
            paths.append(self.vis_path(name))
        if name not in rows or not all(osp.isfile(p) for p in paths):
            return False
        try:
            load_cam(self.cam_path(name))
            load_initial_mask(self.mask_path(name))
        except ValueError as exc:
            MMLogger.get_current_instance().warning(f'{exc}: regenerating patch {name}')
            return False
        return True

    def check_settings(self, settings: dict, overwrite: bool) -> None:
        """Refuse to resume over outputs made with other settings or another model."""
        if not overwrite and osp.isfile(self.settings_path):
            with open(self.settings_path, encoding='utf-8') as f:
                previous = json.load(f)
            if previous != settings:
                raise RuntimeError(
                    f'{self.settings_path}: the outputs of split {self.split!r} in this '
                    f'folder were made with other settings or another model '
                    f'({previous} vs now {settings}); use another out_dir or overwrite=True '
                    f'(--overwrite)')
        write_text(self.settings_path, json.dumps(settings, indent=2))


def _read_rgb(path: str, size: Sequence[int]) -> np.ndarray:
    """The patch at ``path`` as uint8 RGB, checked to be ``size`` (height, width)."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f'{path}: missing or unreadable image')
    if image.shape[:2] != tuple(size):
        raise ValueError(f'{path}: image is {image.shape[:2]}, the CAM is {tuple(size)}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def memoized_by_input(fn: Callable[[torch.Tensor], torch.Tensor], cache: MutableMapping,
                      key: Hashable) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` with its results kept in ``cache`` by ``key`` and the exact input batch.

    A batch is known by its shape, dtype and a SHA-1 of its bytes, so a batch seen before
    (the same patches, rotations and batching) returns the stored result without a
    forward: several post-processing settings over the same patches (paper Table 3) then
    run the classifier once. ``key`` must name the model and what ``fn`` computes (e.g.
    ``(model_fingerprint(model), method)``); the cache does not see them.
    """
    def memoized(inputs: torch.Tensor) -> torch.Tensor:
        data = inputs.detach().cpu().contiguous()
        entry = (key, tuple(data.shape), str(data.dtype),
                 hashlib.sha1(data.numpy().tobytes()).hexdigest())
        if entry not in cache:
            cache[entry] = fn(inputs).detach()
        return cache[entry]

    return memoized


def _tumour_scores(model: torch.nn.Module, inputs: torch.Tensor,
                   data_samples: list) -> torch.Tensor:
    """The classifier's tumour probability ``[B]`` (its predict mode, unrotated input)."""
    results = model(inputs, data_samples, mode='predict')
    return torch.stack([r.pred_score.reshape(-1)[0].float() for r in results])


def _crop_to_image(cam: torch.Tensor, img_shape: Sequence[int],
                   batch_shape: Sequence[int]) -> torch.Tensor:
    """Drop the part of a feature-resolution CAM ``[h, w]`` that covers batch padding."""
    if tuple(img_shape[:2]) == tuple(batch_shape):
        return cam
    rows = max(1, round(cam.shape[0] * img_shape[0] / batch_shape[0]))
    cols = max(1, round(cam.shape[1] * img_shape[1] / batch_shape[1]))
    return cam[:rows, :cols]


@torch.no_grad()  # not inference_mode: the gradient CAM methods enable gradients inside
def generate_split(model: torch.nn.Module,
                   dataset,
                   out_dir: str,
                   split: str,
                   postprocess: CAMPostprocess,
                   method: str = 'cam',
                   views_per_forward: int = 4,
                   batch_size: int = 4,
                   num_workers: int = 0,
                   labels: Optional[Sequence[int]] = None,
                   show: bool = False,
                   evaluate: bool = True,
                   gate_threshold: float = DEFAULT_GATE_THRESHOLD,
                   overwrite: bool = False,
                   fingerprint: Optional[str] = None,
                   cam_cache: Optional[MutableMapping] = None) -> Optional[dict]:
    """Write CAMs, initial masks, manifest (and pictures, evaluation) of one split.

    Args:
        model: An ``EPSAMPatchClassifier``-like model: ``data_preprocessor``,
            ``compute_cam(inputs) -> [B, h, w]`` and predict mode with ``pred_score``.
        dataset: The split's dataset (``HistoPatchDataset`` with the test pipeline, see
            :func:`generation_dataset_cfg`); its data infos give ``patch_name``,
            ``img_label``, ``img_path`` and ``seg_map_path``.
        out_dir: Root of the stage-1 outputs.
        split: Split name used in the output paths.
        postprocess: CAM settings (:func:`mmseg_epsam.functional.cam.cam_postprocess`).
        method: The CAM method, one of :data:`CAM_METHODS` (``'cam'``: the paper's CAM;
            ``'gradcam'``, ``'gradcam++'``, ``'eigencam'``: the grad-cam package's).
        views_per_forward: Rotated views per forward pass (1, 2 or 4).
        batch_size: Patches per batch.
        num_workers: Data-loading worker processes.
        labels: Image labels to process, e.g. ``(1,)``; None: the default for the split
            (positives for ``train``, all otherwise).
        show: Also write the side-by-side picture of each patch.
        evaluate: Score the initial masks against GT where it exists (``eval_<split>.json``).
        gate_threshold: Classifier probability below which the gated mask is empty.
        overwrite: Regenerate every patch, even over outputs of other settings.
        fingerprint: :func:`model_fingerprint` of ``model`` (computed when None).
        cam_cache: A dict shared by calls that differ only in post-processing: the raw
            CAMs and the scores of each input batch are kept there by model fingerprint,
            method and input (:func:`memoized_by_input`), and computed once.

    Returns:
        The evaluation summary (None when ``evaluate`` is False).
    """
    logger = MMLogger.get_current_instance()
    if method not in CAM_METHODS:
        raise ValueError(f'unknown CAM method {method!r}; choose one of {CAM_METHODS}')
    if labels is None:
        labels = (1, ) if split in POSITIVES_ONLY_SPLITS else (0, 1)
    writer = SplitWriter(out_dir, split, show)
    if overwrite:  # forget earlier outputs before the new settings claim the folder
        _write_manifest(writer.manifest_path, [])
    settings = json.loads(json.dumps(dict(method=method, postprocess=postprocess.to_dict(),
                                          model=fingerprint or model_fingerprint(model))))
    writer.check_settings(settings, overwrite)

    entries = []  # (dataset index, data info) of the patches to process, in split order
    names = set()
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        if info['patch_name'] in names:
            raise ValueError(f'split {split!r} lists patch {info["patch_name"]!r} twice')
        names.add(info['patch_name'])
        if info['img_label'] in labels:
            entries.append((index, info))
    previous_rows = {} if overwrite else read_manifest(writer.manifest_path)
    rows = {info['patch_name']: previous_rows[info['patch_name']]
            for _, info in entries if writer.is_complete(info['patch_name'], previous_rows)}
    todo = [(index, info) for index, info in entries if info['patch_name'] not in rows]
    logger.info(f'CAM generation, split {split!r}: {len(entries)} patches with labels '
                f'{tuple(labels)}, {len(rows)} already complete, {len(todo)} to do '
                f'(method={method}, views_per_forward={views_per_forward}, {postprocess})')

    model.eval()
    compute_cam = cam_function(model, method)
    if cam_cache is not None:
        compute_cam = memoized_by_input(compute_cam, cam_cache, (settings['model'], method))
    loader = DataLoader(Subset(dataset, [index for index, _ in todo]), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, collate_fn=pseudo_collate)
    progress = ProgressBar(len(todo)) if todo else None
    last_flush = time.monotonic()
    # .npy / PNG encoding and writes overlap the next batch's forwards (one thread, bounded
    # queue); drained before each manifest write, so a listed patch has its files.
    background = BackgroundWriter(name=f'cam-writer-{split}')
    for batch_number, data_batch in enumerate(loader):
        batch_entries = todo[batch_number * batch_size:(batch_number + 1) * batch_size]
        data = model.data_preprocessor(data_batch, False)
        inputs, data_samples = data['inputs'], data['data_samples']
        cams = rotate_and_fuse_cams(compute_cam, inputs, views_per_forward,
                                    postprocess.quarter_turns, postprocess.quantize_uint8)
        score_fn = functools.partial(_tumour_scores, model, data_samples=data_samples)
        if cam_cache is not None:
            score_fn = memoized_by_input(score_fn, cam_cache, (settings['model'], 'score'))
        scores = score_fn(inputs).tolist()
        for (_, info), cam, score, sample in zip(batch_entries, cams, scores, data_samples):
            name = info['patch_name']
            img_shape = sample.metainfo.get('img_shape', inputs.shape[-2:])
            cam = _crop_to_image(cam, img_shape, inputs.shape[-2:])
            full_size = tuple(sample.metainfo.get('ori_shape', img_shape)[:2])
            images_rgb = None
            if postprocess.crf is not None:  # the CRF's appearance kernel reads the patch
                images_rgb = [_read_rgb(info['img_path'], full_size)]
            full_cam, initial_mask = initial_mask_from_cam(cam[None], full_size, postprocess,
                                                           images_rgb)
            full_cam = full_cam[0].cpu().numpy()
            initial_mask = initial_mask[0].cpu().numpy().astype(np.uint8)
            background.submit(write_npy, writer.cam_path(name), full_cam.astype(np.float16))
            background.submit(write_png, writer.mask_path(name), initial_mask,
                              channel_order='bgr')
            if show:
                image = cv2.imread(info['img_path'], cv2.IMREAD_COLOR)
                if image is None:
                    raise FileNotFoundError(f'{info["img_path"]}: missing or unreadable image')
                gt = read_mask(info['seg_map_path'],
                               info.get('mask_values', DEFAULT_MASK_VALUES)) \
                    if info.get('seg_map_path') else None
                picture = render_panels(image, full_cam, [('initial mask', initial_mask),
                                                          ('GT', gt)],
                                        cam_title=f'CAM  p={score:.2f}')
                write_png(writer.vis_path(name), picture, channel_order='bgr')
            rows[name] = dict(name=name, label=info['img_label'], cls_score=f'{score:.6f}',
                              cam_area=f'{float(full_cam.mean()):.6f}',
                              mask_area=f'{float(initial_mask.mean()):.6f}')
            progress.update()
        if time.monotonic() - last_flush > MANIFEST_FLUSH_SECONDS:
            background.flush()
            _write_manifest(writer.manifest_path, _ordered_rows(entries, rows))
            last_flush = time.monotonic()
    background.close()
    if progress is not None:
        progress.file.write('\n')
    _write_manifest(writer.manifest_path, _ordered_rows(entries, rows))
    logger.info(f'CAM generation, split {split!r}: fused CAMs in {writer.cam_dir}, initial '
                f'masks in {writer.mask_dir}, manifest {writer.manifest_path}'
                + (f', pictures in {writer.vis_dir}' if show else ''))
    if not evaluate:
        return None
    summary = evaluate_initial_masks(writer, entries, rows, gate_threshold)
    summary.update(split=split, method=method, postprocess=postprocess.to_dict())
    write_text(writer.eval_path, json.dumps(summary, indent=2))
    logger.info(f'Initial masks of split {split!r} against GT: {summary["ungated"]} '
                f'(gated at p>={gate_threshold}: {summary["gated"]}); '
                f'written to {writer.eval_path}')
    if summary['negatives_scored'] and \
            summary['negatives_passing_gate'] == summary['negatives_scored']:
        logger.warning(
            f'split {split!r}: the classifier gate (p >= {gate_threshold}) passes all '
            f'{summary["negatives_scored"]} negative patches, so it filters nothing and every '
            'initial mask of a negative patch is kept (FP area on negatives '
            f'{summary["gated"]["fp_area"]}). The classifier\'s probabilities are not '
            'calibrated at this threshold: look at its val accuracy at the chosen checkpoint '
            f'({writer.eval_path}; README, Limits).')
    return summary


def _ordered_rows(entries: list, rows: Dict[str, dict]) -> List[dict]:
    """Manifest rows in split order (patches without a row yet are left out)."""
    return [rows[info['patch_name']] for _, info in entries if info['patch_name'] in rows]


def _mean(values: List[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None


def evaluate_initial_masks(writer: SplitWriter, entries: list, rows: Dict[str, dict],
                           gate_threshold: float) -> dict:
    """Initial masks on disk against GT: Dice / IoU on positives, FP area on negatives.

    Uses the per-patch scores of docs/method.md §8 (:func:`patch_dice_iou`,
    :func:`false_positive_fraction`), each as a mean over patches, without and with the
    classifier gate (a patch whose tumour probability is below ``gate_threshold`` gets an
    empty mask). Positives are scored only where a GT mask exists; negatives need no GT
    (they hold no tumour). ``positives_passing_gate`` / ``negatives_passing_gate`` count the
    patches of each label the gate lets through.
    """
    scores = {'ungated': dict(dice=[], iou=[], fp_area=[]),
              'gated': dict(dice=[], iou=[], fp_area=[])}
    positives_without_gt = 0
    passing_gate = {0: 0, 1: 0}
    for _, info in entries:
        name = info['patch_name']
        mask = _read_gray(writer.mask_path(name)) > 0
        passes = float(rows[name]['cls_score']) >= gate_threshold
        passing_gate[int(info['img_label'])] += int(passes)
        gated = mask if passes else np.zeros_like(mask)
        if info['img_label'] == 0:
            for key, pred in (('ungated', mask), ('gated', gated)):
                scores[key]['fp_area'].append(false_positive_fraction(pred.astype(np.uint8)))
            continue
        if not info.get('seg_map_path'):
            positives_without_gt += 1
            continue
        gt = read_mask(info['seg_map_path'], info.get('mask_values', DEFAULT_MASK_VALUES))
        if gt.shape != mask.shape:
            raise ValueError(f'{info["seg_map_path"]}: GT shape {gt.shape} differs from the '
                             f'initial mask {writer.mask_path(name)} {mask.shape}')
        for key, pred in (('ungated', mask), ('gated', gated)):
            dice, iou = patch_dice_iou(pred.astype(np.uint8), gt)
            scores[key]['dice'].append(dice)
            scores[key]['iou'].append(iou)
    summary = {key: {metric: _mean(values) for metric, values in per_gate.items()}
               for key, per_gate in scores.items()}
    summary.update(positives_scored=len(scores['ungated']['dice']),
                   positives_without_gt=positives_without_gt,
                   negatives_scored=len(scores['ungated']['fp_area']),
                   positives_passing_gate=passing_gate[1],
                   negatives_passing_gate=passing_gate[0],
                   gate_threshold=gate_threshold)
    return summary


def generate_cams(model: torch.nn.Module,
                  datasets: Dict[str, object],
                  out_dir: str,
                  postprocess: CAMPostprocess,
                  **kwargs) -> Dict[str, Optional[dict]]:
    """Run :func:`generate_split` for each ``{split: dataset}``; the summaries by split.

    ``kwargs`` go to :func:`generate_split` (``method``, ``views_per_forward``,
    ``batch_size``, ``show``, ``evaluate``, ``overwrite``, ...).
    """
    fingerprint = model_fingerprint(model)
    os.makedirs(out_dir, exist_ok=True)
    return {split: generate_split(model, dataset, out_dir, split, postprocess,
                                  fingerprint=fingerprint, **kwargs)
            for split, dataset in datasets.items()}
