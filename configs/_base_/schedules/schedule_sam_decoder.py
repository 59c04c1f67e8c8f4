# Mask-decoder fine-tuning: AdamW, paper lr 2e-4 (the reference used 5e-6: see the
# `reference` preset), weight decay 1e-2, batch 4, 20 epochs (docs/method.md §5).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-2))
param_scheduler = []
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=20)
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=5, max_keep_ckpts=1,
                    save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
