"""Prompt samplers (registered in MMSeg's TASK_UTILS): the base contract and PEPM."""
from .base_prompt_sampler import PROMPT_MODES, BasePromptSampler
from .pepm_prompt_sampler import PEPMPromptSampler

__all__ = ['PROMPT_MODES', 'BasePromptSampler', 'PEPMPromptSampler']
