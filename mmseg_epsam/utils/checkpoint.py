"""Checkpoint loading under torch >= 2.6, where ``torch.load`` defaults to weights only.

Two kinds of files, two rules:

* the run's own MMEngine checkpoints (``--resume``, ``load_from``, ``tools/test.py``) hold
  ``HistoryBuffer`` objects whose pickles need ``getattr``, which no safe allow-list covers;
  they are loaded with ``weights_only=False`` inside :func:`trusted_mmengine_checkpoints`,
  as MMEngine's upstream fix does, and only for that call;
* every foreign weight file (Meta's SAM ``.pth``, ImageNet ResNet weights) is plain tensors
  and is loaded with ``weights_only=True`` by :func:`load_foreign_state_dict`.
"""
import json
import os.path as osp
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import CheckpointLoader


def load_from_trusted_local(filename: str, map_location=None) -> dict:
    """Load a local MMEngine checkpoint written by this project's own runs.

    ``weights_only=False``: never point it at a file from elsewhere. Raises
    ``FileNotFoundError`` naming the file when it does not exist.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename}: checkpoint not found')
    return torch.load(filename, map_location=map_location, weights_only=False)


@contextmanager
def trusted_mmengine_checkpoints() -> Iterator[None]:
    """Within the block, local checkpoints load with ``weights_only=False``.

    Use it only around loading the run's own checkpoints; the previous loader is restored
    on exit, so foreign weights loaded elsewhere keep torch's safe default.
    """
    schemes = CheckpointLoader._schemes
    previous = schemes['']
    schemes[''] = load_from_trusted_local
    try:
        yield
    finally:
        schemes[''] = previous


def load_foreign_state_dict(path: str,
                            required_prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Load a foreign weight file (SAM, ImageNet) safely with ``weights_only=True``.

    Accepts a bare state dict or one wrapped under ``state_dict`` / ``model``. Raises an
    error naming the file when it is missing, not a weights-only pickle, or (with
    ``required_prefix``) holds no key starting with that prefix.
    """
    path = osp.expanduser(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: weight file not found')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise RuntimeError(
            f'{path}: not a plain tensor checkpoint loadable with weights_only=True '
            f'({type(exc).__name__}: {exc})') from exc
    for wrapper in ('state_dict', 'model'):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict) or not all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise RuntimeError(f'{path}: expected a state dict of tensors')
    if required_prefix is not None and not any(
            k.startswith(required_prefix) for k in checkpoint):
        raise KeyError(f'{path}: no key starts with {required_prefix!r}; '
                       f'first keys: {list(checkpoint)[:5]}')
    return checkpoint


def flatten_config(node, prefix: str = '') -> Dict[str, object]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; lists and scalars are leaves, normalised
    through JSON (tuples become lists, other objects their ``str``)."""
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            flat.update(flatten_config(value, f'{prefix}.{key}' if prefix else str(key)))
        return flat
    return {prefix: json.loads(json.dumps(node, sort_keys=True, default=str))}


def checkpoint_config_differences(checkpoint: dict, cfg: Config,
                                  section: str = 'model') -> List[str]:
    """How ``cfg[section]`` differs from the config an MMEngine checkpoint was trained with.

    MMEngine stores the run's config text in ``checkpoint['meta']['cfg']``. Returns one
    ``'key: checkpoint value -> given value'`` line per differing key (``init_cfg`` and
    ``pretrained`` keys, which only say where the initial weights came from, are left out);
    an empty list when they agree or the checkpoint records no config.
    """
    text = (checkpoint.get('meta') or {}).get('cfg') if isinstance(checkpoint, dict) else None
    if not text:
        return []
    stored = Config.fromstring(text, '.py').to_dict().get(section, {})
    given = cfg.to_dict().get(section, {})
    stored, given = ({key: json.dumps(value, sort_keys=True)
                      for key, value in flatten_config(node).items()}
                     for node in (stored, given))
    lines = []
    for key in sorted(set(stored) | set(given)):
        if {'init_cfg', 'pretrained'} & set(key.split('.')) or stored.get(key) == given.get(key):
            continue
        lines.append(f'{section}.{key}: {stored.get(key, "<unset>")} -> '
                     f'{given.get(key, "<unset>")}')
    return lines
