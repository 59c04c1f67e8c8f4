"""Class activation maps to initial masks (docs/method.md §3, paper Eq. 3).

A classifier's raw CAM ``ReLU(w_fc . F)`` at feature resolution becomes an initial mask in
these steps, each with an explicit resolution and interpolation:

1. **rotate & fuse** (paper Eq. 3): CAMs of the input rotated by 0/90/180/270 degrees are
   rotated back, min-max normalised to [0, 1] one by one (optionally quantised to uint8
   levels, as the reference code does) and averaged. ``views_per_forward`` sets how many
   views share one forward pass; the result does not depend on it.
2. **resize** of the fused CAM to the patch's full resolution (``cam_interpolation``).
3. **threshold**: among the non-zero activations the bottom ``quantile`` are set to 0 and
   the rest to 1 (by rank, or at numpy's interpolated percentile with a strict ``>``, see
   :func:`quantile_threshold`; or a fixed cut, for the "no post-processing" baseline; or a
   DenseCRF over the patch image, :mod:`mmseg_epsam.functional.crf`);
4. **morphological opening** with a rectangular kernel.

Steps 3-4 run either at full resolution (Camelyon16 in the reference) or at feature
resolution, the binary mask then being upsampled (Camelyon17 in the reference).
:data:`CAM_POSTPROCESS_PRESETS` holds the named settings; :func:`initial_mask_from_cam`
applies them. Every function works on batches ``[B, H, W]`` on any device.
"""
import dataclasses
import math
from typing import Callable, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .cam_device import quantile_threshold_sorted
from .crf import DenseCRF, dense_crf_mask

Interpolation = Literal['nearest', 'bilinear', 'bicubic', 'area']
Resolution = Literal['full', 'feature']
QuantileRule = Literal['rank', 'percentile_strict']
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'area')
RESOLUTIONS = ('full', 'feature')
QUANTILE_RULES = ('rank', 'percentile_strict')
QUARTER_TURNS = (0, 1, 2, 3)


def normalize_cam(cam: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of ``cam [..., H, W]`` to [0, 1], as float32.

    A constant map (including an all-zero one) and an empty tensor give zeros, never NaN.
    Raises ``ValueError`` when the input holds NaN or infinity.
    """
    out = cam.float()
    if out.numel() == 0:
        return out.clone()
    if not torch.isfinite(out).all():
        raise ValueError('CAM holds NaN or infinite values; check the classifier output')
    flat = out.flatten(-2)
    low = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - low
    scaled = (flat - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, scaled, torch.zeros_like(scaled)).reshape(out.shape)


def quantize_uint8_levels(cam: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """Round maps in [0, 1] down to the 256 uint8 levels: ``floor(255 x + tolerance) / 255``.

    This is what storing a normalised CAM as ``uint8(255 x)`` and reading it back gives
    (the reference code does so for each view before fusing). ``tolerance`` absorbs float
    error when ``255 x`` is known to be a fraction with a small denominator (the mean of
    four uint8 levels is a multiple of 1/4: a tolerance of 1e-3 floors it exactly).
    """
    return torch.floor(cam * 255.0 + tolerance) / 255.0


def _view_groups(quarter_turns: Sequence[int], views_per_forward: int,
                 square: bool) -> List[Tuple[int, ...]]:
    """Split the rotations into forward passes of at most ``views_per_forward`` views.

    Rotating a non-square image by an odd number of quarter turns swaps its sides, so for
    non-square inputs the views are grouped by parity and a group may not mix parities.
    """
    turns = list(quarter_turns) if square else sorted(quarter_turns, key=lambda k: k % 2)
    groups = [tuple(turns[i:i + views_per_forward])
              for i in range(0, len(turns), views_per_forward)]
    for group in groups:
        if not square and len({k % 2 for k in group}) > 1:
            raise ValueError(
                f'views_per_forward={views_per_forward} would put rotated views of '
                f'different shapes in one batch (non-square input); use 1 or 2')
    return groups


def rotate_and_fuse_cams(cam_fn: Callable[[torch.Tensor], torch.Tensor],
                         inputs: torch.Tensor,
                         views_per_forward: int = 4,
                         quarter_turns: Sequence[int] = QUARTER_TURNS,
                         quantize_uint8: bool = False) -> torch.Tensor:
    """Rotate & fuse CAMs (paper Eq. 3): ``mean_k rot^-k(norm(CAM(rot^k(x))))``.

    Args:
        cam_fn: Maps a batch ``[N, C, H, W]`` to raw CAMs ``[N, h, w]`` (e.g. the
            classifier's ``compute_cam``).
        inputs: Preprocessed images ``[B, C, H, W]``.
        views_per_forward: How many rotated views of the batch go through one call of
            ``cam_fn`` (1, 2 or 4: a batch of ``views_per_forward * B`` images).
        quarter_turns: Counter-clockwise quarter turns to fuse; ``(0,)`` is the plain,
            single-view CAM.
        quantize_uint8: Quantise each normalised view to uint8 levels before averaging
            (:func:`quantize_uint8_levels`), as the reference code does.

    Returns:
        The fused CAM ``[B, h, w]`` in [0, 1], float32, in the orientation of ``inputs``.
    """
    if inputs.dim() != 4:
        raise ValueError(f'inputs must be [B, C, H, W], got shape {tuple(inputs.shape)}')
    if not isinstance(views_per_forward, int) or views_per_forward < 1:
        raise ValueError(f'views_per_forward must be a positive int, got {views_per_forward!r}')
    if not quarter_turns or any(k not in QUARTER_TURNS for k in quarter_turns):
        raise ValueError(f'quarter_turns must be a non-empty subset of {QUARTER_TURNS}, '
                         f'got {tuple(quarter_turns)}')
    batch_size = inputs.shape[0]
    square = inputs.shape[-2] == inputs.shape[-1]
    fused = None
    for group in _view_groups(quarter_turns, views_per_forward, square):
        views = torch.cat([torch.rot90(inputs, k, dims=(-2, -1)) for k in group])
        cams = cam_fn(views)
        if cams.dim() != 3 or cams.shape[0] != views.shape[0]:
            raise ValueError(f'cam_fn must return [N, h, w] for N={views.shape[0]} views, '
                             f'got shape {tuple(cams.shape)}')
        for i, k in enumerate(group):
            view = normalize_cam(
                torch.rot90(cams[i * batch_size:(i + 1) * batch_size], -k, dims=(-2, -1)))
            if quantize_uint8:
                view = quantize_uint8_levels(view)
            if fused is not None and view.shape != fused.shape:
                raise ValueError(f'rotated-back CAMs differ in shape: {tuple(view.shape)} '
                                 f'vs {tuple(fused.shape)}')
            fused = view if fused is None else fused + view
    return fused / len(quarter_turns)


def resize_maps(maps: torch.Tensor, size: Tuple[int, int],
                interpolation: Interpolation = 'bilinear') -> torch.Tensor:
    """Resize maps ``[..., H, W]`` to ``size = (height, width)``, as float32.

    ``'nearest'`` is the pixel-centred rule (torch's ``nearest-exact``, like OpenCV's
    ``INTER_NEAREST_EXACT``); ``'bilinear'`` and ``'bicubic'`` use ``align_corners=False``
    (OpenCV's and PIL's pixel convention); ``'bicubic'`` is clamped to each map's input range
    so it cannot overshoot; ``'area'`` averages (for downsampling).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f'interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}')
    size = (int(size[0]), int(size[1]))
    out = maps.float()
    if tuple(out.shape[-2:]) == size:
        return out.clone()
    lead = out.shape[:-2]
    flat = out.reshape(-1, 1, *out.shape[-2:])
    if interpolation == 'nearest':
        resized = F.interpolate(flat, size=size, mode='nearest-exact')
    elif interpolation == 'area':
        resized = F.interpolate(flat, size=size, mode='area')
    else:
        resized = F.interpolate(flat, size=size, mode=interpolation, align_corners=False)
    if interpolation == 'bicubic':
        low = flat.amin(dim=(-2, -1), keepdim=True)
        high = flat.amax(dim=(-2, -1), keepdim=True)
        resized = torch.maximum(torch.minimum(resized, high), low)
    return resized.reshape(*lead, *size)


def quantile_threshold(cam: torch.Tensor, quantile: float,
                       rule: QuantileRule = 'rank') -> torch.Tensor:
    """Binarise each map of ``cam [..., H, W]``: bottom ``quantile`` of non-zero values -> 0.

    ``rule='rank'``: for a map with ``n`` non-zero values sorted ascending
    ``v_0 <= ... <= v_{n-1}``, let ``k = floor(quantile * n)``; the threshold is ``t = v_k``
    and the mask is ``cam >= t`` (so exactly ``k`` pixels drop when the values are distinct;
    ties with ``t`` stay); ``k == n`` gives an empty mask.

    ``rule='percentile_strict'``: ``t`` is the linearly interpolated quantile of the non-zero
    values (``numpy.percentile``'s default) and the mask is ``cam > t``, so every value tied
    with ``t`` drops (this matters for uint8-quantised CAMs, see docs/cam_presets.md).

    Zeros stay 0 and a map with no non-zero value gives an empty mask under either rule.

    Returns:
        A bool tensor shaped like ``cam``.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f'quantile must lie in [0, 1], got {quantile}')
    if rule not in QUANTILE_RULES:
        raise ValueError(f'quantile rule must be one of {QUANTILE_RULES}, got {rule!r}')
    if cam.dim() < 2:
        raise ValueError(f'cam must be [..., H, W], got shape {tuple(cam.shape)}')
    if cam.is_cuda:  # the same masks from one sort, without a host round-trip per map
        return quantile_threshold_sorted(cam, quantile)
    flat = cam.reshape(-1, *cam.shape[-2:])
    masks = torch.zeros(flat.shape, dtype=torch.bool, device=cam.device)
    for i, single in enumerate(flat):
        values = single[single > 0]
        n = values.numel()
        if n == 0:
            continue
        if rule == 'percentile_strict':
            threshold = torch.quantile(values.double(), quantile, interpolation='linear')
            masks[i] = single.double() > threshold
            continue
        k = math.floor(quantile * n + 1e-9)
        if k < n:
            threshold = torch.kthvalue(values, k + 1).values
            masks[i] = single >= threshold
    return masks.reshape(cam.shape)


def _max_filter(maps: torch.Tensor, kernel_size: Tuple[int, int]) -> torch.Tensor:
    """Separable max over a ``kh x kw`` window centred on each pixel of ``[N, 1, H, W]``.

    Outside the image counts as -inf (max pooling's padding), so borders never add.
    """
    kh, kw = kernel_size
    if kw > 1:
        maps = F.max_pool2d(maps, (1, kw), stride=1, padding=(0, kw // 2))
    if kh > 1:
        maps = F.max_pool2d(maps, (kh, 1), stride=1, padding=(kh // 2, 0))
    return maps


def _kernel_size(kernel_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``(height, width)`` of an opening kernel, both positive and odd (centred anchor)."""
    size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(size) != 2 or any(not isinstance(s, int) or s < 1 or s % 2 == 0 for s in size):
        raise ValueError(f'opening kernel size must be a positive odd int or (height, width) '
                         f'of positive odd ints, got {kernel_size!r}')
    return size


def binary_opening(mask: torch.Tensor, kernel_size: Union[int, Sequence[int]]) -> torch.Tensor:
    """Morphological opening (erosion, then dilation) with a rectangular kernel.

    Matches OpenCV's ``cv2.morphologyEx(mask, cv2.MORPH_OPEN, ones(kh, kw))`` with its
    default border: outside the image counts as foreground for the erosion and as
    background for the dilation, so a region touching the border is not eroded from it.
    Kernel sides must be odd (a centred anchor); ``1`` (or ``(1, 1)``) is the identity.

    Args:
        mask: Binary maps ``[..., H, W]`` (bool or 0/1).
        kernel_size: ``k`` or ``(kh, kw)``.

    Returns:
        The opened mask, bool, shaped like ``mask``.
    """
    size = _kernel_size(kernel_size)
    binary = mask.bool()
    if size == (1, 1) or binary.numel() == 0:
        return binary.clone()
    flat = binary.float().reshape(-1, 1, *binary.shape[-2:])
    eroded = -_max_filter(-flat, size)
    opened = _max_filter(eroded, size)
    return (opened > 0.5).reshape(binary.shape)


@dataclasses.dataclass(frozen=True)
class CAMPostprocess:
    """How raw CAMs become an initial mask (docs/method.md §3); named presets below.

    Attributes:
        quantile: Quantile threshold q: among non-zero activations the bottom q become 0,
            the rest 1 (:func:`quantile_threshold`). ``None`` when ``fixed_threshold`` is used.
        quantile_rule: ``'rank'`` (keep ``>=`` the value of rank ``floor(q n)``) or
            ``'percentile_strict'`` (keep ``>`` numpy's interpolated percentile).
        fixed_threshold: Instead of the quantile, keep ``cam >= fixed_threshold`` (on the
            normalised CAM); used by the ``none`` preset.
        crf: Instead of the quantile, the DenseCRF labelling of the full-resolution CAM
            over the patch image (:class:`~mmseg_epsam.functional.crf.DenseCRF` or a dict of
            its fields; needs ``resolution='full'`` and the optional pydensecrf2).
        opening_size: ``(kh, kw)`` of the rectangular opening kernel, odd; ``(1, 1)``: none.
        resolution: Where threshold and opening apply: ``'full'`` (patch resolution) or
            ``'feature'`` (the CAM's own resolution, the binary mask then being upsampled).
        cam_interpolation: Resizing of the fused CAM to full resolution (also what is saved).
        mask_interpolation: Upsampling of a feature-resolution binary mask: the 0/1 mask is
            resized as float with this interpolation and kept where ``>= 0.5``.
        rotate_fuse: Fuse the 4 rotated views (paper Eq. 3); ``False``: the single view.
        quantize_uint8: Quantise each normalised view to uint8 levels before fusing.
        quantize_fused_uint8: Also round the fused mean down to uint8 levels (storing the
            mean of the uint8 views as uint8, as one public mirror of the reference does).
    """

    quantile: Optional[float] = 0.10
    quantile_rule: QuantileRule = 'rank'
    fixed_threshold: Optional[float] = None
    crf: Optional[DenseCRF] = None
    opening_size: Tuple[int, int] = (21, 21)
    resolution: Resolution = 'full'
    cam_interpolation: Interpolation = 'bilinear'
    mask_interpolation: Interpolation = 'bilinear'
    rotate_fuse: bool = True
    quantize_uint8: bool = False
    quantize_fused_uint8: bool = False

    def __post_init__(self) -> None:
        """Validate the settings (and accept a list for ``opening_size``, as configs give)."""
        object.__setattr__(self, 'opening_size', _kernel_size(self.opening_size))
        if isinstance(self.crf, dict):
            object.__setattr__(self, 'crf', DenseCRF(**self.crf))
        if self.crf is not None and not isinstance(self.crf, DenseCRF):
            raise ValueError(f'crf must be None, a dict of DenseCRF fields or a DenseCRF, '
                             f'got {self.crf!r}')
        binarisers = [self.quantile, self.fixed_threshold, self.crf]
        if sum(b is not None for b in binarisers) != 1:
            raise ValueError(f'set exactly one of quantile, fixed_threshold and crf, got '
                             f'quantile={self.quantile!r}, '
                             f'fixed_threshold={self.fixed_threshold!r}, crf={self.crf!r}')
        if self.crf is not None and self.resolution != 'full':
            raise ValueError("crf works on the patch image: it needs resolution='full'")
        if self.quantile is not None and not 0.0 <= self.quantile <= 1.0:
            raise ValueError(f'quantile must lie in [0, 1], got {self.quantile}')
        if self.fixed_threshold is not None and not 0.0 < self.fixed_threshold <= 1.0:
            raise ValueError(f'fixed_threshold must lie in (0, 1], got {self.fixed_threshold}')
        if self.quantile_rule not in QUANTILE_RULES:
            raise ValueError(f'quantile_rule must be one of {QUANTILE_RULES}, '
                             f'got {self.quantile_rule!r}')
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f'resolution must be one of {RESOLUTIONS}, got {self.resolution!r}')
        for name in ('cam_interpolation', 'mask_interpolation'):
            if getattr(self, name) not in INTERPOLATIONS:
                raise ValueError(f'{name} must be one of {INTERPOLATIONS}, '
                                 f'got {getattr(self, name)!r}')

    @property
    def quarter_turns(self) -> Tuple[int, ...]:
        """The rotations to fuse: all four, or only the identity."""
        return QUARTER_TURNS if self.rotate_fuse else (0,)

    def to_dict(self) -> dict:
        """Plain-dict form (for JSON settings files)."""
        return dataclasses.asdict(self)


#: Named CAM post-processing settings; docs/cam_presets.md gives the source of every value.
#: ``camelyon16`` / ``camelyon17`` carry the reference code's per-dataset values
#: (docs/method.md §3; the paper gives none) with float views; ``reference`` is the reference
#: code's Camelyon16 path including its per-view uint8 quantisation and the bilinear
#: resizing that its (lost) Lanczos request fell back to; ``reference_mirror`` is the
#: initial-mask generator of a public mirror of the reference (Kyyle2114/EP-SAM): 20th
#: percentile of the non-zero values of the uint8 fused CAM with a strict ``>``, 5x5 opening,
#: both at feature resolution; ``none`` is the "without post-processing" baseline of the
#: ablation: single view, cut at 0.5 of the normalised CAM, no opening.
CAM_POSTPROCESS_PRESETS: Dict[str, CAMPostprocess] = {
    'camelyon16': CAMPostprocess(quantile=0.10, opening_size=(21, 21), resolution='full'),
    'camelyon17': CAMPostprocess(quantile=0.30, opening_size=(5, 5), resolution='feature'),
    'reference': CAMPostprocess(quantile=0.10, opening_size=(21, 21), resolution='full',
                                quantize_uint8=True),
    'reference_mirror': CAMPostprocess(quantile=0.20, quantile_rule='percentile_strict',
                                       opening_size=(5, 5), resolution='feature',
                                       quantize_uint8=True, quantize_fused_uint8=True),
    'none': CAMPostprocess(quantile=None, fixed_threshold=0.5, opening_size=(1, 1),
                           resolution='full', rotate_fuse=False),
}


def cam_postprocess(preset: str = 'camelyon16', **overrides) -> CAMPostprocess:
    """The settings of a named preset, with any field overridden (e.g. ``quantile=0.2``)."""
    if preset not in CAM_POSTPROCESS_PRESETS:
        raise KeyError(f'unknown CAM post-processing preset {preset!r}; '
                       f'choose one of {sorted(CAM_POSTPROCESS_PRESETS)}')
    unknown = set(overrides) - {f.name for f in dataclasses.fields(CAMPostprocess)}
    if unknown:
        raise KeyError(f'unknown CAM post-processing setting(s) {sorted(unknown)}')
    return dataclasses.replace(CAM_POSTPROCESS_PRESETS[preset], **overrides)


def initial_mask_from_cam(cam: torch.Tensor, full_size: Tuple[int, int],
                          postprocess: CAMPostprocess,
                          images_rgb: Optional[Sequence[np.ndarray]] = None
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Initial masks from fused CAMs (docs/method.md §3), in the order the settings state.

    With ``quantize_fused_uint8`` the CAM is first rounded down to uint8 levels. With
    ``resolution='full'``: resize the CAM to ``full_size`` (``cam_interpolation``),
    threshold, open. With ``resolution='feature'``: threshold and open the CAM as given,
    then upsample the binary mask (``mask_interpolation``, kept where ``>= 0.5``).

    Args:
        cam: Fused CAMs in [0, 1] at feature resolution, ``[B, h, w]``.
        full_size: ``(height, width)`` of the patch.
        postprocess: The settings (see :data:`CAM_POSTPROCESS_PRESETS`).
        images_rgb: The patches, uint8 ``H x W x 3`` RGB at ``full_size``; needed (only)
            when ``postprocess.crf`` is set.

    Returns:
        ``(full_cam, initial_mask)``: the CAM resized to ``full_size`` (float32) and the
        bool initial mask ``[B, H, W]``.
    """
    if postprocess.quantize_fused_uint8:
        # the mean of uint8 levels over at most 4 views: 255 * cam is a multiple of 1/4
        cam = quantize_uint8_levels(cam.float(), tolerance=1e-3)
    full_cam = resize_maps(cam, full_size, postprocess.cam_interpolation)
    source = full_cam if postprocess.resolution == 'full' else cam.float()
    if postprocess.quantile is not None:
        binary = quantile_threshold(source, postprocess.quantile, postprocess.quantile_rule)
    elif postprocess.crf is not None:
        if images_rgb is None or len(images_rgb) != len(full_cam):
            raise ValueError('crf post-processing needs the RGB image of every patch')
        binary = torch.stack([
            torch.from_numpy(dense_crf_mask(image, probability.cpu().numpy(), postprocess.crf))
            for image, probability in zip(images_rgb, full_cam)]).to(full_cam.device)
    else:
        binary = source >= postprocess.fixed_threshold
    opened = binary_opening(binary, postprocess.opening_size)
    if postprocess.resolution == 'full':
        return full_cam, opened
    upsampled = resize_maps(opened.float(), full_size, postprocess.mask_interpolation)
    return full_cam, upsampled >= 0.5
