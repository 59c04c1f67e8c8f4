# EP-SAM's patch classifier (docs/method.md §1-2): ResNet-50 with the explicit visual prompt (EVP)
# as a 4th input channel and three Attention Dropout Layers, GAP + one logit, BCE on the
# image label. Output stride 16 (a 512 patch gives 32x32 features); the CAM comes from the
# first bottleneck of layer4, as in the reference code. Every value here is the reference
# code's (docs/classifier_presets.md gives the source of each and the alternatives).
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # the EVP is defined on [0, 1] RGB inputs: no ImageNet mean/std normalisation
    mean=[0.0, 0.0, 0.0],
    std=[255.0, 255.0, 255.0],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=16)
model = dict(
    type='EPSAMPatchClassifier',
    data_preprocessor=data_preprocessor,
    cam_layer='layer4.0',  # a backbone module name, read with a forward hook
    head_init_std=0.01,  # fc weights N(0, 0.01^2), zero bias (the reference); None: PyTorch's
    backbone=dict(
        type='EVPADLResNet',
        depth=50,
        evp_fusion='concat',  # the reference; 'add' = the paper's wording; None = no EVP
        evp_mask_size=2,  # zeroed low-frequency square, in bins (the reference)
        evp_mask_ratio=None,  # or tau, e.g. 0.25 as in the EVP paper (then mask_size=None)
        evp_fft_norm='forward',
        adl_positions=('layer3.0', 'layer4.0', 'layer4.2'),  # the paper names the first two
        adl_drop_rate=0.75,
        adl_drop_threshold=0.8,
        dilate_layer4=False,  # the reference: layer4 stride 1, no dilation
        conv_init='xavier_uniform',  # the reference; 'kaiming_normal' = torchvision's
        # random init as the reference; or a local ImageNet / pathology ResNet-50 .pth, the
        # shorthand of init_cfg=dict(type='Pretrained', checkpoint=...)
        pretrained=None))
