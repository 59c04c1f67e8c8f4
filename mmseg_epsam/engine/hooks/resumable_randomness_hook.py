"""Hook: random streams that depend only on (seed, position), so a resumed run equals an
uninterrupted one.

MMEngine seeds the random generators once, when a run starts. A run killed and resumed from
a checkpoint then continues with freshly seeded generators, not with the ones the
uninterrupted run would have had at that point: the ADL drop draws
(``EVPADLResNet``, ``torch.rand``), the augmentations and the data-loader worker seeds all
differ, and so do the weights. Saving the generator states in the checkpoint is not enough
either, since what runs between the save and the next step (validation, data-loader set-up)
draws from them in one run and not in the other.

This hook re-seeds Python's ``random``, NumPy and torch (CPU and CUDA) from
``hash(seed, position)`` at every point a run can resume from: the start of each training
epoch (epoch-based loops, which resume at epoch boundaries) and the end of each training
iteration, after the checkpoint hook (iteration-based loops); a resumed iteration-based run
re-seeds for its position before training. Data-loader workers are seeded from torch's
per-worker seed (:func:`seed_worker_from_torch`), which derives from the main process's
re-seeded generator, so each epoch gets new augmentations and a resumed epoch the same ones.
Exact equality needs workers that are not persistent (they are restarted each epoch).
"""
import hashlib
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import FUNCTIONS
from mmengine.runner import EpochBasedTrainLoop

from mmseg.registry import HOOKS


def position_seed(seed: int, kind: str, position: int, rank: int = 0) -> int:
    """A 32-bit seed from the run's seed and a position (``'epoch'``/``'iter'``, index)."""
    text = f'{seed}:{kind}:{position}:{rank}'.encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], 'little')


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@FUNCTIONS.register_module()
def seed_worker_from_torch(worker_id: int) -> None:
    """Data-loader ``worker_init_fn``: seed ``random`` and NumPy from torch's worker seed.

    torch gives each worker ``base_seed + worker_id``, with ``base_seed`` drawn from the main
    process's generator when the epoch's iterator is created.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


@HOOKS.register_module()
class ResumableRandomnessHook(Hook):
    """Re-seed every generator at each resumable position (module docstring).

    Args:
        seed: base seed; None takes the runner's (``randomness.seed``).
    """

    priority = 'LOWEST'  # after the checkpoint hook has saved the iteration

    def __init__(self, seed=None) -> None:
        self.seed = seed

    def _reseed(self, runner, kind: str, position: int) -> None:
        seed = self.seed if self.seed is not None else runner.seed
        seed_everything(position_seed(int(seed or 0), kind, position, get_rank()))

    def before_train(self, runner) -> None:
        """A resumed iteration-based run starts from its position's seed."""
        if not isinstance(runner.train_loop, EpochBasedTrainLoop) and runner.iter > 0:
            self._reseed(runner, 'iter', runner.iter)

    def before_train_round(self, runner, round_index: int, resumed: bool) -> None:
        """``PseudoLabelRoundsLoop``: a round after the first starts from its position's seed,
        whatever ran between rounds (pseudo-label generation, or a resume), and so do the
        model's own training draws (``reseed_training``, e.g. ``SAMDecoderSegmentor``'s
        views and training prompts)."""
        if runner.iter > 0:
            self._reseed(runner, 'iter', runner.iter)
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            if hasattr(model, 'reseed_training'):
                seed = self.seed if self.seed is not None else runner.seed
                model.reseed_training(position_seed(int(seed or 0), 'model', runner.iter,
                                                    get_rank()))

    def before_train_epoch(self, runner) -> None:
        """Epoch-based loops: the seed of the epoch (its data order, augmentations, ADL)."""
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            self._reseed(runner, 'epoch', runner.epoch)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Iteration-based loops: the seed of the next iteration."""
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            self._reseed(runner, 'iter', runner.iter + 1)
