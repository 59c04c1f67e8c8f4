"""Ablation of the initial masks (paper Tables 2-3, CAM rows; docs/method.md §3, §8) on the demo data.

For each seed, trains the patch classifier of ``configs/epsam/classifier_demo.py`` in three
backbone variants (as ``tools/train.py`` does: the same config, runner and ``--cfg-options``
mechanism), generates initial masks for the test split with and without post-processing,
and scores them:

- (a) all-tumour mask on every patch (no classifier; its gated row uses the seed's EVP+ADL
  classifier as the gate);
- (b) plain CAM of a ResNet-50 (``model.backbone.evp_fusion=None``,
  ``model.backbone.adl_positions=[]``);
- (c) ADL (``model.backbone.evp_fusion=None``);
- (d) Enhanced ADL: EVP + ADL (the config's defaults);

each with post-processing (``--preset``, default ``camelyon16``: rotate & fuse, quantile
threshold, opening) and without (preset ``none``: single view, CAM >= 0.5, no opening).
Reports per-patch Dice / IoU on positive test patches beside the false-positive area on
negative ones, without and with the classifier gate (probability < 0.5 -> empty mask), as
mean ± sd over the seeds. Dice on positives alone rewards over-segmentation (row a).

Trained classifiers and generated masks are kept under ``--work-dir``; a rerun skips what is
complete (a run trained with another classifier config is refused, not reused). One run
(variant, seed) takes about 2 min on an H200 with ``configs/epsam/classifier_demo_full.py``
(``benchmarks/gpu_checks.sh`` runs the seeds in parallel) and about 25 min on 2 CPU cores
with the 256-px demo config. ::

    python benchmarks/ablation_initial_masks.py [--data-root data/demo] [--seeds 0 1 2]
        [--config configs/epsam/classifier_demo.py] [--variants b c d]
        [--preset camelyon16] [--cfg-options train_cfg.max_epochs=20 ...]

The bar: Enhanced ADL with post-processing beats the all-tumour Dice while the
gated false-positive area on negatives stays at most ``--clean-fp`` (default 10 %).
"""
import argparse
import gc
import glob
import hashlib
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
import torch
from mmengine.config import Config, DictAction

import mmseg_epsam  # noqa: F401  (registers the plugin; Runner.from_cfg skips custom_imports)
from mmseg.registry import DATASETS, MODELS
from mmseg.utils import register_all_modules
from mmseg_epsam.engine import build_runner
from mmseg_epsam.engine.cam_generation import (generate_cams, generation_dataset_cfg,
                                               load_classifier_checkpoint, read_manifest)
from mmseg_epsam.functional.cam import CAM_POSTPROCESS_PRESETS, cam_postprocess
from mmseg_epsam.functional.metrics import patch_dice_iou
from mmseg_epsam.utils.layout import stage1_paths

# Backbone variants as --cfg-options overrides of the classifier config.
VARIANTS = {
    '(b) plain CAM, ResNet-50': {'model.backbone.evp_fusion': None,
                                 'model.backbone.adl_positions': []},
    '(c) ADL': {'model.backbone.evp_fusion': None},
    '(d) Enhanced ADL (EVP + ADL)': {},
}
VARIANT_KEYS = {name[1]: name for name in VARIANTS}  # 'b' -> '(b) plain CAM, ResNet-50'
ENHANCED = '(d) Enhanced ADL (EVP + ADL)'
ALL_TUMOUR = '(a) all-tumour mask'
METRICS = ('dice', 'iou', 'fp_area', 'gated_dice', 'gated_fp_area')
GATE = 0.5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Initial-mask ablation over seeds')
    parser.add_argument('--config', default='configs/epsam/classifier_demo.py')
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--preset', default='camelyon16',
                        choices=sorted(set(CAM_POSTPROCESS_PRESETS) - {'none'}))
    parser.add_argument('--variants', nargs='+', default=sorted(VARIANT_KEYS),
                        choices=sorted(VARIANT_KEYS), help='backbone variants to run')
    parser.add_argument('--clean-fp', type=float, default=0.10,
                        help='largest gated FP area on negatives that counts as nearly clean')
    parser.add_argument('--split', default='test')
    parser.add_argument('--work-dir', default='work_dirs/ablation_initial_masks')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='extra overrides of the classifier config for every run')
    return parser.parse_args()


def run_config(args, variant_options: dict, seed: int, work_dir: str) -> Config:
    """The classifier config of one run: the demo config, the variant, the seed, the data."""
    cfg = Config.fromfile(args.config)
    options = {f'{loader}.dataset.data_root': args.data_root
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    options.update({'randomness.seed': seed, **variant_options, **args.cfg_options})
    cfg.merge_from_dict(options)
    cfg.work_dir = work_dir
    # The ablation generates its own masks; a CAM hook in the config would only repeat it.
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                        if h.get('type') != 'CAMGeneratorHook']
    cfg.visualizer = dict(cfg.get('visualizer', {}), name=f'ablation_{osp.basename(work_dir)}')
    return cfg


def train_classifier(cfg: Config) -> str:
    """Train as tools/train.py does (skipped when done); return the checkpoint to use."""
    done_file = osp.join(cfg.work_dir, 'classifier_done.json')
    config_hash = hashlib.sha256(cfg.pretty_text.encode()).hexdigest()
    if osp.isfile(done_file):
        with open(done_file) as f:
            done = json.load(f)
        if done.get('config_sha256') != config_hash:
            sys.exit(f'{cfg.work_dir}: trained with another classifier config (or by an older '
                     'version of this script); use another --work-dir or delete it')
        return done['checkpoint']
    runner = build_runner(cfg)
    runner.train()
    best = sorted(glob.glob(osp.join(cfg.work_dir, 'best_*.pth')))
    if best:  # GT-free selection (the config's save_best on image-label metrics)
        checkpoint = best[-1]
    else:
        with open(osp.join(cfg.work_dir, 'last_checkpoint')) as f:
            checkpoint = f.read().strip()
    with open(done_file, 'w') as f:
        json.dump(dict(checkpoint=checkpoint, config_sha256=config_hash), f)
    del runner
    gc.collect()
    return checkpoint


def evaluate_variant(args, cfg: Config, checkpoint: str) -> dict:
    """Initial-mask scores of one trained classifier, with and without post-processing."""
    model = MODELS.build(cfg.model)
    load_classifier_checkpoint(model, checkpoint)
    model.to(args.device).eval()
    datasets = {args.split: DATASETS.build(generation_dataset_cfg(cfg, args.split))}
    results = {}
    for preset in (args.preset, 'none'):
        out_dir = osp.join(cfg.work_dir, f'stage1_{preset}')
        summary = generate_cams(model, datasets, out_dir, cam_postprocess(preset),
                                batch_size=4)[args.split]
        results[preset] = dict(dice=summary['ungated']['dice'], iou=summary['ungated']['iou'],
                               fp_area=summary['ungated']['fp_area'],
                               gated_dice=summary['gated']['dice'],
                               gated_fp_area=summary['gated']['fp_area'])
    results['scores'] = {name: float(row['cls_score']) for name, row in read_manifest(
        stage1_paths(osp.join(cfg.work_dir, f'stage1_{args.preset}'), args.split)[
            'manifest_file']).items()}
    return results


def all_tumour_scores(dataset, scores: dict) -> dict:
    """Row (a): every pixel tumour; gated with the given classifier scores."""
    dice, iou, gated_dice, fp, gated_fp = [], [], [], [], []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        passes = scores[info['patch_name']] >= GATE
        if info['img_label'] == 0:
            fp.append(1.0)
            gated_fp.append(1.0 if passes else 0.0)
            continue
        if not info.get('seg_map_path'):
            continue
        gt = cv2.imread(info['seg_map_path'], cv2.IMREAD_UNCHANGED) == 1
        full = np.ones_like(gt)
        d, i = patch_dice_iou(full, gt)
        dice.append(d)
        iou.append(i)
        gated_dice.append(d if passes else patch_dice_iou(np.zeros_like(gt), gt)[0])
    return dict(dice=np.mean(dice), iou=np.mean(iou), fp_area=np.mean(fp),
                gated_dice=np.mean(gated_dice), gated_fp_area=np.mean(gated_fp))


def mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{100 * values[0]:.2f} (one seed)'
    return f'{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}'


def bar_verdict(enhanced_runs: list, baseline_runs: list, clean_fp: float) -> str:
    """Whether Enhanced ADL beats the all-tumour Dice with negatives nearly clean (gated)."""
    enhanced = np.mean([r['dice'] for r in enhanced_runs])
    baseline = np.mean([r['dice'] for r in baseline_runs])
    fp = np.mean([r['gated_fp_area'] for r in enhanced_runs])
    beats = enhanced > baseline
    clean = fp <= clean_fp
    verdict = 'MEETS' if beats and clean else 'does NOT meet'
    return (f'\nEnhanced ADL with post-processing {verdict} the bar: Dice {100 * enhanced:.2f} '
            f'vs {100 * baseline:.2f} for the all-tumour mask ({"beats" if beats else "does not beat"}'
            f' it), gated FP area on negatives {100 * fp:.2f} % ({"within" if clean else "above"}'
            f' {100 * clean_fp:.0f} %)')


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=True)
    if not osp.isfile(args.config):
        sys.exit(f'{args.config}: classifier config not found')
    if not osp.isfile(osp.join(args.data_root, 'splits', f'{args.split}.txt')):
        sys.exit(f'{args.data_root}: no demo patch dataset (make it with '
                 f'tools/make_demo_data.py --out {args.data_root})')
    os.makedirs(args.work_dir, exist_ok=True)
    per_seed = {}  # (method, post-processing) -> list of metric dicts
    for seed in args.seeds:
        enhanced_scores = None
        for variant, options in VARIANTS.items():
            if variant[1] not in args.variants:
                continue
            slug = variant.split(')')[0].strip('(') + f'_seed{seed}'
            cfg = run_config(args, options, seed, osp.join(args.work_dir, slug))
            checkpoint = train_classifier(cfg)
            results = evaluate_variant(args, cfg, checkpoint)
            for preset in (args.preset, 'none'):
                per_seed.setdefault((variant, preset), []).append(results[preset])
            if variant == ENHANCED:
                enhanced_scores = results['scores']
                test_dataset = DATASETS.build(generation_dataset_cfg(cfg, args.split))
        if enhanced_scores is not None:  # row (a) is gated with the EVP+ADL classifier
            per_seed.setdefault((ALL_TUMOUR, '-'), []).append(
                all_tumour_scores(test_dataset, enhanced_scores))

    header = ('| method | post-processing | Dice % | IoU % | FP area on negatives % | '
              'FP area, gated % | Dice, gated % |')
    lines = [header, '|---|---|---|---|---|---|---|']
    table = {}
    for (method, preset), runs in per_seed.items():
        row = {m: mean_sd([r[m] for r in runs]) for m in METRICS}
        table[f'{method} | {preset}'] = dict(runs=runs, **row)
        lines.append(f'| {method} | {preset} | {row["dice"]} | {row["iou"]} | '
                     f'{row["fp_area"]} | {row["gated_fp_area"]} | {row["gated_dice"]} |')
    print(f'\nInitial masks on the {args.split} split of {args.data_root}, mean ± sd over '
          f'seeds {args.seeds} (gate: classifier probability >= {GATE}):')
    print('\n'.join(lines))
    if (ENHANCED, args.preset) in per_seed:
        print(bar_verdict(per_seed[(ENHANCED, args.preset)], per_seed[(ALL_TUMOUR, '-')],
                          args.clean_fp))
    out = osp.join(args.work_dir, 'ablation_initial_masks.json')
    with open(out, 'w') as f:
        json.dump(table, f, indent=2, default=float)
    print(f'results: {out}')
    print('command: python benchmarks/ablation_initial_masks.py ' + ' '.join(sys.argv[1:]))


if __name__ == '__main__':
    main()
