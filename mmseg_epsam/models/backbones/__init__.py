"""Registered backbones: the EVP-ADL ResNet of EP-SAM's patch classifier."""
from .evp_adl_resnet import AttentionDropout, EVPADLResNet, imagenet_to_evp_state_dict

__all__ = ['AttentionDropout', 'EVPADLResNet', 'imagenet_to_evp_state_dict']
