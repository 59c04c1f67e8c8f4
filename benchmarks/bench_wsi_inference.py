"""Whole-slide inference speed: tiles per second, whole-slide time, image-encoder share, memory.

On a generated pyramidal slide (default 20000 x 20000 pixels at 0.25 µm/px, tissue ellipses
and tumour polygons, written once into ``--work-dir`` and reused), the EP-SAM tile path of
``tools/infer_wsi.py`` runs with the models of a pipeline run: by default a freshly
initialised one (``write_untrained_pipeline_run``: the demo classifier and the demo's SAM,
LiteMedSAM, untrained weights whose predictions mean nothing but cost what trained weights
cost). The classifier gate is
opened (``--classifier-gate 0``, the default) so every tissue tile goes through SAM: the
worst case; with a gate, gated tiles cost one classifier forward only.

On a CPU the run is capped at ``--max-tiles`` tissue tiles (0: all) and the whole-slide
time is extrapolated: ``tissue detection + stitching + export`` (measured: the export covers
the whole map) ``+ tissue tiles / measured tiles per second``. Prints tiles/s, the process
CPU time per tile (steadier than wall time on a loaded machine), the time
split (slide reading, classifier + CAM, SAM image encoder, SAM decoder), the whole-slide
time, peak resident memory (``ru_maxrss``) and the load average, then the command::

    python benchmarks/bench_wsi_inference.py [--size 20000] [--max-tiles 48] [--device cpu]
        [--pipeline-work-dir DIR --pipeline-config CFG] [--work-dir DIR] [--sam-arch vit_b]

``--sam-arch`` builds the untrained run's SAM with another image encoder (``vit_b``, the
paper's, ``vit_l``, ``vit_h``, ``tiny`` or ``litemedsam``) than the pipeline config's (the
demo's LiteMedSAM).
"""
import argparse
import os
import os.path as osp
import resource
import sys
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

import mmseg_epsam  # noqa: F401  (registers the plugin)
from mmseg.utils import register_all_modules
from mmseg_epsam.wsi.annotations import SlideAnnotations
from mmseg_epsam.apis.tile_predictor import build_epsam_tile_predictor
from mmseg_epsam.apis.wsi_inference import WSIInferencer, WSIInferenceSettings
from mmseg_epsam.models.sam_encoders import ENCODER_NAMES, image_encoder_by_name
from mmseg_epsam.wsi.slide_reader import SlideReader
from mmseg_epsam.wsi.tiling import plan_tile_grid

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tests'))  # the synthetic slide and untrained run fixtures
from synthetic_slides import SyntheticTissue, write_pyramidal_tiff  # noqa: E402
from untrained_pipeline import write_untrained_pipeline_run  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=20000, help='slide side, level-0 pixels')
    parser.add_argument('--mpp', type=float, default=0.25, help='slide µm/px')
    parser.add_argument('--max-tiles', type=int, default=48,
                        help='tissue tiles to run (0: all); the rest is extrapolated')
    parser.add_argument('--tile-size', type=int, default=512)
    parser.add_argument('--overlap', type=int, default=64)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--level', type=int, default=0)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--pipeline-config', default=osp.join(ROOT, 'configs', 'epsam',
                                                              'epsam_demo.py'))
    parser.add_argument('--pipeline-work-dir',
                        help='a trained pipeline run (default: an untrained one is written)')
    parser.add_argument('--sam-checkpoint', help="Meta's sam_vit_*.pth for the pipeline")
    parser.add_argument('--classifier-gate', type=float, default=0.0,
                        help='classifier gate (default 0: every tissue tile through SAM)')
    parser.add_argument('--sam-arch', choices=ENCODER_NAMES,
                        help="SAM image encoder of the untrained run (default: the pipeline "
                             "config's)")
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'bench_wsi'),
                        help='where the slide, the untrained run and the outputs go')
    return parser.parse_args()


def synthetic_slide(path: str, size: int, mpp: float) -> str:
    """A size x size slide: three tissue ellipses (about half the area), two tumours."""
    if osp.isfile(path):
        return path
    s = size / 20000
    tissue = [(6500 * s, 7000 * s, 5200 * s, 6000 * s), (14000 * s, 9000 * s, 4800 * s, 7500 * s),
              (10000 * s, 16500 * s, 7000 * s, 3000 * s)]
    tumour = [np.array([[4000, 4000], [9000, 3500], [9500, 9000], [4500, 10000]]) * s,
              np.array([[12500, 6000], [16000, 7000], [15500, 12000], [12000, 11000]]) * s]
    start = time.perf_counter()
    write_pyramidal_tiff(path, (size, size),
                         SyntheticTissue(tissue, SlideAnnotations(tumour=tumour)),
                         mpp=mpp, n_levels=5, tile_size=256, compression_level=1)
    print(f'wrote {path} ({osp.getsize(path) / 2 ** 20:.0f} MiB) in '
          f'{time.perf_counter() - start:.0f} s')
    return path


def pipeline_with_sam_arch(pipeline_config: str, arch: str, out_dir: str) -> str:
    """A pipeline config inheriting ``pipeline_config`` whose decoder builds SAM with the image
    encoder named ``arch`` (see :func:`image_encoder_by_name`)."""
    base = Config.fromfile(pipeline_config)
    folder = osp.dirname(osp.abspath(pipeline_config))
    path = osp.join(out_dir, f'pipeline_sam_{arch}.py')
    with open(path, 'w') as f:
        f.write(f"_base_ = [{osp.abspath(pipeline_config)!r}]\n"
                f"classifier = dict(config={osp.join(folder, base.classifier.config)!r})\n"
                f"decoder = dict(config={osp.join(folder, base.decoder.config)!r}, "
                f"cfg_options={{'model.image_encoder': {image_encoder_by_name(arch)!r}}})\n")
    return path


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=True)
    os.makedirs(args.work_dir, exist_ok=True)
    MMLogger.get_instance('bench_wsi', log_level='WARNING')
    load_before = os.getloadavg()
    slide = synthetic_slide(osp.join(args.work_dir, f'synthetic_{args.size}.tif'), args.size,
                            args.mpp)
    if args.sam_arch:
        if args.pipeline_work_dir:
            raise SystemExit('--sam-arch applies to the untrained run only')
        args.pipeline_config = pipeline_with_sam_arch(args.pipeline_config, args.sam_arch,
                                                      args.work_dir)
    work_dir = args.pipeline_work_dir
    if work_dir is None:
        work_dir = osp.join(args.work_dir, f'untrained_run_{args.sam_arch or "config"}')
        write_untrained_pipeline_run(args.pipeline_config, work_dir)
    predictor = build_epsam_tile_predictor(args.pipeline_config, work_dir,
                                           sam_checkpoint=args.sam_checkpoint,
                                           classifier_gate=args.classifier_gate,
                                           device=args.device)
    rss_models = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    settings = WSIInferenceSettings(level=args.level, tile_size=args.tile_size,
                                    overlap=args.overlap, batch_size=args.batch_size,
                                    max_tiles=args.max_tiles or None)
    cpu_start = time.process_time()
    summary = WSIInferencer(predictor, settings, progress=True).infer(
        slide, osp.join(args.work_dir, 'out'), overwrite=True)
    cpu_s = time.process_time() - cpu_start  # all threads; steadier than wall under load
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    load_after = os.getloadavg()

    t = summary['timings_s']
    tiles = summary['tiles']
    run = tiles['computed_this_run']
    tile_rate = run / t['tiles_s']
    fixed = t['tissue_s'] + t['stitch_s'] + t['export_s']
    whole = fixed + tiles['total'] / tile_rate
    with SlideReader(slide) as reader:
        grid = plan_tile_grid(reader.info, args.level, args.tile_size, args.overlap)
    map_mib = 2 * 4 * grid.map_size[0] * grid.map_size[1] / 2 ** 20
    print('\nWhole-slide inference benchmark')
    gate = ('open (every tissue tile through SAM)' if args.classifier_gate == 0 else
            f'{args.classifier_gate} ({tiles["gated"]} tiles gated)')
    print(f'  device {args.device} ({torch.get_num_threads()} threads), SAM '
          f'{summary["predictor"]["sam_model"]}, classifier gate {gate}')
    print(f'  slide {args.size} x {args.size} px at {args.mpp} µm/px, level {args.level}, '
          f'tiles {args.tile_size} px, overlap {args.overlap}, batch {args.batch_size}: '
          f'{tiles["grid"]} grid tiles, {tiles["total"]} with tissue')
    print(f'  measured on {run} tissue tiles: {tile_rate:.3f} tiles/s '
          f'({1 / tile_rate:.2f} s per tile)')
    print(f'  process CPU time of the slide run: {cpu_s:.1f} s ({cpu_s / max(1, run):.2f} s '
          f'per measured tile, tissue detection and export included)')
    share = {k: t[k] / t['tiles_s'] for k in ('read_s', 'classifier_s', 'sam_encoder_s',
                                              'sam_decoder_s', 'store_s')}
    print('  share of tile time: ' + ', '.join(f'{k[:-2]} {100 * v:.1f} %'
                                               for k, v in share.items()))
    print(f'  SAM image encoder: {100 * share["sam_encoder_s"]:.1f} % of tile time '
          f'({t["sam_encoder_s"] / max(1, t["sam_encoded_tiles"]):.3f} s per tile, '
          f'{t["sam_encoded_tiles"]} tiles encoded)')
    print(f'  fixed costs: tissue {t["tissue_s"]:.1f} s, stitch {t["stitch_s"]:.1f} s, export '
          f'{t["export_s"]:.1f} s (map {grid.map_size[0]} x {grid.map_size[1]}, '
          f'accumulators {map_mib:.0f} MiB)')
    extrapolated = '' if run == tiles['total'] else ' (extrapolated from the measured tiles)'
    print(f'  whole-slide time: {whole:.0f} s = {whole / 60:.1f} min{extrapolated}')
    print(f'  peak resident memory: {rss_peak:.0f} MiB (after building the models: '
          f'{rss_models:.0f} MiB)')
    print(f'  load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} '
          f'on {os.cpu_count()} CPUs')
    command = (f'python benchmarks/bench_wsi_inference.py --size {args.size} --max-tiles '
               f'{args.max_tiles} --tile-size {args.tile_size} --overlap {args.overlap} '
               f'--batch-size {args.batch_size} --level {args.level} --device {args.device}')
    if args.sam_arch:
        command += f' --sam-arch {args.sam_arch}'
    if args.classifier_gate:
        command += f' --classifier-gate {args.classifier_gate}'
    if args.pipeline_work_dir:
        command += (f' --pipeline-config {args.pipeline_config} --pipeline-work-dir '
                    f'{args.pipeline_work_dir}')
    print(f'\nRerun: {command}')


if __name__ == '__main__':
    main()
