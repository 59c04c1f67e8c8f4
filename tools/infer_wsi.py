"""Whole-slide EP-SAM inference with QuPath-ready outputs.

    python tools/infer_wsi.py PIPELINE_CONFIG PIPELINE_WORK_DIR SLIDE [SLIDE ...] --out DIR
        [--level 0] [--tile-size 512] [--overlap 64] [--batch-size 4] [--output-factor 4]
        [--mpp MPP] [--classifier-checkpoint P --decoder-checkpoint P] [--sam-checkpoint P]
        [--classifier-gate G] [--device cpu|cuda] [--overwrite] [--launcher none|pytorch]

e.g. after ``python tools/run_pipeline.py configs/epsam/epsam_demo.py``::

    python tools/infer_wsi.py configs/epsam/epsam_demo.py work_dirs/epsam_demo \
        slide1.svs slide2.tif --out work_dirs/wsi

The classifier and the final SAM decoder come from the pipeline run in PIPELINE_WORK_DIR
(or the given checkpoints), with the settings that run used: its recorded
``PIPELINE_WORK_DIR/pipeline_config.py`` (command-line options included) replaces
PIPELINE_CONFIG unless ``--use-given-config``. Per slide, under ``DIR/<slide name>/``: ``*_mask.tif`` and
``*_probability.tif`` (pyramidal TIFFs with µm/px), ``*_tumour.geojson`` (QuPath: File >
Import objects), ``*_thumbnail.png``, ``*_summary.json`` and the tile checkpoint
``*_tiles.sqlite`` (rerunning resumes from it). A slide that fails (unreadable, no µm/px and
no ``--mpp``) is reported and the others continue; the exit status is 1 when any failed.
Many slides on many GPUs: ``tools/dist_infer_wsi.sh`` runs this under ``torchrun``, one
rank per GPU, each inferring its share of the slides. See
:mod:`mmseg_epsam.apis.wsi_inference` for the tiling, seam-blending and resolution rules.
"""
import argparse
import os
import os.path as osp
import sys
import time
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.logging import MMLogger

import mmseg_epsam  # noqa: F401  (registers the plugin; configs' custom_imports are not run)
from mmseg.utils import register_all_modules
from mmseg_epsam.apis.tile_predictor import build_epsam_tile_predictor
from mmseg_epsam.apis.wsi_inference import WSIInferencer, WSIInferenceSettings
from mmseg_epsam.apis.pipeline import RECORDED_CONFIG


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    defaults = WSIInferenceSettings()
    parser = argparse.ArgumentParser(
        description='EP-SAM whole-slide inference: tumour mask TIFF, QuPath GeoJSON, summary')
    parser.add_argument('config', help='pipeline config, e.g. configs/epsam/epsam_demo.py')
    parser.add_argument('work_dir', help='work dir of the pipeline run (trained models)')
    parser.add_argument('slides', nargs='+', help='slide files (any format OpenSlide reads)')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--level', type=int, default=defaults.level,
                        help='pyramid level the tiles are read from (default 0)')
    parser.add_argument('--tile-size', type=int, default=defaults.tile_size,
                        help='tile side in pixels of that level (default 512)')
    parser.add_argument('--overlap', type=int, default=defaults.overlap,
                        help='pixels shared by neighbouring tiles; seams are blended over it '
                             '(default 64; a multiple of the output factor)')
    parser.add_argument('--batch-size', type=int, default=defaults.batch_size,
                        help='tiles per forward pass (default 4)')
    parser.add_argument('--output-factor', type=int, default=defaults.output_factor,
                        help='tiling-level pixels per pixel of the stitched map (power of two, '
                             'default 4; doubled for very large slides)')
    parser.add_argument('--mpp', type=float,
                        help='µm/px for slides that do not record it (slides that do keep '
                             'their own)')
    parser.add_argument('--min-tissue', type=float, default=defaults.min_tissue_fraction,
                        help='least tissue fraction of a processed tile (default 0.02)')
    parser.add_argument('--classifier-checkpoint',
                        help='default: the pipeline run\'s classifier stage checkpoint')
    parser.add_argument('--decoder-checkpoint',
                        help='default: the decoder of the pipeline run\'s last trained round')
    parser.add_argument('--sam-checkpoint', help="Meta's sam_vit_*.pth (never downloaded)")
    parser.add_argument('--classifier-gate', type=float,
                        help='override the decoder config\'s classifier gate (0: no gate)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--use-given-config', action='store_true',
                        help="use CONFIG even where the run recorded its own settings "
                             "(<work_dir>/pipeline_config.py)")
    parser.add_argument('--overwrite', action='store_true',
                        help='discard checkpointed tiles and outputs of earlier runs')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='pytorch: one rank of a torchrun job; the slides are shared out '
                             'among the ranks (tools/dist_infer_wsi.sh)')
    return parser.parse_args(argv)


def init_distributed(device: str) -> str:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPUs); return the device
    this rank uses (``cuda:LOCAL_RANK`` when ``device`` is CUDA)."""
    if device.startswith('cuda'):
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        torch.cuda.set_device(local_rank)
        device = f'cuda:{local_rank}'
        backend = 'nccl'
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend)
    return device


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the slides; return the exit status (0: every slide written, 1: some failed)."""
    args = parse_args(argv)
    register_all_modules(init_default_scope=True)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime('%Y%m%d_%H%M%S')
    distributed = args.launcher == 'pytorch'
    if distributed:
        args.device = init_distributed(args.device)
    # Under torchrun every rank keeps its own log (MMLogger adds device and rank to the name).
    logger = MMLogger.get_instance(f'infer_wsi:{osp.abspath(args.out)}:{stamp}',
                                   log_file=osp.join(args.out, f'infer_wsi_{stamp}.log'),
                                   log_level='INFO', distributed=distributed)
    log_file = logger.log_file
    settings = WSIInferenceSettings(level=args.level, tile_size=args.tile_size,
                                    overlap=args.overlap, batch_size=args.batch_size,
                                    output_factor=args.output_factor,
                                    min_tissue_fraction=args.min_tissue)
    config = args.config
    recorded = osp.join(args.work_dir, RECORDED_CONFIG)
    if osp.isfile(recorded) and not args.use_given_config:
        logger.info(f'Using the settings the run recorded, {recorded}, instead of '
                    f'{args.config} (--use-given-config to keep it)')
        config = recorded
    predictor = build_epsam_tile_predictor(
        config, args.work_dir, classifier_checkpoint=args.classifier_checkpoint,
        decoder_checkpoint=args.decoder_checkpoint, sam_checkpoint=args.sam_checkpoint,
        classifier_gate=args.classifier_gate, device=args.device)
    description = predictor.describe()
    logger.info(f'Classifier {description["checkpoints"]["classifier"]["path"]}; SAM: '
                f'{description["sam_model"]}, with the weights of the decoder checkpoint '
                f'{description["checkpoints"]["decoder"]["path"]}, on {args.device}')
    inferencer = WSIInferencer(predictor, settings, logger=logger)
    try:
        results = inferencer.infer_sharded(args.slides, args.out, mpp=args.mpp,
                                           overwrite=args.overwrite)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    lines = ['', f'{"slide":<48} result']
    for result in results:
        outcome = result['status'] if result['ok'] else f'FAILED: {result["error"]}'
        lines.append(f'{result["slide"]:<48} {outcome}')
    failed = sum(not r['ok'] for r in results)
    lines.append(f'{len(results) - failed} of {len(results)} slides written to {args.out} '
                 f'(run_summary.json, log {log_file})' + (f'; {failed} FAILED' if failed else ''))
    logger.info('\n'.join(lines))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
