"""Peak GPU memory of each EP-SAM training stage (batch 16, 512x512, AMP on by default).

For each stage config the model is built from its ``model`` section, wrapped in MMEngine's
``AmpOptimWrapper`` (float16 autocast and dynamic loss scaling) around the config's own
optimizer, and trained for ``--steps`` steps through ``model.train_step`` (the runner's
path: data preprocessor, loss, backward, optimizer step) on a synthetic batch: H&E-like
noise, half the patches positive with a tumour square as their mask. The figure is
``torch.cuda.max_memory_allocated`` over those steps (the allocator's reserved peak is
printed beside it). The paper reports needing 12 GB; the goal is at most 4 GB per stage.

The SAM decoder stages run without the embedding cache, so the frozen image encoder runs
(without gradients) in every step: the upper bound of a cached run. Weights are random
(memory does not depend on them). On a CPU (``--device cpu``) AMP is off and no memory is
measured: that only checks the code path (e.g. ``--batch-size 2 --size 128``)::

    python benchmarks/bench_training_memory.py [--device cuda] [--batch-size 16] [--size 512]
        [--steps 3] [--stages NAME=CONFIG ...] [--no-amp]
"""
from __future__ import annotations

import argparse
import copy
import os.path as osp
import sys
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData

import mmseg_epsam  # noqa: F401  (registers the plugin)
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The training stages of the pipeline: the classifier, and the SAM decoder (preliminary
#: round and every pseudo-label round train the same model) with each image encoder.
DEFAULT_STAGES = {
    'classifier': 'configs/epsam/classifier_camelyon16.py',
    'decoder (SAM ViT-B)': 'configs/epsam/sam_decoder_camelyon.py',
    'decoder (LiteMedSAM)': 'configs/epsam/sam_decoder_camelyon_litemedsam.py',
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--size', type=int, default=512, help='patch side in pixels')
    parser.add_argument('--steps', type=int, default=3, help='training steps per stage')
    parser.add_argument('--stages', nargs='+', metavar='NAME=CONFIG',
                        help='stage configs (default: the classifier and the SAM decoder '
                             'configs for Camelyon that exist)')
    parser.add_argument('--no-amp', action='store_true', help='float32 training')
    return parser.parse_args()


def synthetic_batch(batch_size: int, size: int, seed: int = 0) -> dict:
    """Raw data as the dataloader gives it: uint8 CHW images and data samples with the
    image label and, for positives, a tumour square as ``gt_sem_seg``."""
    rng = np.random.default_rng(seed)
    inputs, samples = [], []
    for i in range(batch_size):
        image = np.clip(np.array([200, 120, 190])[:, None, None]
                        + rng.normal(0, 40, (3, size, size)), 0, 255).astype(np.uint8)
        label = i % 2
        mask = np.zeros((1, size, size), np.int64)
        if label:
            mask[:, size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
        sample = SegDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
            img_label=label, patch_name=f'synthetic_{i}'))
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(mask))
        inputs.append(torch.from_numpy(image))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def stage_model_and_optimizer(config: str, device: str, amp: bool):
    """The stage's model (random weights, no embedding cache) and its optimizer wrapper."""
    cfg = Config.fromfile(config)
    model_cfg = copy.deepcopy(cfg.model)
    if 'embedding_cache' in model_cfg:
        model_cfg.embedding_cache = None
    if model_cfg.get('checkpoint'):
        model_cfg.checkpoint = None
    model = MODELS.build(model_cfg).to(device)
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg['type'] = 'AmpOptimWrapper' if amp else 'OptimWrapper'
    return model, build_optim_wrapper(model, optim_cfg)


def measure(config: str, args: argparse.Namespace, amp: bool) -> dict:
    """Train ``args.steps`` steps of one stage; return its peak memory and step time."""
    model, optim_wrapper = stage_model_and_optimizer(config, args.device, amp)
    model.train()
    batch = synthetic_batch(args.batch_size, args.size)
    cuda = args.device.startswith('cuda')
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        losses = model.train_step(copy.deepcopy(batch), optim_wrapper)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    result = dict(step_s=seconds, loss=float(losses['loss'].detach()))
    if cuda:
        result.update(allocated_gib=torch.cuda.max_memory_allocated() / 2 ** 30,
                      reserved_gib=torch.cuda.max_memory_reserved() / 2 ** 30)
    del model, optim_wrapper
    if cuda:
        torch.cuda.empty_cache()
    return result


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=True)
    if args.stages:
        stages = dict(item.split('=', 1) for item in args.stages)
    else:
        stages = {name: path for name, path in DEFAULT_STAGES.items()
                  if osp.isfile(osp.join(ROOT, path))}
    amp = not args.no_amp and args.device.startswith('cuda')
    device_name = (torch.cuda.get_device_name() if args.device.startswith('cuda')
                   else f'CPU, {torch.get_num_threads()} threads')
    print(f'device: {device_name}; batch {args.batch_size}, {args.size}x{args.size}, '
          f'AMP {"on (float16)" if amp else "off"}, {args.steps} steps per stage')
    rows = []
    for name, config in stages.items():
        path = config if osp.isabs(config) else osp.join(ROOT, config)
        rows.append((name, config, measure(path, args, amp)))
        print(f'  {name}: {rows[-1][2]}', flush=True)
    print('\n| stage | config | peak allocated (GiB) | peak reserved (GiB) | s / step |')
    print('|---|---|---|---|---|')
    for name, config, result in rows:
        allocated = result.get('allocated_gib')
        reserved = result.get('reserved_gib')
        print(f'| {name} | `{config}` | '
              f'{"n/a" if allocated is None else f"{allocated:.2f}"} | '
              f'{"n/a" if reserved is None else f"{reserved:.2f}"} | {result["step_s"]:.3f} |')
    print('\ncommand: python benchmarks/bench_training_memory.py ' + ' '.join(sys.argv[1:]))


if __name__ == '__main__':
    main()
