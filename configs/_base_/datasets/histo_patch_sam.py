# Patch data for the SAM stages. Training: the POSITIVE training patches, each paired with
# its current target (initial mask, then IDS-kept pseudo-labels) by IDSPseudoLabelDataset.
# Test: every test patch with its stage-1 CAM, initial mask and classifier score, so the
# segmentor can gate, draw PEPM prompts and predict. The datasets address the stage-1
# outputs through data_prefix (cam_path, initial_mask_path, manifest_path; the layout of
# docs/method.md §10) relative to stage1_root. No paths here: a leaf config gives every
# dataset its data_root and stage1_root, and the training dataset its first round
# (the initial masks); tools/run_pipeline.py sets them all, and the later rounds.
dataset_type = 'HistoPatchDataset'
sam_meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                 'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label', 'img_label',
                 'patch_name', 'mask_values', 'cam_path', 'initial_mask_path', 'cam',
                 'initial_mask', 'cls_score')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPatchMask'),
    dict(type='PackSegInputs', meta_keys=sam_meta_keys),
]
# Used for pseudo-label generation (positives of train) and test: no augmentation.
predict_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCAMAndInitialMask'),
    dict(type='PackSegInputs', meta_keys=sam_meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCAMAndInitialMask', with_cls_score=True),
    dict(type='LoadPatchMask'),
    dict(type='PackSegInputs', meta_keys=sam_meta_keys),
]
positive_train_patches = dict(
    type=dataset_type,
    ann_file='splits/train.txt',
    data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train',
                     cam_path='cams/train', initial_mask_path='initial_masks/train',
                     manifest_path='manifest_train.csv'),
    image_labels=(1, ),
    masks='optional')
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='IDSPseudoLabelDataset',
        dataset=dict(positive_train_patches, pipeline=train_pipeline),
        policy='per_round'))
pseudo_label_dataset = dict(positive_train_patches, pipeline=predict_pipeline)
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file='splits/test.txt',
        data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test',
                         cam_path='cams/test', initial_mask_path='initial_masks/test',
                         manifest_path='manifest_test.csv'),
        masks='required',
        pipeline=test_pipeline))
test_evaluator = dict(type='EPSAMMetric')
# GT-free model selection (docs/method.md §5): a fixed schedule, no pixel-GT validation.
val_dataloader = None
val_evaluator = None
val_cfg = None
