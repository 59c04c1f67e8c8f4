# EP-SAM's EVP-ADL ResNet-50 as the backbone of a stock MMSeg EncoderDecoder with an FCN head,
# full pixel supervision on the demo patches (data and schedule of unet_demo.py). The backbone
# follows MMSeg's contract: a tuple of stage outputs by out_indices, initial weights through
# init_cfg=dict(type='Pretrained', checkpoint=...) (or the segmentor's pretrained=).
#   python tools/train.py configs/epsam/evp_adl_fcn_demo.py
_base_ = ['./unet_demo.py']
# unet_demo's EncoderDecoder and FCNHead, with the backbone swapped and the head resized.
model = dict(
    # the EVP is defined on [0, 1] RGB inputs (docs/method.md §1), as for the classifier
    data_preprocessor=dict(mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0]),
    backbone=dict(
        _delete_=True,
        type='EVPADLResNet',
        depth=50,
        evp_fusion='concat',
        adl_positions=(),  # ADL serves CAM localisation; pixel supervision needs none
        dilate_layer4=True,  # output stride 16 with dilation, as for dense prediction
        conv_init='kaiming_normal',
        out_indices=(0, 1, 2, 3),
        init_cfg=None),  # or dict(type='Pretrained', checkpoint='/path/resnet50.pth')
    decode_head=dict(in_channels=2048, in_index=3, channels=256))
data_root = 'data/demo'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
