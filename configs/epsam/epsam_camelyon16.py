# EP-SAM on Camelyon16 patches (tools/dataset_converters/camelyon.py), paper defaults with
# the reference code's bugs fixed (docs/method.md §11):
#   python tools/run_pipeline.py configs/epsam/epsam_camelyon16.py \
#       --sam-checkpoint /path/to/sam_vit_b_01ec64.pth --data-root data/camelyon16
work_dir = 'work_dirs/epsam_camelyon16'
data_root = 'data/camelyon16'
classifier = dict(config='classifier_camelyon16.py', cfg_options=dict())
cam = dict(
    splits=('train', 'val', 'test'),
    preset='camelyon16',          # reference values: q = 0.10, 21x21 opening at full size
    views_per_forward=4,
    batch_size=16,
    num_workers=4,
    show=False)
decoder = dict(
    config='sam_decoder_camelyon.py',
    cfg_options=dict(),
    sam_checkpoint=None,          # give --sam-checkpoint; required (see below)
    require_sam_checkpoint=True)
rounds = dict(
    num_rounds=3,
    ids_threshold=0.9,
    ids_variant='paper',
    policy='per_round',
    reset='pretrained')
test = dict(
    num_pictures=32,
    score_every_decoder=('val', 'test'))  # Tables 5-6: zero-shot SAM and every round
