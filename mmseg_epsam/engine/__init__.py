"""Registered runner, hooks and loops (CAM generation, pseudo-label rounds)."""
from . import hooks, loops  # noqa: F401
from .runner import EPSAMRunner

__all__ = ['EPSAMRunner']
