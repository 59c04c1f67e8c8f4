"""Registered models: EVP-ADL backbone, patch classifier, PEPM prompt head, SAM segmentor."""
from . import backbones, classifiers, heads, segmentors  # noqa: F401
