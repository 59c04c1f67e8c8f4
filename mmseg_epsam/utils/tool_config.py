"""Config handling shared by the mm-style tools (train.py, test.py)."""
import os.path as osp
from argparse import Namespace

from mmengine.config import Config


def load_tool_config(args: Namespace) -> Config:
    """Load ``args.config`` with ``--cfg-options``, ``--launcher`` and ``--work-dir`` applied.

    The work_dir priority is MMSeg's: command line > config > ``./work_dirs/<config name>``.
    """
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg

