"""mmseg-epsam: EP-SAM weakly supervised histopathology segmentation for MMSegmentation.

``import mmseg_epsam`` registers every component in ``mmseg.registry`` (configs declare
``custom_imports=dict(imports=['mmseg_epsam'])`` and ``default_scope='mmseg'``).
"""
from . import apis, datasets, engine, evaluation, models  # noqa: F401  (registers components)

__version__ = '0.1.0'
