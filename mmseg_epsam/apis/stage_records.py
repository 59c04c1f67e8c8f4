"""Stage records of a pipeline run: ``stage_done.json`` / ``stage_started.json`` and the
fingerprints in them (what made a stage: settings, input files, upstream records)."""
import hashlib
import json
import os
import os.path as osp
from typing import Dict, List, Optional

from mmengine.config import Config

from ..utils.checkpoint import flatten_config

DONE_FILE = 'stage_done.json'
STARTED_FILE = 'stage_started.json'
#: Stage-config keys that name where a stage writes, not what it computes.
UNFINGERPRINTED_KEYS = ('work_dir', 'experiment_name', 'visualizer.name', 'resume',
                        'load_from', 'launcher')


class StageChanged(RuntimeError):
    """A stage's settings, inputs or upstream differ from those its outputs were made with."""


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint MMEngine recorded last in ``work_dir`` (its ``last_checkpoint``)."""
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


def digest(obj) -> str:
    """SHA-1 of ``obj`` as canonical JSON."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_signature(path: Optional[str]) -> str:
    """``'<size>:<mtime_ns>'`` of a file (``'missing'``; ``'none'`` for no path)."""
    if not path:
        return 'none'
    try:
        stat = os.stat(path)
    except OSError:
        return 'missing'
    return f'{stat.st_size}:{stat.st_mtime_ns}'


def folder_listing(folder: str) -> Dict[str, int]:
    """``{relative path: size}`` of every file under ``folder`` (temporaries excluded)."""
    listing = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if not name.startswith('.'):
                path = osp.join(root, name)
                listing[osp.relpath(path, folder)] = osp.getsize(path)
    return listing


def describe_changes(old: dict, new: dict) -> List[str]:
    """What differs between two stage fingerprints, one line per setting/input/upstream."""
    lines = []
    for part, label in (('settings', 'setting'), ('inputs', 'input')):
        before, after = old.get(part, {}), new.get(part, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                if part == 'settings':
                    lines.append(f'{label} {key}: {before.get(key, "<unset>")!r} -> '
                                 f'{after.get(key, "<unset>")!r}')
                else:
                    lines.append(f'{label} {key} changed ({before.get(key, "<none>")} -> '
                                 f'{after.get(key, "<none>")})')
    before, after = old.get('upstream', {}), new.get('upstream', {})
    for stage in sorted(set(before) | set(after)):
        if before.get(stage) != after.get(stage):
            lines.append(f'upstream stage {stage} was redone or changed')
    return lines


def config_settings(cfg: Config) -> Dict[str, object]:
    """A stage config as flat ``key: value`` settings, without where-it-writes keys."""
    settings = flatten_config(cfg.to_dict())
    for key in UNFINGERPRINTED_KEYS:
        settings.pop(key, None)
    return settings
