"""CAM post-processing that stays on the device: one sort per batch, no host round-trips.

:func:`mmseg_epsam.functional.cam.quantile_threshold` selects each map's threshold with
``kthvalue`` over that map's non-zero values: a Python loop over the maps, each with a
boolean selection whose size the host must learn (a device synchronisation per map). On an
accelerator that loop, not the arithmetic, is the cost. :func:`quantile_threshold_sorted`
gives the same masks, bit for bit, from one sort of the whole batch: the threshold is an
element of the map in both, the ``(k + 1)``-th smallest non-zero value (docs/method.md §3).

The opening needs no device variant: :func:`mmseg_epsam.functional.cam.binary_opening` is
already max pooling (erosion ``-maxpool(-x)``, dilation ``maxpool``), exact for a
rectangular element and equal to OpenCV's ``MORPH_OPEN`` with its default border.
"""
import torch


def quantile_threshold_sorted(cam: torch.Tensor, quantile: float) -> torch.Tensor:
    """Binarise each map of ``cam [..., H, W]``: bottom ``quantile`` of non-zero values -> 0.

    The rule of :func:`mmseg_epsam.functional.cam.quantile_threshold`, loop-free: with ``n``
    positive values in a map and ``k = floor(quantile * n)``, the threshold ``t`` is the
    ``(k + 1)``-th smallest of them and the mask is ``cam >= t``; a map with ``k == n``
    (no positive value, or ``quantile == 1``) gives an empty mask. Each map is sorted
    ascending once; its ``N - n`` non-positive values come first, so ``t`` sits at position
    ``N - n + k``. Values must be finite (a fused CAM is, see ``normalize_cam``).

    Returns:
        A bool tensor shaped like ``cam``.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f'quantile must lie in [0, 1], got {quantile}')
    if cam.dim() < 2:
        raise ValueError(f'cam must be [..., H, W], got shape {tuple(cam.shape)}')
    flat = cam.reshape(-1, cam.shape[-2] * cam.shape[-1])
    if flat.numel() == 0:
        return torch.zeros(cam.shape, dtype=torch.bool, device=cam.device)
    positives = (flat > 0).sum(dim=1)
    # floor(q n) as quantile_threshold computes it (float64 with the same 1e-9 guard).
    drop = torch.floor(positives.double() * quantile + 1e-9).long()
    position = flat.shape[1] - positives + drop
    ordered = flat.sort(dim=1).values
    threshold = ordered.gather(1, position.clamp(max=flat.shape[1] - 1)[:, None])
    masks = (flat >= threshold) & (drop < positives)[:, None]
    return masks.reshape(cam.shape)
