"""Loop: EP-SAM's iterative retraining (paper Algorithm 1) as one MMEngine training loop."""
import copy
import os.path as osp
from typing import Dict, Optional, Union

from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import DataLoader

from mmseg.registry import LOOPS
from ...datasets.ids_pseudo_label_dataset import EmptyPseudoLabelSelection
from ...utils.io import write_text
from ...utils.layout import decoder_round_checkpoint, round_dir, round_targets

#: ``message_hub`` runtime-info key holding the round being trained and its first
#: iteration; saved in every checkpoint, so a resumed run knows where it is.
ROUND_INFO_KEY = 'pseudo_label_round'
#: ``message_hub`` runtime-info key of the last round that trained (the final decoder).
FINAL_ROUND_KEY = 'final_round'


@LOOPS.register_module()
class PseudoLabelRoundsLoop(IterBasedTrainLoop):
    """Train the SAM mask decoder round after round, each round on its own targets.

    Round 0 trains on the targets the training dataset is configured with (the initial masks
    of stage 1); round ``k >= 1`` on the IDS-kept pseudo-labels of rounds ``1..k`` under
    ``rounds_dir`` (``round_<j>/``, :func:`~mmseg_epsam.utils.layout.round_paths`), combined
    by the ``IDSPseudoLabelDataset``'s ``policy`` (docs/method.md §6). Around every round
    the loop calls two hook events, so the policies stay in hooks declared in the config:

    - ``before_train_round(runner, round_index, resumed)``: e.g. ``DecoderResetHook``
      re-initialises the decoder for a fresh round (Algorithm 1's reset);
    - ``after_train_round(runner, round_index)``: e.g. ``PseudoLabelGeneratorHook``
      writes round ``k + 1``'s pseudo-labels with the decoder just trained.

    A fresh round starts with an empty optimiser state (a new optimiser per round). Each
    round ends with the checkpoint ``decoder_r<k>.pth`` in the work dir, recorded as the
    run's last checkpoint. A stopped run resumes where it was: inside a round from the
    checkpoint hook's last save, at a round boundary by redoing the end of the round just
    trained (pseudo-label generation resumes and reuses the masks on disk).

    When a round's selection is empty (IDS kept no mask), that round and the ones after it
    do not train: decoder ``k - 1`` stays the final model (runtime info ``final_round``).
    If it is the first round of this run, nothing can train and
    :class:`EmptyPseudoLabelSelection` is raised.

    Args:
        runner: the runner.
        dataloader: the training dataloader config (an ``IDSPseudoLabelDataset``).
        num_rounds: Algorithm 1's N: rounds 1..N retrain on pseudo-labels after round 0.
        iters_per_round: training iterations per round; or
        epochs_per_round: passes over the round's training set per round (the paper: 20).
        first_round: the first round this run trains (default 0).
        last_round: the last round this run trains (default ``num_rounds``).
            ``tools/run_pipeline.py`` trains one round per stage.
        rounds_dir: the folder of the ``round_<k>/`` pseudo-label folders; None: the work
            dir.
        val_begin, val_interval: as :class:`~mmengine.runner.IterBasedTrainLoop`.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 num_rounds: int = 3,
                 iters_per_round: Optional[int] = None,
                 epochs_per_round: Optional[int] = None,
                 first_round: int = 0,
                 last_round: Optional[int] = None,
                 rounds_dir: Optional[str] = None,
                 val_begin: int = 1,
                 val_interval: int = 1000) -> None:
        if (iters_per_round is None) == (epochs_per_round is None):
            raise ValueError('PseudoLabelRoundsLoop needs exactly one of iters_per_round and '
                             f'epochs_per_round, got {iters_per_round!r} and '
                             f'{epochs_per_round!r}')
        last_round = num_rounds if last_round is None else last_round
        if not 0 <= first_round <= last_round <= num_rounds:
            raise ValueError(f'PseudoLabelRoundsLoop: need 0 <= first_round <= last_round <= '
                             f'num_rounds, got {first_round}, {last_round}, {num_rounds}')
        if not isinstance(dataloader, dict):
            raise TypeError('PseudoLabelRoundsLoop builds one dataloader per round: give the '
                            'train_dataloader as a config dict')
        self.num_rounds = num_rounds
        self.iters_per_round = iters_per_round
        self.epochs_per_round = epochs_per_round
        self.first_round = first_round
        self.last_round = last_round
        self.rounds_dir = osp.abspath(rounds_dir or runner.work_dir)
        self._dataloader_cfg = copy.deepcopy(dataloader)
        # The first round's dataloader, as IterBasedTrainLoop builds it (raises
        # EmptyPseudoLabelSelection when that round has no target).
        super().__init__(runner, self._round_dataloader_cfg(first_round), max_iters=1,
                         val_begin=val_begin, val_interval=val_interval)
        # an estimate with epochs_per_round (each round's selection sizes its training set)
        self._max_iters = (last_round - first_round + 1) * self._round_length(self.dataloader)
        self._round_index = first_round
        self._round_end = self._max_iters

    # ------------------------------------------------------------------ rounds
    def round_dir(self, k: int) -> str:
        """The folder of round ``k``'s pseudo-labels."""
        return round_dir(self.rounds_dir, k)

    def _round_dataloader_cfg(self, k: int) -> dict:
        cfg = copy.deepcopy(self._dataloader_cfg)
        if k > 0:
            cfg['dataset']['rounds'] = round_targets(self.rounds_dir, k)
        return cfg

    def _build_round_dataloader(self, k: int) -> DataLoader:
        diff_rank_seed = self.runner._randomness_cfg.get('diff_rank_seed', False)
        return self.runner.build_dataloader(self._round_dataloader_cfg(k),
                                            seed=self.runner.seed,
                                            diff_rank_seed=diff_rank_seed)

    def _round_length(self, dataloader: DataLoader) -> int:
        if self.iters_per_round is not None:
            return int(self.iters_per_round)
        return int(self.epochs_per_round) * len(dataloader)

    def _set_position(self, k: int, start_iter: int, length: int) -> None:
        self.runner.message_hub.update_info(
            ROUND_INFO_KEY, dict(round=k, start_iter=start_iter, length=length))

    def _position(self) -> dict:
        """The round a resumed run is in, from the checkpoint's runtime info."""
        position = self.runner.message_hub.get_info(ROUND_INFO_KEY)
        if position is None:
            raise RuntimeError(f'{self.runner.work_dir}: the checkpoint resumed from (iteration '
                               f'{self._iter}) was not written by PseudoLabelRoundsLoop; it has'
                               ' no round position. Start a fresh work dir.')
        return position

    # ------------------------------------------------------------------ training
    def run(self):
        """Train rounds ``first_round..last_round`` (class docstring)."""
        runner = self.runner
        runner.call_hook('before_train')
        runner.call_hook('before_train_epoch')
        if self._iter == 0:
            k, start, resumed = self.first_round, 0, False
            dataloader = self.dataloader
        else:
            position = self._position()
            k, start = position['round'], position['start_iter']
            if self._iter == start + position['length']:  # stopped at the round's end
                runner.call_hook('after_train_round', round_index=k)
                k, start = k + 1, self._iter
            resumed = self._iter > start
            dataloader = None
        final_round = k - 1
        while k <= self.last_round and not self.stop_training:
            if dataloader is None:
                try:
                    dataloader = self._build_round_dataloader(k)
                except EmptyPseudoLabelSelection as exc:
                    if k == self.first_round:
                        raise
                    runner.logger.warning(f'round {k}: {exc}. Rule: decoder_r{k - 1} stays the'
                                          ' final decoder; the remaining rounds do not train.')
                    break
                self.dataloader = dataloader
            length = self._round_length(dataloader)
            self._set_position(k, start, length)
            runner.call_hook('before_train_round', round_index=k, resumed=resumed)
            if not resumed:  # a new optimiser per round: no moments carried over
                runner.optim_wrapper.optimizer.state.clear()
            iterator = (self.dataloader_iterator if k == self.first_round and start == 0
                        else _InfiniteDataloaderIterator(dataloader))
            if resumed:
                print_log(f'round {k}: advancing the dataloader {self._iter - start} steps to '
                          'skip data already trained on', logger='current')
                for _ in range(self._iter - start):
                    next(iterator)
            self.dataloader_iterator = iterator
            self._max_iters = max(self._max_iters, start + length)
            print_log(f'round {k}: training the decoder for {length} iterations on '
                      f'{len(dataloader.dataset)} patches', logger='current')
            self._round_end = start + length
            self._round_index = k
            while self._iter < self._round_end and not self.stop_training:
                runner.model.train()
                self.run_iter(next(self.dataloader_iterator))
                self._decide_current_val_interval()
                if (runner.val_loop is not None and self._iter >= self.val_begin
                        and self._iter % self.val_interval == 0):
                    runner.val_loop.run()
            if self._iter < self._round_end:
                break  # stopped from outside (e.g. EarlyStoppingHook)
            final_round = k
            runner.call_hook('after_train_round', round_index=k)
            k, start, resumed, dataloader = k + 1, self._iter, False, None
        runner.message_hub.update_info(FINAL_ROUND_KEY, final_round)
        runner.call_hook('after_train_epoch')
        runner.call_hook('after_train')
        return runner.model

    def run_iter(self, data_batch) -> None:
        """One iteration; the last of a round also saves ``decoder_r<k>.pth``."""
        self.runner.call_hook('before_train_iter', batch_idx=self._iter, data_batch=data_batch)
        outputs = self.runner.model.train_step(data_batch,
                                               optim_wrapper=self.runner.optim_wrapper)
        self.runner.call_hook('after_train_iter', batch_idx=self._iter, data_batch=data_batch,
                              outputs=outputs)
        if self._iter + 1 == self._round_end:
            self._save_round_checkpoint(self._round_index)
        self._iter += 1

    def _save_round_checkpoint(self, k: int) -> None:
        """``decoder_r<k>.pth`` (at the iteration just trained, as the checkpoint hook saves),
        recorded in ``last_checkpoint`` so a stop after it resumes at the round boundary."""
        runner = self.runner
        name = decoder_round_checkpoint(k)
        runner.save_checkpoint(runner.work_dir, name, by_epoch=False)
        if is_main_process():
            write_text(osp.join(runner.work_dir, 'last_checkpoint'),
                       osp.join(runner.work_dir, name))
        runner.logger.info(f'round {k}: decoder saved to {osp.join(runner.work_dir, name)}')
