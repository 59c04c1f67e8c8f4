# A stock MMSeg DeepLabV3 (ResNet-50-D8), inherited as MMSeg ships it through `mmseg::`,
# trained on EP-SAM's exported pseudo-labels and scored on the test split with the same
# metric: any MMSeg model trains on the pseudo-label dataset this way. Run after
# tools/run_pipeline.py configs/epsam/epsam_demo_tight_bce.py (`make demo`), which exports
# work_dirs/epsam_tight_bce_demo/pseudo_label_dataset ({img_dir,ann_dir,splits}/):
#   python tools/train.py configs/epsam/deeplabv3_pseudo_labels_demo.py
#   python tools/test.py configs/epsam/deeplabv3_pseudo_labels_demo.py \
#       work_dirs/deeplabv3_pseudo_labels_demo/iter_300.pth
_base_ = [
    'mmseg::_base_/models/deeplabv3_r50-d8.py',
    '../_base_/datasets/histo_patch_demo_256.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_demo.py',
]
# the export of `make demo`; the paper's settings export to work_dirs/epsam_demo/...
data_root = 'work_dirs/epsam_tight_bce_demo/pseudo_label_dataset'
# The stock SyncBN needs a distributed launch; plain BN trains on one GPU or on the CPU.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    # The stock 'open-mmlab://resnet50_v1c' is a download; give a local file to start from
    # ImageNet weights, e.g. --cfg-options model.pretrained=/path/resnet50_v1c.pth
    pretrained=None,
    # MMSeg needs a batch size or divisor; the patches share one size, so no padding
    data_preprocessor=dict(size_divisor=16),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(num_classes=2, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=2, norm_cfg=norm_cfg))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
