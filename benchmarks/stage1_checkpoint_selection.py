"""Which stage-1 checkpoint to keep: the epoch each GT-free rule picks, and its initial masks.

The classifier is chosen without pixel labels, on its validation image-label figures
(``ImageLabelMetric``). This compares the rules on trained classifier runs (one work dir per
seed, trained with every epoch's checkpoint kept, e.g.
``--cfg-options default_hooks.checkpoint.max_keep_ckpts=-1``):

- ``saved_best``: the epoch of the run's own ``best_*.pth`` (the config's ``save_best``
  rule, applied by MMEngine to the exact figures);
- ``auc``: the highest validation ROC-AUC (ties: the earliest epoch, as MMEngine's
  ``save_best``);
- ``accuracy``: the highest validation accuracy at the 0.5 gate (ties: the earliest);
- ``last``: the last validated epoch.

``auc`` and ``accuracy`` are read from the MMEngine log. A figure whose name contains
``loss`` is logged there as a moving mean (``LogProcessor.mean_pattern``), which is why
``ImageLabelMetric`` names its log loss ``cross_entropy``.

For each epoch a rule picks, the initial masks of ``--splits`` are generated and scored as
in ``benchmarks/ablation_cam_methods.py`` (the CAM of the paper; ``--variants`` of
``--preset``): Dice on positives beside the FP area on negatives, ungated and behind the
classifier gate. Masks are kept under ``<work dir>/checkpoint_selection/epoch_<N>``; a rerun
reuses them. ::

    python benchmarks/stage1_checkpoint_selection.py WORK_DIR [WORK_DIR ...]
        [--rules saved_best auc accuracy last] [--variants full no_quantile]
        [--splits val test] [--results FILE.json]
"""
import argparse
import glob
import json
import os
import os.path as osp
import shlex
import sys
from typing import Dict, List

from mmseg.utils import register_all_modules

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from ablation_cam_methods import (COLUMNS, add_scoring_arguments, find_run,  # noqa: E402
                                  mean_sd, score_checkpoint)

from mmseg_epsam.utils import atomic_write  # noqa: E402

RULES = ('saved_best', 'auc', 'accuracy', 'last')


def parse_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description='Stage-1 checkpoint selection rules')
    parser.add_argument('work_dirs', nargs='+', help='trained classifier work dirs (seeds)')
    parser.add_argument('--rules', nargs='+', default=list(RULES), choices=RULES)
    add_scoring_arguments(parser, ['full', 'no_quantile'])
    parser.add_argument('--results', help='JSON file for the per-run figures (default: '
                        '<first work dir>/checkpoint_selection/results.json)')
    args = parser.parse_args()
    args.methods = ['cam']
    return args


def validation_history(work_dir: str) -> Dict[int, dict]:
    """``{epoch: {metric: value}}`` of the image-label validations MMEngine logged in the
    work dir's latest run (``<timestamp>/vis_data/scalars.json``)."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not logs:
        sys.exit(f'{work_dir}: no MMEngine log (*/vis_data/scalars.json) of a training run')
    history = {}
    with open(logs[-1]) as f:
        for line in f:
            record = json.loads(line)
            if 'img_label/auc' in record:
                history[int(record['step'])] = {
                    key.split('/', 1)[1]: value for key, value in record.items()
                    if key.startswith('img_label/')}
    if not history:
        sys.exit(f'{logs[-1]}: no validation with image-label figures (ImageLabelMetric)')
    return history


def select_epoch(work_dir: str, history: Dict[int, dict], rule: str) -> int:
    """The epoch ``rule`` keeps; ties go to the earliest epoch, as MMEngine's ``save_best``."""
    epochs = sorted(history)
    if rule == 'last':
        return epochs[-1]
    if rule == 'saved_best':
        best = glob.glob(osp.join(work_dir, 'best_*_epoch_*.pth'))
        if len(best) != 1:
            sys.exit(f'{work_dir}: expected one best_*_epoch_N.pth, found {best}')
        return int(best[0].rsplit('_', 1)[1][:-len('.pth')])
    return max(epochs, key=lambda e: (history[e][rule], -e))


def epoch_checkpoint(work_dir: str, epoch: int) -> str:
    """The checkpoint file of ``epoch`` in ``work_dir`` (``epoch_N.pth`` or a best file)."""
    candidates = [osp.join(work_dir, f'epoch_{epoch}.pth')] + sorted(
        glob.glob(osp.join(work_dir, f'best_*_epoch_{epoch}.pth')))
    for candidate in candidates:
        if osp.isfile(candidate):
            return candidate
    sys.exit(f'{work_dir}: no checkpoint of epoch {epoch} (epoch_{epoch}.pth); train with '
             'every checkpoint kept: --cfg-options default_hooks.checkpoint.max_keep_ckpts=-1')


def score_work_dir(args, work_dir: str) -> dict:
    """The validation history, each rule's epoch and each picked epoch's figures."""
    config, _ = find_run(work_dir)
    history = validation_history(work_dir)
    picked = {rule: select_epoch(work_dir, history, rule) for rule in args.rules}
    figures = {}
    for epoch in sorted(set(picked.values())):
        out_root = osp.join(work_dir, 'checkpoint_selection', f'epoch_{epoch}')
        figures[epoch] = score_checkpoint(args, config, epoch_checkpoint(work_dir, epoch),
                                          out_root)
    return dict(history=history, picked=picked, figures=figures)


def print_tables(args, runs: Dict[str, dict]) -> None:
    """Per rule: the epochs picked, then per split and variant the mean ± sd figures."""
    print(f'\n{len(runs)} run(s); validation figures per epoch:')
    for work_dir, run in runs.items():
        line = ', '.join(f'{e}: AUC {m["auc"]:.3f} / acc {m["accuracy"]:.3f}'
                         for e, m in sorted(run['history'].items()))
        print(f'  {work_dir}: {line}')
    for split in args.splits:
        print(f'\n{split} split, initial masks (CAM, preset {args.preset}); mean ± sd, %:\n')
        print('| rule | epochs | post-processing | ' + ' | '.join(t for _, t in COLUMNS) + ' |')
        print('|---|---|---|' + '---|' * len(COLUMNS))
        for rule in args.rules:
            epochs = [run['picked'][rule] for run in runs.values()]
            for variant in args.variants:
                rows: List[dict] = [run['figures'][run['picked'][rule]][split]['cam'][variant]
                                    for run in runs.values()]
                cells = [mean_sd([row[key] for row in rows]) for key, _ in COLUMNS]
                print(f'| {rule} | {", ".join(map(str, epochs))} | {variant} | '
                      + ' | '.join(cells) + ' |')


def main() -> None:
    args = parse_args()
    command = 'python ' + ' '.join(shlex.quote(a) for a in sys.argv)
    register_all_modules(init_default_scope=True)
    runs = {work_dir: score_work_dir(args, work_dir) for work_dir in args.work_dirs}
    results_file = args.results or osp.join(args.work_dirs[0], 'checkpoint_selection',
                                            'results.json')
    os.makedirs(osp.dirname(osp.abspath(results_file)), exist_ok=True)
    with atomic_write(results_file, suffix='.json') as tmp, open(tmp, 'w') as f:
        json.dump(dict(command=command, preset=args.preset, runs=runs), f, indent=2,
                  default=float)
    print_tables(args, runs)
    print(f'\nPer-run figures: {results_file}\nReproduce with:\n  {command}')


if __name__ == '__main__':
    main()
