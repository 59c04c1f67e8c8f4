"""Ablation of CAM methods and post-processing steps (paper Table 3) on trained classifiers.

For each trained classifier work dir (one per seed: ``tools/train.py`` or
``benchmarks/ablation_initial_masks.py`` outputs), each CAM method and each post-processing
variant, this generates the initial masks of the chosen splits through the project's CAM
generation (:func:`mmseg_epsam.engine.cam_generation.generate_cams`, the code behind
``tools/generate_cams.py`` and the pipeline) and scores them: per-patch Dice / IoU on
positives beside the false-positive (FP) area on negatives, without and with the classifier
gate (probability < 0.5 -> empty mask), as mean ± sd over the work dirs.

Methods (``--methods``): ``cam`` (the paper's), ``gradcam``, ``gradcam++``, ``eigencam``
(the grad-cam package). Variants (``--variants``) of ``--preset`` (default ``camelyon16``):

- ``full``: the preset (rotate & fuse, quantile threshold, opening);
- ``no_rotate_fuse``: one view instead of four;
- ``no_quantile``: a fixed cut of the normalised CAM at 0.5 instead of the quantile;
- ``no_opening``: no morphological opening;
- ``none``: none of the three (preset ``none``);
- ``densecrf``: a DenseCRF over the patch image instead of the quantile (needs the optional
  pydensecrf2; not in the default list).

A work dir holds the config MMEngine dumped there (``--config`` to give another) and the
checkpoint: ``classifier_done.json``'s (ablation runs), else ``best_*.pth`` (GT-free
selection), else ``last_checkpoint``. Masks are kept under ``<work dir>/cam_ablation``; a
rerun reuses what is complete. The variants of a method share its raw CAMs and the scores
(computed once per batch of views in a run), so a variant with the views of an earlier one
costs only its post-processing. ::

    python benchmarks/ablation_cam_methods.py WORK_DIR [WORK_DIR ...] [--splits val test]
        [--methods cam gradcam gradcam++ eigencam] [--variants full none ...]
        [--preset camelyon16] [--data-root data/demo] [--results FILE.json]
"""
import argparse
import glob
import json
import os
import os.path as osp
import shlex
import sys

import numpy as np
import torch
from mmengine.config import Config

import mmseg_epsam  # noqa: F401  (registers the plugin)
from mmseg.registry import DATASETS, MODELS
from mmseg.utils import register_all_modules
from mmseg_epsam.engine.cam_generation import (generate_cams, generation_dataset_cfg,
                                               load_classifier_checkpoint)
from mmseg_epsam.functional.cam import CAM_POSTPROCESS_PRESETS, cam_postprocess
from mmseg_epsam.models.classifiers import CAM_METHODS
from mmseg_epsam.utils import atomic_write

# Post-processing variants as overrides of the preset (None: the preset 'none').
VARIANTS = {
    'full': {},
    'no_rotate_fuse': dict(rotate_fuse=False),
    'no_quantile': dict(quantile=None, fixed_threshold=0.5),
    'no_opening': dict(opening_size=(1, 1)),
    'none': None,
    'densecrf': dict(quantile=None, crf=dict()),
}
DEFAULT_VARIANTS = ['full', 'no_rotate_fuse', 'no_quantile', 'no_opening', 'none']
COLUMNS = (('dice', 'Dice'), ('iou', 'IoU'), ('fp_area', 'FP area on negatives'),
           ('gated_fp_area', 'FP area, gated'), ('gated_dice', 'Dice, gated'))


def add_scoring_arguments(parser: argparse.ArgumentParser, variants: list) -> None:
    """The options :func:`score_checkpoint` reads: splits, post-processing, data, device."""
    parser.add_argument('--splits', nargs='+', default=['val', 'test'])
    parser.add_argument('--variants', nargs='+', default=variants, choices=list(VARIANTS))
    parser.add_argument('--preset', default='camelyon16',
                        choices=sorted(set(CAM_POSTPROCESS_PRESETS) - {'none'}))
    parser.add_argument('--data-root', help='override the data root of the configs')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')


def parse_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description='CAM method x post-processing ablation')
    parser.add_argument('work_dirs', nargs='+', help='trained classifier work dirs (seeds)')
    parser.add_argument('--config', help='classifier config (default: the one in each work dir)')
    parser.add_argument('--methods', nargs='+', default=list(CAM_METHODS), choices=CAM_METHODS)
    add_scoring_arguments(parser, DEFAULT_VARIANTS)
    parser.add_argument('--results', help='JSON file for the per-run figures '
                        '(default: <first work dir>/cam_ablation/results.json)')
    return parser.parse_args()


def find_run(work_dir: str, config: str = None) -> tuple:
    """``(config file, checkpoint)`` of a classifier work dir (see the module docstring)."""
    if config is None:
        configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
        if len(configs) != 1:
            sys.exit(f'{work_dir}: expected one dumped config *.py, found {configs}; '
                     'give --config')
        config = configs[0]
    done_file = osp.join(work_dir, 'classifier_done.json')
    best = sorted(glob.glob(osp.join(work_dir, 'best_*.pth')))
    if osp.isfile(done_file):
        with open(done_file) as f:
            checkpoint = json.load(f)['checkpoint']
    elif best:
        checkpoint = best[-1]
    elif osp.isfile(osp.join(work_dir, 'last_checkpoint')):
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            checkpoint = f.read().strip()
    else:
        sys.exit(f'{work_dir}: no checkpoint (classifier_done.json, best_*.pth or '
                 'last_checkpoint)')
    return config, checkpoint


def postprocess_of(preset: str, variant: str):
    """The CAM settings of a post-processing variant of ``preset``."""
    overrides = VARIANTS[variant]
    return cam_postprocess('none') if overrides is None else cam_postprocess(preset, **overrides)


def score_run(args, work_dir: str) -> dict:
    """``{split: {method: {variant: figures}}}`` of one trained classifier."""
    config, checkpoint = find_run(work_dir, args.config)
    return score_checkpoint(args, config, checkpoint, osp.join(work_dir, 'cam_ablation'))


def score_checkpoint(args, config: str, checkpoint: str, out_root: str) -> dict:
    """``{split: {method: {variant: figures}}}`` of one classifier checkpoint, with the
    masks kept under ``out_root/<preset>/<method>/<variant>``. ``args`` needs
    ``data_root``, ``device``, ``splits``, ``methods``, ``variants``, ``preset`` and
    ``batch_size``."""
    cfg = Config.fromfile(config)
    if args.data_root:
        cfg.merge_from_dict({f'{loader}.dataset.data_root': args.data_root
                             for loader in ('train_dataloader', 'test_dataloader')})
    model = MODELS.build(cfg.model)
    load_classifier_checkpoint(model, checkpoint)
    model.to(args.device).eval()
    datasets = {split: DATASETS.build(generation_dataset_cfg(cfg, split))
                for split in args.splits}
    results = {split: {} for split in args.splits}
    cam_cache = {}  # raw CAMs and scores of each input batch, shared by the variants
    for method in args.methods:
        for variant in args.variants:
            out_dir = osp.join(out_root, args.preset, method, variant)
            summaries = generate_cams(model, datasets, out_dir,
                                      postprocess_of(args.preset, variant), method=method,
                                      batch_size=args.batch_size, cam_cache=cam_cache)
            for split, summary in summaries.items():
                ungated, gated = summary['ungated'], summary['gated']
                results[split].setdefault(method, {})[variant] = dict(
                    dice=ungated['dice'], iou=ungated['iou'], fp_area=ungated['fp_area'],
                    gated_fp_area=gated['fp_area'], gated_dice=gated['dice'])
    return results


def mean_sd(values: list) -> str:
    """``mean ± sd`` in %, over the runs that have the figure."""
    values = [v for v in values if v is not None]
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{100 * values[0]:.2f}'
    return f'{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}'


def print_tables(args, runs: dict) -> None:
    """One markdown table per split: method x variant rows, mean ± sd over the runs."""
    for split in args.splits:
        print(f'\n{split} split, {len(runs)} run(s), preset {args.preset}; mean ± sd, %:\n')
        print('| method | post-processing | ' + ' | '.join(t for _, t in COLUMNS) + ' |')
        print('|---|---|' + '---|' * len(COLUMNS))
        for method in args.methods:
            for variant in args.variants:
                figures = [run[split][method][variant] for run in runs.values()]
                cells = [mean_sd([f[key] for f in figures]) for key, _ in COLUMNS]
                print(f'| {method} | {variant} | ' + ' | '.join(cells) + ' |')


def main() -> None:
    args = parse_args()
    command = 'python ' + ' '.join(shlex.quote(a) for a in sys.argv)
    print(f'Reproduce with:\n  {command}')
    register_all_modules(init_default_scope=True)
    runs = {work_dir: score_run(args, work_dir) for work_dir in args.work_dirs}
    results_file = args.results or osp.join(args.work_dirs[0], 'cam_ablation', 'results.json')
    os.makedirs(osp.dirname(osp.abspath(results_file)), exist_ok=True)
    with atomic_write(results_file, suffix='.json') as tmp, open(tmp, 'w') as f:
        json.dump(dict(command=command, preset=args.preset, runs=runs), f, indent=2)
    print_tables(args, runs)
    print(f'\nPer-run figures: {results_file}\nReproduce with:\n  {command}')


if __name__ == '__main__':
    main()
