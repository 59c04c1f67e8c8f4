"""A pipeline work dir with freshly initialised checkpoints, for tests and benchmarks.

The whole-slide inferencer reads a finished pipeline run; this writes one without training,
so that the machinery runs end to end on CPU in seconds (the predictions mean nothing).
"""
import os
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmseg.registry import MODELS
from mmseg_epsam.apis import EPSAMPipeline
from mmseg_epsam.utils import atomic_write
from mmseg_epsam.wsi.export import write_json


def write_untrained_pipeline_run(pipeline_config: str, work_dir: str, seed: int = 0) -> dict:
    """Write ``classifier/`` and ``decoder_r0/`` of a pipeline run under ``work_dir``.

    Each holds an MMEngine-style checkpoint (``{'state_dict': ..., 'meta': {}}``) of a model
    initialised with ``seed`` and a ``stage_done.json``, as a finished run would, so that
    :func:`build_epsam_tile_predictor` finds them. Returns the checkpoint paths by stage.
    """
    cfg = Config.fromfile(pipeline_config)
    cfg.work_dir = work_dir
    pipeline = EPSAMPipeline(cfg, pipeline_config)
    init_default_scope('mmseg')
    paths = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for stage, section in (('classifier', cfg.classifier), ('decoder_r0', cfg.decoder)):
            model = MODELS.build(pipeline.stage_config(section, stage).model)
            path = osp.join(osp.abspath(work_dir), stage, 'untrained.pth')
            os.makedirs(osp.dirname(path), exist_ok=True)
            with atomic_write(path, suffix='.pth') as tmp:
                torch.save(dict(state_dict=model.state_dict(), meta=dict(untrained=True)), tmp)
            write_json(osp.join(osp.dirname(path), 'stage_done.json'),
                       dict(status='trained', checkpoint=path, untrained=True))
            paths[stage] = path
    return paths
