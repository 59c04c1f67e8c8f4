"""Registered runner, hooks and the rounds loop; CAM and pseudo-label generation shared
by hooks and tools."""
from . import hooks, loops  # noqa: F401
from .runner import EPSAMRunner, build_runner

__all__ = ['EPSAMRunner', 'build_runner']
