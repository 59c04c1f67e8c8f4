# EP-SAM on Camelyon17 with LiteMedSAM as the SAM (no --sam-checkpoint needed).
_base_ = ['./epsam_camelyon17.py']
work_dir = 'work_dirs/epsam_camelyon17_litemedsam'
data_root = 'data/camelyon17'
decoder = dict(config='sam_decoder_camelyon_litemedsam.py', require_sam_checkpoint=False)
