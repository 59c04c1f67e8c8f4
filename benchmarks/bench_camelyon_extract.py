"""Camelyon converter throughput: patches per second with 1 and 2 workers, and peak memory.

Generates a ~20k x 20k pyramidal TIFF (tifffile, deflate tiles, 0.25 µm/px, levels down to
1/64) procedurally, tile by tile, so generation memory stays at a few tiles: H&E-like tissue
ellipses on white glass, with per-pixel texture noise so that patches compress about as
badly as stained tissue (~0.3 MB PNG each), and a 600-vertex tumour polygon with an exclusion
hole, with the matching ASAP XML. The slide is hard-linked under ``--slides`` ids (workers
parallelise over slides), then ``tools/dataset_converters/camelyon.py`` converts them end to
end (tissue detection, stride grid, tumour fractions, balanced sampling, 512x512 level-0
patch and mask PNGs, manifests) once per worker count, each run in a fresh process in a fresh
output directory. Reported per run: wall time, patches written, PNG size, patches/s, and peak
resident memory (``resource.getrusage``: the main process and the largest worker process,
children included). The slide is made once and reused when ``--work-dir`` is kept.

    python benchmarks/bench_camelyon_extract.py [--size 20000] [--slides 2]
        [--max-patches-per-slide 400] [--workers 1 2] [--work-dir DIR] [--keep]
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from mmseg_epsam.wsi.annotations import SlideAnnotations, write_asap_xml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))
from synthetic_slides import SyntheticTissue, write_pyramidal_tiff  # noqa: E402

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'dataset_converters' / 'camelyon.py'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=20000, help='slide side, level-0 px')
    parser.add_argument('--slides', type=int, default=2, help='slide ids (hard links)')
    parser.add_argument('--max-patches-per-slide', type=int, default=400)
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--work-dir', help='where the slide and outputs go (default: temp)')
    parser.add_argument('--keep', action='store_true', help='keep the work dir')
    parser.add_argument('--measure', nargs=4, metavar=('SLIDES', 'ANN', 'SPLITS', 'OUT'),
                        help=argparse.SUPPRESS)  # internal: one measured run in this process
    return parser.parse_args()


def make_slide(work: Path, size: int, n_slides: int) -> tuple[Path, Path, Path, Optional[float]]:
    """Write the slide (unless present), its XML, the links and a split file.

    Returns the slide and annotation dirs, the split file, and the generation seconds (None
    when the slide was already there).
    """
    slides, ann = work / 'slides', work / 'ann'
    slides.mkdir(parents=True, exist_ok=True)
    ann.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 600, endpoint=False)
    radius = 0.16 * size * (1 + 0.08 * np.sin(7 * t) + 0.03 * rng.standard_normal(600))
    tumour = np.stack([0.45 * size + radius * np.cos(t), 0.5 * size + 0.8 * radius * np.sin(t)], 1)
    hole = np.array([[0.42, 0.47], [0.47, 0.47], [0.47, 0.52], [0.42, 0.52]]) * size
    tissue = [(0.5 * size, 0.5 * size, 0.42 * size, 0.36 * size),
              (0.15 * size, 0.85 * size, 0.08 * size, 0.06 * size)]
    first = slides / 'bench_001.tif'
    started = time.perf_counter()
    reused = first.exists()
    if not reused:
        render = SyntheticTissue(tissue, SlideAnnotations(tumour=[tumour], exclusion=[hole]),
                                 noise=16)
        write_pyramidal_tiff(first, (size, size), render, mpp=0.25, n_levels=7,
                             compression_level=1)
    seconds = None if reused else time.perf_counter() - started
    ids = [f'bench_{i:03d}' for i in range(1, n_slides + 1)]
    for slide_id in ids:
        if not (slides / f'{slide_id}.tif').exists():
            os.link(first, slides / f'{slide_id}.tif')
        write_asap_xml(ann / f'{slide_id}.xml', {'_0': [tumour], '_2': [hole]})
    split_file = work / 'splits.txt'
    split_file.write_text(''.join(f'train {s}\n' for s in ids))
    return slides, ann, split_file, seconds


def measure(slides: str, ann: str, split_file: str, out: str, workers: int, cap: int) -> dict:
    """Run the converter in this process; return timing, counts and peak memory."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('camelyon_converter', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = [slides, ann, out, '--dataset', 'camelyon16', '--split-file', split_file,
            '--targets', 'all', '--max-patches-per-slide', str(cap), '--workers', str(workers)]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_at_start = usage.ru_utime + usage.ru_stime  # imports are not the converter's work
    started = time.perf_counter()
    status = tool.main(argv)
    seconds = time.perf_counter() - started
    patches = len(Path(out, 'splits', 'train.txt').read_text().splitlines())
    images = sum(p.stat().st_size for p in Path(out, 'img_dir').rglob('*.png'))
    own, children = (resource.getrusage(resource.RUSAGE_SELF),
                     resource.getrusage(resource.RUSAGE_CHILDREN))
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime - cpu_at_start
    kib = 1024  # ru_maxrss is in KiB on Linux
    return dict(status=status, seconds=seconds, cpu_seconds=cpu, patches=patches,
                png_kib=images / patches / 1024, main_peak_mib=own.ru_maxrss / kib,
                worker_peak_mib=children.ru_maxrss / kib)


def main() -> None:
    args = parse_args()
    if args.measure:
        result = measure(*args.measure, workers=args.workers[0], cap=args.max_patches_per_slide)
        print('RESULT ' + json.dumps(result))
        return
    work = Path(args.work_dir or tempfile.mkdtemp(prefix='bench_camelyon_'))
    try:
        slides, ann, split_file, gen_seconds = make_slide(work, args.size, args.slides)
        size_mib = (slides / 'bench_001.tif').stat().st_size / 2 ** 20
        made = 'reused' if gen_seconds is None else f'generated in {gen_seconds:.1f} s'
        print(f'slide: {args.size}x{args.size} px, 7 levels, deflate tiles, {size_mib:.1f} MiB, '
              f'{made}; {args.slides} slide id(s), <= '
              f'{args.max_patches_per_slide} patches each (512x512, level 0, stride 256)')
        rows = []
        for workers in args.workers:
            out = work / f'out_w{workers}'
            shutil.rmtree(out, ignore_errors=True)
            command = [sys.executable, __file__, '--measure', str(slides), str(ann),
                       str(split_file), str(out), '--workers', str(workers),
                       '--max-patches-per-slide', str(args.max_patches_per_slide)]
            load_before = os.getloadavg()[0]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            load_after = os.getloadavg()[0]
            lines = [line for line in done.stdout.splitlines() if line.startswith('RESULT ')]
            if done.returncode != 0 or not lines:
                sys.exit(f'run with {workers} worker(s) failed:\n{done.stdout}\n{done.stderr}')
            result = json.loads(lines[-1][len('RESULT '):])
            result['load'] = (load_before, load_after)
            rows.append((workers, result))
        print(f'\n{"workers":>7} {"patches":>8} {"KiB/png":>8} {"wall s":>8} {"patches/s":>10} '
              f'{"patches/CPU-s":>14} {"peak main MiB":>14} {"peak worker MiB":>16} '
              f'{"load before/after":>18}')
        for workers, r in rows:
            print(f'{workers:>7} {r["patches"]:>8} {r["png_kib"]:>8.0f} {r["seconds"]:>8.1f} '
                  f'{r["patches"] / r["seconds"]:>10.1f} {r["patches"] / r["cpu_seconds"]:>14.1f} '
                  f'{r["main_peak_mib"]:>14.0f} '
                  f'{r["worker_peak_mib"] if workers > 1 else 0:>16.0f} '
                  f'{r["load"][0]:>9.1f}/{r["load"][1]:<8.1f}')
        print(f'\n{os.cpu_count()} CPU(s); load = 1-minute load average (other processes '
              'compete for the CPUs when it exceeds the CPU count). 1 worker runs inline in the '
              'main process; wall time covers the whole run: tissue detection, grid, tumour '
              'fractions, sampling, reading and PNG writing; patches/CPU-s divides by the CPU '
              'time of the main process and its workers (stable on a busy machine: N free '
              'cores give about N times it). Peak main memory includes the torch/mmseg stack '
              'that `import mmseg_epsam` loads.')
        print('rerun: python benchmarks/bench_camelyon_extract.py ' + ' '.join(sys.argv[1:]))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f'kept {work}')


if __name__ == '__main__':
    main()
