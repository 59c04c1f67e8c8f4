"""Every config under configs/epsam loads, and every path in it comes from the variables its
leaf declares (data_root, stage1_dir, work_dir): a leaf copied with other values of them
holds no path of the original, nor of the demo."""
import ast
import glob
import os
import os.path as osp
import uuid

import pytest
from mmengine.config import Config

from conftest import ROOT
from mmseg_epsam.utils.layout import stage1_data_prefix, stage1_paths

CONFIG_DIR = osp.join(ROOT, 'configs', 'epsam')
LEAVES = sorted(osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, '*.py')))
PATH_VARIABLES = ('data_root', 'stage1_dir', 'work_dir')
DEMO_PATHS = ('data/demo', 'epsam_demo')
#: Where a stage config's datasets are built from (base configs may also hold templates).
DATASET_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader', 'pseudo_label_dataset')


def declared(path: str) -> dict:
    """``{name: (value, first line, last line)}`` of the leaf's own top-level path variables."""
    found = {}
    for node in ast.parse(open(path).read()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in PATH_VARIABLES):
            found[node.targets[0].id] = (ast.literal_eval(node.value), node.lineno,
                                         node.end_lineno)
    return found


def with_values(path: str, values: dict) -> Config:
    """Load a copy of the leaf at ``path`` whose declarations of ``values`` are replaced
    (written beside it, so that its relative ``_base_`` resolves as for the original)."""
    lines = open(path).read().splitlines(keepends=True)
    for name, (_, first, last) in sorted(declared(path).items(), key=lambda kv: -kv[1][1]):
        lines[first - 1:last] = [f'{name} = {values[name]!r}\n']
    copy = osp.join(osp.dirname(path), f'_copy_{uuid.uuid4().hex}_{osp.basename(path)}')
    with open(copy, 'w') as f:
        f.writelines(lines)
    try:
        return Config.fromfile(copy)
    finally:
        os.remove(copy)


def strings(node) -> list:
    """Every string value in a config tree."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, (list, tuple)):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def dicts(node, type_name: str) -> list:
    """Every dict of ``type=type_name`` in a config tree."""
    found = []
    if isinstance(node, dict):
        if node.get('type') == type_name:
            found.append(node)
        for value in node.values():
            found += dicts(value, type_name)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += dicts(value, type_name)
    return found


def needs_data(cfg: Config) -> bool:
    """A stage config with patch datasets, or a pipeline config."""
    return bool(dicts(cfg.to_dict(), 'HistoPatchDataset')) or 'classifier' in cfg


@pytest.mark.parametrize('leaf', LEAVES)
def test_every_leaf_config_loads(leaf):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, leaf))
    assert cfg.to_dict()


@pytest.mark.parametrize('leaf', [leaf for leaf in LEAVES
                                  if needs_data(Config.fromfile(osp.join(CONFIG_DIR, leaf)))])
def test_paths_derive_from_the_leaf_declarations(leaf, tmp_path):
    path = osp.join(CONFIG_DIR, leaf)
    original = declared(path)
    assert 'data_root' in original, f'{leaf} reads data but declares no data_root'
    values = {name: str(tmp_path / f'new_{name}') for name in PATH_VARIABLES}
    cfg = with_values(path, values).to_dict()
    found = strings(cfg)
    stale = [(name, value) for name, (value, _, _) in original.items()
             if any(value in s for s in found)]
    if 'camelyon' in leaf:
        stale += [(name, demo) for name in ('demo', ) for demo in DEMO_PATHS
                  if any(demo in s for s in found)]
    assert not stale, f'{leaf}: paths not derived from its declarations: {stale}'
    for name in original:
        assert any(values[name] in s for s in found), f'{leaf}: {name} is never used'

    used = [cfg.get(key) for key in DATASET_KEYS]
    datasets = dicts(used, 'HistoPatchDataset')
    assert all(d.get('data_root') == values['data_root'] for d in datasets), leaf
    for dataset in datasets:
        prefix = dataset['data_prefix']
        if 'cam_path' in prefix:  # a stage-1 reader: its stage-1 folder and layout
            split = osp.splitext(osp.basename(dataset['ann_file']))[0]
            assert dataset.get('stage1_root') == values['stage1_dir'], leaf
            assert {k: prefix[k] for k in stage1_data_prefix(split)} == \
                stage1_data_prefix(split), leaf
    for wrapper in dicts(used, 'IDSPseudoLabelDataset'):  # round 0: the initial masks
        assert wrapper['rounds'][0]['pseudo_label_dir'] == stage1_paths(
            values['stage1_dir'], 'train')['initial_mask_dir'], leaf
