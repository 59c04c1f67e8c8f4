# EP-SAM on Camelyon17 patches: as Camelyon16 with the Camelyon17 CAM post-processing
# (q = 0.30, 5x5 opening at feature resolution, then upsampled).
#   python tools/run_pipeline.py configs/epsam/epsam_camelyon17.py \
#       --sam-checkpoint /path/to/sam_vit_b_01ec64.pth --data-root data/camelyon17
_base_ = ['./epsam_camelyon16.py']
work_dir = 'work_dirs/epsam_camelyon17'
data_root = 'data/camelyon17'
classifier = dict(config='classifier_camelyon17.py')
cam = dict(preset='camelyon17')
