"""Hook: re-initialise the SAM mask decoder at the start of a round (Algorithm 1)."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS


@HOOKS.register_module()
class DecoderResetHook(Hook):
    """Before a fresh (not resumed) run trains, reset the decoder with ``mode``.

    A run built from a config already starts from the SAM checkpoint's decoder (the
    reference's ``'pretrained'`` reset); this hook gives the other policies:
    ``'random'`` (a seeded fresh initialisation) or ``'pretrained'`` after a ``load_from``.
    ``'previous'`` needs no hook: load the previous round's checkpoint with ``load_from``.

    Args:
        mode: ``'pretrained'`` or ``'random'``.
        seed: seed of the random initialisation.
    """

    priority = 'VERY_HIGH'

    def __init__(self, mode: str = 'random', seed: int = 0) -> None:
        if mode not in ('pretrained', 'random'):
            raise ValueError(f"DecoderResetHook mode must be 'pretrained' or 'random', "
                             f"got {mode!r} ('previous' = load_from the previous round)")
        self.mode = mode
        self.seed = seed

    def before_train(self, runner) -> None:
        """Reset only when training starts from iteration 0 (never after a resume)."""
        if runner.iter == 0:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            model.reset_decoder(self.mode, seed=self.seed)
            runner.logger.info(f'DecoderResetHook: mask decoder reset ({self.mode})')
