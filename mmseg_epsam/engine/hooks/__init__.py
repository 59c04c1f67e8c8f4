"""Registered hooks."""
from .cam_generator_hook import CAMGeneratorHook
from .decoder_reset_hook import DecoderResetHook
from .pseudo_label_hook import PseudoLabelGeneratorHook

__all__ = ['CAMGeneratorHook', 'DecoderResetHook', 'PseudoLabelGeneratorHook']
