"""Edit MMEngine config trees in place: the datasets, the hooks (used by
``tools/run_pipeline.py`` to point a stage's config at its run, and by the tests)."""
from mmengine.config import Config

from .layout import STAGE1_PREFIX_KEYS, stage1_data_prefix


def _walk(node, visit) -> None:
    """Call ``visit`` on every dict nested in ``node`` (configs: dicts and lists)."""
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, visit)


def _reads_stage1(dataset: dict) -> bool:
    """Whether a ``HistoPatchDataset`` config addresses stage-1 outputs (``data_prefix``)."""
    return any(key in (dataset.get('data_prefix') or {}) for key in STAGE1_PREFIX_KEYS)


def set_stage1_dir(node, stage1_dir: str) -> None:
    """Set ``stage1_root`` of every ``HistoPatchDataset`` in a config tree that reads stage-1
    outputs."""
    def visit(d):
        if d.get('type') == 'HistoPatchDataset' and _reads_stage1(d):
            d['stage1_root'] = stage1_dir
    _walk(node, visit)


def set_split(node, split: str) -> None:
    """Point every ``HistoPatchDataset`` of a config tree at ``split``
    (``splits/<split>.txt``, ``img_dir/<split>``, ``ann_dir/<split>`` and, where it reads
    them, the split's stage-1 outputs)."""
    def visit(d):
        if d.get('type') == 'HistoPatchDataset':
            prefix = dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}')
            if _reads_stage1(d):
                prefix.update(stage1_data_prefix(split))
            d['ann_file'] = f'splits/{split}.txt'
            d['data_prefix'] = prefix
    _walk(node, visit)


def set_hook(cfg: Config, hook_type: str, **fields) -> None:
    """Update the ``custom_hooks`` entry of ``hook_type`` with ``fields`` (added if absent)."""
    hooks = [dict(hook) for hook in cfg.get('custom_hooks', [])]
    for hook in hooks:
        if hook.get('type') == hook_type:
            hook.update(fields)
            break
    else:
        hooks.append(dict(type=hook_type, **fields))
    cfg.custom_hooks = hooks


def set_dataset_fields(node, **fields) -> None:
    """Set ``fields`` (e.g. ``data_root``, ``mask_values``) on every ``HistoPatchDataset``
    in a config tree."""
    def visit(d):
        if d.get('type') == 'HistoPatchDataset':
            d.update(fields)
    _walk(node, visit)


def set_data_root(node, data_root: str) -> None:
    """Set ``data_root`` of every ``HistoPatchDataset`` in a config tree."""
    set_dataset_fields(node, data_root=data_root)
