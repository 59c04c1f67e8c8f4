# The `reference` preset: the values of EP-SAM's public reference code where it differs from
# the paper (docs/method.md §11), on Camelyon16. Outright bugs stay fixed (prompt coordinates
# scaled to SAM's frame, pseudo-labels generated without augmentation, no double sigmoid); the
# coordinate bug can be reproduced for comparison with
#   decoder.cfg_options.model.prompt_head.reference_unscaled_coords=True
_base_ = ['./epsam_camelyon16.py']
work_dir = 'work_dirs/epsam_reference'
data_root = 'data/camelyon16'
cam = dict(preset='reference')
decoder = dict(cfg_options=dict(
    optim_wrapper=dict(optimizer=dict(lr=5e-6))))   # reference lr (paper: 2e-4)
rounds = dict(ids_variant='reference')              # IDS >= t with |SAM| + 1 denominator
