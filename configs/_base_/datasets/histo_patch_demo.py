# Patch datasets in the HistoPatchDataset layout (img_dir/, ann_dir/, splits/; e.g. the
# bundled demo of tools/make_demo_data.py), with image labels and masks. Segmentation
# pipelines; the classifier configs override them. No paths here: a leaf config gives every
# dataset its data_root.
dataset_type = 'HistoPatchDataset'
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape',
             'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label',
             'img_label', 'patch_name', 'mask_values')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPatchMask'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPatchMask'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        ann_file='splits/train.txt',
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        masks='required',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file='splits/val.txt',
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        masks='required',
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file='splits/test.txt',
        data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'),
        masks='required',
        pipeline=test_pipeline))
val_evaluator = dict(type='EPSAMMetric')
test_evaluator = val_evaluator
