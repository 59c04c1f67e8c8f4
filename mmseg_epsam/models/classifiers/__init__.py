"""Registered classifiers: EP-SAM's patch classifier (image labels -> tumour score, CAM)."""
from .patch_classifier import EPSAMPatchClassifier

__all__ = ['EPSAMPatchClassifier']
