"""Load a patch's stage-1 outputs (fused CAM, initial mask, classifier score) for SAM.

The files (docs/method.md §10; :mod:`mmseg_epsam.utils.layout`): a fused CAM ``.npy``
(float16, HxW, in [0, 1]), an initial-mask PNG (uint8 0/1, HxW) and the split's manifest
CSV (``name,label,cls_score,cam_area,mask_area``).
"""
from __future__ import annotations

import csv
import os.path as osp

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform

from mmseg.registry import TRANSFORMS


def load_cam(path: str) -> np.ndarray:
    """Read a fused CAM ``.npy`` (HxW, values in [0, 1]) as float32; clear error otherwise."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'CAM file not found: {path}')
    try:
        cam = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:  # EOFError: an empty or truncated file
        raise ValueError(f'{path}: not a readable .npy array ({type(err).__name__}: '
                         f'{err})') from err
    if cam.ndim != 2:
        raise ValueError(f'{path}: a CAM must be a 2-D HxW array, got shape {cam.shape}')
    cam = cam.astype(np.float32)
    if not np.isfinite(cam).all() or cam.min() < 0 or cam.max() > 1 + 1e-3:
        raise ValueError(f'{path}: CAM values must be finite and in [0, 1], '
                         f'got [{cam.min()}, {cam.max()}]')
    return cam


def load_initial_mask(path: str) -> np.ndarray:
    """Read an initial-mask PNG (HxW, 0 background / 1 tumour) as uint8; clear error otherwise."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'initial mask file not found: {path}')
    try:
        mask = mmcv.imread(path, flag='unchanged', backend='cv2')
    except Exception as err:  # cv2.error on an empty or undecodable file
        raise ValueError(f'{path}: not a decodable initial-mask PNG ({err})') from err
    if mask is None or mask.ndim != 2:
        raise ValueError(f'{path}: an initial mask must be a single-channel PNG, '
                         f'got {None if mask is None else mask.shape}')
    if mask.max() > 1:
        raise ValueError(f'{path}: initial mask values must be 0/1, found {int(mask.max())}')
    return mask.astype(np.uint8)


def read_cls_scores(manifest_file: str) -> dict[str, float]:
    """``name -> cls_score`` from a stage-1 manifest CSV."""
    if not osp.isfile(manifest_file):
        raise FileNotFoundError(f'stage-1 manifest not found: {manifest_file}')
    with open(manifest_file, newline='') as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {'name', 'cls_score'} <= set(reader.fieldnames):
            raise ValueError(f'{manifest_file}: needs columns name and cls_score, '
                             f'has {reader.fieldnames}')
        return {row['name']: float(row['cls_score']) for row in reader}


@TRANSFORMS.register_module()
class LoadCAMAndInitialMask(BaseTransform):
    """Attach the stage-1 CAM, initial mask (and classifier score) of a patch.

    The files come from the data info, as ``LoadAnnotations`` takes ``seg_map_path``:
    ``cam_path``, ``initial_mask_path`` and ``manifest_path``, which ``HistoPatchDataset``
    sets from its stage-1 ``data_prefix`` entries. The patch name (the manifest row) is
    ``results['patch_name']`` (else the image file's stem).

    Added keys: ``cam`` (float32 HxW), ``initial_mask`` (uint8 HxW) and, with
    ``with_cls_score``, ``cls_score`` (float). List them (and ``cam_path`` /
    ``initial_mask_path``) in ``PackSegInputs(meta_keys=...)`` so they reach
    ``data_sample.metainfo``, where ``PEPMPromptSampler`` / ``SAMDecoderSegmentor`` read them.

    Args:
        with_cls_score: also read ``cls_score`` from the split's manifest (for the
            classifier gate).
    """

    def __init__(self, with_cls_score: bool = False) -> None:
        self.with_cls_score = with_cls_score
        self._cls_scores: dict[str, dict[str, float]] = {}

    @staticmethod
    def _path(results: dict, key: str, name: str) -> str:
        """``results[key]``, or an error saying which dataset setting provides it."""
        if not results.get(key):
            raise KeyError(f'patch {name!r} has no {key}: give its HistoPatchDataset the '
                           f'stage-1 data_prefix entry {key!r} and stage1_root '
                           '(docs/method.md §10)')
        return results[key]

    def transform(self, results: dict) -> dict:
        """Add the CAM / initial-mask arrays and score to ``results``."""
        name = results.get('patch_name') or osp.splitext(osp.basename(results['img_path']))[0]
        cam_path = self._path(results, 'cam_path', name)
        initial_mask_path = self._path(results, 'initial_mask_path', name)
        results['cam'] = load_cam(cam_path)
        results['initial_mask'] = load_initial_mask(initial_mask_path)
        if results['cam'].shape != results['initial_mask'].shape:
            raise ValueError(f'{cam_path}: CAM shape {results["cam"].shape} differs from '
                             f'initial mask {initial_mask_path} shape '
                             f'{results["initial_mask"].shape}')
        if self.with_cls_score:
            manifest_file = self._path(results, 'manifest_path', name)
            if manifest_file not in self._cls_scores:
                self._cls_scores[manifest_file] = read_cls_scores(manifest_file)
            if name not in self._cls_scores[manifest_file]:
                raise KeyError(f'{manifest_file}: no row for patch {name!r}')
            results['cls_score'] = self._cls_scores[manifest_file][name]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(with_cls_score={self.with_cls_score})'
