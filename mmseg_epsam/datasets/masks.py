"""One ground-truth mask convention for the whole project: 0 background, 1 tumour.

Every reader of a ground-truth mask (the data pipeline's :class:`LoadPatchMask`, the CAM
and pseudo-label evaluations, the pictures) goes through :func:`read_mask`, which checks the
values on disk against the declared pair ``(background, tumour)`` — ``(0, 1)`` unless a
dataset declares another, e.g. ``mask_values=(0, 255)`` (``--mask-values 0,255`` in the
tools) — and returns a 0/1 ``uint8`` array. Any other value is an error naming the file and
the values found: a 0/255 mask read as 0/1 would otherwise be scored as all "ignore" (255 is
MMSeg's ignore index) and give a Dice of 100 to a model that predicts nothing.
"""
import os.path as osp
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from mmseg.registry import TRANSFORMS

DEFAULT_MASK_VALUES = (0, 1)


class MaskValueError(ValueError):
    """A mask file holds values outside its declared (background, tumour) pair."""


def parse_mask_values(value: Union[str, Sequence[int], None]) -> Tuple[int, int]:
    """``'0,255'`` / ``(0, 255)`` / None -> ``(background, tumour)``; errors say why."""
    if value is None:
        return DEFAULT_MASK_VALUES
    fields = value.split(',') if isinstance(value, str) else list(value)
    try:
        pair = tuple(int(v) for v in fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'mask values must be two integers "background,tumour" such as '
                         f'0,1 or 0,255; got {value!r}') from exc
    if len(pair) != 2 or pair[0] == pair[1] or not all(0 <= v <= 255 for v in pair):
        raise ValueError(f'mask values must be two different integers in 0..255 '
                         f'("background,tumour", e.g. 0,255); got {value!r}')
    return pair


def binarise_mask(mask: np.ndarray, source: str,
                  mask_values: Sequence[int] = DEFAULT_MASK_VALUES) -> np.ndarray:
    """Check a single-channel mask against ``(background, tumour)``; return it as 0/1 uint8.

    Raises:
        MaskValueError: naming ``source`` and the values found, when the mask is not 2-D
            or holds a value other than the two declared ones.
    """
    background, tumour = parse_mask_values(mask_values)
    if mask.ndim != 2:
        raise MaskValueError(f'{source}: a mask must be a single-channel image, got shape '
                             f'{mask.shape}')
    found = np.unique(mask)
    unexpected = [int(v) for v in found if v not in (background, tumour)]
    if unexpected:
        shown = ', '.join(str(int(v)) for v in found[:10]) + (', ...' if found.size > 10 else '')
        hint = (' (a 0/255 mask: declare it with mask_values=(0, 255) / --mask-values 0,255)'
                if set(found.tolist()) <= {0, 255} else '')
        raise MaskValueError(f'{source}: mask values must be {background} (background) and '
                             f'{tumour} (tumour); found {shown}{hint}')
    return (mask == tumour).astype(np.uint8)


def read_mask(path: str, mask_values: Sequence[int] = DEFAULT_MASK_VALUES) -> np.ndarray:
    """Read a ground-truth mask file as 0/1 uint8, checking its values.

    Raises:
        FileNotFoundError: the file does not exist.
        MaskValueError: it is empty, not a decodable single-channel image, or holds values
            outside ``mask_values`` (the message names the file and the values found).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: mask file not found')
    if osp.getsize(path) == 0:
        raise MaskValueError(f'{path}: mask file is empty (0 bytes)')
    mask = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise MaskValueError(f'{path}: not a decodable image')
    return binarise_mask(mask, path, mask_values)


@TRANSFORMS.register_module()
class LoadPatchMask(BaseTransform):
    """Load ``seg_map_path`` as ``gt_seg_map`` (0/1) through :func:`read_mask`.

    Replaces MMSeg's ``LoadAnnotations`` for this project's patch datasets: the values are
    checked against the data info's ``mask_values`` (set by ``HistoPatchDataset``), or this
    transform's own ``mask_values`` when given. A data info without a mask path (a training
    patch whose mask is optional and absent) passes through without ``gt_seg_map``, unless
    it is marked ``empty_target`` (a negative patch trained on an all-zero target, see
    ``IDSPseudoLabelDataset``): then ``gt_seg_map`` is zeros of the image's size.

    Args:
        mask_values: ``(background, tumour)`` on disk; None reads it from the data info
            (default ``(0, 1)``).
    """

    def __init__(self, mask_values: Optional[Sequence[int]] = None) -> None:
        self.mask_values = None if mask_values is None else parse_mask_values(mask_values)

    def transform(self, results: dict) -> dict:
        """Add ``gt_seg_map`` (uint8 0/1) and register it in ``seg_fields``."""
        path = results.get('seg_map_path')
        if path is None and results.get('empty_target'):
            results['gt_seg_map'] = np.zeros(results['img'].shape[:2], np.uint8)
        elif path is None:
            return results
        else:
            values = self.mask_values or results.get('mask_values') or DEFAULT_MASK_VALUES
            results['gt_seg_map'] = read_mask(path, values)
        results.setdefault('seg_fields', []).append('gt_seg_map')
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(mask_values={self.mask_values})'
