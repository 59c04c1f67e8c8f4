"""Point and box prompts for SAM: training prompts and PEPM (paper §3.3, Eq. 4).

Conventions (the same as Meta's ``SamPredictor``):

- masks and CAMs are ``HxW`` arrays in the *mask frame* (the patch at its full resolution);
- a point is ``(x, y) = (column, row)`` of a pixel, a box is ``(x0, y0, x1, y1)`` with
  inclusive pixel indices;
- prompts handed to SAM live in the *SAM frame*: the image resized so that its longest side
  is ``target_length`` (1024 for SAM), with the rule of ``ResizeLongestSide``:
  ``scale = target_length / max(h, w)``, new size ``int(h * scale + 0.5), int(w * scale + 0.5)``,
  ``x' = x * new_w / w`` and ``y' = y * new_h / h``.

Explicit choices:

- **empty mask**: no positive point can be drawn; the returned :class:`PromptSet` has
  ``is_empty`` True and the caller returns an empty prediction (inference) or skips the
  sample (training). Nothing falls back to the point (0, 0) as the reference did.
- **tiny mask** (fewer candidate pixels than ``num_points``): ``small_mask_policy='all'``
  (default) takes every pixel once, so fewer than ``num_points`` points are returned;
  ``'replace'`` draws ``num_points`` with replacement.
- **PEPM with zero CAM inside the mask**: Eq. 4 gives those pixels probability 0. When fewer
  than ``num_points`` mask pixels have a positive CAM, all of them are taken and the rest of
  the points are drawn uniformly from the zero-CAM mask pixels.
- **reference bug**: ``reference_unscaled_coords=True`` skips the scaling to the SAM frame,
  reproducing the reference code, whose 512-frame points landed in the top-left quadrant of
  SAM's 1024 frame.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

SmallMaskPolicy = Literal['all', 'replace']
SMALL_MASK_POLICIES = ('all', 'replace')


@dataclass(frozen=True)
class PromptSet:
    """Prompts for one image.

    Attributes:
        point_coords: ``(N, 2)`` float32 ``(x, y)`` in the SAM frame (``N`` may be 0).
        point_labels: ``(N,)`` int64, 1 = positive (foreground), 0 = negative.
        box: ``(4,)`` float32 ``(x0, y0, x1, y1)`` in the SAM frame, or None.
        frame_coords: ``(N, 2)`` float32 ``(x, y)`` of the same points in the mask frame
            (for drawing them on the patch).
    """

    point_coords: np.ndarray
    point_labels: np.ndarray
    box: Optional[np.ndarray]
    frame_coords: np.ndarray

    @property
    def is_empty(self) -> bool:
        """True when there is neither a positive point nor a box: the caller predicts an
        empty mask."""
        return self.box is None and not bool((self.point_labels == 1).any())


def sam_input_shape(height: int, width: int, target_length: int = 1024) -> tuple[int, int]:
    """Size ``(new_h, new_w)`` of an image resized so its longest side is ``target_length``.

    The rule of segment_anything's ``ResizeLongestSide.get_preprocess_shape``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f'image size must be positive, got {height}x{width}')
    scale = target_length / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def scale_coords_to_sam(coords_xy: np.ndarray,
                        frame_shape: tuple[int, int],
                        target_length: int = 1024,
                        reference_unscaled_coords: bool = False) -> np.ndarray:
    """Map ``(..., 2)`` ``(x, y)`` coordinates from the mask frame to the SAM frame.

    Args:
        coords_xy: coordinates in a frame of size ``frame_shape = (h, w)``.
        frame_shape: ``(h, w)`` of the frame the coordinates are in.
        target_length: SAM's input size (``image_encoder.img_size``).
        reference_unscaled_coords: return the coordinates unchanged (the reference's bug).

    Returns:
        float32 array of the same shape.
    """
    coords = np.asarray(coords_xy, dtype=np.float64).copy()
    if coords.shape[-1:] != (2,):
        raise ValueError(f'coordinates must have shape (..., 2), got {coords.shape}')
    if not reference_unscaled_coords:
        height, width = frame_shape
        new_h, new_w = sam_input_shape(height, width, target_length)
        coords[..., 0] *= new_w / width
        coords[..., 1] *= new_h / height
    return coords.astype(np.float32)


def _check_mask(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f'{what} must be a 2-D HxW array, got shape {mask.shape}')
    return mask > 0


def _pixels_xy(flat_indices: np.ndarray, width: int) -> np.ndarray:
    """Flat pixel indices -> ``(N, 2)`` ``(x, y)`` float32."""
    rows, cols = np.divmod(flat_indices, width)
    return np.stack([cols, rows], axis=1).astype(np.float32)


def _draw(candidates: np.ndarray, num_points: int, rng: np.random.Generator,
          small_mask_policy: SmallMaskPolicy,
          weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Draw flat indices from ``candidates`` (uniform, or ∝ ``weights``) without replacement.

    With fewer candidates than ``num_points``: all of them (policy 'all') or ``num_points``
    drawn with replacement (policy 'replace').
    """
    if small_mask_policy not in SMALL_MASK_POLICIES:
        raise ValueError(f'small_mask_policy must be one of {SMALL_MASK_POLICIES}, '
                         f'got {small_mask_policy!r}')
    if candidates.size == 0 or num_points <= 0:
        return candidates[:0]
    p = None if weights is None else weights / weights.sum()
    if candidates.size <= num_points:
        if small_mask_policy == 'all':
            return rng.permutation(candidates)
        return rng.choice(candidates, size=num_points, replace=True, p=p)
    return rng.choice(candidates, size=num_points, replace=False, p=p)


def sample_uniform_points(mask: np.ndarray,
                          num_points: int,
                          rng: np.random.Generator,
                          small_mask_policy: SmallMaskPolicy = 'all') -> np.ndarray:
    """Training prompts: ``num_points`` pixels drawn uniformly, without replacement, from a mask.

    Args:
        mask: ``HxW`` target mask (initial mask or pseudo-label); pixels > 0 are candidates.
        num_points: N (50 in the paper).
        rng: numpy Generator (seeded by the caller).
        small_mask_policy: behaviour when the mask has fewer than N pixels (module docstring).

    Returns:
        ``(K, 2)`` float32 ``(x, y)`` in the mask frame; K = 0 for an empty mask.
    """
    fg = _check_mask(mask, 'mask')
    candidates = np.flatnonzero(fg)
    return _pixels_xy(_draw(candidates, num_points, rng, small_mask_policy), fg.shape[1])


def sample_pepm_points(cam: np.ndarray,
                       initial_mask: np.ndarray,
                       num_points: int,
                       rng: np.random.Generator,
                       small_mask_policy: SmallMaskPolicy = 'all') -> np.ndarray:
    """PEPM prompts (paper Eq. 4): pixels drawn without replacement with P(i, j) ∝ A_ij.

    ``S_ij = A_ij / Σ A`` with the activation map ``A`` restricted to the initial mask.
    Mask pixels with zero activation are only used once every positive-activation pixel has
    been drawn (uniformly among them).

    Args:
        cam: ``HxW`` class activation map, non-negative (normalised to [0, 1] upstream).
        initial_mask: ``HxW`` initial mask of the same size; pixels > 0 are candidates.
        num_points: N (50 in the paper).
        rng: numpy Generator (seeded by the caller).
        small_mask_policy: behaviour when the mask has fewer than N pixels.

    Returns:
        ``(K, 2)`` float32 ``(x, y)`` in the mask frame; K = 0 for an empty mask.
    """
    fg = _check_mask(initial_mask, 'initial_mask')
    cam = np.asarray(cam, dtype=np.float64)
    if cam.shape != fg.shape:
        raise ValueError(f'cam shape {cam.shape} differs from initial_mask shape {fg.shape}')
    candidates = np.flatnonzero(fg)
    weights = cam.reshape(-1)[candidates]
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError('cam must be finite and non-negative inside the initial mask')
    positive = weights > 0
    if small_mask_policy == 'replace' and candidates.size <= num_points:
        drawn = _draw(candidates, num_points, rng, 'replace',
                      weights if positive.any() else None)
    else:
        drawn = _draw(candidates[positive], num_points, rng, 'all', weights[positive])
        missing = min(num_points, candidates.size) - drawn.size
        if missing > 0:
            drawn = np.concatenate(
                [drawn, _draw(candidates[~positive], missing, rng, 'all')])
    return _pixels_xy(drawn, fg.shape[1])


def sample_negative_points(mask: np.ndarray,
                           num_points: int,
                           rng: np.random.Generator,
                           small_mask_policy: SmallMaskPolicy = 'all') -> np.ndarray:
    """Negative prompts: ``num_points`` pixels drawn uniformly from outside ``mask``.

    Returns:
        ``(K, 2)`` float32 ``(x, y)`` in the mask frame.
    """
    fg = _check_mask(mask, 'mask')
    candidates = np.flatnonzero(~fg)
    return _pixels_xy(_draw(candidates, num_points, rng, small_mask_policy), fg.shape[1])


def mask_bounding_box(mask: np.ndarray) -> Optional[np.ndarray]:
    """Box ``(x0, y0, x1, y1)`` (inclusive pixel indices, float32) around a mask; None if empty."""
    fg = _check_mask(mask, 'mask')
    rows = np.flatnonzero(fg.any(axis=1))
    cols = np.flatnonzero(fg.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def build_prompt_set(positive_xy: np.ndarray,
                     frame_shape: tuple[int, int],
                     target_length: int = 1024,
                     negative_xy: Optional[np.ndarray] = None,
                     box_xyxy: Optional[np.ndarray] = None,
                     reference_unscaled_coords: bool = False) -> PromptSet:
    """Assemble points (and a box) given in the mask frame into a :class:`PromptSet`.

    Args:
        positive_xy: ``(N, 2)`` positive points in the mask frame.
        frame_shape: ``(h, w)`` of the mask frame.
        target_length: SAM's input size.
        negative_xy: optional ``(M, 2)`` negative points in the mask frame.
        box_xyxy: optional ``(4,)`` box in the mask frame.
        reference_unscaled_coords: skip the scaling (reproduces the reference's bug).
    """
    positive_xy = np.asarray(positive_xy, dtype=np.float32).reshape(-1, 2)
    negative_xy = (np.zeros((0, 2), np.float32) if negative_xy is None
                   else np.asarray(negative_xy, dtype=np.float32).reshape(-1, 2))
    frame_coords = np.concatenate([positive_xy, negative_xy])
    labels = np.concatenate([np.ones(len(positive_xy), np.int64),
                             np.zeros(len(negative_xy), np.int64)])
    box = None
    if box_xyxy is not None:
        box = scale_coords_to_sam(np.asarray(box_xyxy).reshape(2, 2), frame_shape, target_length,
                                  reference_unscaled_coords).reshape(4)
    return PromptSet(
        point_coords=scale_coords_to_sam(frame_coords, frame_shape, target_length,
                                         reference_unscaled_coords),
        point_labels=labels,
        box=box,
        frame_coords=frame_coords)


def patch_rng(seed: int, key: str) -> np.random.Generator:
    """A Generator that depends only on ``seed`` and ``key`` (e.g. the patch name).

    Used at inference and pseudo-label time so a patch gets the same prompts whatever the
    order or batching of the data.
    """
    digest = hashlib.sha1(key.encode('utf-8')).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], 'little')])
