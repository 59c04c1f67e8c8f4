"""Histopathology patch dataset: MMSeg's ``img_dir``/``ann_dir`` layout plus image labels.

On-disk format (documented in the README, written by ``tools/make_demo_data.py`` and
``tools/dataset_converters/camelyon.py``)::

    <data_root>/img_dir/<split>/<name>.png   RGB patch
    <data_root>/ann_dir/<split>/<name>.png   uint8 mask, 0 background / 1 tumour
                                             (or another declared pair: ``mask_values``)
    <data_root>/splits/<split>.txt           one line per patch: "<name> <label>" (0/1)

Masks are required for evaluation splits and optional for training (EP-SAM trains from the
image labels; training masks, when present, only serve evaluation of pseudo-labels).

The SAM stages also read each patch's stage-1 outputs (docs/method.md §10). A dataset gives
them through ``data_prefix`` as it gives masks through ``seg_map_path``: ``cam_path`` and
``initial_mask_path`` (folders) and ``manifest_path`` (the split's manifest, which holds the
classifier scores), relative to ``stage1_root``, e.g.::

    stage1_root='work_dirs/epsam_camelyon16/stage1',
    data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test',
                     cam_path='cams/test', initial_mask_path='initial_masks/test',
                     manifest_path='manifest_test.csv')
"""
import os.path as osp
from typing import List, Optional, Sequence

import cv2
from mmengine.fileio import get_local_path
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image

from ..utils.layout import STAGE1_PREFIX_KEYS, stage1_sample_paths
from .masks import DEFAULT_MASK_VALUES, parse_mask_values, read_mask

MASK_POLICIES = ('required', 'optional', 'ignore')


class PatchDatasetError(ValueError):
    """A patch dataset on disk is inconsistent; the message names the file."""


def read_split_file(split_file: str) -> List[tuple]:
    """Parse a split file of ``<name> <label>`` lines into ``[(name, label), ...]``.

    Blank lines and lines starting with ``#`` are skipped. Raises
    :class:`PatchDatasetError` naming the file and line for a malformed line or a label
    that is not 0/1, and for a split that lists no patch.
    """
    entries = []
    with get_local_path(split_file) as local_path, open(local_path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith('#'):
                continue
            fields = text.split()
            if len(fields) != 2:
                raise PatchDatasetError(
                    f'{split_file}:{line_no}: expected "<name> <label>", got {text!r}')
            name, label = fields
            if label not in ('0', '1'):
                raise PatchDatasetError(
                    f'{split_file}:{line_no}: label of {name!r} must be 0 (normal) or '
                    f'1 (tumour), got {label!r}')
            entries.append((name, int(label)))
    if not entries:
        raise PatchDatasetError(f'{split_file}: the split lists no patch')
    return entries


def image_size(path: str) -> tuple:
    """Return ``(width, height)`` of an image from its header, naming the file on failure."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception as exc:  # PIL raises several types for unreadable files
        raise PatchDatasetError(f'{path}: unreadable image ({exc})') from exc


@DATASETS.register_module()
class HistoPatchDataset(BaseSegDataset):
    """Patches with an image-level tumour label and, where known, a pixel mask.

    Every data info carries ``img_label`` (0 normal / 1 tumour) and ``patch_name``; give
    ``PackSegInputs`` ``meta_keys`` that include them so they reach
    ``data_sample.metainfo`` (the classifier trains on ``img_label``, the metrics split
    positives from negatives with it). With stage-1 ``data_prefix`` keys, every data info
    also carries ``cam_path``, ``initial_mask_path`` and ``manifest_path`` (read by
    ``LoadCAMAndInitialMask``; the files need not exist when the dataset is built).

    Args:
        ann_file: Split file relative to ``data_root``, e.g. ``'splits/train.txt'``.
        masks: ``'required'`` (every patch must have a mask; evaluation splits),
            ``'optional'`` (use a mask when its file exists) or ``'ignore'``.
        image_labels: Keep only patches with these labels, e.g. ``(1,)`` for the
            positive training patches that the SAM stages use. ``None`` keeps all.
        check_sizes: Read image and mask headers at start-up and fail on a size
            mismatch (cheap: headers only).
        mask_values: ``(background, tumour)`` values of the mask files, ``(0, 1)`` by
            default; e.g. ``(0, 255)``. Loading (``LoadPatchMask``) checks every mask
            against it and maps it to 0/1; any other value is an error naming the file.
        stage1_root: The stage-1 folder that relative stage-1 ``data_prefix`` entries
            (``cam_path``, ``initial_mask_path``, ``manifest_path``) are joined to; None
            joins them to ``data_root``, as the other entries.
        data_root: As in :class:`mmseg.datasets.BaseSegDataset`.
        **kwargs: Passed to :class:`mmseg.datasets.BaseSegDataset`.
    """

    METAINFO = dict(classes=('background', 'tumour'), palette=[[0, 0, 0], [255, 0, 0]])

    def __init__(self,
                 ann_file: str = '',
                 masks: str = 'optional',
                 image_labels: Optional[Sequence[int]] = None,
                 check_sizes: bool = True,
                 mask_values: Sequence[int] = DEFAULT_MASK_VALUES,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 stage1_root: Optional[str] = None,
                 data_root: Optional[str] = None,
                 **kwargs) -> None:
        if masks not in MASK_POLICIES:
            raise ValueError(f'masks must be one of {MASK_POLICIES}, got {masks!r}')
        if reduce_zero_label:
            raise ValueError('HistoPatchDataset masks are 0 background / 1 tumour; '
                             'reduce_zero_label must be False')
        self.masks = masks
        self.image_labels = None if image_labels is None else tuple(image_labels)
        self.check_sizes = check_sizes
        self.mask_values = parse_mask_values(mask_values)
        self.stage1_root = stage1_root
        super().__init__(
            ann_file=ann_file,
            # '' instead of None, so that _join_prefix always runs (it places stage1_root)
            data_root=data_root or '',
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=False,
            **kwargs)

    def _join_prefix(self) -> None:
        """Join ``data_root`` to the paths, and ``stage1_root`` (if given) to the stage-1
        ``data_prefix`` entries."""
        stage1 = {key: self.data_prefix.pop(key) for key in STAGE1_PREFIX_KEYS
                  if key in self.data_prefix}
        super()._join_prefix()
        root = self.data_root if self.stage1_root is None else self.stage1_root
        for key, prefix in stage1.items():
            self.data_prefix[key] = osp.join(root, prefix) if root and not osp.isabs(prefix) \
                else prefix

    def load_data_list(self) -> List[dict]:
        """Read the split file and check every listed patch on disk."""
        if not self.ann_file:
            raise PatchDatasetError(
                f'HistoPatchDataset needs ann_file (a split file of "<name> <label>" '
                f'lines); data_root={self.data_root!r}')
        if not osp.isfile(self.ann_file):
            raise PatchDatasetError(f'{self.ann_file}: split file not found')
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path', '')
        data_list = []
        for name, label in read_split_file(self.ann_file):
            if self.image_labels is not None and label not in self.image_labels:
                continue
            img_path = osp.join(img_dir, name + self.img_suffix)
            if not osp.isfile(img_path):
                raise PatchDatasetError(
                    f'{self.ann_file}: patch {name!r} is listed but its image '
                    f'{img_path} does not exist')
            seg_map_path = self._mask_path(ann_dir, name)
            if self.check_sizes and seg_map_path is not None:
                img_wh, mask_wh = image_size(img_path), image_size(seg_map_path)
                if img_wh != mask_wh:
                    raise PatchDatasetError(
                        f'{seg_map_path}: mask size {mask_wh[0]}x{mask_wh[1]} differs '
                        f'from its image {img_path} ({img_wh[0]}x{img_wh[1]})')
            data_list.append(
                dict(
                    img_path=img_path,
                    seg_map_path=seg_map_path,
                    img_label=label,
                    patch_name=name,
                    mask_values=self.mask_values,
                    label_map=self.label_map,
                    reduce_zero_label=False,
                    seg_fields=[],
                    **stage1_sample_paths(self.data_prefix, name)))
        if not data_list:
            raise PatchDatasetError(
                f'{self.ann_file}: no patch left after filtering by image_labels='
                f'{self.image_labels}')
        return data_list

    def _mask_path(self, ann_dir: str, name: str) -> Optional[str]:
        """Return the mask path of ``name`` under the mask policy (None when unused)."""
        if self.masks == 'ignore' or not ann_dir:
            if self.masks == 'required':
                raise PatchDatasetError(
                    f'{self.ann_file}: masks="required" but data_prefix has no '
                    f'seg_map_path')
            return None
        path = osp.join(ann_dir, name + self.seg_map_suffix)
        if osp.isfile(path):
            return path
        if self.masks == 'required':
            raise PatchDatasetError(
                f'{self.ann_file}: patch {name!r} has no mask: {path} does not exist '
                f'(masks="required" for this split)')
        return None

    def verify_files(self) -> None:
        """Decode every image and mask of the split (a full read, not only headers).

        For a check before any training starts: raises :class:`PatchDatasetError` naming
        the first image that does not decode, and :class:`~.masks.MaskValueError` /
        ``FileNotFoundError`` naming a mask that is empty, undecodable or off-convention.
        """
        for i in range(len(self)):
            info = self.get_data_info(i)
            if cv2.imread(info['img_path'], cv2.IMREAD_UNCHANGED) is None:
                raise PatchDatasetError(f'{info["img_path"]}: not a decodable image '
                                        f'(listed in {self.ann_file})')
            if info.get('seg_map_path'):
                read_mask(info['seg_map_path'], self.mask_values)
