# The demo decoder stage with a tiny SAM ViT of random weights (tests only).
_base_ = ['../../configs/epsam/sam_decoder_demo.py']
model = dict(image_encoder=dict(_delete_=True, type='MetaSAMViTEncoder', arch='tiny'),
             checkpoint=None)
