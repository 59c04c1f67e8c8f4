# The `reference` classifier preset: the reference code's value for every classifier choice
# where this project offers an alternative (docs/classifier_presets.md gives the source of
# each). classifier_camelyon16.py has the same values today; this preset states them
# explicitly so that it stays the reference whatever the defaults become:
#   python tools/train.py configs/epsam/classifier_reference.py
# Outright bugs of the reference stay fixed (its validation loss applied the sigmoid twice).
_base_ = ['./classifier_camelyon16.py']
data_root = 'data/camelyon16'
model = dict(
    cam_layer='layer4.0',            # CAM from the first bottleneck of layer4
    head_init_std=0.01,              # fc weights N(0, 0.01^2), zero bias
    backbone=dict(
        evp_fusion='concat',         # EVP as a 4th input channel
        evp_mask_size=2,             # 2x2 zeroed low-frequency bins
        evp_mask_ratio=None,
        evp_fft_norm='forward',
        adl_positions=('layer3.0', 'layer4.0', 'layer4.2'),
        adl_drop_rate=0.75,
        adl_drop_threshold=0.8,
        dilate_layer4=False,         # layer4: stride 1, no dilation
        conv_init='xavier_uniform',  # Xavier-uniform convolutions
        pretrained=None))            # trained from scratch
meta_keys = ('img_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'img_label', 'patch_name')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='RandomRotate', prob=1.0, degree=180, pad_val=0, seg_pad_val=255),
    dict(type='HistoColorJitter', brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2),
    dict(type='RandomGrayscale', prob=0.1, keep_channels=True,
         channel_weights=(0.114, 0.587, 0.299), color_format='bgr'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(batch_size=16,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(type='Adam', lr=1e-5, weight_decay=1e-3))
param_scheduler = [dict(type='StepLR', step_size=10, gamma=0.9, by_epoch=True)]
train_cfg = dict(max_epochs=50)
randomness = dict(seed=0)
