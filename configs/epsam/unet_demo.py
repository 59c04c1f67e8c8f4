# Stock MMSeg UNet trained with FULL pixel supervision on the demo patches: the
# fully supervised reference row, and proof that stock MMSeg models run on our datasets.
#   python tools/train.py configs/epsam/unet_demo.py
#   python tools/test.py configs/epsam/unet_demo.py work_dirs/unet_demo/iter_300.pth
_base_ = [
    '../_base_/models/unet_small.py',
    '../_base_/datasets/histo_patch_demo.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_demo.py',
]
data_root = 'data/demo'
# 512x512 patches are downscaled to 256x256 for speed on 2 CPU cores; predictions are
# resized back to the patch size before scoring (test pipeline keeps the GT at 512).
crop_size = (256, 256)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPatchMask'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}}),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadPatchMask'),
    dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}}),
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
