"""Hook: after a SAM-decoder run, generate the next round's IDS pseudo-labels."""
from typing import Optional

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg.registry import DATASETS, HOOKS
from ..pseudo_labels import generate_pseudo_labels


@HOOKS.register_module()
class PseudoLabelGeneratorHook(Hook):
    """After training, predict the positive training patches and keep masks by IDS.

    This is one step of EP-SAM's iterative retraining (paper Algorithm 1): the decoder just
    trained writes the pseudo-labels that the next round trains on
    (:func:`mmseg_epsam.engine.pseudo_labels.generate_pseudo_labels`). Generation runs
    without augmentation, in dataset order, and resumes when interrupted (rerunning a
    finished MMEngine run with ``--resume`` goes straight to this hook). Masks already in
    ``round_dir`` are reused only when the same decoder weights, model config and dataset
    config made them; otherwise the round is generated again.

    Args:
        dataset: config of the positive training patches with a generation pipeline
            (``LoadImageFromFile``, ``LoadCAMAndInitialMask``, ``PackSegInputs`` with the
            CAM keys), e.g. ``HistoPatchDataset(image_labels=(1,), masks='optional')`` with
            ``stage1_root`` and the stage-1 ``data_prefix`` entries of the train split.
        round_dir: output folder of the round (``pseudo_labels/``, ``ids_table.csv``).
        ids_threshold: keep a mask when IDS > this (0.9).
        ids_variant: ``'paper'`` or ``'reference'``.
        batch_size: patches per forward.
    """

    priority = 'LOWEST'

    def __init__(self, dataset: dict, round_dir: str, ids_threshold: float = 0.9,
                 ids_variant: str = 'paper', batch_size: int = 1) -> None:
        self.dataset = dataset
        self.round_dir = round_dir
        self.ids_threshold = ids_threshold
        self.ids_variant = ids_variant
        self.batch_size = batch_size
        self.summary: Optional[dict] = None

    def after_train(self, runner) -> None:
        """Generate on the main process; the others wait."""
        if is_main_process():
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            self.summary = generate_pseudo_labels(
                model, DATASETS.build(self.dataset), self.round_dir, self.ids_threshold,
                self.ids_variant, self.batch_size,
                provenance=dict(model=runner.cfg.get('model'), dataset=self.dataset))
        barrier()
