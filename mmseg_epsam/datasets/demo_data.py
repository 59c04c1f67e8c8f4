"""The bundled demo patch dataset, composed from real H&E images (docs/demo_data.md).

Tumour-rich H&E texture is blended into normal tissue through smooth random masks, so every
patch has an exact 0/1 tumour mask and an image-level label: positives hold 20-90 % tumour
(spread evenly over that range), negatives none. The output follows the patch dataset
layout (docs/method.md §10) and adds ``summary.json``, ``provenance.json`` and
``contact_sheet.png``.

How a patch is made:

* Every source image is cut along its long axis into three disjoint rectangles, one per split
  (train / val / test, by tissue area 50 / 20 / 30 %), and each rectangle is resampled on its
  own to the working resolution of 0.5 um/px, so no source pixel reaches two splits. Tissue
  is found with the slide tissue detector's saturation and Otsu threshold
  (:mod:`mmseg_epsam.wsi.tissue`).
* A negative is one tissue-rich crop of a normal region (random flip / rot90). A positive
  adds a tumour layer quilted from 3x3 overlapping, feather-blended tiles of one tumour region
  (the tumour images are too small for whole crops), blended in through a thresholded
  Gaussian-filtered noise field with a soft edge. The mask is where the tumour weight
  exceeds 0.5; the threshold is the field's quantile for the patch's target fraction.
* The composed patch is upsampled ``upsample`` times (default 2: 256 px of 0.5 um/px
  detail become a 512 px patch on the paper's 0.25 um/px, 40x grid).

Deterministic: the same settings and sources give byte-identical files. Resumable: patches
already on disk from the same settings are kept; every file is written atomically.
``tools/make_demo_data.py`` is the command line.
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mmengine.utils import ProgressBar
from PIL import Image, ImageDraw, ImageFont

from mmseg_epsam.utils.io import atomic_write
from mmseg_epsam.wsi.tissue import otsu_threshold, saturation

GENERATOR_VERSION = 1
SPLITS = ('train', 'val', 'test')
REGION_FRACTIONS = (0.5, 0.2, 0.3)       # share of each source's tissue per split
WORK_MPP = 0.5                            # um/px at which patches are composed
POSITIVE_RANGE = (0.2, 0.9)               # paper: positives hold 20-90 % tumour
TARGET_RANGE = (0.22, 0.88)               # targets drawn inside it, clear of the limits
# Tissue = saturation above Otsu's threshold, capped here: an image that is all tissue has no
# glass for Otsu to separate, and its threshold would cut the tissue in two.
TISSUE_SATURATION_CAP = 0.1
SLIDE_SUFFIXES = ('.svs', '.tif', '.tiff', '.ndpi', '.mrxs', '.scn', '.vms', '.bif')


class DemoDataError(RuntimeError):
    """Bad input or settings; the message names the file and the problem."""


@dataclass(frozen=True)
class SourceSpec:
    """A source image, its role and its resolution."""

    path: Path
    mpp: float
    role: str                 # 'normal' or 'tumour'


@dataclass
class Region:
    """One split's rectangle of one source, resampled to the working resolution."""

    region_id: str
    source: str               # file name
    role: str
    split: str
    box: tuple[int, int, int, int]   # x0, y0, x1, y1 in native source pixels
    image: np.ndarray                # HxWx3 uint8 at WORK_MPP
    positions: np.ndarray            # Nx2 (y, x) top-left corners of tissue-rich crops


@dataclass
class PatchPlan:
    """Every random choice for one patch; rendering it is deterministic."""

    name: str
    split: str
    label: int
    normal_region: str
    normal_yx: tuple[int, int]
    normal_turn: tuple[int, int]     # (rot90 count, flip 0/1)
    tumour_region: str | None = None
    tumour_tiles: list | None = None  # [(y, x, rot, flip), ...] row-major 3x3
    target_fraction: float | None = None
    field_sigma: float | None = None
    field_seed: int | None = None


# --------------------------------------------------------------------------- sources


def load_rgb(path: Path) -> np.ndarray:
    """Read a whole RGB image (slides through OpenSlide at level 0) as HxWx3 uint8."""
    try:
        if path.suffix.lower() in SLIDE_SUFFIXES:
            import openslide
            with openslide.OpenSlide(str(path)) as slide:
                rgba = np.asarray(slide.read_region((0, 0), 0, slide.dimensions))
            rgb = rgba[..., :3].copy()
            rgb[rgba[..., 3] == 0] = 255          # transparent = outside the scan = glass
            return rgb
        with Image.open(path) as im:
            return np.asarray(im.convert('RGB'))
    except (OSError, ValueError) as err:
        raise DemoDataError(f'{path}: cannot read image ({err})') from err


def tissue_threshold(rgb: np.ndarray) -> float:
    """Saturation threshold of a source image's tissue (docs/method.md §7).

    Otsu's threshold of the saturation fraction on every 4th pixel, capped at
    ``TISSUE_SATURATION_CAP``.
    """
    return min(otsu_threshold(saturation(rgb[::4, ::4], as_fraction=True).ravel()),
               TISSUE_SATURATION_CAP)


def tissue_mask(rgb: np.ndarray, threshold: float) -> np.ndarray:
    """Tissue = saturation fraction above ``threshold``."""
    return saturation(rgb, as_fraction=True) > threshold


def split_bounds(weights: np.ndarray, fractions: tuple[float, ...], min_len: int,
                 what: str) -> list[tuple[int, int]]:
    """Cut an axis into consecutive intervals holding ``fractions`` of ``weights``.

    Every interval is at least ``min_len`` long; the first one gives way to the others.
    """
    n = len(weights)
    if n < min_len * len(fractions):
        raise DemoDataError(f'{what}: {n} px along its long axis, too small for '
                            f'{len(fractions)} regions of at least {min_len} px each')
    cum = np.cumsum(weights, dtype=np.float64)
    total = cum[-1] if cum[-1] > 0 else 1.0
    cuts = [int(np.searchsorted(cum, total * f)) + 1 for f in np.cumsum(fractions)[:-1]]
    lengths = np.diff([0, *cuts, n])
    for i in range(1, len(lengths)):
        if lengths[i] < min_len:
            lengths[0] -= min_len - lengths[i]
            lengths[i] = min_len
    if lengths[0] < min_len:
        raise DemoDataError(f'{what}: cannot give every split {min_len} px')
    ends = np.cumsum(lengths)
    return [(int(e - ln), int(e)) for e, ln in zip(ends, lengths)]


def resample(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (Lanczos down, bicubic up); identity when factor is 1."""
    if abs(factor - 1) < 1e-9:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    method = Image.LANCZOS if factor < 1 else Image.BICUBIC
    return np.asarray(Image.fromarray(rgb).resize(size, method))


def crop_positions(tissue: np.ndarray, size: int, min_tissue: float,
                   stride: int) -> np.ndarray:
    """Top-left (y, x) of every ``size``² window on a ``stride`` grid with enough tissue."""
    h, w = tissue.shape
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = tissue.cumsum(0).cumsum(1)
    ys = np.arange(0, h - size + 1, stride)
    xs = np.arange(0, w - size + 1, stride)
    yy, xx = np.meshgrid(ys, xs, indexing='ij')
    area = (integral[yy + size, xx + size] - integral[yy, xx + size]
            - integral[yy + size, xx] + integral[yy, xx])
    keep = area >= min_tissue * size * size
    return np.stack([yy[keep], xx[keep]], axis=1)


def build_regions(spec: SourceSpec, crop: int, min_tissue: float) -> list[Region]:
    """Cut one source into per-split regions at the working resolution."""
    rgb = load_rgb(spec.path)
    threshold = tissue_threshold(rgb)
    tissue = tissue_mask(rgb, threshold)
    axis = 0 if rgb.shape[0] >= rgb.shape[1] else 1      # cut across the long axis
    scale = spec.mpp / WORK_MPP                          # native px -> working px
    min_native = math.ceil((crop + 1) / scale)
    bounds = split_bounds(tissue.sum(axis=1 - axis), REGION_FRACTIONS, min_native,
                          str(spec.path))
    regions = []
    for split, (a, b) in zip(SPLITS, bounds):
        if axis == 0:
            box = (0, a, rgb.shape[1], b)
        else:
            box = (a, 0, b, rgb.shape[0])
        image = resample(rgb[box[1]:box[3], box[0]:box[2]], scale)
        positions = crop_positions(tissue_mask(image, threshold), crop, min_tissue,
                                   stride=max(1, crop // 16))
        if len(positions) == 0:
            raise DemoDataError(
                f'{spec.path}: the {split} region {box} has no {crop}x{crop} window with '
                f'{min_tissue:.0%} tissue at {WORK_MPP} um/px (lower --min-tissue?)')
        regions.append(Region(region_id=f'{spec.path.name}:{split}', source=spec.path.name,
                              role=spec.role, split=split, box=box, image=image,
                              positions=positions))
    return regions


# --------------------------------------------------------------------------- patches


@dataclass(frozen=True)
class Geometry:
    """Patch and quilt sizes, all derived from the patch size and upsampling."""

    patch: int                # output side
    footprint: int            # composed side in working pixels
    tile: int                 # tumour quilt tile side
    overlap: int              # quilt overlap

    @classmethod
    def from_args(cls, patch: int, upsample: int) -> 'Geometry':
        """Check the sizes fit together and derive the quilt."""
        if patch % upsample:
            raise DemoDataError(f'--patch-size {patch} is not a multiple of --upsample '
                                f'{upsample}')
        footprint = patch // upsample
        if footprint < 16:
            raise DemoDataError(f'--patch-size / --upsample = {footprint} px; need >= 16')
        overlap = max(2, footprint // 16)
        tile = math.ceil((footprint + 2 * overlap) / 3)
        return cls(patch=patch, footprint=footprint, tile=tile, overlap=overlap)


def _turn(img: np.ndarray, rot: int, flip: int) -> np.ndarray:
    out = np.rot90(img, rot)
    return out[:, ::-1] if flip else out


def _pick(rng: np.random.Generator, region: Region) -> tuple[int, int]:
    y, x = region.positions[rng.integers(len(region.positions))]
    return int(y), int(x)


def plan_split(split: str, n: int, seed: int, normal: list[Region],
               tumour: list[Region]) -> list[PatchPlan]:
    """Draw every random choice for one split (cheap; rendering comes later)."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    n_pos = n // 2
    labels = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n - n_pos, int)])
    lo, hi = TARGET_RANGE
    fractions = lo + (hi - lo) * (rng.permutation(n_pos) + rng.random(n_pos)) / max(n_pos, 1)
    normal_area = np.array([len(r.positions) for r in normal], float)
    tumour_area = np.array([r.image.shape[0] * r.image.shape[1] for r in tumour], float)
    plans, k_pos = [], 0
    for i, label in enumerate(labels):
        prng = np.random.default_rng([seed, SPLITS.index(split), i])
        region = normal[prng.choice(len(normal), p=normal_area / normal_area.sum())]
        plan = PatchPlan(name=f'{split}_{i:04d}', split=split, label=int(label),
                         normal_region=region.region_id, normal_yx=_pick(prng, region),
                         normal_turn=(int(prng.integers(4)), int(prng.integers(2))))
        if label:
            t_region = tumour[prng.choice(len(tumour), p=tumour_area / tumour_area.sum())]
            plan.tumour_region = t_region.region_id
            plan.tumour_tiles = [(*_pick(prng, t_region), int(prng.integers(4)),
                                  int(prng.integers(2))) for _ in range(9)]
            plan.target_fraction = float(fractions[k_pos])
            plan.field_sigma = float(prng.uniform(0.07, 0.15))
            plan.field_seed = int(prng.integers(2**31))
            k_pos += 1
        plans.append(plan)
    return plans


def quilt(region: Region, tiles: list, geo: Geometry) -> np.ndarray:
    """3x3 overlapping tiles, feather-blended, cut to the footprint (float32 HxWx3)."""
    t, o, step = geo.tile, geo.overlap, geo.tile - geo.overlap
    side = 2 * step + t
    ramp = np.minimum(1.0, np.minimum(np.arange(t) + 0.5, t - np.arange(t) - 0.5) / o)
    weight = np.outer(ramp, ramp).astype(np.float32)[..., None]
    acc = np.zeros((side, side, 3), np.float32)
    norm = np.zeros((side, side, 1), np.float32)
    for k, (y, x, rot, flip) in enumerate(tiles):
        tile = _turn(region.image[y:y + t, x:x + t], rot, flip).astype(np.float32)
        oy, ox = (k // 3) * step, (k % 3) * step
        acc[oy:oy + t, ox:ox + t] += tile * weight
        norm[oy:oy + t, ox:ox + t] += weight
    return (acc / norm)[:geo.footprint, :geo.footprint]


def smooth_field(size: int, sigma_frac: float, seed: int) -> np.ndarray:
    """Gaussian-filtered white noise (periodic, via FFT), bicubically upsampled to size²."""
    grid = max(8, size // 8)
    noise = np.random.default_rng(seed).standard_normal((grid, grid))
    fy = np.fft.fftfreq(grid)[:, None]
    fx = np.fft.rfftfreq(grid)[None, :]
    sigma = sigma_frac * grid
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))
    low = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=noise.shape).astype(np.float32)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC))


def tumour_alpha(field: np.ndarray, fraction: float, edge: float = 0.12) -> np.ndarray:
    """Soft tumour weight in [0, 1]; exactly ``round(fraction*N)`` pixels lie above 0.5.

    The threshold is the field's (1 - fraction) order statistic; the weight ramps linearly
    over ``edge`` field standard deviations around it.
    """
    k = field.size - int(round(fraction * field.size))
    if not 0 < k < field.size:
        raise ValueError(f'tumour fraction {fraction} leaves no pixel on one side')
    flat = np.partition(field.ravel(), (k - 1, k))
    thr = (flat[k - 1] + flat[k]) / 2
    return np.clip((field - thr) / (edge * field.std()) + 0.5, 0.0, 1.0)


def upsample(img: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of a float HxWx3 image in [0, 255] to size², as float32."""
    img8 = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if img8.shape[0] == size:
        return img8.astype(np.float32)
    return np.asarray(Image.fromarray(img8).resize((size, size), Image.BICUBIC), np.float32)


def render(plan: PatchPlan, regions: dict[str, Region], geo: Geometry
           ) -> tuple[np.ndarray, np.ndarray]:
    """Compose one patch: (RGB uint8, mask uint8 0/1), both patch-size²."""
    region = regions[plan.normal_region]
    y, x = plan.normal_yx
    normal = _turn(region.image[y:y + geo.footprint, x:x + geo.footprint], *plan.normal_turn)
    image = upsample(normal.astype(np.float32), geo.patch)
    mask = np.zeros((geo.patch, geo.patch), np.uint8)
    if plan.label:
        tumour = upsample(quilt(regions[plan.tumour_region], plan.tumour_tiles, geo), geo.patch)
        alpha = tumour_alpha(smooth_field(geo.patch, plan.field_sigma, plan.field_seed),
                             plan.target_fraction)[..., None]
        image = image * (1 - alpha) + tumour * alpha
        mask = (alpha[..., 0] > 0.5).astype(np.uint8)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


# --------------------------------------------------------------------------- writing


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='PNG', compress_level=1)  # 2x faster than 6, +12 %
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by all (mode 0644)."""
    with atomic_write(str(path)) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)
        os.chmod(tmp, 0o644)


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as stable, indented JSON atomically."""
    write_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + '\n').encode())


def read_mask(path: Path) -> np.ndarray:
    """Read a 0/1 mask PNG."""
    with Image.open(path) as im:
        return np.asarray(im)


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    edge = mask & ~inner
    thick = edge.copy()                      # two pixels wide, to be visible in a thumbnail
    thick[1:] |= edge[:-1]
    thick[:, 1:] |= edge[:, :-1]
    return thick


def contact_sheet(out: Path, records: list[dict], cols: int = 8, thumb: int = 160) -> bytes:
    """PNG bytes of a grid: per split, positives across the tumour range, then negatives.

    Tumour masks are outlined in green (the line lies inside the tumour); captions give name,
    label (T tumour / N normal) and tumour %.
    """
    font = ImageFont.load_default()
    caption = 14
    chosen = []
    for split in SPLITS:
        pos = sorted((r for r in records if r['split'] == split and r['label']),
                     key=lambda r: r['tumour_fraction'])
        neg = [r for r in records if r['split'] == split and not r['label']]
        n_pos = min(len(pos), cols + cols // 2)
        n_neg = min(len(neg), 2 * cols - n_pos)
        picks = [pos[round(i * (len(pos) - 1) / max(n_pos - 1, 1))] for i in range(n_pos)]
        chosen.append((split, picks + neg[:n_neg]))
    rows = sum(math.ceil(len(p) / cols) for _, p in chosen) or 1
    sheet = Image.new('RGB', (cols * thumb, rows * (thumb + caption)), 'white')
    draw = ImageDraw.Draw(sheet)
    row = 0
    for split, picks in chosen:
        for i, rec in enumerate(picks):
            with Image.open(out / 'img_dir' / split / f'{rec["name"]}.png') as im:
                img = np.asarray(im.convert('RGB').resize((thumb, thumb), Image.BILINEAR)).copy()
            mask = read_mask(out / 'ann_dir' / split / f'{rec["name"]}.png')
            small = np.asarray(Image.fromarray(mask).resize((thumb, thumb), Image.NEAREST)) > 0
            img[_outline(small)] = (0, 255, 0)
            x0, y0 = (i % cols) * thumb, (row + i // cols) * (thumb + caption)
            sheet.paste(Image.fromarray(img), (x0, y0 + caption))
            text = (f'{rec["name"]} T {rec["tumour_fraction"]:.0%}' if rec['label']
                    else f'{rec["name"]} N')
            draw.text((x0 + 2, y0 + 1), text, fill='black', font=font)
        row += math.ceil(len(picks) / cols)
    buf = io.BytesIO()
    sheet.save(buf, format='PNG', compress_level=6)
    return buf.getvalue()


def fraction_histogram(values: list[float]) -> list[int]:
    """Counts of tumour fractions in the bins [0.2, 0.3), ..., [0.8, 0.9]."""
    counts, _ = np.histogram(values, bins=np.linspace(0.2, 0.9, 8))
    return [int(c) for c in counts]


# --------------------------------------------------------------------------- the dataset


def build_demo_dataset(out: Path, specs: list[SourceSpec], sources: list[dict], seed: int = 0,
                       patch_size: int = 512, upsample: int = 2,
                       counts: dict[str, int] | None = None,
                       min_tissue: float = 0.75) -> tuple[dict, int]:
    """Compose the demo dataset under ``out``.

    Returns the summary (also written as ``summary.json``) and the number of patches
    rendered (the others were already on disk).

    Args:
        out: dataset root to write.
        specs: the normal and tumour source images.
        sources: one summary entry per spec (file, role, um_per_px, sha256 and licence).
        seed: seed of every random choice.
        patch_size: output patch side in pixels.
        upsample: output pixels per composed pixel.
        counts: patches per split (default 240 / 40 / 60).
        min_tissue: least tissue fraction of a normal crop or tumour tile.

    Raises:
        DemoDataError: bad settings or sources, or ``out`` built with other settings.
    """
    counts = dict(counts or dict(train=240, val=40, test=60))
    geo = Geometry.from_args(patch_size, upsample)
    settings = dict(generator_version=GENERATOR_VERSION, seed=seed,
                    patch_size=patch_size, upsample=upsample,
                    counts={s: counts[s] for s in SPLITS},
                    min_tissue=min_tissue,
                    sources=[(e['file'], e['role'], e['um_per_px'], e['sha256'])
                             for e in sources])
    settings_path = out / '.make_demo_data.json'
    if settings_path.is_file():
        if json.loads(settings_path.read_text()) != json.loads(json.dumps(settings)):
            raise DemoDataError(f'{settings_path}: {out} was built with other settings; '
                                f'remove it or choose another --out')
    else:
        write_json(settings_path, settings)

    regions: dict[str, Region] = {}
    for spec in specs:
        crop = geo.footprint if spec.role == 'normal' else geo.tile
        for region in build_regions(spec, crop, min_tissue):
            regions[region.region_id] = region
    by_split = {s: ([r for r in regions.values() if r.split == s and r.role == 'normal'],
                    [r for r in regions.values() if r.split == s and r.role == 'tumour'])
                for s in SPLITS}
    plans = [p for s in SPLITS
             for p in plan_split(s, counts[s], seed, *by_split[s])]

    records, written = [], 0
    bar = ProgressBar(len(plans))
    for plan in plans:
        img_path = out / 'img_dir' / plan.split / f'{plan.name}.png'
        ann_path = out / 'ann_dir' / plan.split / f'{plan.name}.png'
        if img_path.is_file() and ann_path.is_file():
            mask = read_mask(ann_path)
        else:
            image, mask = render(plan, regions, geo)
            write_atomic(img_path, _png_bytes(image))
            write_atomic(ann_path, _png_bytes(mask))
            written += 1
        fraction = float(mask.mean())
        lo, hi = POSITIVE_RANGE
        if (plan.label and not lo <= fraction <= hi) or (not plan.label and fraction > 0):
            raise DemoDataError(f'{ann_path}: tumour fraction {fraction:.3f} does not fit '
                                f'label {plan.label}')
        records.append(dict(asdict(plan), tumour_fraction=round(fraction, 6)))
        bar.update()
    print()

    for split in SPLITS:
        lines = ''.join(f'{r["name"]} {r["label"]}\n' for r in records if r['split'] == split)
        write_atomic(out / 'splits' / f'{split}.txt', lines.encode())
    write_json(out / 'provenance.json', records)
    write_atomic(out / 'contact_sheet.png', contact_sheet(out, records))
    summary = dict(
        generator='tools/make_demo_data.py', settings=settings,
        um_per_px=WORK_MPP / upsample, detail_um_per_px=WORK_MPP,
        counts={s: dict(positive=sum(r['label'] for r in records if r['split'] == s),
                        negative=sum(1 - r['label'] for r in records if r['split'] == s))
                for s in SPLITS},
        tumour_fraction_bins=[round(b, 1) for b in np.linspace(0.2, 0.9, 8)],
        tumour_fraction_histogram={
            s: fraction_histogram([r['tumour_fraction'] for r in records
                                   if r['split'] == s and r['label']]) for s in SPLITS},
        regions={rid: dict(source=r.source, role=r.role, split=r.split, box_xyxy=list(r.box))
                 for rid, r in sorted(regions.items())},
        sources=sources)
    write_json(out / 'summary.json', summary)
    return summary, written
