# EP-SAM's segmentor: Meta's SAM with frozen image / prompt encoders and a trainable mask
# decoder, prompted by PEPM points (docs/method.md §4-5). `checkpoint` is the path of Meta's
# sam_vit_b_01ec64.pth (no download ever); None builds random weights (demo / tests only).
sam_arch = 'vit_b'
sam_checkpoint = None
model = dict(
    type='SAMDecoderSegmentor',
    arch=sam_arch,
    checkpoint=sam_checkpoint,
    # 0-255 RGB in; SAM normalises after its own resize. size_divisor=1: batches of equal
    # patches need no padding (MMSeg's stack_batch wants one of size / size_divisor).
    data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size_divisor=1),
    prompt_head=dict(type='PEPMPromptHead', num_points=50, small_mask_policy='all',
                     reference_unscaled_coords=False, seed=0),
    embedding_cache=dict(cache_dir='work_dirs/embedding_cache'),
    dice_weight=1.0,
    iou_weight=1.0,
    loss_smooth=1e-3,
    train_cfg=dict(views=('hflip', 'vflip', 'rot90'), view_prob=0.5, seed=0),
    test_cfg=dict(classifier_gate=0.5))
