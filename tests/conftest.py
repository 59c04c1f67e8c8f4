"""Shared fixtures: a tiny on-disk patch dataset in the project's format."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest


def write_patch_dataset(root, split='train', n_pos=2, n_neg=2, size=32, seed=0,
                        with_masks=True):
    """Write ``n_pos`` tumour and ``n_neg`` normal patches of ``size``² into ``root``.

    Positive masks are a filled rectangle covering a known fraction; returns the list of
    ``(name, label, mask)``.
    """
    rng = np.random.default_rng(seed)
    img_dir = osp.join(root, 'img_dir', split)
    ann_dir = osp.join(root, 'ann_dir', split)
    for d in (img_dir, ann_dir, osp.join(root, 'splits')):
        os.makedirs(d, exist_ok=True)
    entries = []
    for i in range(n_pos + n_neg):
        label = int(i < n_pos)
        name = f'{split}_{i:03d}'
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        if label:
            mask[size // 4:size // 4 + size // 2, size // 4:] = 1
        cv2.imwrite(osp.join(img_dir, name + '.png'), img)
        if with_masks:
            cv2.imwrite(osp.join(ann_dir, name + '.png'), mask)
        entries.append((name, label, mask))
    with open(osp.join(root, 'splits', f'{split}.txt'), 'w') as f:
        f.writelines(f'{n} {lab}\n' for n, lab, _ in entries)
    return entries


@pytest.fixture
def patch_root(tmp_path):
    """A tiny dataset with train/val/test splits (masks everywhere)."""
    for split in ('train', 'val', 'test'):
        write_patch_dataset(str(tmp_path), split)
    return str(tmp_path)


ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_tool(*args, timeout=600):
    """Run ``python <args>`` in the repository root; fail with its output; return the log."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr
