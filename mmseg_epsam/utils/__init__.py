"""Shared utilities: checkpoint loading and atomic file writes."""
from .checkpoint import load_foreign_state_dict, trusted_mmengine_checkpoints
from .io import atomic_write, write_bytes, write_json, write_npy, write_png, write_text

__all__ = ['atomic_write', 'load_foreign_state_dict', 'trusted_mmengine_checkpoints',
           'write_bytes', 'write_json', 'write_npy', 'write_png', 'write_text']
