"""Segmentors: SAM with a trainable mask decoder."""
from .sam_decoder_segmentor import SAMDecoderSegmentor

__all__ = ['SAMDecoderSegmentor']
