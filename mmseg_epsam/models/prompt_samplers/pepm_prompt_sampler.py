"""PEPM prompt sampler: masks / CAMs in data samples -> SAM point and box prompts."""
from __future__ import annotations

from typing import Optional

import numpy as np

from mmseg.registry import TASK_UTILS
from mmseg_epsam.functional.prompts import (SMALL_MASK_POLICIES, PromptSet, SmallMaskPolicy,
                                            build_prompt_set, mask_bounding_box, patch_rng,
                                            sample_negative_points, sample_pepm_points,
                                            sample_uniform_points)

from .base_prompt_sampler import BasePromptSampler

#: What a prompt is made of: points only (the paper), the mask's bounding box only, or both.
PROMPT_KINDS = ('points', 'box', 'box+points')
#: Where inference points come from (paper Table 4; docs/method.md §4):
#: ``pepm``: ∝ CAM inside the initial mask (the reference's PEPM, the default);
#: ``pepm_whole_map``: ∝ CAM over the whole patch (Eq. 4 read literally: S = A / ΣA over the map);
#: ``mask_uniform``: uniform inside the initial mask ("no PEPM");
#: ``patch_uniform``: uniform over the whole patch ("random points");
#: ``ground_truth``: uniform inside the ground-truth mask (ORACLE: uses pixel labels).
POINT_SOURCES = ('pepm', 'pepm_whole_map', 'mask_uniform', 'patch_uniform', 'ground_truth')


@TASK_UTILS.register_module()
class PEPMPromptSampler(BasePromptSampler):
    """Turns a target mask (training) or a CAM + initial mask (inference) into SAM prompts.

    Modes (:meth:`BasePromptSampler.prompts_for_sample`):

    - ``'train'``: ``num_points`` positive points uniform from the target mask (the initial
      mask or a pseudo-label), drawn from one running generator seeded with ``seed``, so
      every epoch gets fresh points; with ``prompt_kind`` ``'box'`` / ``'box+points'`` the
      target's bounding box too;
    - ``'predict'``: ``num_points`` points from ``point_source`` (default: without replacement
      with probability ∝ CAM inside the initial mask, paper Eq. 4), from a generator seeded by
      ``(seed, patch name)``: a patch always gets the same prompts, whatever the order. With
      a box kind, the initial mask's bounding box. An empty initial mask gives an empty
      prompt (an empty prediction) for every source.

    Args:
        num_points: positive points per image (50 in the paper and the reference).
        prompt_kind: ``'points'`` (the paper), ``'box'`` or ``'box+points'`` (beyond the
            paper; LiteMedSAM was trained on box prompts).
        point_source: inference point source, one of :data:`POINT_SOURCES`.
        small_mask_policy: ``'all'`` (masks with fewer pixels give fewer points) or
            ``'replace'`` (draw ``num_points`` with replacement).
        num_negative_points: negative points drawn uniformly outside the mask (0 = none,
            the reference).
        reference_unscaled_coords: do not scale points to SAM's input frame (reproduces the
            reference's bug; default False = fixed).
        seed: seed of the generators.
    """

    def __init__(self,
                 num_points: int = 50,
                 prompt_kind: str = 'points',
                 point_source: str = 'pepm',
                 small_mask_policy: SmallMaskPolicy = 'all',
                 num_negative_points: int = 0,
                 reference_unscaled_coords: bool = False,
                 seed: int = 0) -> None:
        if num_points < 1:
            raise ValueError(f'num_points must be >= 1, got {num_points}')
        if prompt_kind not in PROMPT_KINDS:
            raise ValueError(f'prompt_kind must be one of {PROMPT_KINDS}, got {prompt_kind!r}')
        if point_source not in POINT_SOURCES:
            raise ValueError(f'point_source must be one of {POINT_SOURCES}, '
                             f'got {point_source!r}')
        if small_mask_policy not in SMALL_MASK_POLICIES:
            raise ValueError(f'small_mask_policy must be one of {SMALL_MASK_POLICIES}, '
                             f'got {small_mask_policy!r}')
        self.num_points = num_points
        self.prompt_kind = prompt_kind
        self.point_source = point_source
        self.small_mask_policy = small_mask_policy
        self.num_negative_points = num_negative_points
        self.reference_unscaled_coords = reference_unscaled_coords
        self.seed = seed
        self.train_rng = np.random.default_rng(seed)

    def reseed_training(self, seed: int) -> None:
        """Restart the training-prompt draws from ``seed``."""
        self.train_rng = np.random.default_rng(seed)

    @property
    def uses_points(self) -> bool:
        """Whether prompts carry points (``prompt_kind`` is not ``'box'``)."""
        return self.prompt_kind != 'box'

    @property
    def uses_box(self) -> bool:
        """Whether prompts carry the mask's bounding box."""
        return self.prompt_kind != 'points'

    def _assemble(self, positive_xy: np.ndarray, mask: np.ndarray, target_length: int,
                  rng: np.random.Generator) -> PromptSet:
        """Points (when the kind has them), negatives and the mask's box into a PromptSet."""
        has_mask = bool(np.asarray(mask).any())
        if not self.uses_points:
            positive_xy = positive_xy[:0]
        negative_xy = None
        if self.num_negative_points > 0 and has_mask:
            negative_xy = sample_negative_points(mask, self.num_negative_points, rng,
                                                 self.small_mask_policy)
        box = mask_bounding_box(mask) if self.uses_box else None
        return build_prompt_set(positive_xy, mask.shape, target_length, negative_xy, box,
                                self.reference_unscaled_coords)

    def train_prompts(self, target_mask: np.ndarray, target_length: int,
                      negative_patch: bool = False) -> PromptSet:
        """Training prompts from a target mask (``HxW``, > 0 is foreground), in the SAM frame.

        The prompt region is the target, except for a negative patch with an empty target
        (``IDSPseudoLabelDataset(negative_patches='empty_target')``): its points (and box)
        cover the whole patch, as PEPM prompts cover most of a positive patch at inference,
        and the decoder learns to answer them with an empty mask.
        """
        region = np.asarray(target_mask)
        if negative_patch and not region.any():
            region = np.ones(region.shape, bool)
        points = (sample_uniform_points(region, self.num_points, self.train_rng,
                                        self.small_mask_policy)
                  if self.uses_points else np.zeros((0, 2), np.float32))
        return self._assemble(points, region, target_length, self.train_rng)

    def inference_points(self, cam: np.ndarray, initial_mask: np.ndarray,
                         rng: np.random.Generator,
                         gt_mask: Optional[np.ndarray] = None) -> np.ndarray:
        """``(K, 2)`` positive points ``(x, y)`` of :attr:`point_source` (mask frame)."""
        if self.point_source == 'pepm':
            return sample_pepm_points(cam, initial_mask, self.num_points, rng,
                                      self.small_mask_policy)
        whole_patch = np.ones(np.shape(initial_mask), bool)
        if self.point_source == 'pepm_whole_map':
            return sample_pepm_points(cam, whole_patch, self.num_points, rng,
                                      self.small_mask_policy)
        if self.point_source == 'ground_truth':
            if gt_mask is None:
                raise ValueError("point_source='ground_truth' (oracle) needs the sample's "
                                 'ground-truth mask: add LoadAnnotations to the pipeline')
            region = gt_mask
        else:
            region = initial_mask if self.point_source == 'mask_uniform' else whole_patch
        return sample_uniform_points(region, self.num_points, rng, self.small_mask_policy)

    def pepm_prompts(self, cam: np.ndarray, initial_mask: np.ndarray, target_length: int,
                     patch_key: str, gt_mask: Optional[np.ndarray] = None) -> PromptSet:
        """Inference prompts from a CAM and its initial mask, seeded by ``patch_key``.

        The default point source is PEPM (paper Eq. 4). An empty initial mask gives an empty
        prompt whatever the source.
        """
        initial_mask = np.asarray(initial_mask)
        rng = patch_rng(self.seed, patch_key)
        if not initial_mask.any() or not self.uses_points:
            points = np.zeros((0, 2), np.float32)
        else:
            points = self.inference_points(cam, initial_mask, rng, gt_mask)
        return self._assemble(points, initial_mask, target_length, rng)

    def inference_prompts(self, metainfo: dict, target_length: int,
                          gt_mask: Optional[np.ndarray] = None) -> PromptSet:
        """:meth:`pepm_prompts` of the ``cam`` / ``initial_mask`` arrays of ``metainfo`` (set
        by ``LoadCAMAndInitialMask``; the sampler reads no files); the patch key is
        ``patch_name`` (else ``img_path``). ``gt_mask`` is used by the oracle point source
        only.
        """
        cam = metainfo.get('cam')
        initial_mask = metainfo.get('initial_mask')
        if cam is None or initial_mask is None:
            raise KeyError(
                'PEPM prompts need the cam and initial_mask arrays in the data sample metainfo '
                f'of {metainfo.get("img_path", "?")}: add LoadCAMAndInitialMask to the '
                "pipeline and 'cam', 'initial_mask' to PackSegInputs' meta_keys")
        key = str(metainfo.get('patch_name') or metainfo.get('img_path', ''))
        try:
            return self.pepm_prompts(cam, initial_mask, target_length, key, gt_mask)
        except ValueError as err:
            raise ValueError(f'{metainfo.get("img_path", key)}: {err}') from err

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_points={self.num_points}, '
                f'prompt_kind={self.prompt_kind!r}, point_source={self.point_source!r}, '
                f'small_mask_policy={self.small_mask_policy!r}, '
                f'num_negative_points={self.num_negative_points}, '
                f'reference_unscaled_coords={self.reference_unscaled_coords}, '
                f'seed={self.seed})')
