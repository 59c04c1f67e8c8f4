"""PEPM prompt head: masks / CAMs in data samples -> SAM point (and box) prompts."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from mmseg.registry import MODELS
from mmseg_epsam.datasets.transforms.load_cam import load_cam, load_initial_mask
from mmseg_epsam.functional.prompts import (SMALL_MASK_POLICIES, PromptSet, SmallMaskPolicy,
                                            build_prompt_set, mask_bounding_box, patch_rng,
                                            sample_negative_points, sample_pepm_points,
                                            sample_uniform_points, scale_coords_to_sam)

PROMPT_MODES = ('train', 'pepm')


@MODELS.register_module()
class PEPMPromptHead:
    """Turns a target mask (training) or a CAM + initial mask (PEPM) into SAM prompts.

    No learnable parameters. Modes:

    - ``'train'``: ``num_points`` positive points uniform from the target mask (the initial
      mask or a pseudo-label), drawn from one running generator seeded with ``seed``, so
      every epoch gets fresh points;
    - ``'pepm'``: ``num_points`` positive points drawn without replacement with probability
      ∝ CAM inside the initial mask (paper Eq. 4), from a generator seeded by
      ``(seed, patch name)``: a patch always gets the same prompts, whatever the order.

    Args:
        num_points: positive points per image (50 in the paper and the reference).
        small_mask_policy: ``'all'`` (masks with fewer pixels give fewer points) or
            ``'replace'`` (draw ``num_points`` with replacement).
        num_negative_points: negative points drawn uniformly outside the mask (0 = none,
            the reference).
        use_box: add the mask's bounding box as a box prompt (the reference: no).
        reference_unscaled_coords: do not scale points to SAM's input frame (reproduces the
            reference's bug; default False = fixed).
        seed: seed of the generators.
    """

    def __init__(self,
                 num_points: int = 50,
                 small_mask_policy: SmallMaskPolicy = 'all',
                 num_negative_points: int = 0,
                 use_box: bool = False,
                 reference_unscaled_coords: bool = False,
                 seed: int = 0) -> None:
        if num_points < 1:
            raise ValueError(f'num_points must be >= 1, got {num_points}')
        if small_mask_policy not in SMALL_MASK_POLICIES:
            raise ValueError(f'small_mask_policy must be one of {SMALL_MASK_POLICIES}, '
                             f'got {small_mask_policy!r}')
        self.num_points = num_points
        self.small_mask_policy = small_mask_policy
        self.num_negative_points = num_negative_points
        self.use_box = use_box
        self.reference_unscaled_coords = reference_unscaled_coords
        self.seed = seed
        self.train_rng = np.random.default_rng(seed)

    def _assemble(self, positive_xy: np.ndarray, mask: np.ndarray, target_length: int,
                  rng: np.random.Generator) -> PromptSet:
        negative_xy = None
        if self.num_negative_points > 0 and len(positive_xy):
            negative_xy = sample_negative_points(mask, self.num_negative_points, rng,
                                                 self.small_mask_policy)
        box = mask_bounding_box(mask) if self.use_box and len(positive_xy) else None
        return build_prompt_set(positive_xy, mask.shape, target_length, negative_xy, box,
                                self.reference_unscaled_coords)

    def train_prompts(self, target_mask: np.ndarray, target_length: int) -> PromptSet:
        """Training prompts from a target mask (``HxW``, > 0 is foreground), in the SAM frame."""
        target_mask = np.asarray(target_mask)
        points = sample_uniform_points(target_mask, self.num_points, self.train_rng,
                                       self.small_mask_policy)
        return self._assemble(points, target_mask, target_length, self.train_rng)

    def pepm_prompts(self, cam: np.ndarray, initial_mask: np.ndarray, target_length: int,
                     patch_key: str) -> PromptSet:
        """PEPM prompts (Eq. 4) from a CAM and its initial mask, seeded by ``patch_key``."""
        initial_mask = np.asarray(initial_mask)
        rng = patch_rng(self.seed, patch_key)
        points = sample_pepm_points(cam, initial_mask, self.num_points, rng,
                                    self.small_mask_policy)
        return self._assemble(points, initial_mask, target_length, rng)

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
                           target_mask: Optional[np.ndarray] = None) -> PromptSet:
        """Prompts for one data sample.

        ``'train'`` draws from ``target_mask``. ``'pepm'`` uses explicit prompts when
        ``metainfo`` has ``point_coords`` / ``point_labels`` (and optional ``box``), in the
        frame of ``img_shape``; otherwise it reads ``cam`` / ``initial_mask`` arrays from
        ``metainfo`` (set by ``LoadCAMAndInitialMask``), else loads ``cam_path`` /
        ``initial_mask_path``; the patch key is ``patch_name`` (else ``img_path``).
        """
        if mode not in PROMPT_MODES:
            raise ValueError(f'mode must be one of {PROMPT_MODES}, got {mode!r}')
        if mode == 'train':
            if target_mask is None:
                raise ValueError("mode 'train' needs the target mask")
            return self.train_prompts(target_mask, target_length)
        if 'point_coords' in metainfo:
            return self.explicit_prompts(metainfo['point_coords'], metainfo['point_labels'],
                                         tuple(metainfo['img_shape'][:2]), target_length,
                                         metainfo.get('box'))
        cam = metainfo.get('cam')
        initial_mask = metainfo.get('initial_mask')
        if cam is None or initial_mask is None:
            missing = [k for k in ('cam_path', 'initial_mask_path') if k not in metainfo]
            if missing:
                raise KeyError(
                    f'PEPM prompts need cam/initial_mask arrays or {missing} in the data '
                    f'sample metainfo of {metainfo.get("img_path", "?")}: add '
                    "LoadCAMAndInitialMask to the pipeline and its keys to PackSegInputs' "
                    'meta_keys')
            cam = load_cam(metainfo['cam_path'])
            initial_mask = load_initial_mask(metainfo['initial_mask_path'])
        key = str(metainfo.get('patch_name') or metainfo.get('img_path', ''))
        return self.pepm_prompts(cam, initial_mask, target_length, key)

    @staticmethod
    def to_tensors(prompts: PromptSet, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(point_coords [1,N,2] float, point_labels [1,N] int, box [1,4] or None)``."""
        coords = torch.as_tensor(prompts.point_coords, dtype=torch.float, device=device)[None]
        labels = torch.as_tensor(prompts.point_labels, dtype=torch.int, device=device)[None]
        box = (None if prompts.box is None else
               torch.as_tensor(prompts.box, dtype=torch.float, device=device)[None])
        return coords, labels, box

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_points={self.num_points}, '
                f'small_mask_policy={self.small_mask_policy!r}, '
                f'num_negative_points={self.num_negative_points}, use_box={self.use_box}, '
                f'reference_unscaled_coords={self.reference_unscaled_coords}, '
                f'seed={self.seed})')
