"""Which registered image encoder fits a SAM checkpoint, read from its tensor shapes."""
from __future__ import annotations

from mmseg_epsam.utils.checkpoint import load_foreign_state_dict
from .lite_medsam import resolve_sam_checkpoint
from .meta_vit import SAM_VIT_ARCHS

#: Width of the patch embedding of each Meta ViT (``image_encoder.patch_embed.proj.weight``).
_VIT_WIDTHS = {settings['embed_dim']: arch for arch, settings in SAM_VIT_ARCHS.items()
               if arch != 'tiny'}


def image_encoder_for_checkpoint(checkpoint: str) -> dict:
    """The ``image_encoder`` config whose shapes fit a SAM checkpoint.

    Meta's ViTs are told apart by the width of their patch embedding (768 / 1024 / 1280);
    LiteMedSAM's TinyViT by its convolutional patch embedding (``patch_embed.seq``).

    Raises:
        ValueError: the file holds no SAM image encoder this plugin knows (names the file).
    """
    path = resolve_sam_checkpoint(checkpoint)
    state = load_foreign_state_dict(path, required_prefix='image_encoder.')
    vit = state.get('image_encoder.patch_embed.proj.weight')
    if vit is not None and vit.shape[0] in _VIT_WIDTHS:
        return dict(type='MetaSAMViTEncoder', arch=_VIT_WIDTHS[vit.shape[0]])
    if any(key.startswith('image_encoder.patch_embed.seq.') for key in state):
        return dict(type='LiteMedSAMEncoder', normalization='minmax')
    raise ValueError(f'{path}: its image encoder is neither a Meta SAM ViT (vit_b / vit_l / '
                     'vit_h) nor LiteMedSAM\'s TinyViT; give the decoder config\'s '
                     'model.image_encoder explicitly')


#: Short names of the encoders, for command-line tools and benchmarks.
ENCODER_NAMES = ('litemedsam', *SAM_VIT_ARCHS)


def image_encoder_by_name(name: str) -> dict:
    """``image_encoder`` config for a short name: ``'litemedsam'`` or a Meta ViT arch
    (``'vit_b'``, ``'vit_l'``, ``'vit_h'``, ``'tiny'``)."""
    if name == 'litemedsam':
        return dict(type='LiteMedSAMEncoder', normalization='minmax')
    if name in SAM_VIT_ARCHS:
        return dict(type='MetaSAMViTEncoder', arch=name)
    raise ValueError(f'unknown SAM image encoder {name!r}; choose from {ENCODER_NAMES}')
