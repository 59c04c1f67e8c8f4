# Mask-decoder fine-tuning: AdamW, paper lr 2e-4 (the reference used 5e-6: see the
# `reference` preset), weight decay 1e-2, batch 4, 20 epochs (docs/method.md §5).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-2))
param_scheduler = []
# Paper Algorithm 1 in one loop: decoder round 0 on the initial masks, then N = 3 rounds,
# each on the IDS-kept pseudo-labels of the round before (written under work_dir/round_<k>/),
# 20 epochs each. Every round ends with work_dir/decoder_r<k>.pth (docs/method.md §6).
train_cfg = dict(type='PseudoLabelRoundsLoop', num_rounds=3, epochs_per_round=20)
test_cfg = dict(type='TestLoop')
custom_hooks = [
    dict(type='DecoderResetHook', mode='pretrained'),   # 'random' | 'previous'
    dict(type='PseudoLabelGeneratorHook', ids_threshold=0.9, ids_variant='paper'),
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mid-round resume points; the round ends are saved by the loop (decoder_r<k>.pth)
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=500, max_keep_ckpts=1,
                    save_last=False),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
