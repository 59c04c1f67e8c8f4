# Stock MMSeg UNet trained with FULL pixel supervision on the demo patches: the
# fully supervised reference row, and proof that stock MMSeg models run on our datasets.
#   python tools/train.py configs/epsam/unet_demo.py
#   python tools/test.py configs/epsam/unet_demo.py work_dirs/unet_demo/iter_300.pth
_base_ = [
    '../_base_/models/unet_small.py',
    '../_base_/datasets/histo_patch_demo_256.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_demo.py',
]
data_root = 'data/demo'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
