"""The contract between :class:`SAMDecoderSegmentor` and a prompt sampler (docs/method.md §4)."""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Optional

import numpy as np
import torch

from mmseg_epsam.functional.prompts import PromptSet, scale_coords_to_sam

#: ``'train'``: prompts from the training target; ``'predict'``: inference prompts.
PROMPT_MODES = ('train', 'predict')


class BasePromptSampler(metaclass=ABCMeta):
    """Turns one data sample into SAM prompts; no learnable parameters.

    A prompt policy is a subclass registered in MMSeg's ``TASK_UTILS`` that implements
    :meth:`train_prompts` and :meth:`inference_prompts`; the segmentor takes it from its
    config, ``model.prompt_head=dict(type='MyPromptSampler', ...)``. The segmentor calls
    :meth:`prompts_for_sample` only.

    Frames: masks and ``metainfo`` arrays are in the patch frame (``img_shape``); a
    :class:`PromptSet` holds the points in SAM's input frame (``target_length`` on the long
    side, :func:`~mmseg_epsam.functional.prompts.build_prompt_set` scales them) and in the
    patch frame (``frame_coords``, reported as ``prompt_points`` by ``predict``). An empty
    prompt (no positive point and no box) gives an empty mask at inference and skips the
    image in training.
    """

    #: Keep explicit prompts in the patch frame (reproduces the reference's unscaled points;
    #: False = scaled to SAM's frame).
    reference_unscaled_coords: bool = False

    @abstractmethod
    def train_prompts(self, target_mask: np.ndarray, target_length: int,
                      negative_patch: bool = False) -> PromptSet:
        """Training prompts from the target (``HxW``, > 0 is tumour) of one sample.

        ``negative_patch``: the sample is a negative patch (``img_label`` 0), whose target
        may be empty (``IDSPseudoLabelDataset(negative_patches='empty_target')``): an empty
        prompt skips it, a non-empty one trains the decoder towards its empty target.
        """

    @abstractmethod
    def inference_prompts(self, metainfo: dict, target_length: int,
                          gt_mask: Optional[np.ndarray] = None) -> PromptSet:
        """Inference prompts of one sample from its ``metainfo`` (e.g. the ``cam`` /
        ``initial_mask`` arrays of ``LoadCAMAndInitialMask``, ``img_shape``);
        ``gt_mask`` (patch frame) when the sample carries a ground truth, else None."""

    def reseed_training(self, seed: int) -> None:
        """Restart the random draws of :meth:`train_prompts` from ``seed`` (called at
        positions a training run can resume from); a sampler without randomness ignores it."""

    def explicit_prompts(self, point_coords: np.ndarray, point_labels: np.ndarray,
                         frame_shape: tuple[int, int], target_length: int,
                         box: Optional[np.ndarray] = None) -> PromptSet:
        """Given points ``(N, 2)`` ``(x, y)`` / labels (and box) in a frame of ``frame_shape``."""
        point_coords = np.asarray(point_coords, dtype=np.float32).reshape(-1, 2)
        point_labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)
        if len(point_coords) != len(point_labels):
            raise ValueError(f'{len(point_coords)} point_coords but {len(point_labels)} '
                             'point_labels')
        if box is not None:
            box = scale_coords_to_sam(np.asarray(box).reshape(2, 2), frame_shape,
                                      target_length, self.reference_unscaled_coords).reshape(4)
        return PromptSet(
            point_coords=scale_coords_to_sam(point_coords, frame_shape, target_length,
                                             self.reference_unscaled_coords),
            point_labels=point_labels, box=box, frame_coords=point_coords)

    def prompts_for_sample(self, metainfo: dict, mode: str, target_length: int,
                           target_mask: Optional[np.ndarray] = None,
                           gt_mask: Optional[np.ndarray] = None) -> PromptSet:
        """Prompts for one data sample: what the segmentor calls.

        ``'train'``: :meth:`train_prompts` of ``target_mask`` (``negative_patch`` when
        ``metainfo['img_label']`` is 0). ``'predict'``: explicit prompts when ``metainfo``
        has ``point_coords`` / ``point_labels`` (and optional ``box``) in the frame of
        ``img_shape``, else :meth:`inference_prompts`.
        """
        if mode not in PROMPT_MODES:
            raise ValueError(f'mode must be one of {PROMPT_MODES}, got {mode!r}')
        if mode == 'train':
            if target_mask is None:
                raise ValueError("mode 'train' needs the target mask")
            negative_patch = int(metainfo.get('img_label', 1)) == 0
            return self.train_prompts(target_mask, target_length, negative_patch)
        if 'point_coords' in metainfo:
            return self.explicit_prompts(metainfo['point_coords'], metainfo['point_labels'],
                                         tuple(metainfo['img_shape'][:2]), target_length,
                                         metainfo.get('box'))
        return self.inference_prompts(metainfo, target_length, gt_mask)

    @staticmethod
    def to_tensors(prompts: PromptSet, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(point_coords [1,N,2] float, point_labels [1,N] int, box [1,4] or None)``."""
        coords = torch.as_tensor(prompts.point_coords, dtype=torch.float, device=device)[None]
        labels = torch.as_tensor(prompts.point_labels, dtype=torch.int, device=device)[None]
        box = (None if prompts.box is None else
               torch.as_tensor(prompts.box, dtype=torch.float, device=device)[None])
        return coords, labels, box
