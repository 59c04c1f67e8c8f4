"""Registered classifiers: EP-SAM's patch classifier (image labels -> tumour score, CAM)."""
from .cam_methods import CAM_METHODS, cam_function
from .module_output import module_output
from .patch_classifier import EPSAMPatchClassifier

__all__ = ['CAM_METHODS', 'EPSAMPatchClassifier', 'cam_function', 'module_output']
