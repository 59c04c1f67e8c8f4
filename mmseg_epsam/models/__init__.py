"""Registered models: EVP-ADL backbone, patch classifier, PEPM prompt head, SAM image
encoders, SAM segmentor."""
from . import backbones, classifiers, heads, losses, sam_encoders, segmentors  # noqa: F401
