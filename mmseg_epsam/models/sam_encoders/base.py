"""The contract of a frozen SAM image encoder inside :class:`SAMDecoderSegmentor`.

EP-SAM trains only SAM's mask decoder; the image encoder is a frozen feature extractor that
any SAM-family model can supply (docs/method.md §5). An encoder owns what differs between
those models: its input size, how an RGB patch becomes its input tensor (resize, pixel
normalisation, padding), the shape of its embedding, and the settings of the prompt encoder
and mask decoder trained with it. The prompt encoder and the mask decoder are always Meta's
``segment_anything`` modules, built by the segmentor from :meth:`SAMImageEncoder.sam_settings`.

A new encoder is one registered class that inherits this mixin and an ``nn.Module`` whose
``state_dict`` keys are those of the ``image_encoder.*`` entries of its SAM checkpoint.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg_epsam.functional.prompts import sam_input_shape


class SAMImageEncoder:
    """Mixin for registered SAM image encoders (combine it with an ``nn.Module``).

    Subclasses set :attr:`img_size` (side of the square input, the "SAM frame" that prompts
    are scaled to), implement :meth:`resize` and :meth:`normalize`, and describe the prompt
    encoder / mask decoder that go with them in :meth:`sam_settings`.
    """

    #: Side of the square encoder input; prompts live in this frame.
    img_size: int

    def sam_settings(self) -> dict:
        """Settings of the matching prompt encoder and mask decoder.

        Keys: ``prompt_embed_dim`` (embedding channels), ``embedding_size`` (side of the
        embedding grid), ``mask_in_chans``, ``decoder_mlp_dim``, ``decoder_num_heads``,
        ``iou_head_hidden_dim``.
        """
        raise NotImplementedError

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Resize an HxWx3 uint8 RGB image so its longest side is :attr:`img_size`."""
        raise NotImplementedError

    def normalize(self, image: Tensor) -> Tensor:
        """Pixel normalisation of a ``[1, 3, h, w]`` float tensor of 0-255 RGB values."""
        raise NotImplementedError

    def describe_preprocessing(self) -> str:
        """One line naming the preprocessing (part of the embedding-cache key)."""
        raise NotImplementedError

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """Size of an ``height x width`` image after :meth:`resize` (before padding)."""
        return sam_input_shape(height, width, self.img_size)

    def preprocess(self, image: np.ndarray, device: Optional[torch.device] = None) -> Tensor:
        """The encoder input ``[1, 3, S, S]`` of an HxWx3 uint8 RGB image.

        Resize the longest side to ``S`` = :attr:`img_size`, normalise, then zero-pad at the
        bottom and right (SAM's convention: prompts and masks keep the top-left origin).
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'expected an HxWx3 uint8 RGB image, got {image.dtype} '
                             f'{image.shape}')
        resized = self.resize(image)
        tensor = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()[None]
        tensor = self.normalize(tensor.float())
        height, width = tensor.shape[-2:]
        return F.pad(tensor, (0, self.img_size - width, 0, self.img_size - height))
