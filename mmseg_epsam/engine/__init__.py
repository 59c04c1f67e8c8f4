"""Registered runner and hooks; CAM and pseudo-label generation shared by hooks and tools."""
from . import hooks  # noqa: F401
from .runner import EPSAMRunner, build_runner

__all__ = ['EPSAMRunner', 'build_runner']
