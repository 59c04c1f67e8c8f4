"""Generate EP-SAM's stage-1 outputs from a trained patch classifier.

    python tools/generate_cams.py CONFIG CHECKPOINT [--splits train val test]
        [--out-dir DIR] [--preset camelyon16] [--method cam] [--views-per-forward 4] [--show]
        [--postprocess rotate_fuse=False opening_size="(1,1)" ...]
        [--mask-values 0,1] [--cfg-options KEY=VALUE ...]

For each patch of each split (train: positive patches; val/test: all, scored against GT) it
writes the fused CAM (float16 .npy), the initial mask (PNG 0/1) and a manifest row, resuming
where an earlier run stopped; see :mod:`mmseg_epsam.engine.cam_generation`. ``--method``
picks the paper's CAM or GradCAM / GradCAM++ / EigenCAM (paper Table 3); ``--postprocess``
overrides any field of the preset (e.g. ``rotate_fuse=False``, ``quantile=None
fixed_threshold=0.5``, ``opening_size="(1,1)"``: each post-processing step on or off). A
checkpoint trained with another model config (MMEngine keeps it in the checkpoint's ``meta``)
is refused, listing the keys that differ.
"""
import argparse
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

import mmseg_epsam  # noqa: F401  (registers the plugin; configs' custom_imports are not run)
from mmseg.registry import DATASETS, MODELS
from mmseg_epsam.datasets.masks import parse_mask_values
from mmseg_epsam.engine.cam_generation import (DEFAULT_GATE_THRESHOLD, generate_cams,
                                               generation_dataset_cfg,
                                               load_classifier_checkpoint)
from mmseg_epsam.functional.cam import CAM_POSTPROCESS_PRESETS, cam_postprocess
from mmseg_epsam.models.classifiers import CAM_METHODS
from mmseg_epsam.utils.checkpoint import checkpoint_config_differences, load_from_trusted_local
from mmseg_epsam.utils.layout import stage1_dir_of


def parse_args() -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        description='Fused CAMs, initial masks and manifests from a patch classifier')
    parser.add_argument('config', help='classifier config file')
    parser.add_argument('checkpoint', help='MMEngine checkpoint of that classifier')
    parser.add_argument('--splits', nargs='+', default=['train'],
                        help='splits to process (default: train)')
    parser.add_argument('--out-dir', help='output root (default: <work_dir>/stage1)')
    parser.add_argument('--preset', default='camelyon16', choices=sorted(CAM_POSTPROCESS_PRESETS),
                        help='CAM post-processing preset')
    parser.add_argument('--method', default='cam', choices=CAM_METHODS,
                        help="CAM method: 'cam' (the paper's) or the grad-cam package's")
    parser.add_argument('--postprocess', nargs='+', action=DictAction, default={},
                        help='override preset fields, KEY=VALUE (docs/cam_presets.md)')
    parser.add_argument('--quantile', type=float, help='override the preset quantile')
    parser.add_argument('--opening-size', type=int, nargs=2, metavar=('KH', 'KW'),
                        help='override the preset opening kernel (odd sides)')
    parser.add_argument('--views-per-forward', type=int, default=4, choices=(1, 2, 4),
                        help='rotated views per forward pass')
    parser.add_argument('--batch-size', type=int, default=4, help='patches per batch')
    parser.add_argument('--num-workers', type=int, default=2, help='data-loading workers')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--show', action='store_true',
                        help='also write image | CAM | initial mask | GT pictures')
    parser.add_argument('--no-eval', action='store_true', help='skip scoring against GT')
    parser.add_argument('--gate-threshold', type=float, default=DEFAULT_GATE_THRESHOLD,
                        help='classifier probability below which the gated mask is empty')
    parser.add_argument('--overwrite', action='store_true',
                        help='regenerate outputs made with other settings or another model')
    parser.add_argument('--mask-values', type=parse_mask_values, default=(0, 1),
                        metavar='BG,TUMOUR',
                        help='values of the ground-truth mask files, e.g. 0,255 (default 0,1)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, KEY=VALUE')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    work_dir = cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    out_dir = args.out_dir or stage1_dir_of(work_dir)
    logger = MMLogger.get_instance('generate_cams')

    overrides = {}
    for key, value in args.postprocess.items():  # 'crf.iterations=5' sets a CRF field
        field, _, subfield = key.partition('.')
        if subfield:
            overrides.setdefault(field, {})[subfield] = value
        else:
            overrides[field] = value
    if args.quantile is not None:
        overrides['quantile'] = args.quantile
    if args.opening_size is not None:
        overrides['opening_size'] = tuple(args.opening_size)
    postprocess = cam_postprocess(args.preset, **overrides)

    model = MODELS.build(cfg.model)
    if not hasattr(model, 'compute_cam'):
        raise TypeError(f'{args.config}: model {type(model).__name__} has no compute_cam; '
                        f'use a patch classifier config (EPSAMPatchClassifier)')
    differences = checkpoint_config_differences(
        load_from_trusted_local(args.checkpoint, map_location='cpu'), cfg)
    if differences:
        raise SystemExit(f'{args.checkpoint} was trained with another model than {args.config} '
                         '(checkpoint -> config):\n  ' + '\n  '.join(differences))
    load_classifier_checkpoint(model, args.checkpoint)
    model.to(args.device).eval()
    logger.info(f'Loaded {args.checkpoint} into {type(model).__name__} on {args.device}')

    datasets = {split: DATASETS.build(dict(generation_dataset_cfg(cfg, split),
                                           mask_values=args.mask_values))
                for split in args.splits}
    summaries = generate_cams(model, datasets, out_dir, postprocess, method=args.method,
                              views_per_forward=args.views_per_forward,
                              batch_size=args.batch_size, num_workers=args.num_workers,
                              show=args.show, evaluate=not args.no_eval,
                              gate_threshold=args.gate_threshold, overwrite=args.overwrite)
    for split, summary in summaries.items():
        if summary is not None:
            logger.info(f'{split}: ungated {summary["ungated"]}, gated {summary["gated"]}')
    logger.info(f'Stage-1 outputs are in {osp.abspath(out_dir)}')


if __name__ == '__main__':
    main()
