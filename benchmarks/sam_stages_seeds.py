"""EP-SAM's SAM stages over seeds and prompt variants, on one fixed stage 1.

Given a pipeline work dir whose ``classifier`` and ``cams`` stages are finished (e.g.
``work_dirs/epsam_demo`` after ``tools/run_pipeline.py configs/epsam/epsam_demo.py --until
cams``), runs the decoder rounds and the test stage for each variant and seed in
``<out>/<variant>_seed<k>/`` (stage 1 and the embedding cache are shared by symbolic links),
then prints mean ± sd over the seeds of every row of the paper's Tables 5-6: the zero-shot
SAM, each decoder round and the final decoder, on val and test, Dice on positives beside the
FP area on negatives, gated and ungated, with the initial masks they started from.

Variants are named sets of ``--cfg-options`` of the pipeline config (``VARIANTS``); choose
between them on ``val``, never on ``test``.

Run: ``python benchmarks/sam_stages_seeds.py work_dirs/epsam_demo --out work_dirs/sam_seeds
--variants points box box+points --seeds 0 1 2``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np

from mmseg_epsam.utils.layout import STAGE1_FOLDER

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: Prompt and loss variants: ``--cfg-options`` of the pipeline config.
VARIANTS: dict[str, list[str]] = {
    'points': [],  # the paper: 50 PEPM points
    'box': ['decoder.cfg_options.model.prompt_head.prompt_kind=box'],
    'box+points': ['decoder.cfg_options.model.prompt_head.prompt_kind=box+points'],
    'points+neg': ['decoder.cfg_options.model.prompt_head.num_negative_points=10'],
    'box+points+neg': ['decoder.cfg_options.model.prompt_head.prompt_kind=box+points',
                       'decoder.cfg_options.model.prompt_head.num_negative_points=10'],
    # beyond the paper: the negative training patches train too, with empty targets, and a
    # BCE term (soft Dice alone saturates to all-empty masks with negatives in the batch)
    'negpatches+bce': [
        'decoder.cfg_options.train_dataloader.dataset.negative_patches=empty_target',
        'decoder.cfg_options.model.bce_weight=1.0'],
    'points+bce': ['decoder.cfg_options.model.bce_weight=1.0'],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('stage1_work_dir', help='pipeline work dir with classifier and cams done')
    parser.add_argument('--config', default='configs/epsam/epsam_demo.py')
    parser.add_argument('--out', default='work_dirs/sam_seeds')
    parser.add_argument('--variants', nargs='+', default=['points', 'box', 'box+points'],
                        choices=sorted(VARIANTS))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--cfg-options', nargs='*', default=[],
                        help='extra pipeline --cfg-options for every run')
    return parser.parse_args()


def link_stage1(source: str, work_dir: str) -> None:
    """Share the finished stage 1 and the embedding cache of ``source`` with ``work_dir``."""
    os.makedirs(work_dir, exist_ok=True)
    os.makedirs(osp.join(source, 'embedding_cache'), exist_ok=True)
    for name in ('classifier', 'cams', STAGE1_FOLDER, 'embedding_cache'):
        link = osp.join(work_dir, name)
        if not osp.lexists(link) and osp.exists(osp.join(source, name)):
            os.symlink(osp.abspath(osp.join(source, name)), link)


def run(args: argparse.Namespace, variant: str, seed: int) -> dict:
    """Run (or resume) one variant and seed; return its summary.json."""
    work_dir = osp.join(args.out, f'{variant}_seed{seed}')
    link_stage1(args.stage1_work_dir, work_dir)
    options = VARIANTS[variant] + [
        f'decoder.cfg_options.randomness.seed={seed}',
        f'decoder.cfg_options.model.prompt_head.seed={seed}',
        f'decoder.cfg_options.model.train_cfg.seed={seed}'] + list(args.cfg_options)
    command = [sys.executable, 'tools/run_pipeline.py', args.config, '--work-dir', work_dir,
               '--cfg-options', *options]
    print('$ ' + ' '.join(command), flush=True)
    with open(osp.join(work_dir, 'run.log'), 'a') as log:
        subprocess.run(command, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(osp.join(work_dir, 'summary.json')) as f:
        return json.load(f)


def _stat(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return '   -   '
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f'{np.mean(values):6.2f} ± {sd:5.2f}'


def table(summaries: dict[str, list[dict]]) -> list[str]:
    """Rows of mean ± sd over seeds per variant."""
    lines = []
    first = next(iter(summaries.values()))[0]
    for split in ('val', 'test'):
        cams = (first.get('cams') or {}).get(split) or {}
        for gate in ('gated', 'ungated'):
            if gate in cams:
                lines.append(f"initial masks (CAM), {split:<4}, {gate:<8}  Dice "
                             f"{100 * cams[gate]['dice']:6.2f}  FP {100 * cams[gate]['fp_area']:6.2f}")
    lines.append(f"{'variant':<16}{'decoder':<12}{'split':<6}{'Dice gated':>17}{'FP gated':>17}"
                 f"{'Dice no gate':>17}{'FP no gate':>17}{'tumour Dice gated':>19}")
    for variant, runs in summaries.items():
        keys = dict.fromkeys((r['decoder'], r['split']) for s in runs
                             for r in s.get('every_decoder') or [])
        for decoder, split in keys:
            cells = []
            for gated in (True, False):
                rows = [r for s in runs for r in s['every_decoder']
                        if (r['decoder'], r['split'], r['gated']) == (decoder, split, gated)]
                cells += [_stat([r['Dice'] for r in rows]), _stat([r['neg_fp_area'] for r in rows])]
            gated_rows = [r for s in runs for r in s['every_decoder']
                          if (r['decoder'], r['split'], r['gated']) == (decoder, split, True)]
            dataset_level = _stat([r.get('tumour_Dice') for r in gated_rows])
            lines.append(f'{variant:<16}{decoder:<12}{split:<6}'
                         + ''.join(f'{c:>17}' for c in cells) + f'{dataset_level:>19}')
        for k, row in enumerate(runs[0].get('rounds') or []):
            if 'kept' in row:
                kept = [s['rounds'][k].get('kept') for s in runs]
                lines.append(f"{variant:<16}{row['what']:<44}Dice "
                             f"{_stat([100 * s['rounds'][k]['dice'] for s in runs])}  kept {kept}")
    return lines


def main() -> None:
    args = parse_args()
    summaries = {variant: [run(args, variant, seed) for seed in args.seeds]
                 for variant in args.variants}
    lines = table(summaries)
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'sam_stages_seeds.json'), 'w') as f:
        json.dump(summaries, f, indent=2, default=str)
    print('\n'.join(lines))
    print('command: python ' + ' '.join([osp.relpath(__file__, ROOT)] + sys.argv[1:]))


if __name__ == '__main__':
    main()
