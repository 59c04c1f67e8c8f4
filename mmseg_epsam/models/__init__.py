"""Registered models: EVP-ADL backbone, patch classifier, SAM decoder losses, prompt samplers,
SAM image encoders, SAM segmentor."""
from . import (backbones, classifiers, losses, prompt_samplers, sam_encoders,  # noqa: F401
               segmentors)
