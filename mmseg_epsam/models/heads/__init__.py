"""Heads: the PEPM prompt head."""
from .pepm_prompt_head import PEPMPromptHead

__all__ = ['PEPMPromptHead']
