"""Decoder fine-tuning and a pseudo-label round with vs without the image-embedding cache.

SAM ViT-B architecture with random weights (no checkpoint needed; ``--arch litemedsam`` uses
LiteMedSAM with its packaged weights), 512x512 synthetic
patches, 50 point prompts, AdamW on the mask decoder. Measured in one run:

- one epoch of decoder training re-encoding every image every step (the reference) versus
  from a warm embedding cache, and their ratio;
- one pseudo-label round (PEPM prompts -> SAM -> IDS) likewise;
- the one-off cost of filling the cache;
- peak memory of each training epoch (CPU: peak RSS of the process, reset before each
  phase; CUDA: ``max_memory_allocated``);
- trained versus frozen parameter counts.

Run: ``python benchmarks/bench_decoder_cache.py`` (about 4 min on 2 CPU cores:
every re-encoding of a 1024x1024 image by ViT-B takes ~14 s there).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from mmengine.structures import PixelData

from mmseg.structures import SegDataSample
from mmseg_epsam.cache import EmbeddingCache
from mmseg_epsam.functional.ids import ids_select
from mmseg_epsam.models.sam_encoders import (ENCODER_NAMES, LITEMEDSAM_CHECKPOINT,
                                             image_encoder_by_name)
from mmseg_epsam.models.segmentors import SAMDecoderSegmentor


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='vit_b', choices=ENCODER_NAMES,
                        help='SAM image encoder (Meta ViTs with random weights; litemedsam '
                             'with its packaged weights)')
    parser.add_argument('--images', type=int, default=4, help='patches per epoch')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--size', type=int, default=512, help='patch size in pixels')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s choice); on a shared, busy '
                             'machine 1 thread avoids OpenMP spin-waiting')
    parser.add_argument('--cache-dir', default=None,
                        help='embedding cache folder (default: a temporary folder)')
    return parser.parse_args()


def make_batches(count: int, size: int, batch_size: int, device: str, seed: int = 0):
    """Synthetic patches: a textured background with a brighter tumour-like blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    batches = []
    for start in range(0, count, batch_size):
        images, samples = [], []
        for i in range(start, min(start + batch_size, count)):
            cy, cx, radius = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [size // 5]
            mask = (((yy - cy) ** 2 + (xx - cx) ** 2) < radius ** 2).astype(np.uint8)
            cam = np.clip(1 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (1.5 * radius), 0, 1)
            image = rng.integers(120, 220, (size, size, 3)).astype(np.uint8)
            image[mask > 0] = (image[mask > 0] * [0.6, 0.3, 0.7]).astype(np.uint8)
            sample = SegDataSample(metainfo=dict(
                img_shape=(size, size), ori_shape=(size, size), patch_name=f'bench_{i}',
                cam=cam.astype(np.float32), initial_mask=mask))
            sample.gt_sem_seg = PixelData(data=torch.from_numpy(mask)[None].long().to(device))
            images.append(torch.from_numpy(image).permute(2, 0, 1).float())
            samples.append(sample)
        batches.append((torch.stack(images).to(device), samples))
    return batches


def reset_peak_memory(device: str) -> None:
    """Reset the peak-memory counter (CUDA allocator, or the process's peak RSS on Linux)."""
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass


def peak_memory_mib(device: str) -> float:
    """Peak memory since the last reset, MiB."""
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def timed(fn, device: str) -> float:
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]
    torch.manual_seed(0)
    model = SAMDecoderSegmentor(
        image_encoder=image_encoder_by_name(args.arch),
        checkpoint=LITEMEDSAM_CHECKPOINT if args.arch == 'litemedsam' else None).to(args.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=2e-4, weight_decay=1e-2)
    batches = make_batches(args.images, args.size, args.batch_size, args.device)

    def train_epoch() -> None:
        model.train()
        for inputs, samples in batches:
            loss = sum(model.loss(inputs, samples).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def pseudo_label_round() -> None:
        model.eval()
        for inputs, samples in batches:
            for result in model.predict(inputs, samples):
                ids_select(result.pred_sem_seg.data[0].cpu().numpy(),
                           result.metainfo['initial_mask'])

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix='epsam_bench_cache_')
    figures = {}
    model.embedding_cache = None
    reset_peak_memory(args.device)
    figures['train_reencode_s'] = timed(train_epoch, args.device)
    figures['train_reencode_peak_mib'] = peak_memory_mib(args.device)
    figures['round_reencode_s'] = timed(pseudo_label_round, args.device)

    model.embedding_cache = EmbeddingCache(cache_dir)
    images = [model._uint8_images(inputs, samples) for inputs, samples in batches]
    figures['cache_fill_s'] = timed(
        lambda: [model.image_embeddings(batch) for batch in images], args.device)
    reset_peak_memory(args.device)
    figures['train_cached_s'] = timed(train_epoch, args.device)
    figures['train_cached_peak_mib'] = peak_memory_mib(args.device)
    figures['round_cached_s'] = timed(pseudo_label_round, args.device)
    counts = model.parameter_counts()

    device = (torch.cuda.get_device_name() if args.device.startswith('cuda')
              else f'CPU, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load '
                   f'average {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at '
                   'the end')
    n = args.images
    print(f'SAM: {model.describe_weights()}, {n} patches of {args.size}^2, batch '
          f'{args.batch_size}, 50 points, on {device}')
    print(f'parameters: trained (mask decoder) {counts["trainable"]:,}, frozen (image + '
          f'prompt encoder) {counts["frozen"]:,}')
    print(f'decoder training epoch, re-encoding every step: {figures["train_reencode_s"]:.2f} s '
          f'({figures["train_reencode_s"] / n:.2f} s/patch)')
    print(f'decoder training epoch, from the cache:         {figures["train_cached_s"]:.2f} s '
          f'({figures["train_cached_s"] / n:.3f} s/patch)')
    print(f'  speed-up: {figures["train_reencode_s"] / figures["train_cached_s"]:.1f}x')
    print(f'pseudo-label round, re-encoding:  {figures["round_reencode_s"]:.2f} s')
    print(f'pseudo-label round, from the cache: {figures["round_cached_s"]:.2f} s')
    print(f'  speed-up: {figures["round_reencode_s"] / figures["round_cached_s"]:.1f}x')
    print(f'filling the cache once ({n} encoder passes + fingerprint of the encoder): '
          f'{figures["cache_fill_s"]:.2f} s')
    memory = 'peak allocated GPU memory' if args.device.startswith('cuda') else 'peak RSS'
    print(f'{memory} during the cached training epoch: {figures["train_cached_peak_mib"]:.0f} '
          f'MiB (re-encoding epoch: {figures["train_reencode_peak_mib"]:.0f} MiB)')
    print(f'cache folder: {cache_dir}')
    print('command: python ' + ' '.join([os.path.relpath(__file__)] + sys.argv[1:]))


if __name__ == '__main__':
    main()
