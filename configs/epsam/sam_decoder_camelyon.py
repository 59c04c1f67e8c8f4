# SAM ViT-B mask-decoder fine-tuning for Camelyon patches (docs/method.md §5): Meta's
# sam_vit_b_01ec64.pth (a path you give: --sam-checkpoint), frozen image / prompt encoders,
# AdamW lr 2e-4 (paper), weight decay 1e-2, batch 4, 20 epochs, flip / rot90 views with
# p = 0.5 served from the embedding cache. tools/run_pipeline.py fills in the data root,
# stage-1 folder and pseudo-label rounds.
_base_ = [
    '../_base_/models/sam_decoder.py',
    '../_base_/datasets/histo_patch_sam.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_sam_decoder.py',
]
model = dict(arch='vit_b', encoder_batch_size=4)
train_dataloader = dict(batch_size=4, num_workers=4, persistent_workers=True,
                        sampler=dict(type='DefaultSampler', shuffle=True))
test_dataloader = dict(num_workers=4)
randomness = dict(seed=0)
