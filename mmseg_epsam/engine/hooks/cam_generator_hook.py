"""Hook that writes EP-SAM's stage-1 outputs (CAMs, initial masks) after classifier training."""
import copy
from typing import Optional, Sequence

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import DATASETS, HOOKS

from mmseg_epsam.engine.cam_generation import (DEFAULT_GATE_THRESHOLD, generate_cams,
                                               generation_dataset_cfg,
                                               load_classifier_checkpoint)
from mmseg_epsam.functional.cam import cam_postprocess
from mmseg_epsam.utils.layout import stage1_dir_of

CHECKPOINT_CHOICES = ('best', 'last')


@HOOKS.register_module()
class CAMGeneratorHook(Hook):
    """After training, generate fused CAMs and initial masks with the trained classifier.

    Runs :func:`mmseg_epsam.engine.cam_generation.generate_cams` (the same code as
    ``tools/generate_cams.py``) on the configured splits, built from the runner's config
    with its test pipeline. Add it to ``custom_hooks`` of a classifier config::

        custom_hooks = [dict(type='CAMGeneratorHook', splits=('train', 'val'),
                             preset='camelyon16')]

    Args:
        splits: Splits to process (train: positive patches; others: all patches, scored
            against their GT).
        out_dir: Root of the outputs; default ``<work_dir>/stage1``.
        preset: CAM post-processing preset (``camelyon16``, ``camelyon17``, ``reference``,
            ``reference_mirror``, ``none``; see
            :data:`mmseg_epsam.functional.cam.CAM_POSTPROCESS_PRESETS`).
        postprocess: Overrides of preset fields, e.g. ``dict(quantile=0.2)``.
        method: CAM method: ``'cam'`` (the paper's), ``'gradcam'``, ``'gradcam++'`` or
            ``'eigencam'`` (:data:`mmseg_epsam.models.classifiers.CAM_METHODS`).
        views_per_forward: Rotated views per forward pass (1, 2 or 4).
        batch_size: Patches per batch.
        num_workers: Data-loading workers.
        checkpoint: ``'best'`` (default): the best checkpoint saved by ``CheckpointHook``
            (``save_best``; GT-free selection in the classifier configs), falling back to
            the final weights when there is none; ``'last'``: the final weights.
        show: Also write side-by-side pictures.
        evaluate: Score initial masks against GT where it exists.
        gate_threshold: Classifier probability below which the gated mask is empty.
        overwrite: Regenerate outputs made by other settings or another model.
    """

    priority = 'LOWEST'

    def __init__(self,
                 splits: Sequence[str] = ('train', ),
                 out_dir: Optional[str] = None,
                 preset: str = 'camelyon16',
                 postprocess: Optional[dict] = None,
                 method: str = 'cam',
                 views_per_forward: int = 4,
                 batch_size: int = 4,
                 num_workers: int = 0,
                 checkpoint: str = 'best',
                 show: bool = False,
                 evaluate: bool = True,
                 gate_threshold: float = DEFAULT_GATE_THRESHOLD,
                 overwrite: bool = False) -> None:
        if checkpoint not in CHECKPOINT_CHOICES:
            raise ValueError(f'checkpoint must be one of {CHECKPOINT_CHOICES}, got {checkpoint!r}')
        self.splits = tuple(splits)
        self.out_dir = out_dir
        self.postprocess = cam_postprocess(preset, **(postprocess or {}))
        self.method = method
        self.views_per_forward = views_per_forward
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.checkpoint = checkpoint
        self.show = show
        self.evaluate = evaluate
        self.gate_threshold = gate_threshold
        self.overwrite = overwrite

    def after_train(self, runner) -> None:
        """Generate the outputs on the main process (the others wait)."""
        if is_main_process():
            self._generate(runner)
        barrier()

    def _generate(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        best = runner.message_hub.get_info('best_ckpt')
        if self.checkpoint == 'best' and best:
            # A copy, so the runner keeps its final weights.
            model = copy.deepcopy(model)
            load_classifier_checkpoint(model, best)
            runner.logger.info(f'CAMGeneratorHook: using the best checkpoint {best}')
        else:
            runner.logger.info('CAMGeneratorHook: using the final weights'
                               + (' (no best checkpoint was saved)'
                                  if self.checkpoint == 'best' else ''))
        datasets = {split: DATASETS.build(generation_dataset_cfg(runner.cfg, split))
                    for split in self.splits}
        out_dir = self.out_dir or stage1_dir_of(runner.work_dir)
        generate_cams(model, datasets, out_dir, self.postprocess, method=self.method,
                      views_per_forward=self.views_per_forward, batch_size=self.batch_size,
                      num_workers=self.num_workers, show=self.show, evaluate=self.evaluate,
                      gate_threshold=self.gate_threshold, overwrite=self.overwrite)
