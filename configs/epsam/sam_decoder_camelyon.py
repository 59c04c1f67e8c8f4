# SAM ViT-B mask-decoder fine-tuning for Camelyon patches (docs/method.md §5): Meta's
# sam_vit_b_01ec64.pth (a path you give: --sam-checkpoint, or model.checkpoint=...), frozen
# image / prompt encoders, AdamW lr 2e-4 (paper), weight decay 1e-2, batch 4, 20 epochs,
# flip / rot90 views with p = 0.5 served from the embedding cache. Standalone, it trains
# every round of Algorithm 1 (decoder_r0 on the initial masks that stage 1 wrote to
# stage1_dir, then 3 rounds on IDS-kept pseudo-labels, 20 epochs each) into work_dir;
# tools/run_pipeline.py sets the data root, stage-1 folder and work dir of its run and
# trains one round per stage.
_base_ = [
    '../_base_/models/sam_decoder.py',
    '../_base_/datasets/histo_patch_sam.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_sam_decoder.py',
]
data_root = 'data/camelyon16'
# where tools/generate_cams.py configs/epsam/classifier_camelyon16.py CKPT writes stage 1
stage1_dir = 'work_dirs/classifier_camelyon16/stage1'
work_dir = 'work_dirs/sam_decoder_camelyon'

model = dict(image_encoder=dict(_delete_=True, type='MetaSAMViTEncoder', arch='vit_b'),
             checkpoint=None, encoder_batch_size=4,
             embedding_cache=dict(cache_dir=work_dir + '/embedding_cache'))
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    dataset=dict(
        dataset=dict(data_root=data_root, stage1_root=stage1_dir),
        rounds=[dict(pseudo_label_dir=stage1_dir + '/initial_masks/train', table_file=None)]))
pseudo_label_dataset = dict(data_root=data_root, stage1_root=stage1_dir)
test_dataloader = dict(num_workers=4, dataset=dict(data_root=data_root, stage1_root=stage1_dir))
randomness = dict(seed=0)
