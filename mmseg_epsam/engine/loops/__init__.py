"""Registered training loops."""
from .pseudo_label_rounds_loop import PseudoLabelRoundsLoop

__all__ = ['PseudoLabelRoundsLoop']
