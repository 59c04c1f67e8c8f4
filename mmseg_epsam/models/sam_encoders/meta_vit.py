"""Meta's SAM ViT image encoders (vit_b / vit_l / vit_h) and a tiny one for tests.

The module *is* ``segment_anything``'s ``ImageEncoderViT``, so its ``state_dict`` has the
keys of the ``image_encoder.*`` part of Meta's ``sam_vit_*.pth``. Preprocessing is Meta's:
``ResizeLongestSide`` (PIL bilinear) on uint8 RGB, then ``(x - mean) / std`` with SAM's pixel
statistics, zero padding to 1024 (parity with ``SamPredictor``).
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor, nn

from mmseg.registry import MODELS
from .base import SAMImageEncoder

#: SAM's pixel statistics (RGB, 0-255), as in segment_anything's ``Sam``.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

_SAM_COMMON = dict(img_size=1024, patch_size=16, window_size=14, prompt_embed_dim=256,
                   decoder_mlp_dim=2048, decoder_num_heads=8, iou_head_hidden_dim=256,
                   mask_in_chans=16)

#: Meta's three ViTs (the values of segment_anything's ``build_sam``) and ``tiny``: a ViT of
#: width 64, depth 2, on 256x256 inputs (a 16x16 grid of 32 channels; 0.18 M parameters,
#: milliseconds per image on CPU) with RANDOM weights, for tests only.
SAM_VIT_ARCHS: dict[str, dict] = {
    'vit_b': dict(_SAM_COMMON, embed_dim=768, depth=12, num_heads=12,
                  global_attn_indexes=(2, 5, 8, 11)),
    'vit_l': dict(_SAM_COMMON, embed_dim=1024, depth=24, num_heads=16,
                  global_attn_indexes=(5, 11, 17, 23)),
    'vit_h': dict(_SAM_COMMON, embed_dim=1280, depth=32, num_heads=16,
                  global_attn_indexes=(7, 15, 23, 31)),
    'tiny': dict(_SAM_COMMON, img_size=256, embed_dim=64, depth=2, num_heads=2,
                 global_attn_indexes=(1,), window_size=8, prompt_embed_dim=32,
                 decoder_mlp_dim=128, decoder_num_heads=2, iou_head_hidden_dim=32),
}


def resolve_vit_arch(arch: str | dict) -> dict:
    """Settings of a named ViT architecture, or a dict of overrides of ``vit_b``'s settings."""
    if isinstance(arch, str):
        if arch not in SAM_VIT_ARCHS:
            raise ValueError(f'unknown SAM ViT arch {arch!r}; choose from '
                             f'{sorted(SAM_VIT_ARCHS)} or give a dict of settings')
        return dict(SAM_VIT_ARCHS[arch])
    unknown = set(arch) - set(SAM_VIT_ARCHS['vit_b'])
    if unknown:
        raise ValueError(f'unknown SAM ViT arch settings {sorted(unknown)}')
    return dict(SAM_VIT_ARCHS['vit_b'], **arch)


@MODELS.register_module()
class MetaSAMViTEncoder(ImageEncoderViT, SAMImageEncoder):
    """Meta's SAM ViT image encoder with Meta's preprocessing.

    Args:
        arch: ``'vit_b'`` (the paper's), ``'vit_l'``, ``'vit_h'``, ``'tiny'`` (tests only) or
            a dict of overrides of ``vit_b``'s settings.
    """

    def __init__(self, arch: str | dict = 'vit_b') -> None:
        settings = resolve_vit_arch(arch)
        super().__init__(
            depth=settings['depth'], embed_dim=settings['embed_dim'],
            img_size=settings['img_size'], mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=settings['num_heads'],
            patch_size=settings['patch_size'], qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(settings['global_attn_indexes']),
            window_size=settings['window_size'], out_chans=settings['prompt_embed_dim'])
        self.arch = arch if isinstance(arch, str) else 'custom'
        self.settings = settings
        self._resizer = ResizeLongestSide(self.img_size)
        self.register_buffer('pixel_mean', torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer('pixel_std', torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1), False)

    def sam_settings(self) -> dict:
        """Prompt-encoder / mask-decoder settings of ``build_sam`` for this arch."""
        keys = ('prompt_embed_dim', 'mask_in_chans', 'decoder_mlp_dim', 'decoder_num_heads',
                'iou_head_hidden_dim')
        return dict({k: self.settings[k] for k in keys},
                    embedding_size=self.img_size // self.settings['patch_size'])

    def resize(self, image: np.ndarray) -> np.ndarray:
        """``ResizeLongestSide(img_size).apply_image`` (PIL bilinear), as ``SamPredictor``."""
        return self._resizer.apply_image(image)

    def normalize(self, image: Tensor) -> Tensor:
        """``(x - mean) / std`` with SAM's pixel statistics (0-255 RGB)."""
        return (image - self.pixel_mean) / self.pixel_std

    def describe_preprocessing(self) -> str:
        """Meta's preprocessing, named for the cache key."""
        return (f'SAM preprocessing: ResizeLongestSide({self.img_size}) on uint8 RGB, '
                f'mean={SAM_PIXEL_MEAN}, std={SAM_PIXEL_STD}, zero pad')
