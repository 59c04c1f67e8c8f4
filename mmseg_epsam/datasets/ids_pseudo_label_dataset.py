"""Training set of SAM pseudo-labels selected by IDS (docs/method.md §6).

Each round writes, for the positive training patches::

    <pseudo_label_dir>/<name>.png   uint8 0/1 SAM mask
    <table_file>                    CSV: name,cam_area,sam_area,ids,kept

:class:`IDSPseudoLabelDataset` wraps the patch dataset and keeps the positive patches whose
pseudo-label is kept, with ``seg_map_path`` pointing at the pseudo-label (the original mask
path, if any, moves to ``gt_seg_map_path``). A round without a table (the preliminary
fine-tuning on initial masks: ``pseudo_label_dir=<stage1>/initial_masks/train``) keeps every
positive patch whose label file exists and is not empty.

With ``negative_patches='empty_target'`` (beyond the paper, docs/method.md §5) the negative
patches of the wrapped dataset train too, each with an all-zero target: the decoder then sees
normal tissue it must leave out, not only positives whose targets a "whole patch" answer
nearly matches.
"""
from __future__ import annotations

import copy
import csv
import os.path as osp
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import mmcv
from mmengine.dataset import BaseDataset
from mmengine.logging import MMLogger

from mmseg.registry import DATASETS

POLICIES = ('per_round', 'keep_previous')
#: What the negative patches of the wrapped dataset do: ``'skip'`` (the paper: positives
#: only) or ``'empty_target'`` (train with an all-zero target).
NEGATIVE_PATCH_POLICIES = ('skip', 'empty_target')
_TRUE = {'1', 'true', 'yes', 'kept'}
_FALSE = {'0', 'false', 'no'}


class EmptyPseudoLabelSelection(RuntimeError):
    """No patch has a usable pseudo-label; the caller decides what to do (e.g. keep the
    previous round's labels and decoder)."""


@dataclass
class PseudoLabelSelection:
    """Which data-list entries train, on which label file, and the counts behind it.

    Attributes:
        entries: ``(index in the wrapped dataset, label path, round index)`` per kept patch
            (label path None and round -1: a negative patch with an all-zero target).
        counts: ``patches``, ``positives``, ``selected``, and per round ``round<k>_kept`` /
            ``round<k>_missing`` (positive patches with no label file or no table row).
    """

    entries: list[tuple[int, Optional[str], int]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line of counts for the log."""
        return ', '.join(f'{k}={v}' for k, v in self.counts.items())


def read_ids_table(table_file: str) -> dict[str, bool]:
    """``name -> kept`` from a round's CSV (columns name,cam_area,sam_area,ids,kept)."""
    if not osp.isfile(table_file):
        raise FileNotFoundError(f'IDS table not found: {table_file}')
    kept = {}
    with open(table_file, newline='') as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {'name', 'kept'} <= set(reader.fieldnames):
            raise ValueError(f'{table_file}: needs columns name and kept '
                             f'(name,cam_area,sam_area,ids,kept), has {reader.fieldnames}')
        for line, row in enumerate(reader, start=2):
            value = (row['kept'] or '').strip().lower()
            if value not in _TRUE | _FALSE:
                raise ValueError(f'{table_file}:{line}: kept must be true/false or 1/0, '
                                 f'got {row["kept"]!r}')
            kept[row['name']] = value in _TRUE
    return kept


def _patch_name(info: dict) -> str:
    return info.get('patch_name') or osp.splitext(osp.basename(info['img_path']))[0]


def _is_empty_png(path: str) -> bool:
    mask = mmcv.imread(path, flag='unchanged', backend='cv2')
    if mask is None:
        raise ValueError(f'{path}: not a readable label PNG')
    return not mask.any()


def select_pseudo_labels(data_infos: Sequence[dict], rounds: Sequence[dict],
                         policy: str = 'per_round',
                         skip_empty_labels: bool = True) -> PseudoLabelSelection:
    """Pair each positive patch with its current pseudo-label.

    Args:
        data_infos: the wrapped dataset's data infos (need ``img_label`` and ``patch_name``
            or ``img_path``).
        rounds: oldest first, each ``dict(pseudo_label_dir=..., table_file=... or None)``.
        policy: ``'per_round'`` (the reference): only the last round's kept labels;
            ``'keep_previous'`` (Algorithm 1's union): a patch uses the label of the most
            recent round that kept it.
        skip_empty_labels: in rounds without a table, leave out all-zero label files.
    """
    if policy not in POLICIES:
        raise ValueError(f'policy must be one of {POLICIES}, got {policy!r}')
    if not rounds:
        raise ValueError('rounds must list at least one dict(pseudo_label_dir=...)')
    positives = []
    for index, info in enumerate(data_infos):
        if 'img_label' not in info:
            raise KeyError(f'data info of {info.get("img_path")} has no img_label: wrap a '
                           'HistoPatchDataset (image labels from splits/<split>.txt)')
        if int(info['img_label']) == 1:
            positives.append((index, _patch_name(info)))
    used_rounds = list(enumerate(rounds))
    if policy == 'per_round':
        used_rounds = used_rounds[-1:]
    selection = PseudoLabelSelection(counts=dict(patches=len(data_infos),
                                                 positives=len(positives)))
    chosen: dict[int, tuple[str, int]] = {}
    for round_index, spec in used_rounds:
        label_dir = spec['pseudo_label_dir']
        table = read_ids_table(spec['table_file']) if spec.get('table_file') else None
        kept = missing = 0
        for index, name in positives:
            path = osp.join(label_dir, f'{name}.png')
            if table is not None:
                if name not in table:
                    missing += 1
                    continue
                if not table[name]:
                    continue
                if not osp.isfile(path):
                    raise FileNotFoundError(f'{spec["table_file"]} keeps {name!r} but its '
                                            f'pseudo-label {path} does not exist')
            elif not osp.isfile(path):
                missing += 1
                continue
            elif skip_empty_labels and _is_empty_png(path):
                continue
            kept += 1
            chosen[index] = (path, round_index)
        selection.counts[f'round{round_index}_kept'] = kept
        selection.counts[f'round{round_index}_missing'] = missing
    selection.entries = [(index, path, r) for index, (path, r) in sorted(chosen.items())]
    selection.counts['selected'] = len(selection.entries)
    return selection


@DATASETS.register_module()
class IDSPseudoLabelDataset:
    """Positive patches of a patch dataset, each with its current IDS-kept pseudo-label.

    Args:
        dataset: config (or instance) of the wrapped dataset (``HistoPatchDataset``).
        rounds: oldest first, each ``dict(pseudo_label_dir=..., table_file=...)``;
            ``table_file=None`` keeps every non-empty label file (preliminary stage).
        policy: ``'per_round'`` (default, the reference) or ``'keep_previous'``.
        skip_empty_labels: see :func:`select_pseudo_labels`.
        negative_patches: ``'skip'`` (default, the paper) or ``'empty_target'``: also train
            on every negative patch (``img_label`` 0) with an all-zero target. A wrapped
            dataset given as a config then reads all labels (its ``image_labels`` filter is
            lifted).

    Raises:
        EmptyPseudoLabelSelection: when no patch is selected (never an empty dataset).

    ``__getitem__`` runs the wrapped dataset's pipeline on the data info with
    ``seg_map_path`` = the pseudo-label (``mask_values`` (0, 1)), ``gt_seg_map_path`` /
    ``gt_mask_values`` = the original mask path and values, and ``pseudo_label_round``.
    A negative patch has ``seg_map_path`` None, ``empty_target`` True (``LoadPatchMask``
    makes the all-zero target) and ``pseudo_label_round`` -1.
    """

    def __init__(self, dataset: Union[dict, BaseDataset], rounds: Sequence[dict],
                 policy: str = 'per_round', skip_empty_labels: bool = True,
                 negative_patches: str = 'skip') -> None:
        if negative_patches not in NEGATIVE_PATCH_POLICIES:
            raise ValueError(f'negative_patches must be one of {NEGATIVE_PATCH_POLICIES}, '
                             f'got {negative_patches!r}')
        if isinstance(dataset, dict):
            if negative_patches == 'empty_target':
                dataset = dict(dataset, image_labels=None)
            dataset = DATASETS.build(dataset)
        self.dataset = dataset
        self.dataset.full_init()
        self.policy = policy
        self.negative_patches = negative_patches
        self.rounds = [dict(r) for r in rounds]
        infos = [self.dataset.get_data_info(i) for i in range(len(self.dataset))]
        self.selection = select_pseudo_labels(infos, self.rounds, policy, skip_empty_labels)
        last_dir = self.rounds[-1]['pseudo_label_dir']
        if not self.selection.entries:
            raise EmptyPseudoLabelSelection(
                f'IDSPseudoLabelDataset: no training patch selected from {last_dir} '
                f'(policy {policy}): {self.selection.summary()}')
        if negative_patches == 'empty_target':
            negatives = [(index, None, -1) for index, info in enumerate(infos)
                         if int(info['img_label']) == 0]
            if not negatives:
                raise ValueError("IDSPseudoLabelDataset(negative_patches='empty_target'): the "
                                 f'wrapped dataset ({self.dataset.ann_file}) has no negative '
                                 'patch (img_label 0)')
            self.selection.entries = sorted(self.selection.entries + negatives)
            self.selection.counts['negatives'] = len(negatives)
        MMLogger.get_current_instance().info(
            f'IDSPseudoLabelDataset ({policy}, labels from {last_dir}): '
            f'{self.selection.summary()}')

    @property
    def metainfo(self) -> dict:
        """The wrapped dataset's metainfo (classes, palette)."""
        return copy.deepcopy(self.dataset.metainfo)

    def full_init(self) -> None:
        """Already initialised in the constructor (the selection needs the data list)."""

    def __len__(self) -> int:
        return len(self.selection.entries)

    def get_data_info(self, idx: int) -> dict:
        """Data info of the ``idx``-th selected patch, pointing at its pseudo-label."""
        index, label_path, round_index = self.selection.entries[idx]
        info = copy.deepcopy(self.dataset.get_data_info(index))
        info['gt_seg_map_path'] = info.get('seg_map_path')
        info['gt_mask_values'] = info.get('mask_values')
        info['seg_map_path'] = label_path
        info['mask_values'] = (0, 1)  # pseudo-labels are written 0/1 (engine.pseudo_labels)
        info['pseudo_label_round'] = round_index
        info['empty_target'] = label_path is None
        return info

    def __getitem__(self, idx: int) -> dict:
        return self.dataset.pipeline(self.get_data_info(idx))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(policy={self.policy!r}, '
                f'negative_patches={self.negative_patches!r}, {self.selection.summary()})')
