"""MMEngine runner that can load its own checkpoints under torch >= 2.6."""
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from ..utils import trusted_mmengine_checkpoints


@RUNNERS.register_module()
class EPSAMRunner(Runner):
    """``mmengine.runner.Runner`` whose ``load_checkpoint`` (used by ``--resume``,
    ``load_from`` and ``tools/test.py``) trusts the run's own MMEngine checkpoints.

    Only that call loads with ``weights_only=False``; foreign weights keep torch's safe
    default (see :mod:`mmseg_epsam.utils.checkpoint`).
    """

    def load_checkpoint(self, filename: str, *args, **kwargs) -> dict:
        """Load a checkpoint of this project's own runs (resume / load_from / test)."""
        with trusted_mmengine_checkpoints():
            return super().load_checkpoint(filename, *args, **kwargs)


def build_runner(cfg: Config) -> Runner:
    """The runner of ``cfg``: ``cfg.runner_type`` from the registry if set, else
    :class:`EPSAMRunner` (what ``tools/train.py`` and ``tools/test.py`` use)."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return EPSAMRunner.from_cfg(cfg)
