"""Frozen SAM image encoders: Meta's ViTs and LiteMedSAM's TinyViT (docs/method.md §5)."""
from .base import SAMImageEncoder
from .detect import ENCODER_NAMES, image_encoder_by_name, image_encoder_for_checkpoint
from .lite_medsam import (LITEMEDSAM_CHECKPOINT, LiteMedSAMEncoder, litemedsam_checkpoint_path,
                          resolve_sam_checkpoint)
from .meta_vit import SAM_VIT_ARCHS, MetaSAMViTEncoder, resolve_vit_arch

__all__ = ['ENCODER_NAMES', 'LITEMEDSAM_CHECKPOINT', 'image_encoder_by_name', 'LiteMedSAMEncoder', 'MetaSAMViTEncoder', 'SAM_VIT_ARCHS',
           'SAMImageEncoder', 'image_encoder_for_checkpoint', 'litemedsam_checkpoint_path', 'resolve_sam_checkpoint',
           'resolve_vit_arch']
