"""Segmentors: SAM with a trainable mask decoder."""
from .sam_decoder_segmentor import DECODER_RESET_MODES, SAMDecoderSegmentor

__all__ = ['DECODER_RESET_MODES', 'SAMDecoderSegmentor']
