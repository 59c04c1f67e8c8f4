# Copyright (c) OpenMMLab. All rights reserved.
# Adapted from MMSegmentation 1.2.2 tools/test.py (Apache-2.0) for mmseg-epsam: imports the
# plugin, uses EPSAMRunner so MMEngine checkpoints load under torch >= 2.6.
"""Test a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--out DIR] [--show-dir DIR]``."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

import mmseg_epsam  # noqa: F401  (registers the plugin; Runner.from_cfg skips custom_imports)
from mmseg.utils import register_all_modules
from mmseg_epsam.engine import build_runner
from mmseg_epsam.utils.tool_config import load_tool_config


def parse_args() -> argparse.Namespace:
    """Command-line arguments, as in MMSegmentation's tools/test.py."""
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='directory for logs and metric files')
    parser.add_argument(
        '--out',
        type=str,
        help='directory to save predicted masks (PNG, 0/1) for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir', help='directory where painted images will be saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
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
    parser.add_argument('--tta', action='store_true', help='Test time augmentation')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg: Config, args: argparse.Namespace) -> Config:
    """Switch the config's SegVisualizationHook on for --show / --show-dir."""
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks: refer to '
            "`visualization=dict(type='SegVisualizationHook')`")
    visualization_hook = default_hooks['visualization']
    visualization_hook['draw'] = True
    if args.show:
        visualization_hook['show'] = True
        visualization_hook['wait_time'] = args.wait_time
    if args.show_dir:
        visualizer = cfg.visualizer
        visualizer['save_dir'] = args.show_dir
    return cfg


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=True)

    cfg = load_tool_config(args)

    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    runner = build_runner(cfg)
    runner.test()
    if args.out is not None:
        print(f'Predicted masks written to {osp.abspath(args.out)}')


if __name__ == '__main__':
    main()
