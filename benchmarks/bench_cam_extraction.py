"""CAM extraction time per patch against its floor, and the effect of view batching.

Measured in one run, on the same machine and patches, with a randomly initialised
``EPSAMPatchClassifier`` (``EVPADLResNet`` backbone, output stride 16) at 512x512:

- **floor**: the bare cost of four classifier forwards per patch (full network, no
  rotation, normalisation, post-processing or I/O), batched as the setting batches views;
- **network**: what generation asks of the network per patch: four ``compute_cam``
  forwards (up to the CAM layer) plus one predict forward for the classifier score;
- **extraction**: :func:`mmseg_epsam.engine.cam_generation.generate_split` end to end
  (data loading, preprocessing, rotate & fuse, resizing, quantile threshold, 21x21 opening
  at full resolution, float16 ``.npy`` + PNG + manifest writes), without the GT evaluation,
  which is timed separately;
- **overhead**: the same ``generate_split`` with a free network (a stand-in whose
  ``compute_cam`` and predict return ready tensors of the real shapes): what everything but
  the network adds. On a shared machine this is the stable figure; the ratio
  overhead / floor is the issue's goal (under 10 %).

Prints each figure per patch, the ratios and the command that reproduces them::

    python benchmarks/bench_cam_extraction.py [--patches 4] [--batch-size 1] [--device cpu]
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

import mmseg_epsam  # noqa: F401  (registers the plugin)
from mmseg.registry import DATASETS, MODELS
from mmseg.utils import register_all_modules
from mmseg_epsam.engine.cam_generation import generate_split, model_fingerprint
from mmseg_epsam.functional.cam import cam_postprocess

META_KEYS = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'img_label', 'patch_name')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--patches', type=int, default=4, help='patches per setting')
    parser.add_argument('--size', type=int, default=512, help='patch side in pixels')
    parser.add_argument('--batch-size', type=int, default=1, help='patches per batch')
    parser.add_argument('--views', type=int, nargs='+', default=[4, 1],
                        help='views_per_forward settings to compare')
    parser.add_argument('--preset', default='camelyon16')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--repeats', type=int, default=2,
                        help='timed rounds of the measurements (the best is kept)')
    return parser.parse_args()


def write_patches(root: str, count: int, size: int) -> None:
    """``count`` positive H&E-coloured noise patches with GT, in the patch-dataset layout."""
    rng = np.random.default_rng(0)
    for sub in ('img_dir/bench', 'ann_dir/bench', 'splits'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    names = [f'bench_{i:03d}' for i in range(count)]
    for name in names:
        base = np.array([200, 120, 190], np.float32)  # BGR, pinkish
        noise = cv2.GaussianBlur(rng.normal(0, 40, (size, size, 3)).astype(np.float32), (0, 0), 3)
        cv2.imwrite(osp.join(root, 'img_dir/bench', name + '.png'),
                    np.clip(base + noise, 0, 255).astype(np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[size // 4:3 * size // 4, size // 4:] = 1
        cv2.imwrite(osp.join(root, 'ann_dir/bench', name + '.png'), mask)
    with open(osp.join(root, 'splits/bench.txt'), 'w') as f:
        f.writelines(f'{name} 1\n' for name in names)


class FreeNetwork(torch.nn.Module):
    """Stand-in for the classifier with the real output shapes and no network cost."""

    def __init__(self, model: torch.nn.Module, feature_size: int) -> None:
        super().__init__()
        self.data_preprocessor = model.data_preprocessor
        self.feature_size = feature_size
        self.cams = {}

    def compute_cam(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[0] not in self.cams:
            generator = torch.Generator().manual_seed(0)
            self.cams[inputs.shape[0]] = torch.rand(
                inputs.shape[0], self.feature_size, self.feature_size,
                generator=generator).to(inputs.device)
        return self.cams[inputs.shape[0]]

    def forward(self, inputs, data_samples=None, mode='predict'):
        for data_sample in data_samples:
            data_sample.pred_score = inputs.new_full((1, ), 0.9)
        return data_samples


def synchronize(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def interleaved_best(fns, rounds: int, device: str) -> list:
    """Best wall time of each of ``fns`` over ``rounds`` rounds, after one warm-up round."""
    times = [[] for _ in fns]
    for round_index in range(rounds + 1):
        for fn, fn_times in zip(fns, times):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_index:
                fn_times.append(time.perf_counter() - start)
    return [min(t) for t in times]


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    try:
        model = MODELS.build(dict(
            type='EPSAMPatchClassifier', backbone=dict(type='EVPADLResNet'),
            data_preprocessor=dict(type='SegDataPreProcessor', mean=[0.0] * 3,
                                   std=[255.0] * 3, bgr_to_rgb=True)))
    except KeyError as exc:
        sys.exit(f'EPSAMPatchClassifier / EVPADLResNet are not available ({exc}); '
                 f'nothing measured')
    model.to(args.device).eval()
    postprocess = cam_postprocess(args.preset)
    device_name = (torch.cuda.get_device_name() if args.device.startswith('cuda')
                   else f'CPU, {torch.get_num_threads()} threads')

    with tempfile.TemporaryDirectory() as root:
        write_patches(root, args.patches, args.size)
        dataset = DATASETS.build(dict(
            type='HistoPatchDataset', data_root=root, ann_file='splits/bench.txt',
            data_prefix=dict(img_path='img_dir/bench', seg_map_path='ann_dir/bench'),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='PackSegInputs', meta_keys=META_KEYS)]))
        batch = model.data_preprocessor(
            dict(inputs=[dataset[0]['inputs']] * args.batch_size,
                 data_samples=[dataset[0]['data_samples']] * args.batch_size), False)
        inputs, samples = batch['inputs'], batch['data_samples']
        fingerprint = model_fingerprint(model)  # once per run in real use, as here
        print(f'device: {device_name}; {args.patches} patches of {args.size}x{args.size}, '
              f'batch size {args.batch_size}, preset {args.preset}')
        rows = []
        for views in args.views:
            views_batch = torch.cat([inputs] * views)

            def floor():
                with torch.inference_mode():
                    for _ in range(4 // views):
                        model(views_batch, mode='tensor')

            def network():
                with torch.inference_mode():
                    for _ in range(4 // views):
                        model.compute_cam(views_batch)
                    model(inputs, samples, mode='predict')

            out_dir = osp.join(root, f'out_views{views}')

            def extraction():
                generate_split(model, dataset, out_dir, 'bench', postprocess,
                               views_per_forward=views, batch_size=args.batch_size,
                               evaluate=False, overwrite=True, fingerprint=fingerprint)

            free = FreeNetwork(model, feature_size=-(-args.size // 16))

            def overhead():
                generate_split(free, dataset, out_dir + '_free', 'bench', postprocess,
                               views_per_forward=views, batch_size=args.batch_size,
                               evaluate=False, overwrite=True, fingerprint='free')

            # Rounds interleave the measurements so that load from other processes hits
            # them alike; the best round of each is kept.
            floor_s, network_s, extraction_s = interleaved_best(
                [floor, network, extraction], args.repeats, args.device)
            floor_s /= args.batch_size
            network_s /= args.batch_size
            extraction_s /= args.patches
            start = time.perf_counter()  # a resumed run: only the GT evaluation is left
            generate_split(model, dataset, out_dir, 'bench', postprocess,
                           views_per_forward=views, batch_size=args.batch_size, evaluate=True,
                           fingerprint=fingerprint)
            evaluation_s = (time.perf_counter() - start) / args.patches
            overhead_s = interleaved_best([overhead], 3, args.device)[0] / args.patches
            rows.append((views, floor_s, network_s, extraction_s, overhead_s, evaluation_s))

    print()
    print('| views per forward | floor: 4 forwards (s/patch) | network work (s/patch) | '
          'extraction (s/patch) | extraction / floor | overhead: free network (s/patch) | '
          'overhead / floor | GT evaluation (s/patch) |')
    print('|---|---|---|---|---|---|---|---|')
    for views, floor_s, network_s, extraction_s, overhead_s, evaluation_s in rows:
        print(f'| {views} | {floor_s:.3f} | {network_s:.3f} | {extraction_s:.3f} | '
              f'{extraction_s / floor_s:.3f} | {overhead_s:.4f} | '
              f'{100 * overhead_s / floor_s:.2f} % | {evaluation_s:.4f} |')
    for views, floor_s, network_s, extraction_s, _, _ in rows[1:]:
        print(f'views_per_forward={views} vs {rows[0][0]}: floor {floor_s / rows[0][1]:.2f}x, '
              f'network work {network_s / rows[0][2]:.2f}x, extraction '
              f'{extraction_s / rows[0][3]:.2f}x')
    print('\ncommand: python benchmarks/bench_cam_extraction.py ' + ' '.join(sys.argv[1:]))


if __name__ == '__main__':
    main()
