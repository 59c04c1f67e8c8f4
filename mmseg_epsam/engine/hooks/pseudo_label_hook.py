"""Hook: after a decoder round, generate the next round's IDS pseudo-labels."""
from typing import Optional

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg.registry import DATASETS, HOOKS
from ..pseudo_labels import generate_pseudo_labels


@HOOKS.register_module()
class PseudoLabelGeneratorHook(Hook):
    """After decoder round ``k < num_rounds`` of ``PseudoLabelRoundsLoop``, predict the
    positive training patches and keep masks by IDS, into the loop's ``round_<k+1>/``.

    This is one step of EP-SAM's iterative retraining (paper Algorithm 1): the decoder just
    trained writes the pseudo-labels that the next round trains on
    (:func:`mmseg_epsam.engine.pseudo_labels.generate_pseudo_labels`). Generation runs
    without augmentation, in dataset order, and resumes when interrupted. Masks already in
    the round folder are reused only when the same decoder weights, model config and
    dataset config made them; otherwise the round is generated again.

    Args:
        ids_threshold: keep a mask when IDS > this (0.9).
        ids_variant: ``'paper'`` or ``'reference'``.
        dataset: config of the positive training patches with a generation pipeline
            (``LoadImageFromFile``, ``LoadCAMAndInitialMask``, ``PackSegInputs`` with the
            CAM keys); None takes the config's top-level ``pseudo_label_dataset``.
        batch_size: patches per forward.
    """

    priority = 'LOWEST'

    def __init__(self, ids_threshold: float = 0.9, ids_variant: str = 'paper',
                 dataset: Optional[dict] = None, batch_size: int = 1) -> None:
        self.ids_threshold = ids_threshold
        self.ids_variant = ids_variant
        self.dataset = dataset
        self.batch_size = batch_size
        self.summary: Optional[dict] = None

    def after_train_round(self, runner, round_index: int) -> None:
        """Generate round ``round_index + 1`` on the main process; the others wait."""
        loop = runner.train_loop
        if round_index >= loop.num_rounds:
            return
        dataset = self.dataset if self.dataset is not None else runner.cfg.get(
            'pseudo_label_dataset')
        if dataset is None:
            raise KeyError(f'{runner.cfg.filename}: PseudoLabelGeneratorHook needs the '
                           'positive training patches: give it dataset=... or declare a '
                           'top-level pseudo_label_dataset')
        if is_main_process():
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            self.summary = generate_pseudo_labels(
                model, DATASETS.build(dataset), loop.round_dir(round_index + 1),
                self.ids_threshold, self.ids_variant, self.batch_size,
                provenance=dict(model=runner.cfg.get('model'), dataset=dataset))
        barrier()
