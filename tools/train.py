# Copyright (c) OpenMMLab. All rights reserved.
# Adapted from MMSegmentation 1.2.2 tools/train.py (Apache-2.0) for mmseg-epsam: imports the
# plugin, uses EPSAMRunner so --resume works under torch >= 2.6.
"""Train a model from a config: ``python tools/train.py CONFIG [--work-dir DIR] [--resume]``."""
import argparse
import logging
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.logging import print_log

import mmseg_epsam  # noqa: F401  (registers the plugin; Runner.from_cfg skips custom_imports)
from mmseg.utils import register_all_modules
from mmseg_epsam.engine import build_runner
from mmseg_epsam.utils.tool_config import load_tool_config


def parse_args() -> argparse.Namespace:
    """Command-line arguments, as in MMSegmentation's tools/train.py."""
    parser = argparse.ArgumentParser(description='Train a segmentor or patch classifier')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=True)

    cfg = load_tool_config(args)

    if args.amp is True:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.',
                      logger='current', level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    cfg.resume = args.resume
    runner = build_runner(cfg)
    runner.train()
    print_log(f'Checkpoints and logs are in {osp.abspath(cfg.work_dir)}', logger='current')


if __name__ == '__main__':
    main()
