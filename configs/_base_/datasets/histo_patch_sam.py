# Patch data for the SAM stages. Training: the POSITIVE training patches, each paired with
# its current target (initial mask, then IDS-kept pseudo-labels) by IDSPseudoLabelDataset.
# Test: every test patch with its stage-1 CAM, initial mask and classifier score, so the
# segmentor can gate, draw PEPM prompts and predict. tools/run_pipeline.py fills in
# `stage1_dir` and the rounds; these defaults match configs/epsam/epsam_demo.py.
dataset_type = 'HistoPatchDataset'
data_root = 'data/demo'
stage1_dir = 'work_dirs/epsam_demo/stage1'
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
    dict(type='LoadCAMAndInitialMask', stage1_dir=stage1_dir, split='train'),
    dict(type='PackSegInputs', meta_keys=sam_meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCAMAndInitialMask', stage1_dir=stage1_dir, split='test',
         with_cls_score=True),
    dict(type='LoadPatchMask'),
    dict(type='PackSegInputs', meta_keys=sam_meta_keys),
]
positive_train_patches = dict(
    type=dataset_type,
    data_root=data_root,
    ann_file='splits/train.txt',
    data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
    image_labels=(1, ),
    masks='optional')
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='IDSPseudoLabelDataset',
        dataset=dict(positive_train_patches, pipeline=train_pipeline),
        rounds=[dict(pseudo_label_dir=stage1_dir + '/initial_masks/train', table_file=None)],
        policy='per_round'))
pseudo_label_dataset = dict(positive_train_patches, pipeline=predict_pipeline)
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='splits/test.txt',
        data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'),
        masks='required',
        pipeline=test_pipeline))
test_evaluator = dict(type='EPSAMMetric')
# GT-free model selection (docs/method.md §5): a fixed schedule, no pixel-GT validation.
val_dataloader = None
val_evaluator = None
val_cfg = None
