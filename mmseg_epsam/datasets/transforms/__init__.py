"""Registered data transforms: classifier augmentations mmcv/mmseg lack, stage-1 loading."""
from .color_jitter import HistoColorJitter
from .load_cam import LoadCAMAndInitialMask
from .random_rot90 import RandomRot90

__all__ = ['HistoColorJitter', 'LoadCAMAndInitialMask', 'RandomRot90']
