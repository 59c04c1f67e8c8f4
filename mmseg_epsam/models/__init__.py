"""Registered models: EVP-ADL backbone, patch classifier, PEPM prompt head, SAM image
encoders, SAM segmentor."""
from . import backbones, classifiers, heads, sam_encoders, segmentors  # noqa: F401
