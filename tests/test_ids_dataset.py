"""IDSPseudoLabelDataset: selection by IDS table, policies, counts, empty selection."""
import csv

import numpy as np
import pytest

cv2 = pytest.importorskip('cv2')
from mmengine.registry import init_default_scope  # noqa: E402

from mmseg.datasets import BaseSegDataset  # noqa: E402
from mmseg_epsam.datasets.ids_pseudo_label_dataset import (  # noqa: E402
    EmptyPseudoLabelSelection, IDSPseudoLabelDataset, read_ids_table, select_pseudo_labels)

META_KEYS = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'img_label', 'patch_name',
             'gt_seg_map_path', 'pseudo_label_round')
PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs', meta_keys=META_KEYS)]


class _PatchList(BaseSegDataset):
    """A patch dataset whose data infos carry img_label and patch_name, as HistoPatchDataset's."""

    METAINFO = dict(classes=('background', 'tumour'), palette=[[0, 0, 0], [255, 0, 0]])

    def __init__(self, infos, **kwargs):
        self._infos = infos
        super().__init__(pipeline=PIPELINE, serialize_data=False, **kwargs)

    def load_data_list(self):
        return [dict(info, label_map=None, reduce_zero_label=False, seg_fields=[])
                for info in self._infos]


@pytest.fixture
def patches(tmp_path):
    """Five positive patches p0..p4 and two negatives n0, n1 (16x16)."""
    init_default_scope('mmseg')
    (tmp_path / 'img').mkdir()
    infos = []
    for name, label in [(f'p{i}', 1) for i in range(5)] + [('n0', 0), ('n1', 0)]:
        path = tmp_path / 'img' / f'{name}.png'
        cv2.imwrite(str(path), np.full((16, 16, 3), 100, np.uint8))
        infos.append(dict(img_path=str(path), seg_map_path=None, img_label=label,
                          patch_name=name))
    return tmp_path, infos


def _write_round(root, tag, kept, labels_for):
    """Pseudo-label PNGs for `labels_for` (value: number of foreground rows) + a table."""
    label_dir = root / tag
    label_dir.mkdir()
    for name, rows in labels_for.items():
        mask = np.zeros((16, 16), np.uint8)
        mask[:rows] = 1
        cv2.imwrite(str(label_dir / f'{name}.png'), mask)
    table = root / f'{tag}.csv'
    with open(table, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['name', 'cam_area', 'sam_area', 'ids', 'kept'])
        for name, rows in labels_for.items():
            writer.writerow([name, 16 * rows, 16 * rows, 0.95, name in kept])
    return dict(pseudo_label_dir=str(label_dir), table_file=str(table))


def test_per_round_selection_and_pipeline(patches):
    root, infos = patches
    round1 = _write_round(root, 'r1', {'p0', 'p1', 'p2'}, {f'p{i}': 2 for i in range(4)})
    round2 = _write_round(root, 'r2', {'p1', 'p3'}, {f'p{i}': 3 + i for i in range(4)})
    dataset = IDSPseudoLabelDataset(_PatchList(infos), rounds=[round1, round2])
    assert len(dataset) == 2
    counts = dataset.selection.counts
    assert counts['positives'] == 5 and counts['patches'] == 7
    assert counts['round1_kept'] == 2 and counts['round1_missing'] == 1  # p4: no table row
    item = dataset[1]
    sample = item['data_samples']
    assert sample.metainfo['patch_name'] == 'p3' and sample.metainfo['pseudo_label_round'] == 1
    assert sample.metainfo['gt_seg_map_path'] is None
    assert int(sample.gt_sem_seg.data.sum()) == 16 * 6  # round 2's label for p3 (6 rows)
    assert dataset.metainfo['classes'] == ('background', 'tumour')


def test_keep_previous_uses_the_latest_round_that_kept_a_patch(patches):
    root, infos = patches
    round1 = _write_round(root, 'r1', {'p0', 'p1'}, {f'p{i}': 2 for i in range(4)})
    round2 = _write_round(root, 'r2', {'p1', 'p3'}, {f'p{i}': 5 for i in range(4)})
    selection = select_pseudo_labels(infos, [round1, round2], 'keep_previous')
    chosen = {infos[i]['patch_name']: (path, r) for i, path, r in selection.entries}
    assert set(chosen) == {'p0', 'p1', 'p3'}
    assert chosen['p0'][1] == 0 and chosen['p1'][1] == 1 and chosen['p3'][1] == 1
    assert chosen['p1'][0].endswith('r2/p1.png')


def test_round_without_table_uses_non_empty_label_files(patches):
    root, infos = patches
    initial = root / 'initial_masks'
    initial.mkdir()
    for name, rows in [('p0', 4), ('p1', 0), ('p2', 8), ('n0', 3)]:
        mask = np.zeros((16, 16), np.uint8)
        mask[:rows] = 1
        cv2.imwrite(str(initial / f'{name}.png'), mask)
    dataset = IDSPseudoLabelDataset(_PatchList(infos),
                                    rounds=[dict(pseudo_label_dir=str(initial))])
    names = [dataset.get_data_info(i)['patch_name'] for i in range(len(dataset))]
    assert names == ['p0', 'p2']  # p1 empty, p3/p4 missing, n0 negative
    assert dataset.selection.counts['round0_missing'] == 2


def test_empty_selection_is_an_error_not_an_empty_dataset(patches):
    root, infos = patches
    nothing = _write_round(root, 'r1', set(), {f'p{i}': 2 for i in range(5)})
    with pytest.raises(EmptyPseudoLabelSelection, match='no training patch'):
        IDSPseudoLabelDataset(_PatchList(infos), rounds=[nothing])
    assert select_pseudo_labels(infos, [nothing]).entries == []


def test_bad_tables_and_infos_name_the_problem(patches, tmp_path):
    root, infos = patches
    broken = _write_round(root, 'r1', {'p0'}, {'p0': 2})
    (root / 'r1' / 'p0.png').unlink()
    with pytest.raises(FileNotFoundError, match='keeps .p0.'):
        select_pseudo_labels(infos, [broken])
    bad = tmp_path / 'bad.csv'
    bad.write_text('name,kept\np0,maybe\n')
    with pytest.raises(ValueError, match='bad.csv:2'):
        read_ids_table(str(bad))
    no_kept = tmp_path / 'no_kept.csv'
    no_kept.write_text('name,ids\np0,0.5\n')
    with pytest.raises(ValueError, match='no_kept.csv.*kept'):
        read_ids_table(str(no_kept))
    with pytest.raises(KeyError, match='img_label'):
        select_pseudo_labels([dict(img_path='a.png')], [broken])
    with pytest.raises(ValueError, match='policy'):
        select_pseudo_labels(infos, [broken], 'union')


def test_wraps_histo_patch_dataset_config(tmp_path):
    """The wrapper built from a HistoPatchDataset config selects its positive patches."""
    init_default_scope('mmseg')
    for sub in ('img_dir/train', 'splits', 'labels'):
        (tmp_path / sub).mkdir(parents=True)
    lines = []
    for name, label in [('a', 1), ('b', 1), ('c', 0)]:
        cv2.imwrite(str(tmp_path / 'img_dir/train' / f'{name}.png'),
                    np.zeros((8, 8, 3), np.uint8))
        lines.append(f'{name} {label}')
        cv2.imwrite(str(tmp_path / 'labels' / f'{name}.png'), np.ones((8, 8), np.uint8))
    (tmp_path / 'splits/train.txt').write_text('\n'.join(lines) + '\n')
    dataset = IDSPseudoLabelDataset(
        dict(type='HistoPatchDataset', data_root=str(tmp_path), ann_file='splits/train.txt',
             data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
             pipeline=PIPELINE),
        rounds=[dict(pseudo_label_dir=str(tmp_path / 'labels'))])
    assert [dataset.get_data_info(i)['patch_name'] for i in range(len(dataset))] == ['a', 'b']
    assert int(dataset[0]['data_samples'].gt_sem_seg.data.sum()) == 64


def test_negative_patches_with_empty_targets(tmp_path):
    """negative_patches='empty_target' adds the negatives (filter lifted) with all-zero
    targets made by LoadPatchMask; selecting no positive is still an empty selection."""
    init_default_scope('mmseg')
    for sub in ('img_dir/train', 'splits', 'labels'):
        (tmp_path / sub).mkdir(parents=True)
    lines = []
    for name, label in [('a', 1), ('b', 0), ('c', 1), ('d', 0)]:
        cv2.imwrite(str(tmp_path / 'img_dir/train' / f'{name}.png'),
                    np.full((8, 12, 3), 50, np.uint8))
        lines.append(f'{name} {label}')
        cv2.imwrite(str(tmp_path / 'labels' / f'{name}.png'), np.ones((8, 12), np.uint8))
    (tmp_path / 'splits/train.txt').write_text('\n'.join(lines) + '\n')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadPatchMask'),
                dict(type='PackSegInputs', meta_keys=META_KEYS)]
    wrapped = dict(type='HistoPatchDataset', data_root=str(tmp_path),
                   ann_file='splits/train.txt', image_labels=(1, ),
                   data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                   pipeline=pipeline)
    rounds = [dict(pseudo_label_dir=str(tmp_path / 'labels'))]
    assert len(IDSPseudoLabelDataset(wrapped, rounds)) == 2  # the paper: positives only
    dataset = IDSPseudoLabelDataset(wrapped, rounds, negative_patches='empty_target')
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert [i['patch_name'] for i in infos] == ['a', 'b', 'c', 'd']
    assert [i['empty_target'] for i in infos] == [False, True, False, True]
    assert infos[1]['seg_map_path'] is None and infos[1]['pseudo_label_round'] == -1
    assert dataset.selection.counts['negatives'] == 2
    targets = [dataset[i]['data_samples'].gt_sem_seg.data for i in range(4)]
    assert [int(t.sum()) for t in targets] == [96, 0, 96, 0]
    assert targets[1].shape == (1, 8, 12)
    with pytest.raises(ValueError, match='negative_patches'):
        IDSPseudoLabelDataset(wrapped, rounds, negative_patches='all')
    (tmp_path / 'splits/pos.txt').write_text('a 1\nc 1\n')
    with pytest.raises(ValueError, match='no negative patch'):
        IDSPseudoLabelDataset(dict(wrapped, ann_file='splits/pos.txt'), rounds,
                              negative_patches='empty_target')
    for name in ('a', 'c'):
        cv2.imwrite(str(tmp_path / 'labels' / f'{name}.png'), np.zeros((8, 12), np.uint8))
    with pytest.raises(EmptyPseudoLabelSelection):
        IDSPseudoLabelDataset(wrapped, rounds, negative_patches='empty_target')
