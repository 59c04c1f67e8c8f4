"""Shared utilities: checkpoint loading and atomic file writes."""
from .checkpoint import load_foreign_state_dict, trusted_mmengine_checkpoints
from .io import atomic_write

__all__ = ['atomic_write', 'load_foreign_state_dict', 'trusted_mmengine_checkpoints']
