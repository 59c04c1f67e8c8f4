"""Inference prompt modes (paper Table 4) on trained decoders, mean ± sd over seeds.

Given finished pipeline runs (one per seed, e.g. the ``<variant>_seed<k>`` folders of
``benchmarks/sam_stages_seeds.py``), this re-scores one of their decoders (default
``decoder_r0``) on val and test under each inference point source of ``PEPMPromptSampler``
(:data:`~mmseg_epsam.models.prompt_samplers.pepm_prompt_sampler.POINT_SOURCES`):

- ``patch_uniform``: random points over the whole patch;
- ``mask_uniform``: uniform inside the initial mask (no PEPM);
- ``pepm``: ∝ CAM inside the initial mask (the reference's PEPM);
- ``pepm_whole_map``: ∝ CAM over the whole patch (the paper's Eq. 4 read literally);
- ``ground_truth``: uniform inside the ground-truth mask (ORACLE: uses pixel labels).

``decoder_r0`` trains on the initial masks with points uniform inside each target, whatever the
inference source, so its rows are exactly what an r0-only run with that source gives. Later
rounds train on pseudo-labels made with the run's own source, so their rows answer "this
decoder, prompted otherwise", not "a run with that source". Point counts and box prompts
change training too and are variants of ``sam_stages_seeds.py``.

Scores go to ``<run>/prompt_modes/<decoder>_<source>_<split>_gated/``; a run's pipeline
config (``<run>/pipeline_config.py``, recorded by ``tools/run_pipeline.py``) gives every other
setting. Run::

    python benchmarks/prompt_modes.py work_dirs/sam_seeds/points_seed0 \
        work_dirs/sam_seeds/points_seed1 work_dirs/sam_seeds/points_seed2 [--decoder decoder_r0]
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

import numpy as np
from mmengine.config import Config

import mmseg_epsam  # noqa: F401  (registers the plugin)
from mmseg.utils import register_all_modules
from mmseg_epsam.apis import EPSAMPipeline
from mmseg_epsam.models.prompt_samplers.pepm_prompt_sampler import POINT_SOURCES
from mmseg_epsam.utils import atomic_write

COLUMNS = (('Dice', 'Dice'), ('IoU', 'IoU'), ('neg_fp_area', 'FP area on negatives'),
           ('tumour_Dice', 'tumour Dice (dataset level)'))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', help='finished pipeline work dirs (one per seed)')
    parser.add_argument('--decoder', default='decoder_r0', help='decoder stage to re-score')
    parser.add_argument('--sources', nargs='+', default=list(POINT_SOURCES),
                        choices=POINT_SOURCES)
    parser.add_argument('--splits', nargs='+', default=['val', 'test'])
    parser.add_argument('--results', help='JSON file (default: <first run>/prompt_modes.json)')
    return parser.parse_args()


def score_run(run_dir: str, decoder: str, sources: list, splits: list) -> dict:
    """``{source: {split: metrics}}`` of one run's ``decoder``, classifier gate on."""
    config_file = osp.join(run_dir, 'pipeline_config.py')
    if not osp.isfile(config_file):
        sys.exit(f'{run_dir}: no pipeline_config.py (not a tools/run_pipeline.py work dir)')
    results = {}
    for source in sources:
        cfg = Config.fromfile(config_file)
        cfg.merge_from_dict({'decoder.cfg_options.model.prompt_head.point_source': source})
        cfg.work_dir = osp.abspath(run_dir)
        pipeline = EPSAMPipeline(cfg, config_file)
        record = pipeline.stage_record(decoder)
        if record is None:
            sys.exit(f'{run_dir}: stage {decoder} is not finished')
        results[source] = {
            split: pipeline.score_decoder(
                osp.join('prompt_modes', f'{decoder}_{source}_{split}_gated'),
                record['checkpoint'], split, gated=True)
            for split in splits}
    return results


def mean_sd(values: list) -> str:
    """``mean ± sd`` (sd over the runs; none for one run)."""
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}'


def print_tables(runs: dict, sources: list, splits: list, decoder: str) -> None:
    """One markdown table per split: a row per point source, mean ± sd over the runs."""
    for split in splits:
        print(f'\n{decoder}, {split} split, classifier gate on, {len(runs)} run(s); %:\n')
        print('| point source | ' + ' | '.join(t for _, t in COLUMNS) + ' |')
        print('|---|' + '---|' * len(COLUMNS))
        for source in sources:
            cells = [mean_sd([run[source][split].get(key) for run in runs.values()])
                     for key, _ in COLUMNS]
            label = f'{source} (oracle)' if source == 'ground_truth' else source
            print(f'| {label} | ' + ' | '.join(cells) + ' |')


def main() -> None:
    args = parse_args()
    command = 'python ' + ' '.join([osp.relpath(__file__)] + sys.argv[1:])
    print(f'Reproduce with:\n  {command}', flush=True)
    register_all_modules(init_default_scope=True)
    runs = {run: score_run(run, args.decoder, args.sources, args.splits) for run in args.runs}
    results_file = args.results or osp.join(args.runs[0], 'prompt_modes.json')
    with atomic_write(results_file, suffix='.json') as tmp, open(tmp, 'w') as f:
        json.dump(dict(command=command, decoder=args.decoder, runs=runs), f, indent=2)
    print_tables(runs, args.sources, args.splits, args.decoder)
    print(f'\nPer-run figures: {results_file}\nReproduce with:\n  {command}')


if __name__ == '__main__':
    main()
