"""Hook: re-initialise the SAM mask decoder at the start of each round (Algorithm 1)."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS
from ...models.segmentors import DECODER_RESET_MODES


@HOOKS.register_module()
class DecoderResetHook(Hook):
    """At the fresh start of every round ``k >= 1`` of ``PseudoLabelRoundsLoop``, reset the
    mask decoder by ``mode`` (docs/method.md §6).

    - ``'pretrained'``: the decoder of the SAM checkpoint (the reference);
    - ``'random'``: a fresh initialisation seeded by ``seed + k``;
    - ``'previous'``: no reset; round ``k`` continues from decoder ``k - 1`` (a run that
      trains one round at a time gives it with ``load_from``).

    A round resumed in its middle is never reset, and neither is round 0 (it starts from
    the checkpoint's decoder).

    Args:
        mode: one of ``DECODER_RESET_MODES``.
        seed: base seed of ``'random'``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, mode: str = 'pretrained', seed: int = 0) -> None:
        if mode not in DECODER_RESET_MODES:
            raise ValueError(f'DecoderResetHook mode must be one of {DECODER_RESET_MODES}, '
                             f'got {mode!r}')
        self.mode = mode
        self.seed = seed

    def before_train_round(self, runner, round_index: int, resumed: bool) -> None:
        """Reset before a fresh round ``k >= 1`` (``PseudoLabelRoundsLoop`` event)."""
        if round_index == 0 or resumed or self.mode == 'previous':
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model.reset_decoder(self.mode, seed=self.seed + round_index)
        runner.logger.info(f'DecoderResetHook: mask decoder reset ({self.mode}) for round '
                           f'{round_index}')
