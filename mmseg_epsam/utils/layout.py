"""Where EP-SAM's generated files live on disk (docs/method.md §10).

The stage-1 folder (CAM generation, docs/method.md §3), ``<work_dir>/stage1`` by default::

    cams/<split>/<name>.npy            fused CAM, float16, H x W of the patch, in [0, 1]
    initial_masks/<split>/<name>.png   uint8 0/1, H x W of the patch
    manifest_<split>.csv               name,label,cls_score,cam_area,mask_area
    settings_<split>.json              CAM method, post-processing, model fingerprint
    eval_<split>.json                  initial masks against GT, where GT exists
    vis/<split>/<name>.png             pictures, on request

A pseudo-label round folder (docs/method.md §6)::

    pseudo_labels/<name>.png   SAM mask (0/1) of every positive patch, kept or not
    ids_table.csv              name,cam_area,sam_area,ids,kept,sam_dice_gt,initial_dice_gt
    summary.json               counts and Dice against GT where it exists
    settings.json              what made the masks

Code that writes or reads these paths takes them from here. Datasets address the stage-1
outputs of their patches through ``data_prefix`` (:func:`stage1_data_prefix`), the way
MMSeg datasets address masks through ``seg_map_path``.
"""
import os.path as osp
from typing import Dict, List, Mapping

STAGE1_FOLDER = 'stage1'
#: ``data_prefix`` keys of the stage-1 outputs: CAM folder, initial-mask folder, manifest.
STAGE1_PREFIX_KEYS = ('cam_path', 'initial_mask_path', 'manifest_path')


def stage1_dir_of(work_dir: str) -> str:
    """The stage-1 folder of a run's work dir."""
    return osp.join(work_dir, STAGE1_FOLDER)


def stage1_data_prefix(split: str) -> Dict[str, str]:
    """``data_prefix`` entries of the stage-1 outputs of ``split``, relative to the stage-1
    folder (a dataset's ``stage1_root``)."""
    return dict(cam_path=osp.join('cams', split),
                initial_mask_path=osp.join('initial_masks', split),
                manifest_path=f'manifest_{split}.csv')


def stage1_paths(stage1_dir: str, split: str) -> Dict[str, str]:
    """Folders and files of one split's stage-1 outputs under ``stage1_dir``.

    Keys: ``cam_dir``, ``initial_mask_dir``, ``manifest_file``, ``vis_dir``,
    ``settings_file``, ``eval_file``.
    """
    prefix = stage1_data_prefix(split)
    return dict(cam_dir=osp.join(stage1_dir, prefix['cam_path']),
                initial_mask_dir=osp.join(stage1_dir, prefix['initial_mask_path']),
                manifest_file=osp.join(stage1_dir, prefix['manifest_path']),
                vis_dir=osp.join(stage1_dir, 'vis', split),
                settings_file=osp.join(stage1_dir, f'settings_{split}.json'),
                eval_file=osp.join(stage1_dir, f'eval_{split}.json'))


def cam_file(cam_dir: str, name: str) -> str:
    """The fused CAM of patch ``name`` in a CAM folder."""
    return osp.join(cam_dir, f'{name}.npy')


def initial_mask_file(initial_mask_dir: str, name: str) -> str:
    """The initial mask of patch ``name`` in an initial-mask folder."""
    return osp.join(initial_mask_dir, f'{name}.png')


def stage1_sample_paths(prefix: Mapping[str, str], name: str) -> Dict[str, str]:
    """A patch's stage-1 files from a dataset's resolved ``data_prefix``: ``cam_path``,
    ``initial_mask_path`` and ``manifest_path`` (the split's manifest, which holds its
    ``cls_score``), each only where ``prefix`` has that key."""
    paths = {}
    if 'cam_path' in prefix:
        paths['cam_path'] = cam_file(prefix['cam_path'], name)
    if 'initial_mask_path' in prefix:
        paths['initial_mask_path'] = initial_mask_file(prefix['initial_mask_path'], name)
    if 'manifest_path' in prefix:
        paths['manifest_path'] = prefix['manifest_path']
    return paths


def round_paths(round_dir: str) -> Dict[str, str]:
    """Where a round's pseudo-labels, IDS table, summary and settings live."""
    return dict(pseudo_label_dir=osp.join(round_dir, 'pseudo_labels'),
                table_file=osp.join(round_dir, 'ids_table.csv'),
                summary_file=osp.join(round_dir, 'summary.json'),
                settings_file=osp.join(round_dir, 'settings.json'))


def round_dir(rounds_dir: str, k: int) -> str:
    """The folder of round ``k``'s pseudo-labels (``k >= 1``) under ``rounds_dir``."""
    return osp.join(rounds_dir, f'round_{k}')


def final_decoder_masks_dir(work_dir: str) -> str:
    """The folder (round-folder layout, :func:`round_paths`) of the final decoder's masks on
    the positive training patches, written when a pipeline exports them
    (``export.labels='final_decoder'``)."""
    return osp.join(work_dir, 'final_decoder_masks')


def round_targets(rounds_dir: str, k: int) -> List[Dict[str, str]]:
    """The ``rounds`` of an ``IDSPseudoLabelDataset`` that trains decoder round ``k >= 1``:
    the pseudo-labels and IDS tables of rounds ``1..k`` under ``rounds_dir``."""
    targets = []
    for j in range(1, k + 1):
        paths = round_paths(round_dir(rounds_dir, j))
        targets.append(dict(pseudo_label_dir=paths['pseudo_label_dir'],
                            table_file=paths['table_file']))
    return targets


def decoder_round_checkpoint(k: int) -> str:
    """File name of the checkpoint of decoder round ``k`` in a decoder run's work dir."""
    return f'decoder_r{k}.pth'
