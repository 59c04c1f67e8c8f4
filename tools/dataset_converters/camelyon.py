#!/usr/bin/env python
"""Convert Camelyon16/17 whole slides and ASAP XML annotations into the EP-SAM patch dataset.

    python tools/dataset_converters/camelyon.py SLIDE_DIR ANN_DIR OUT_DIR --dataset camelyon16

SLIDE_DIR and ANN_DIR are searched recursively for <slide_id>.tif (or .svs, .ndpi, ...) and
<slide_id>.xml, so the challenge folders can be given as downloaded. Every setting comes from
the preset configs/dataset_converters/<dataset>.py (paper defaults: level 0, 512 px patches,
stride 256, positives 20-90 % tumour, Table 1 targets, documented slide splits); a --config
file overrides preset keys and command-line flags override both.

Writes under OUT_DIR (docs/method.md §7; the patch dataset layout of §10):
    img_dir/<split>/<name>.png     RGB patch, name = <slide>_x<X>_y<Y> (level-0 corner)
    ann_dir/<split>/<name>.png     uint8 mask, 0 background / 1 tumour
    splits/<split>.txt             "<name> <label>" per kept patch
    manifests/<slide>.csv          every candidate patch: name, slide, split, x, y, level,
                                   tissue_fraction, tumour_fraction, label, kept
    slides.csv                     one row per listed slide: status, counts, size, µm/px
    conversion.json                the settings used (a rerun must keep the candidate settings)

Resumable: a slide whose manifest exists is complete and is skipped when its kept patches are
unchanged. Slides are processed by a process pool (--workers). A bad slide (missing,
unreadable, truncated, XML that does not parse, polygons outside the slide) is reported with
its file name and the others go on; the run then exits with status 1 (2 for usage errors).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import os
import re
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
from mmengine.config import Config
from mmengine.utils import ProgressBar

from mmseg_epsam.wsi.extraction import (Candidates, ExtractTask, JobResult, ManifestError,
                                        PatchParams, SlideJob, manifest_path, read_manifest,
                                        run_extract_job, run_scan_job, split_dirs, write_text)
from mmseg_epsam.wsi.patch_grid import LABEL_NEGATIVE, LABEL_POSITIVE, select_patches
from mmseg_epsam.wsi.slide_reader import SLIDE_EXTENSIONS

PRESET_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'dataset_converters'
DATASETS = ('camelyon16', 'camelyon17')
SETTING_KEYS = ('dataset', 'level', 'patch_size', 'stride', 'pos_range', 'pos_bounds',
                'min_tissue', 'tissue', 'tumour_groups', 'exclusion_groups', 'outside_tolerance',
                'normal_pattern', 'targets', 'pos_bins', 'max_patches_per_slide', 'seed', 'splits',
                'workers', 'png_compression')
#: Settings that change the candidates of a slide: an output directory keeps them fixed.
CANDIDATE_KEYS = ('level', 'patch_size', 'stride', 'pos_range', 'pos_bounds', 'min_tissue',
                  'tissue', 'tumour_groups', 'exclusion_groups')
TISSUE_KEYS = ('downsample', 'closing_size', 'median_size', 'min_saturation')
BOUNDS = {'[]': (True, True), '[)': (True, False), '(]': (False, True), '()': (False, False)}


class ConversionError(Exception):
    """A usage or configuration error: the run cannot start (exit status 2)."""


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line arguments; unset options are None (the config decides)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('slide_dir', help='directory searched recursively for the slides')
    parser.add_argument('ann_dir', help='directory searched recursively for <slide_id>.xml')
    parser.add_argument('out_dir', help='dataset root to write')
    parser.add_argument('--dataset', choices=DATASETS, help='preset to start from')
    parser.add_argument('--config', help='python config overriding preset keys')
    parser.add_argument('--split-file', help='text file, one "<split> <slide_id>" per line '
                        '(# comments), replacing the preset split lists')
    parser.add_argument('--level', type=int, help='pyramid level patches are read from')
    parser.add_argument('--patch-size', type=int, help='patch side, pixels of --level')
    parser.add_argument('--stride', type=int, help='grid step, pixels of --level')
    parser.add_argument('--pos-range', type=float, nargs=2, metavar=('LO', 'HI'),
                        help='tumour fraction range of positives')
    parser.add_argument('--pos-bounds', choices=list(BOUNDS), metavar='BOUNDS',
                        help="inclusivity of LO and HI: '[]' both included, '[)', '(]', '()'")
    parser.add_argument('--min-tissue', type=float, help='least tissue fraction of a negative')
    parser.add_argument('--tissue-downsample', type=float, help='downsample of the tissue mask')
    parser.add_argument('--closing-size', type=int, help='tissue closing diameter (mask px)')
    parser.add_argument('--median-size', type=int, help='tissue median aperture (mask px, odd)')
    parser.add_argument('--min-saturation', type=int, help='floor of the Otsu threshold (0-255)')
    parser.add_argument('--tumour-groups', nargs='+', help='ASAP groups that are tumour')
    parser.add_argument('--exclusion-groups', nargs='+', help='ASAP groups carved out of tumour')
    parser.add_argument('--normal-pattern', help="regex of slide ids that need no XML ('' none)")
    parser.add_argument('--outside-tolerance', type=float,
                        help='level-0 px a polygon may overshoot the slide')
    parser.add_argument('--targets', nargs='+', metavar='SPLIT=POS,NEG',
                        help="kept positives,negatives per split, e.g. train=6020,6000; 'all' "
                        "for a count or alone keeps every eligible patch")
    parser.add_argument('--pos-bins', type=int, help='tumour-fraction bins balancing positives')
    parser.add_argument('--max-patches-per-slide', type=int, help='cap per slide (quick subsets)')
    parser.add_argument('--seed', type=int, help='sampling seed')
    parser.add_argument('--workers', type=int, help='worker processes (slides in parallel)')
    parser.add_argument('--png-compression', type=int, help='PNG zlib level 0-9')
    return parser.parse_args(argv)


# ---- settings ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """ConfigDict/tuple -> plain dict/list, recursively (for comparison and JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _config_settings(path: str | Path) -> dict[str, Any]:
    """Public keys of a python config; unknown keys are an error (typos must not pass)."""
    if not os.path.isfile(path):
        raise ConversionError(f'{path}: config file does not exist')
    try:
        cfg = Config.fromfile(str(path))
    except Exception as err:  # noqa: BLE001  (mmengine raises many kinds)
        raise ConversionError(
            f'{path}: config does not load ({type(err).__name__}: {err})') from err
    values = {k: _plain(v) for k, v in cfg.to_dict().items() if not k.startswith('_')}
    unknown = sorted(set(values) - set(SETTING_KEYS))
    if unknown:
        raise ConversionError(f'{path}: unknown setting(s) {unknown}; known: {list(SETTING_KEYS)}')
    return values


def read_split_file(path: str) -> dict[str, list[str]]:
    """Read ``<split> <slide_id>`` lines (``#`` comments, blank lines ignored)."""
    if not os.path.isfile(path):
        raise ConversionError(f'{path}: split file does not exist')
    splits: dict[str, list[str]] = {}
    with open(path, encoding='utf-8') as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split('#', 1)[0].split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ConversionError(f'{path}:{number}: expected "<split> <slide_id>", got '
                                      f'{line.strip()!r}')
            splits.setdefault(fields[0], []).append(fields[1])
    if not splits:
        raise ConversionError(f'{path}: split file lists no slides')
    return splits


def parse_targets(tokens: Iterable[str], splits: Iterable[str]) -> dict[str, list]:
    """``['train=6020,6000', 'val=all']`` -> ``{'train': [6020, 6000], 'val': [None, None]}``."""
    tokens = list(tokens)
    if tokens == ['all']:
        return {split: [None, None] for split in splits}
    targets = {}
    for token in tokens:
        split, _, counts = token.partition('=')
        parts = counts.split(',') if counts != 'all' else ['all', 'all']
        if not split or len(parts) != 2:
            raise ConversionError(
                f'--targets: expected SPLIT=POS,NEG (or SPLIT=all), got {token!r}')
        try:
            targets[split] = [None if p == 'all' else int(p) for p in parts]
        except ValueError as err:
            raise ConversionError(
                f'--targets: counts must be integers or all, got {token!r}') from err
    return targets


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Preset config <- --config file <- command-line flags, then validated."""
    overrides = _config_settings(args.config) if args.config else {}
    dataset = args.dataset or overrides.get('dataset')
    if dataset not in DATASETS:
        raise ConversionError(f'choose the dataset: --dataset {"|".join(DATASETS)} (or a --config '
                              f'that sets dataset=...); got {dataset!r}')
    settings = _config_settings(PRESET_DIR / f'{dataset}.py')
    for key, value in overrides.items():
        settings[key] = {**settings['tissue'], **value} if key == 'tissue' else value
    settings['dataset'] = dataset
    flags = {'level': args.level, 'patch_size': args.patch_size, 'stride': args.stride,
             'pos_range': args.pos_range, 'pos_bounds': args.pos_bounds,
             'min_tissue': args.min_tissue, 'tumour_groups': args.tumour_groups,
             'exclusion_groups': args.exclusion_groups, 'outside_tolerance': args.outside_tolerance,
             'pos_bins': args.pos_bins, 'max_patches_per_slide': args.max_patches_per_slide,
             'seed': args.seed, 'workers': args.workers, 'png_compression': args.png_compression}
    settings.update({k: v for k, v in flags.items() if v is not None})
    if args.normal_pattern is not None:
        settings['normal_pattern'] = args.normal_pattern or None
    tissue_flags = {'downsample': args.tissue_downsample, 'closing_size': args.closing_size,
                    'median_size': args.median_size, 'min_saturation': args.min_saturation}
    settings['tissue'].update({k: v for k, v in tissue_flags.items() if v is not None})
    if args.split_file:
        settings['splits'] = read_split_file(args.split_file)
    if args.targets:
        settings['targets'] = parse_targets(args.targets, settings['splits'])
    settings['targets'] = settings['targets'] or {}  # None: keep every eligible patch
    validate_settings(settings)
    return settings


def validate_settings(settings: dict[str, Any]) -> None:
    """Raise :class:`ConversionError` on values that cannot work (messages say which key)."""
    missing = [k for k in SETTING_KEYS if k not in settings]
    if missing:
        raise ConversionError(f'settings missing: {missing}')
    unknown_tissue = sorted(set(settings['tissue']) - set(TISSUE_KEYS))
    if unknown_tissue:
        raise ConversionError(
            f'tissue: unknown key(s) {unknown_tissue}; known: {list(TISSUE_KEYS)}')
    lo, hi = settings['pos_range']
    if not 0 < lo <= hi <= 1:
        raise ConversionError(f'pos_range must satisfy 0 < LO <= HI <= 1, got {lo} {hi}')
    if settings['pos_bounds'] not in BOUNDS:
        raise ConversionError(f'pos_bounds must be one of {list(BOUNDS)}')
    for key in ('patch_size', 'stride', 'workers', 'pos_bins'):
        if int(settings[key]) < 1:
            raise ConversionError(f'{key} must be >= 1, got {settings[key]}')
    if settings['level'] < 0:
        raise ConversionError(f'level must be >= 0, got {settings["level"]}')
    if settings['tissue']['median_size'] > 1 and settings['tissue']['median_size'] % 2 == 0:
        raise ConversionError('tissue median_size must be odd')
    if settings['normal_pattern']:
        try:
            re.compile(settings['normal_pattern'])
        except re.error as err:
            raise ConversionError(f'normal_pattern is not a valid regex: {err}') from err
    seen: dict[str, str] = {}
    for split, ids in settings['splits'].items():
        for slide_id in ids:
            if slide_id in seen:
                raise ConversionError(f'slide {slide_id!r} is listed in split {seen[slide_id]!r} '
                                      f'and in split {split!r}: a slide may be in one split only')
            seen[slide_id] = split
    unknown_splits = sorted(set(settings['targets']) - set(settings['splits']))
    if unknown_splits:
        raise ConversionError(f'targets given for split(s) {unknown_splits} that list no slides '
                              f'(splits: {list(settings["splits"])})')
    for split, counts in settings['targets'].items():
        valid = counts is None or (len(counts) == 2
                                   and all(c is None or c >= 0 for c in counts))
        if not valid:
            raise ConversionError(
                f'targets[{split!r}] must be (positives, negatives), got {counts}')


def patch_params(settings: dict[str, Any]) -> PatchParams:
    """The candidate parameters of a settings dict."""
    tissue = settings['tissue']
    return PatchParams(
        level=int(settings['level']), patch_size=int(settings['patch_size']),
        stride=int(settings['stride']), pos_range=tuple(float(v) for v in settings['pos_range']),
        pos_inclusive=BOUNDS[settings['pos_bounds']], min_tissue=float(settings['min_tissue']),
        tissue_downsample=float(tissue['downsample']), closing_size=int(tissue['closing_size']),
        median_size=int(tissue['median_size']), min_saturation=int(tissue['min_saturation']))


def record_settings(out_dir: str, settings: dict[str, Any]) -> None:
    """Write ``conversion.json``; refuse an output directory made with other candidate settings."""
    path = os.path.join(out_dir, 'conversion.json')
    fingerprint = {k: _plain(settings[k]) for k in CANDIDATE_KEYS}
    if os.path.exists(path):
        try:
            with open(path, encoding='utf-8') as handle:
                previous = json.load(handle)['candidate_settings']
        except (OSError, ValueError, KeyError) as err:
            raise ConversionError(
                f'{path}: unreadable ({err}); delete it or use a new OUT_DIR') from err
        changed = {k: (previous.get(k), v) for k, v in fingerprint.items() if previous.get(k) != v}
        if changed:
            raise ConversionError(
                f'{path}: {out_dir} was made with other candidate settings '
                + ', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())
                + '; use a new OUT_DIR (targets, seed, caps and splits may change between runs)')
    record = {'candidate_settings': fingerprint, 'settings': _plain(settings)}
    write_text(path, json.dumps(record, indent=1) + '\n')


# ---- running -------------------------------------------------------------------------------


def index_files(root: str, extensions: Iterable[str]) -> dict[str, list[str]]:
    """File stem -> paths, for files under ``root`` (recursive) with one of ``extensions``."""
    extensions = tuple(e.lower() for e in extensions)
    index: dict[str, list[str]] = {}
    for directory, _, files in os.walk(root, followlinks=True):
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in extensions and not name.startswith('.'):
                index.setdefault(stem, []).append(os.path.join(directory, name))
    return index


def run_jobs(function: Callable[[Any], JobResult], items: list, workers: int,
             title: str) -> Iterator[JobResult]:
    """Run jobs in a process pool (inline for one worker) with a progress bar."""
    if not items:
        return
    workers = max(1, min(workers, len(items)))
    print(f'{title}: {len(items)} slide(s), {workers} worker(s)', flush=True)
    bar = ProgressBar(len(items), file=sys.stdout)
    if workers == 1:
        results: Iterable[JobResult] = map(function, items)
        for result in results:
            bar.update()
            yield result
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            for result in pool.imap_unordered(function, items):
                bar.update()
                yield result
    sys.stdout.write('\n')


def _report_failure(failures: dict[str, str], slide_id: str, message: str) -> None:
    failures[slide_id] = message
    print(f'\nFAILED {slide_id}: {message}', file=sys.stderr, flush=True)


def _kept_files_present(out_dir: str, split: str, names: Iterable[str]) -> bool:
    img_dir, ann_dir = split_dirs(out_dir, split)
    return all(os.path.exists(os.path.join(directory, name + '.png'))
               for name in names for directory in (img_dir, ann_dir))


def convert(slide_dir: str, ann_dir: str, out_dir: str, settings: dict[str, Any]) -> int:
    """Run the conversion; return the exit status (0 ok, 1 some slides failed)."""
    started = time.perf_counter()
    for label, directory in (('slide', slide_dir), ('annotation', ann_dir)):
        if not os.path.isdir(directory):
            raise ConversionError(f'{directory}: {label} directory does not exist')
    os.makedirs(out_dir, exist_ok=True)
    record_settings(out_dir, settings)
    params = patch_params(settings)
    workers = int(settings['workers'])
    normal = re.compile(settings['normal_pattern']) if settings['normal_pattern'] else None
    slide_index = index_files(slide_dir, SLIDE_EXTENSIONS)
    ann_index = index_files(ann_dir, ('.xml',))
    split_of = {s: split for split, ids in settings['splits'].items() for s in ids}
    failures: dict[str, str] = {}
    warnings: list[str] = []

    jobs: dict[str, SlideJob] = {}
    for slide_id, split in split_of.items():
        slides, xmls = slide_index.get(slide_id, []), ann_index.get(slide_id, [])
        if not slides:
            _report_failure(failures, slide_id, (
                f'{os.path.join(slide_dir, slide_id)}.tif: slide listed in split {split!r} but '
                f'missing: no {slide_id}.tif (or {"/".join(SLIDE_EXTENSIONS[1:4])}/...) under '
                f'{slide_dir}'))
        elif len(slides) > 1 or len(xmls) > 1:
            _report_failure(failures, slide_id, f'{(slides + xmls)[0]}: slide id {slide_id!r} is '
                            f'ambiguous, several files match: {slides + xmls}')
        elif not xmls and not (normal and normal.search(slide_id)):
            _report_failure(failures, slide_id, (
                f'{os.path.join(ann_dir, slide_id + ".xml")}: annotation file not found for slide '
                f'{slide_id!r} (split {split!r}); only slides matching normal_pattern '
                f'{settings["normal_pattern"]!r} may have none'))
        else:
            jobs[slide_id] = SlideJob(
                slide_id, slides[0], xmls[0] if xmls else None, params,
                tuple(settings['tumour_groups']), tuple(settings['exclusion_groups']),
                float(settings['outside_tolerance']))

    # 1. candidates: from a complete manifest, else by scanning the slide.
    candidates: dict[str, Candidates] = {}
    previous: dict[str, tuple[str, np.ndarray]] = {}
    infos: dict[str, Any] = {}
    to_scan = []
    for slide_id, job in jobs.items():
        path = manifest_path(out_dir, slide_id)
        if not os.path.exists(path):
            to_scan.append(job)
            continue
        try:
            found, old_split, old_kept = read_manifest(path)
        except ManifestError as err:
            warnings.append(f'{err}; converting {slide_id} again')
            to_scan.append(job)
            continue
        candidates[slide_id] = found
        previous[slide_id] = (old_split, old_kept)
    if previous:
        print(f'{len(previous)} slide(s) already have a manifest in {out_dir}/manifests')
    for result in run_jobs(run_scan_job, to_scan, workers, 'scanning'):
        if result.ok:
            candidates[result.slide_id] = result.candidates
            infos[result.slide_id] = result.info
            warnings.extend(result.warnings)
        else:
            _report_failure(failures, result.slide_id, result.message)

    # 2. balanced, seeded selection per split over all its slides.
    kept_of = plan_selection(settings, candidates)

    # 3. write patches of slides whose manifest is missing or no longer matches.
    tasks, skipped, converted = [], [], []
    for slide_id in sorted(candidates):
        split, kept = split_of[slide_id], kept_of[slide_id]
        if slide_id in previous:
            old_split, old_kept = previous[slide_id]
            names = [n for n, k in zip(candidates[slide_id].names, kept) if k]
            if (old_split == split and np.array_equal(old_kept, kept)
                    and _kept_files_present(out_dir, split, names)):
                skipped.append(slide_id)
                continue
        tasks.append(ExtractTask(jobs[slide_id], candidates[slide_id], kept, split, out_dir,
                                 int(settings['png_compression'])))
    if skipped:
        print(f'{len(skipped)} slide(s) skipped: complete and unchanged')
    written = 0
    for result in run_jobs(run_extract_job, tasks, workers, 'extracting'):
        if result.ok:
            converted.append(result.slide_id)
            infos[result.slide_id] = result.info
            written += result.written
        else:
            _report_failure(failures, result.slide_id, result.message)

    finished = set(skipped) | set(converted)
    write_split_lists(out_dir, settings['splits'], candidates, kept_of, finished)
    write_slide_table(out_dir, split_of, candidates, kept_of, infos, finished, skipped, failures)
    print_summary(out_dir, settings, candidates, kept_of, finished, skipped, failures, warnings,
                  written, time.perf_counter() - started)
    return 1 if failures else 0


def plan_selection(settings: dict[str, Any],
                   candidates: dict[str, Candidates]) -> dict[str, np.ndarray]:
    """Which candidates each slide keeps: :func:`select_patches` over each split's slides.

    The seed of a split is ``(seed, crc32(split name))``, so splits draw independently and a
    rerun with the same candidates and settings keeps exactly the same patches.
    """
    kept_of: dict[str, np.ndarray] = {}
    for split, ids in settings['splits'].items():
        slides = sorted(s for s in ids if s in candidates)
        if not slides:
            continue
        sizes = [len(candidates[s]) for s in slides]
        target_pos, target_neg = settings['targets'].get(split) or (None, None)
        kept = select_patches(
            np.repeat(np.array(slides), sizes),
            np.concatenate([candidates[s].label for s in slides]),
            np.concatenate([candidates[s].tumour_fraction for s in slides]),
            target_pos, target_neg, tuple(settings['pos_range']), int(settings['pos_bins']),
            settings['max_patches_per_slide'],
            seed=[int(settings['seed']), zlib.crc32(split.encode())])
        bounds = np.cumsum([0] + sizes)
        for slide_id, start, stop in zip(slides, bounds[:-1], bounds[1:]):
            kept_of[slide_id] = kept[start:stop]
    return kept_of


def write_split_lists(out_dir: str, splits: dict[str, list[str]],
                      candidates: dict[str, Candidates], kept_of: dict[str, np.ndarray],
                      finished: set[str]) -> None:
    """``splits/<split>.txt``: ``<name> <label>`` of every kept patch of the finished slides."""
    for split, ids in splits.items():
        lines = []
        for slide_id in sorted(s for s in ids if s in finished):
            found, kept = candidates[slide_id], kept_of[slide_id]
            lines += [f'{name} {int(label)}' for name, label, k
                      in zip(found.names, found.label, kept) if k]
        write_text(os.path.join(out_dir, 'splits', f'{split}.txt'),
                   ''.join(line + '\n' for line in sorted(lines)))


def write_slide_table(out_dir: str, split_of: dict[str, str], candidates: dict[str, Candidates],
                      kept_of: dict[str, np.ndarray], infos: dict[str, Any], finished: set[str],
                      skipped: list[str], failures: dict[str, str]) -> None:
    """``slides.csv``: status and counts of every listed slide."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['slide', 'split', 'status', 'candidates', 'positives', 'negatives',
                     'kept_positives', 'kept_negatives', 'width', 'height', 'mpp_x', 'mpp_y',
                     'message'])
    for slide_id, split in sorted(split_of.items()):
        status = ('failed' if slide_id in failures else
                  'skipped' if slide_id in skipped else 'converted' if slide_id in finished
                  else 'not run')
        row = [slide_id, split, status]
        if slide_id in candidates and slide_id in kept_of:
            labels, kept = candidates[slide_id].label, kept_of[slide_id]
            row += [len(labels), int((labels == LABEL_POSITIVE).sum()),
                    int((labels == LABEL_NEGATIVE).sum()),
                    int((kept & (labels == LABEL_POSITIVE)).sum()),
                    int((kept & (labels == LABEL_NEGATIVE)).sum())]
        else:
            row += [''] * 5
        info = infos.get(slide_id)
        row += [*info.dimensions, *(info.mpp or ('', ''))] if info else [''] * 4
        writer.writerow(row + [failures.get(slide_id, '')])
    write_text(os.path.join(out_dir, 'slides.csv'), buffer.getvalue())


def print_summary(out_dir: str, settings: dict[str, Any], candidates: dict[str, Candidates],
                  kept_of: dict[str, np.ndarray], finished: set[str], skipped: list[str],
                  failures: dict[str, str], warnings: list[str], written: int,
                  seconds: float) -> None:
    """Per-split counts against the targets, warnings, failures, and where the outputs are."""
    print(f'\n{settings["dataset"]} -> {out_dir}: {len(finished)} slide(s) done '
          f'({len(skipped)} skipped as complete), {written} patch(es) written in {seconds:.1f} s')
    for split, ids in settings['splits'].items():
        done = [s for s in ids if s in finished]
        counts = [sum(int((kept_of[s] & (candidates[s].label == lab)).sum()) for s in done)
                  for lab in (LABEL_POSITIVE, LABEL_NEGATIVE)]
        target = settings['targets'].get(split) or (None, None)
        wanted = [('all' if t is None else str(t)) for t in target]
        print(f'  {split}: {counts[0]} positives / {counts[1]} negatives (targets {wanted[0]} / '
              f'{wanted[1]}) from {len(done)} of {len(ids)} slide(s)')
        for count, goal, kind in zip(counts, target, ('positives', 'negatives')):
            if goal is not None and count < goal and len(done) == len(ids):
                warnings.append(
                    f'split {split!r}: only {count} eligible {kind} for a target of {goal}')
    for message in warnings:
        print(f'WARNING {message}', file=sys.stderr)
    if failures:
        print(f'{len(failures)} slide(s) FAILED:', file=sys.stderr)
        for slide_id, message in sorted(failures.items()):
            print(f'  {slide_id}: {message}', file=sys.stderr)
    print(f'outputs: {out_dir}/img_dir, ann_dir, splits/*.txt, manifests/*.csv, slides.csv')


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        settings = resolve_settings(args)
        return convert(args.slide_dir, args.ann_dir, args.out_dir, settings)
    except ConversionError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
