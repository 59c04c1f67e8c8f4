"""HistoPatchDataset: the on-disk format, image labels in the metainfo, clear errors."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from conftest import write_patch_dataset

import mmseg_epsam  # noqa: F401
from mmseg.registry import DATASETS
from mmseg.utils import register_all_modules
from mmseg_epsam.datasets import PatchDatasetError
from mmseg_epsam.datasets.transforms import LoadCAMAndInitialMask
from mmseg_epsam.utils.layout import stage1_data_prefix, stage1_paths

register_all_modules(init_default_scope=True)
META_KEYS = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'img_label', 'patch_name')


def build(root, split='train', **kwargs):
    cfg = dict(
        type='HistoPatchDataset',
        data_root=root,
        ann_file=f'splits/{split}.txt',
        data_prefix=dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs', meta_keys=META_KEYS),
        ])
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_reads_labels_masks_and_packs_metainfo(tmp_path):
    entries = write_patch_dataset(str(tmp_path), 'val', n_pos=2, n_neg=3)
    ds = build(str(tmp_path), 'val', masks='required')
    assert len(ds) == 5
    assert ds.metainfo['classes'] == ('background', 'tumour')
    for i, (name, label, mask) in enumerate(entries):
        sample = ds[i]['data_samples']
        assert sample.metainfo['img_label'] == label
        assert sample.metainfo['patch_name'] == name
        np.testing.assert_array_equal(sample.gt_sem_seg.data[0].numpy(), mask)


def test_image_label_filter_and_optional_masks(tmp_path):
    write_patch_dataset(str(tmp_path), 'train', n_pos=3, n_neg=2, with_masks=False)
    ds = build(str(tmp_path), 'train', masks='optional', image_labels=(1,),
               pipeline=[dict(type='LoadImageFromFile'),
                         dict(type='PackSegInputs', meta_keys=META_KEYS)])
    assert len(ds) == 3
    assert all(ds.get_data_info(i)['seg_map_path'] is None for i in range(3))
    assert all(ds.get_data_info(i)['img_label'] == 1 for i in range(3))


def test_missing_image_names_split_and_file(tmp_path):
    write_patch_dataset(str(tmp_path), 'train')
    os.remove(osp.join(tmp_path, 'img_dir', 'train', 'train_001.png'))
    with pytest.raises(PatchDatasetError, match=r"train\.txt.*'train_001'.*does not exist"):
        build(str(tmp_path))


def test_missing_required_mask(tmp_path):
    write_patch_dataset(str(tmp_path), 'val')
    os.remove(osp.join(tmp_path, 'ann_dir', 'val', 'val_002.png'))
    with pytest.raises(PatchDatasetError, match=r"'val_002' has no mask.*val_002\.png"):
        build(str(tmp_path), 'val', masks='required')


def test_mask_size_mismatch(tmp_path):
    write_patch_dataset(str(tmp_path), 'val', size=32)
    bad = osp.join(tmp_path, 'ann_dir', 'val', 'val_000.png')
    cv2.imwrite(bad, np.zeros((16, 32), np.uint8))
    with pytest.raises(PatchDatasetError, match=r'val_000\.png: mask size 32x16 differs'):
        build(str(tmp_path), 'val')


def test_bad_label_and_empty_split(tmp_path):
    write_patch_dataset(str(tmp_path), 'train')
    split = osp.join(tmp_path, 'splits', 'train.txt')
    with open(split, 'a') as f:
        f.write('train_000 2\n')
    with pytest.raises(PatchDatasetError, match=r'train\.txt:5: label .* must be 0'):
        build(str(tmp_path))
    with open(split, 'w') as f:
        f.write('# nothing here\n\n')
    with pytest.raises(PatchDatasetError, match=r'train\.txt: the split lists no patch'):
        build(str(tmp_path))


def test_unreadable_and_truncated_images(tmp_path):
    write_patch_dataset(str(tmp_path), 'val', size=64)
    garbage = osp.join(tmp_path, 'img_dir', 'val', 'val_000.png')
    with open(garbage, 'wb') as f:
        f.write(b'not a png at all')
    with pytest.raises(PatchDatasetError, match=r'val_000\.png: unreadable image'):
        build(str(tmp_path), 'val')
    # a truncated PNG keeps a valid header: it fails when loaded, naming the file
    write_patch_dataset(str(tmp_path), 'val', size=64)
    truncated = osp.join(tmp_path, 'img_dir', 'val', 'val_001.png')
    data = open(truncated, 'rb').read()
    with open(truncated, 'wb') as f:
        f.write(data[:len(data) // 2])
    ds = build(str(tmp_path), 'val')
    with pytest.raises(Exception, match=r'val_001\.png'):
        ds[1]


def test_stage1_outputs_are_addressed_through_data_prefix(tmp_path):
    """cam_path / initial_mask_path / manifest_path per patch, from stage1_root + data_prefix,
    as seg_map_path comes from data_root + data_prefix; LoadCAMAndInitialMask reads them."""
    root, stage1 = str(tmp_path / 'data'), str(tmp_path / 'work' / 'stage1')
    entries = write_patch_dataset(root, 'test', n_pos=1, n_neg=1, size=16)
    prefix = dict(img_path='img_dir/test', seg_map_path='ann_dir/test',
                  **stage1_data_prefix('test'))
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadCAMAndInitialMask', with_cls_score=True),
                dict(type='PackSegInputs', meta_keys=META_KEYS + ('cam', 'cls_score'))]
    ds = build(root, 'test', data_prefix=prefix, stage1_root=stage1, pipeline=pipeline)
    paths = stage1_paths(stage1, 'test')
    for i, (name, _, _) in enumerate(entries):
        info = ds.get_data_info(i)
        assert info['cam_path'] == osp.join(paths['cam_dir'], f'{name}.npy')
        assert info['initial_mask_path'] == osp.join(paths['initial_mask_dir'], f'{name}.png')
        assert info['manifest_path'] == paths['manifest_file']
        assert info['img_path'] == osp.join(root, 'img_dir', 'test', f'{name}.png')
    # the files need not exist to build the dataset; loading one names what is missing
    with pytest.raises(FileNotFoundError, match=r'cams/test/test_000\.npy'):
        ds[0]
    os.makedirs(paths['cam_dir'])
    os.makedirs(paths['initial_mask_dir'])
    with open(paths['manifest_file'], 'w') as f:
        f.write('name,label,cls_score,cam_area,mask_area\n')
        for name, label, _ in entries:
            np.save(osp.join(paths['cam_dir'], f'{name}.npy'), np.full((16, 16), 0.5, np.float16))
            cv2.imwrite(osp.join(paths['initial_mask_dir'], f'{name}.png'),
                        np.ones((16, 16), np.uint8))
            f.write(f'{name},{label},{0.25 + label / 2},0.5,1.0\n')
    sample = ds[1]['data_samples']
    assert sample.metainfo['cls_score'] == 0.25 + entries[1][1] / 2
    assert sample.metainfo['cam'].shape == (16, 16)

    # without stage1_root, relative stage-1 entries are under data_root; absolute ones stay
    ds = build(root, 'test', data_prefix=dict(prefix, manifest_path=paths['manifest_file']))
    info = ds.get_data_info(0)
    assert info['cam_path'] == osp.join(root, 'cams', 'test', f'{entries[0][0]}.npy')
    assert info['manifest_path'] == paths['manifest_file']
    # a dataset without stage-1 entries gives none, and the transform says what to set
    info = build(root, 'test').get_data_info(0)
    assert 'cam_path' not in info
    with pytest.raises(KeyError, match="no cam_path.*data_prefix entry 'cam_path'"):
        LoadCAMAndInitialMask().transform(dict(info))
