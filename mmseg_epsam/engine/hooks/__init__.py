"""Registered hooks."""
from .cam_generator_hook import CAMGeneratorHook
from .decoder_reset_hook import DecoderResetHook
from .pseudo_label_hook import PseudoLabelGeneratorHook
from .resumable_randomness_hook import ResumableRandomnessHook, seed_worker_from_torch

__all__ = ['CAMGeneratorHook', 'DecoderResetHook', 'PseudoLabelGeneratorHook',
           'ResumableRandomnessHook', 'seed_worker_from_torch']
