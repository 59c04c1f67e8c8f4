# A stock MMSeg UNet trained on EP-SAM's final pseudo-labels (positive training patches only,
# no pixel ground truth), scored on the test split with the same metric: the paper's
# "U-Net on EP-SAM pseudo-labels" row. Run after tools/run_pipeline.py
# configs/epsam/epsam_demo_tight_bce.py (`make demo`), which exports
# work_dirs/epsam_tight_bce_demo/pseudo_label_dataset:
#   python tools/train.py configs/epsam/unet_pseudo_labels_demo.py
#   python tools/test.py configs/epsam/unet_pseudo_labels_demo.py \
#       work_dirs/unet_pseudo_labels_demo/iter_300.pth
_base_ = ['./unet_demo.py']
# the export of `make demo`; the paper's settings export to work_dirs/epsam_demo/...
data_root = 'work_dirs/epsam_tight_bce_demo/pseudo_label_dataset'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
