"""Whole-slide inference (mmseg_epsam.apis.wsi_inference, wsi.tiling / tile_store / export,
tools/infer_wsi.py).

Slides are small generated pyramidal TIFFs (SyntheticTissue: pink tissue, a purple tumour
polygon with a square hole). Two predictors:

* ``TumourColourStandIn``: a STAND-IN for EP-SAM, not the method: it marks the pixels of
  the synthetic tumour colour, so the stitched outputs must recover the known region; it
  checks tiling, blending, stitching, coordinates and export, not the models;
* the real EP-SAM path (classifier from configs/epsam/classifier_demo.py and the tiny SAM,
  both freshly initialised and saved as a fake pipeline run): outputs must exist and be
  valid, whatever random weights predict.
"""
import hashlib
import importlib.util
import json
import math
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys

import cv2
import numpy as np
import openslide
import pytest
import tifffile

from mmseg_epsam.wsi.annotations import SlideAnnotations, rasterize_polygons
from mmseg_epsam.wsi.export import mask_polygons, tumour_geojson
from mmseg_epsam.apis.tile_predictor import TilePrediction
from mmseg_epsam.apis.wsi_inference import (MissingResolutionError, WSIInferencer,
                                            WSIInferenceSettings, shard_slides)
from mmseg_epsam.wsi.slide_reader import SlideInfo
from mmseg_epsam.wsi.tile_store import TileRecord
from mmseg_epsam.wsi.tiling import (TileGrid, overlap_ramp, plan_tile_grid, stitch_tiles,
                                    tile_map_weight)

from synthetic_slides import SyntheticTissue, corrupt_tiles, write_pyramidal_tiff
from untrained_pipeline import write_untrained_pipeline_run

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PIPELINE_CONFIG = osp.join(ROOT, 'tests', 'configs', 'epsam_tiny_sam.py')  # tiny random SAM
MPP = 0.5
TUMOUR_GREEN_MAX = 80  # tumour (150, 70, 170) and its dots have G < 80; tissue >= 90
# A 2048 x 1536 slide: tissue ellipse, tumour spanning 4 x 4 tiles of 256, a hole inside.
SIZE = (2048, 1536)
TISSUE = [(1024.0, 768.0, 960.0, 700.0)]
TUMOUR = np.array([[520., 420.], [1290., 380.], [1340., 1080.], [560., 1120.], [470., 760.]])
HOLE = np.array([[760., 640.], [960., 640.], [960., 840.], [760., 840.]])
ANNOTATIONS = SlideAnnotations(tumour=[TUMOUR], exclusion=[HOLE])
MASK_IOU_MIN = 0.95      # stitched mask vs the rasterised annotation, on the map grid
GEOJSON_IOU_MIN = 0.93   # GeoJSON polygons (rasterised back) vs the annotation


class Interrupted(Exception):
    """Raised by the stand-in to simulate a run stopped mid-slide."""


class TumourColourStandIn:
    """STAND-IN predictor (not EP-SAM): tumour probability 1 on the synthetic tumour colour.

    Tiles without such pixels are reported as gated. ``fail_after`` batches it raises
    :class:`Interrupted` (a killed run); ``tiles_seen`` counts the tiles it predicted.
    """

    def __init__(self, fail_after=None, everything=False):
        self.timings = {}
        self.everything = everything  # mark every pixel of every tile as tumour
        self.fail_after = fail_after
        self.batches = 0
        self.tiles_seen = 0
        self.tiles_with_tumour = 0

    def describe(self):
        return dict(predictor='stand-in: synthetic tumour colour (G < 80)')

    def __call__(self, tiles, keys):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise Interrupted('stopped')
        self.batches += 1
        predictions = []
        for tile in tiles:
            tumour = (tile[..., 1] < TUMOUR_GREEN_MAX).astype(np.float32)
            if self.everything:
                tumour[:] = 1
            self.tiles_seen += 1
            if tumour.any():
                self.tiles_with_tumour += 1
                predictions.append(TilePrediction(1.0, 'segmented', tumour))
            else:
                predictions.append(TilePrediction(0.0, 'gated'))
        return predictions


def write_slide(path, size=SIZE, tissue=TISSUE, annotations=ANNOTATIONS, mpp=MPP,
                n_levels=3):
    write_pyramidal_tiff(path, size, SyntheticTissue(tissue, annotations), mpp=mpp,
                         n_levels=n_levels, tile_size=128)
    return str(path)


def write_slide_without_mpp(path, size=(512, 512)):
    """A tiled white RGB TIFF with no resolution tags (OpenSlide reports no µm/px)."""
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(np.full((size[1], size[0], 3), 245, np.uint8), tile=(128, 128),
                   photometric='rgb')
    return str(path)


def iou(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return (a & b).sum() / max(1, (a | b).sum())


def expected_tiff_levels(size, tile=256):
    longest = max(size)
    return 1 if longest <= tile else 1 + math.ceil(math.log2(longest / tile))


def geojson_mask(geojson, size, downsample):
    """Rasterise GeoJSON polygons (outer ring filled, holes cleared) on the map grid."""
    outers, holes = [], []
    for feature in geojson['features']:
        rings = [np.array(r[:-1]) for r in feature['geometry']['coordinates']]
        outers.append(rings[0])
        holes.extend(rings[1:])
    return rasterize_polygons(outers, holes, (0, 0), size, downsample)


@pytest.fixture(scope='module')
def slide(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp('slides') / 'tumour_slide.tif')


# ---- maths: blending weights and the output resolution rule ---------------------------------
def test_overlap_ramps_sum_to_one_and_move_the_seam_to_the_overlap_middle():
    tile, overlap = 64, 16
    ramp = overlap_ramp(tile, overlap)
    assert ramp[0] == pytest.approx(np.sin(np.pi * 0.5 / 32) ** 2)
    # centres at u = i + 0.5, r(u) = sin^2(pi u / 32): symmetric about u = 8, where r = 1/2
    assert ramp[7] + ramp[8] == pytest.approx(1.0)
    assert np.all(ramp[overlap:tile - overlap] == 1.0)
    # three tiles at stride 48: the ramps add up to exactly 1 between the outer ramps
    total = np.zeros(48 * 2 + tile)
    for start in (0, 48, 96):
        total[start:start + tile] += ramp
    np.testing.assert_allclose(total[overlap:-overlap], 1.0, atol=1e-12)

    # two tiles that disagree (left says tumour, right says not) on a map at full resolution
    grid = TileGrid(level=0, level_downsample=1.0, level_size=(112, 64), tile_size=64,
                    overlap=16, output_factor=1)
    assert (grid.columns, grid.rows) == (2, 1)
    records = [TileRecord(0, 1.0, 'segmented', np.ones((64, 64), np.float32)),
               TileRecord(1, 0.0, 'gated', None)]
    probability = stitch_tiles(iter(records), grid)
    row = probability[32]
    np.testing.assert_allclose(row[:48], 1.0)              # only the left tile
    np.testing.assert_allclose(row[48:64], ramp[48:64], rtol=1e-6)  # its ramp, summing to 1
    np.testing.assert_allclose(row[64:], 0.0)
    label = row > 0.5
    assert label[:56].all() and not label[56:].any()        # the seam: middle of the overlap
    # the map-grid weights are the area means of the full-resolution weights
    weight = tile_map_weight(64, 16, 4)
    np.testing.assert_allclose(weight[0, 0], np.outer(ramp, ramp)[:4, :4].mean())


def test_output_resolution_rule():
    def info(width, height, downsamples=(1.0, 4.0)):
        return SlideInfo(path='s.svs', level_dimensions=tuple(
            (int(width / d), int(height / d)) for d in downsamples),
            level_downsamples=downsamples, mpp=(0.25, 0.25), vendor='test')

    grid = plan_tile_grid(info(20000, 20000), tile_size=512, overlap=64)
    assert (grid.output_factor, grid.output_downsample, grid.map_size) == (4, 4.0, (5000, 5000))
    assert grid.columns == 45 and (grid.columns - 1) * grid.stride + 512 >= 20000
    # a larger slide: the factor doubles until the map has at most max_output_pixels
    grid = plan_tile_grid(info(20000, 20000), tile_size=512, overlap=64,
                          max_output_pixels=1 << 22)
    assert grid.output_factor == 16 and grid.map_size == (1250, 1250)
    grid = plan_tile_grid(info(20000, 20000), level=1, tile_size=512, overlap=64)
    assert grid.output_downsample == 16.0 and grid.map_size == (1250, 1250)
    with pytest.raises(ValueError, match='must divide tile_size'):
        plan_tile_grid(info(20000, 20000), tile_size=512, overlap=50)
    with pytest.raises(ValueError, match='overlap must lie'):
        plan_tile_grid(info(2000, 2000), tile_size=256, overlap=200)
    with pytest.raises(ValueError, match='level 2 requested'):
        plan_tile_grid(info(2000, 2000), level=2)


def test_geojson_keeps_holes_and_level0_coordinates():
    mask = np.zeros((40, 50), np.uint8)
    mask[5:30, 10:45] = 1
    mask[12:20, 20:30] = 0    # a hole
    mask[34, 3] = 1           # a single pixel: given its pixel square
    polygons = mask_polygons(mask, downsample=8.0)
    assert sorted(len(p) for p in polygons) == [1, 2]
    region = next(p for p in polygons if len(p) == 2)
    outer, hole = region
    # vertices at map pixel centres, times 8: outer x from (10 + 0.5) * 8 to (44 + 0.5) * 8
    assert outer[:, 0].min() == 84.0 and outer[:, 0].max() == 356.0
    assert outer[:, 1].min() == 44.0 and outer[:, 1].max() == 236.0
    # the hole is traced through the tumour pixels around it: x from 19.5 to 30.5 px
    assert hole[:, 0].min() == 19.5 * 8 and hole[:, 0].max() == 30.5 * 8
    single = next(p for p in polygons if len(p) == 1)[0]
    np.testing.assert_allclose(single.min(axis=0), [3 * 8, 34 * 8])
    np.testing.assert_allclose(single.max(axis=0), [4 * 8, 35 * 8])
    collection = tumour_geojson(polygons)
    feature = collection['features'][0]
    assert collection['type'] == 'FeatureCollection'
    assert feature['properties']['classification'] == {'name': 'Tumor', 'color': [200, 0, 0]}
    assert feature['properties']['objectType'] == 'annotation'
    for ring in feature['geometry']['coordinates']:
        assert ring[0] == ring[-1]  # closed rings


# ---- the stand-in predictor recovers the known region -----------------------------------------
@pytest.mark.parametrize('level, output_factor', [(0, 4), (1, 4)])
def test_stand_in_region_is_recovered_across_seams(slide, tmp_path, level, output_factor):
    stand_in = TumourColourStandIn()
    settings = WSIInferenceSettings(level=level, tile_size=256, overlap=32, batch_size=4,
                                    output_factor=output_factor)
    summary = WSIInferencer(stand_in, settings, progress=False).infer(slide, str(tmp_path))
    downsample = summary['output']['downsample']
    assert downsample == output_factor * 2 ** level
    assert summary['status'] == 'complete'
    assert stand_in.tiles_with_tumour >= 4  # the region is cut by several seams
    map_size = tuple(summary['output']['size'])
    truth = ANNOTATIONS.window_mask((0, 0), map_size, downsample)

    mask = tifffile.imread(summary['outputs']['mask_tiff'], level=0)
    assert mask.shape == map_size[::-1] and set(np.unique(mask)) == {0, 255}
    assert iou(mask, truth) >= MASK_IOU_MIN

    with open(summary['outputs']['geojson']) as f:
        geojson = json.load(f)
    assert len(geojson['features']) == 1  # one region, not one per tile
    rings = geojson['features'][0]['geometry']['coordinates']
    assert len(rings) == 2  # the outer boundary and the hole
    assert geojson['features'][0]['properties']['classification']['name'] == 'Tumor'
    assert iou(geojson_mask(geojson, map_size, downsample), truth) >= GEOJSON_IOU_MIN
    # level-0 coordinates: the outer ring spans the tumour's bounding box (within a map pixel)
    outer, hole = np.array(rings[0]), np.array(rings[1])
    np.testing.assert_allclose(outer.min(axis=0), TUMOUR.min(axis=0), atol=1.5 * downsample)
    np.testing.assert_allclose(outer.max(axis=0), TUMOUR.max(axis=0), atol=1.5 * downsample)
    np.testing.assert_allclose(hole.min(axis=0), HOLE.min(axis=0), atol=1.5 * downsample)
    np.testing.assert_allclose(hole.max(axis=0), HOLE.max(axis=0), atol=1.5 * downsample)

    with openslide.OpenSlide(summary['outputs']['mask_tiff']) as tiff:
        assert tiff.level_count == expected_tiff_levels(map_size)
        assert tiff.dimensions == map_size
        assert float(tiff.properties['openslide.mpp-x']) == pytest.approx(MPP * downsample)
        assert float(tiff.properties['openslide.mpp-y']) == pytest.approx(MPP * downsample)

    tumour_mm2 = (cv2.contourArea(TUMOUR.astype(np.float32))
                  - cv2.contourArea(HOLE.astype(np.float32))) * MPP ** 2 / 1e6
    assert summary['tumour_area_mm2'] == pytest.approx(tumour_mm2, rel=0.05)
    tissue_mm2 = math.pi * TISSUE[0][2] * TISSUE[0][3] * MPP ** 2 / 1e6
    assert summary['tissue_area_mm2'] == pytest.approx(tissue_mm2, rel=0.1)
    tiles = summary['tiles']
    assert tiles['total'] == stand_in.tiles_seen == tiles['gated'] + tiles['segmented']
    assert tiles['segmented'] == stand_in.tiles_with_tumour
    thumbnail = cv2.imread(summary['outputs']['thumbnail'])
    assert max(thumbnail.shape[:2]) == pytest.approx(1024, abs=1)


def test_predictions_outside_the_tissue_are_clipped(slide, tmp_path):
    clipped = WSIInferencer(TumourColourStandIn(everything=True),
                            WSIInferenceSettings(tile_size=256, overlap=32),
                            progress=False).infer(slide, str(tmp_path / 'clipped'))
    tissue_mm2 = clipped['tissue_area_mm2']
    assert clipped['tumour_area_mm2'] == pytest.approx(tissue_mm2, rel=0.02)
    assert clipped['tumour_outside_tissue_mm2'] > 0.1 * tissue_mm2  # tile corners off tissue
    mask = tifffile.imread(clipped['outputs']['mask_tiff'], level=0)
    ellipse = np.zeros_like(mask)
    cx, cy, rx, ry = (v / 4 for v in TISSUE[0])
    cv2.ellipse(ellipse, (round(cx), round(cy)), (round(rx), round(ry)), 0, 0, 360, 1, -1)
    assert iou(mask, ellipse) >= 0.95

    unclipped = WSIInferencer(TumourColourStandIn(everything=True),
                              WSIInferenceSettings(tile_size=256, overlap=32,
                                                   clip_to_tissue=False),
                              progress=False).infer(slide, str(tmp_path / 'unclipped'))
    assert unclipped['tumour_area_mm2'] == pytest.approx(
        clipped['tumour_area_mm2'] + clipped['tumour_outside_tissue_mm2'])


def test_resume_after_interruption_gives_identical_outputs(slide, tmp_path):
    settings = WSIInferenceSettings(tile_size=256, overlap=32, batch_size=4)
    clean = WSIInferencer(TumourColourStandIn(), settings, progress=False).infer(
        slide, str(tmp_path / 'clean'))

    out = str(tmp_path / 'resumed')
    with pytest.raises(Interrupted):
        WSIInferencer(TumourColourStandIn(fail_after=3), settings, progress=False).infer(
            slide, out)
    assert not osp.exists(clean['outputs']['mask_tiff'].replace(
        str(tmp_path / 'clean'), out))  # nothing exported by the stopped run
    second = TumourColourStandIn()
    resumed = WSIInferencer(second, settings, progress=False).infer(slide, out)
    assert resumed['tiles']['resumed'] == 12  # 3 batches of 4 were checkpointed
    assert second.tiles_seen == clean['tiles']['total'] - 12
    for key in ('mask_tiff', 'probability_tiff', 'geojson', 'thumbnail'):
        with open(clean['outputs'][key], 'rb') as a, open(resumed['outputs'][key], 'rb') as b:
            assert a.read() == b.read(), key
    for key in ('tumour_area_mm2', 'tissue_area_mm2', 'tumour_polygons', 'output',
                'fingerprint'):
        assert clean[key] == resumed[key]

    third = TumourColourStandIn()  # a finished slide is skipped
    again = WSIInferencer(third, settings, progress=False).infer(slide, out)
    assert third.tiles_seen == 0 and again['timings_s'] == resumed['timings_s']

    # checkpointed tiles of other settings are refused, naming the file
    other = WSIInferenceSettings(tile_size=256, overlap=64, batch_size=4)
    with pytest.raises(RuntimeError, match='_tiles.sqlite: .*other settings'):
        WSIInferencer(TumourColourStandIn(), other, progress=False).infer(slide, out)


# ---- the real EP-SAM path on a tiny SAM -------------------------------------------------------
@pytest.fixture(scope='module')
def pipeline_work_dir(tmp_path_factory):
    """A fake finished pipeline run: freshly initialised classifier and tiny SAM decoder."""
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    work_dir = str(tmp_path_factory.mktemp('pipeline_run'))
    write_untrained_pipeline_run(PIPELINE_CONFIG, work_dir)
    return work_dir


def infer_wsi_main():
    """``main`` of tools/infer_wsi.py, loaded in-process (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('infer_wsi', osp.join(ROOT, 'tools',
                                                                        'infer_wsi.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_cli_with_the_real_pipeline_writes_valid_outputs(pipeline_work_dir, tmp_path):
    main = infer_wsi_main()
    tumour = np.array([[250., 250.], [520., 240.], [540., 500.], [260., 520.]])
    path = write_slide(tmp_path / 'small.tif', size=(768, 768),
                       tissue=[(384.0, 384.0, 330.0, 300.0)],
                       annotations=SlideAnnotations(tumour=[tumour]), n_levels=2)
    out = str(tmp_path / 'out')
    status = main([PIPELINE_CONFIG, pipeline_work_dir, path, '--out', out, '--tile-size', '512',
                   '--overlap', '64', '--output-factor', '2', '--batch-size', '4',
                   '--classifier-gate', '0'])
    assert status == 0
    folder = osp.join(out, 'small')
    with open(osp.join(folder, 'small_summary.json')) as f:
        summary = json.load(f)
    tiles = summary['tiles']
    assert summary['status'] == 'complete' and tiles['grid'] == tiles['total'] == 4
    assert summary['output']['size'] == [384, 384]
    assert summary['output']['tiff_levels'] == [[384, 384], [192, 192]]
    assert tiles['gated'] == 0  # --classifier-gate 0 lets every tile through
    assert tiles['total'] == tiles['segmented'] + tiles['empty_prompt']
    # one image embedding per SAM-decoded tile
    assert summary['timings_s']['sam_encoded_tiles'] == tiles['segmented']
    checkpoints = summary['predictor']['checkpoints']
    for stage, name in (('classifier', 'classifier'), ('decoder_r0', 'decoder')):
        expected = osp.join(pipeline_work_dir, stage, 'untrained.pth')
        assert checkpoints[name] == dict(path=expected, sha256=sha256(expected))
    assert summary['predictor']['pipeline_config']['sha256'] == sha256(PIPELINE_CONFIG)
    assert summary['predictor']['sam_model'] == ('MetaSAMViTEncoder(arch=tiny) with RANDOM '
                                                 'weights (tests only)')

    mask = tifffile.imread(osp.join(folder, 'small_mask.tif'), level=0)
    map_mpp = MPP * summary['output']['downsample']
    assert summary['tumour_area_mm2'] == pytest.approx((mask > 0).sum() * map_mpp ** 2 / 1e6)
    with openslide.OpenSlide(osp.join(folder, 'small_mask.tif')) as tiff:
        assert tiff.level_count == len(summary['output']['tiff_levels'])
        assert float(tiff.properties['openslide.mpp-x']) == pytest.approx(map_mpp)
    with openslide.OpenSlide(osp.join(folder, 'small_probability.tif')) as tiff:
        assert tiff.dimensions == tuple(summary['output']['size'])
    with open(osp.join(folder, 'small_tumour.geojson')) as f:
        geojson = json.load(f)
    assert geojson['type'] == 'FeatureCollection'
    assert len(geojson['features']) == summary['tumour_polygons']
    for feature in geojson['features']:
        assert feature['properties']['classification']['name'] == 'Tumor'
        assert feature['geometry']['type'] == 'Polygon'
    assert cv2.imread(osp.join(folder, 'small_thumbnail.png')) is not None


def test_cli_bad_inputs_are_reported_and_other_slides_continue(pipeline_work_dir, tmp_path):
    main = infer_wsi_main()
    garbage = tmp_path / 'garbage.svs'
    garbage.write_bytes(b'not a slide at all' * 100)
    good = write_slide(tmp_path / 'good.tif', size=(512, 512), tissue=[(256., 256., 200., 180.)],
                       annotations=SlideAnnotations(), n_levels=3)
    corrupt_tiles(good, tmp_path / 'corrupt.tif', level=2)  # the tissue read uses level 2
    blank = write_slide(tmp_path / 'blank.tif', size=(512, 512), tissue=[],
                        annotations=SlideAnnotations())
    no_mpp = write_slide_without_mpp(tmp_path / 'no_mpp.tif')
    out = str(tmp_path / 'out')
    slides = [str(garbage), str(tmp_path / 'missing.svs'), str(tmp_path / 'corrupt.tif'),
              no_mpp, blank]
    status = main([PIPELINE_CONFIG, pipeline_work_dir, *slides, '--out', out,
                   '--tile-size', '256', '--overlap', '32'])
    assert status == 1
    with open(osp.join(out, 'run_summary.json')) as f:
        results = {osp.basename(r['slide']): r for r in json.load(f)['slides']}
    assert [r['ok'] for r in results.values()] == [False, False, False, False, True]
    assert results['garbage.svs']['error'].startswith(str(garbage))
    assert 'not a supported slide format' in results['garbage.svs']['error']
    assert 'does not exist' in results['missing.svs']['error']
    assert 'truncated or corrupt' in results['corrupt.tif']['error']
    assert results['no_mpp.tif']['error'].startswith(no_mpp)
    assert '--mpp' in results['no_mpp.tif']['error']

    # no tissue: valid, empty outputs
    assert results['blank.tif']['status'] == 'no_tissue'
    folder = osp.join(out, 'blank')
    with open(osp.join(folder, 'blank_summary.json')) as f:
        summary = json.load(f)
    assert summary['tiles']['total'] == 0 and summary['tumour_area_mm2'] == 0
    assert summary['tissue_area_mm2'] == 0
    with open(osp.join(folder, 'blank_tumour.geojson')) as f:
        assert json.load(f) == {'type': 'FeatureCollection', 'features': []}
    with openslide.OpenSlide(osp.join(folder, 'blank_mask.tif')) as tiff:
        assert float(tiff.properties['openslide.mpp-x']) == pytest.approx(MPP * 4)
        assert np.asarray(tiff.read_region((0, 0), 0, tiff.dimensions))[..., 0].max() == 0

    # with --mpp the slide without resolution is processed (it holds no tissue)
    status = main([PIPELINE_CONFIG, pipeline_work_dir, no_mpp, '--out', out, '--mpp', '0.25',
                   '--tile-size', '256', '--overlap', '32'])
    assert status == 0
    with open(osp.join(out, 'no_mpp', 'no_mpp_summary.json')) as f:
        summary = json.load(f)
    assert summary['mpp'] == [0.25, 0.25] and summary['mpp_source'] == '--mpp'


def test_missing_mpp_error_from_the_api(tmp_path):
    path = write_slide_without_mpp(tmp_path / 'plain.tif')
    inferencer = WSIInferencer(TumourColourStandIn(), progress=False)
    with pytest.raises(MissingResolutionError, match='plain.tif: .*pass --mpp'):
        inferencer.infer(path, str(tmp_path / 'out'))


def test_shard_slides_deals_names_round_robin_and_keeps_same_names_together():
    slides = ['a/x.svs', 'b/y.tif', 'c/z.svs', 'd/x.tif', 'e/w.svs']
    shares = [shard_slides(slides, rank, 2) for rank in range(2)]
    assert shares == [[0, 2, 3], [1, 4]]  # x, z (and the second x) | y, w
    assert sorted(shares[0] + shares[1]) == list(range(len(slides)))
    assert shard_slides(slides, 0, 1) == list(range(len(slides)))
    assert shard_slides(slides, 3, 4) == [4] and shard_slides(slides, 4, 5) == []
    with pytest.raises(ValueError, match='rank'):
        shard_slides(slides, 2, 2)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_dist_infer_wsi_two_cpu_ranks_give_the_outputs_of_one_process(pipeline_work_dir,
                                                                        tmp_path):
    """tools/dist_infer_wsi.sh with 2 gloo ranks on 2 slides, one already done (resumed)."""
    tumour = np.array([[100., 100.], [280., 90.], [290., 300.], [110., 290.]])
    slides = [write_slide(tmp_path / f'{name}.tif', size=(384, 384),
                          tissue=[(192., 192., 170., 160.)],
                          annotations=SlideAnnotations(tumour=[tumour * scale]), n_levels=2)
              for name, scale in (('first', 1.0), ('second', 0.8))]
    options = ['--tile-size', '256', '--overlap', '32', '--classifier-gate', '0',
               '--device', 'cpu']
    single = str(tmp_path / 'single')
    assert infer_wsi_main()([PIPELINE_CONFIG, pipeline_work_dir, *slides, '--out', single,
                             *options]) == 0
    sharded = str(tmp_path / 'sharded')
    shutil.copytree(osp.join(single, 'second'), osp.join(sharded, 'second'))
    done_before = os.stat(osp.join(sharded, 'second', 'second_mask.tif')).st_mtime_ns
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=ROOT)
    run = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_infer_wsi.sh'),
                          PIPELINE_CONFIG, pipeline_work_dir, *slides, '2', '--out', sharded,
                          *options], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    logs = sorted((f for f in os.listdir(sharded) if f.endswith('.log')), key=lambda f: f[-9:])
    assert [log[-9:] for log in logs] == ['rank0.log', 'rank1.log']
    for rank, log in enumerate(logs):
        with open(osp.join(sharded, log)) as f:
            assert f'rank {rank} of 2: 1 of 2 slides' in f.read()
    assert os.stat(osp.join(sharded, 'second', 'second_mask.tif')).st_mtime_ns == done_before
    with open(osp.join(single, 'run_summary.json')) as f:
        expected = json.load(f)['slides']
    with open(osp.join(sharded, 'run_summary.json')) as f:
        results = json.load(f)['slides']
    assert [(r['slide'], r['ok'], r['status']) for r in results] == \
        [(r['slide'], r['ok'], r['status']) for r in expected] == \
        [(slides[0], True, 'complete'), (slides[1], True, 'complete')]
    for name in ('first', 'second'):
        summaries = []
        for out in (single, sharded):
            with open(osp.join(out, name, f'{name}_summary.json')) as f:
                summaries.append(json.load(f))
            for key in ('timings_s', 'outputs'):
                summaries[-1].pop(key)
        assert summaries[0] == summaries[1]
        for suffix in ('mask', 'probability'):
            maps = [tifffile.imread(osp.join(out, name, f'{name}_{suffix}.tif'), level=0)
                    for out in (single, sharded)]
            np.testing.assert_array_equal(maps[0], maps[1])
        tiles = summaries[0]['tiles']
        assert tiles['total'] > 0 and tiles['segmented'] + tiles['empty_prompt'] == tiles['total']


SOURCE_SLIDE = osp.join(os.environ.get('EPSAM_CACHE', osp.expanduser('~/.cache/mmseg-epsam')),
                        'sources', 'cmu_small_region.svs')


@pytest.mark.skipif(not osp.isfile(SOURCE_SLIDE),
                    reason=f'{SOURCE_SLIDE} not found (tools/fetch_sources.py extracts it)')
def test_smoke_real_aperio_slide(pipeline_work_dir, tmp_path):
    from mmseg_epsam.apis.tile_predictor import build_epsam_tile_predictor
    predictor = build_epsam_tile_predictor(PIPELINE_CONFIG, pipeline_work_dir,
                                           classifier_gate=0.0)
    settings = WSIInferenceSettings(tile_size=1536, overlap=64, batch_size=4)
    summary = WSIInferencer(predictor, settings, progress=False).infer(
        SOURCE_SLIDE, str(tmp_path))
    assert summary['status'] == 'complete' and summary['mpp'] == [0.499, 0.499]
    assert 0 < summary['tiles']['total'] <= summary['tiles']['grid'] == 4
    slide_mm2 = 2220 * 2967 * 0.499 ** 2 / 1e6
    assert 0.05 * slide_mm2 < summary['tissue_area_mm2'] < slide_mm2
    with openslide.OpenSlide(summary['outputs']['mask_tiff']) as tiff:
        assert tiff.dimensions == (555, 742)
        assert float(tiff.properties['openslide.mpp-x']) == pytest.approx(0.499 * 4)
    with open(summary['outputs']['geojson']) as f:
        assert json.load(f)['type'] == 'FeatureCollection'


def test_a_decoder_checkpoint_of_another_model_is_refused(pipeline_work_dir, tmp_path):
    """The config MMEngine stores in a checkpoint is compared with the pipeline's stage config;
    a model difference is an error that lists the differing keys."""
    import shutil

    import torch
    from mmengine.config import Config

    from mmseg_epsam.apis import EPSAMPipeline
    from mmseg_epsam.apis.tile_predictor import build_epsam_tile_predictor
    work_dir = str(tmp_path / 'run')
    shutil.copytree(pipeline_work_dir, work_dir)
    decoder = osp.join(work_dir, 'decoder_r0', 'untrained.pth')
    cfg = Config.fromfile(PIPELINE_CONFIG)
    cfg.work_dir = work_dir
    stage_cfg = EPSAMPipeline(cfg, PIPELINE_CONFIG)._decoder_config('decoder')
    checkpoint = torch.load(decoder, weights_only=False)
    checkpoint['meta'] = dict(cfg=stage_cfg.pretty_text)  # as MMEngine stores it
    torch.save(checkpoint, decoder)
    build_epsam_tile_predictor(PIPELINE_CONFIG, work_dir,
                               decoder_checkpoint=decoder)  # same model: accepted
    stage_cfg.model.prompt_head.num_points = 7
    checkpoint['meta'] = dict(cfg=stage_cfg.pretty_text)
    torch.save(checkpoint, decoder)
    with pytest.raises(ValueError, match=r'untrained.pth was trained with another model(.|\n)*'
                                         r'model.prompt_head.num_points: 7 -> 50'):
        build_epsam_tile_predictor(PIPELINE_CONFIG, work_dir, decoder_checkpoint=decoder)
