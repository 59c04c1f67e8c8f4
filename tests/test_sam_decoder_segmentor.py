"""SAMDecoderSegmentor: parity with Meta's SamPredictor, checkpoints, training, reset."""
import numpy as np
import pytest
import torch

segment_anything = pytest.importorskip('segment_anything')
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from segment_anything import SamPredictor, sam_model_registry  # noqa: E402
from segment_anything.modeling import Sam  # noqa: E402

from mmseg.structures import SegDataSample  # noqa: E402
from mmseg_epsam.functional.soft_losses import soft_dice_loss, soft_iou_loss  # noqa: E402
from mmseg_epsam.models.segmentors import SAMDecoderSegmentor  # noqa: E402
from mmseg_epsam.models.sam_encoders import SAM_VIT_ARCHS, MetaSAMViTEncoder  # noqa: E402
from mmseg_epsam.models.segmentors.sam_decoder_segmentor import (  # noqa: E402
    DEFAULT_LOSS_DECODE, build_decode_losses, build_mask_decoder, build_prompt_encoder)
from mmseg_epsam.utils.layout import stage1_data_prefix, stage1_sample_paths  # noqa: E402

TINY = dict(type='MetaSAMViTEncoder', arch='tiny')


def _tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    return SAMDecoderSegmentor(image_encoder=TINY, **kwargs)


def _sam_modules(arch):
    """Meta's three SAM modules for a ViT arch, as ``build_sam`` makes them."""
    encoder = MetaSAMViTEncoder(arch)
    settings = encoder.sam_settings()
    return encoder, build_prompt_encoder(settings, encoder.img_size), build_mask_decoder(settings)


def _meta_sam(model):
    """Meta's Sam sharing the segmentor's modules (same weights)."""
    return Sam(model.image_encoder, model.prompt_encoder, model.mask_decoder).eval()


def _image(seed=0, shape=(96, 160)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _predictor_logits(sam, image, coords, labels, box=None):
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    masks, _, _ = predictor.predict(point_coords=coords, point_labels=labels, box=box,
                                    multimask_output=False, return_logits=True)
    return torch.from_numpy(masks[0])


def _blob_mask(shape, top, left, size):
    mask = np.zeros(shape, np.uint8)
    mask[top:top + size, left:left + size] = 1
    return mask


def test_parity_with_sam_predictor():
    model = _tiny().eval()
    sam = _meta_sam(model)
    image = _image()
    coords = np.array([[20.0, 30.0], [100.0, 50.0], [140.0, 90.0]])
    labels = np.array([1, 1, 0])
    expected = _predictor_logits(sam, image, coords, labels)
    ours = model.predict_logits(image, coords, labels)
    assert ours.shape == (96, 160)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    box = np.array([10, 20, 120, 80])
    torch.testing.assert_close(model.predict_logits(image, coords, labels, box),
                               _predictor_logits(sam, image, coords, labels, box),
                               rtol=0, atol=1e-5)


def test_pepm_predict_through_the_mm_data_path_matches_predictor():
    """BGR uint8 input -> default data preprocessor -> predict, vs SamPredictor on RGB."""
    model = _tiny(1).eval()
    image = _image(1)
    initial_mask = _blob_mask((96, 160), 20, 40, 40)
    cam = initial_mask * np.linspace(0.2, 1.0, 160, dtype=np.float32)[None]
    meta = dict(img_shape=(96, 160), ori_shape=(96, 160), patch_name='p0', cam=cam,
                initial_mask=initial_mask)
    data = dict(inputs=[torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)],
                data_samples=[SegDataSample(metainfo=meta)])
    result = model.test_step(data)[0]
    points = result.metainfo['prompt_points']
    assert points.shape == (50, 2) and not result.metainfo['prompt_empty']
    assert initial_mask[points[:, 1].astype(int), points[:, 0].astype(int)].all()
    expected = _predictor_logits(_meta_sam(model), image, points, np.ones(50, int))
    torch.testing.assert_close(result.seg_logits.data[0], expected, rtol=0, atol=1e-5)
    assert torch.equal(result.pred_sem_seg.data[0], (expected > 0).long())
    # same patch, same prompts (seeded by patch name)
    again = model.test_step(dict(inputs=data['inputs'],
                                 data_samples=[SegDataSample(metainfo=meta)]))[0]
    np.testing.assert_array_equal(again.metainfo['prompt_points'], points)


def test_empty_initial_mask_and_classifier_gate_give_empty_masks():
    model = _tiny(test_cfg=dict(classifier_gate=0.5)).eval()
    image = torch.from_numpy(_image(2, (32, 48))).permute(2, 0, 1)[None].float()
    full = np.ones((32, 48), np.uint8)
    metas = [dict(img_shape=(32, 48), ori_shape=(64, 96), cam=np.zeros((32, 48), np.float32),
                  initial_mask=np.zeros((32, 48), np.uint8), cls_score=0.9),
             dict(img_shape=(32, 48), ori_shape=(64, 96), cam=full.astype(np.float32),
                  initial_mask=full, cls_score=0.1)]
    results = model.predict(image.repeat(2, 1, 1, 1), [SegDataSample(metainfo=m) for m in metas])
    for result in results:
        assert result.pred_sem_seg.data.shape == (1, 64, 96)  # at ori_shape
        assert result.pred_sem_seg.data.sum() == 0 and result.metainfo['prompt_empty']
    assert [r.metainfo['classifier_gated'] for r in results] == [False, True]
    with pytest.raises(KeyError, match='cls_score'):
        model.predict(image, [SegDataSample(metainfo=dict(img_shape=(32, 48)))])


def test_meta_checkpoint_loads_without_conversion(tmp_path):
    torch.manual_seed(7)
    sam = Sam(*_sam_modules('tiny')).eval()
    path = tmp_path / 'sam_tiny.pth'
    torch.save(sam.state_dict(), path)
    image = _image(3)
    coords, labels = np.array([[50.0, 40.0], [60.0, 45.0]]), np.array([1, 1])
    expected = _predictor_logits(sam, image, coords, labels)
    for kwargs in (dict(init_cfg=dict(type='Pretrained', checkpoint=str(path))),
                   dict(checkpoint=str(path))):
        model = _tiny(0, **kwargs).eval()
        torch.testing.assert_close(model.predict_logits(image, coords, labels), expected,
                                   rtol=0, atol=1e-5)
    assert set(model.state_dict()) == set(sam.state_dict())


def test_bad_checkpoints_name_the_file(tmp_path):
    wrong_keys = tmp_path / 'wrong_keys.pth'
    torch.save({'backbone.weight': torch.zeros(1)}, wrong_keys)
    with pytest.raises(ValueError, match='wrong_keys.pth.*not a SAM checkpoint'):
        _tiny(checkpoint=str(wrong_keys))
    other = dict(SAM_VIT_ARCHS['tiny'], prompt_embed_dim=16)
    wrong_arch = tmp_path / 'wrong_arch.pth'
    torch.save(Sam(*_sam_modules(other)).state_dict(), wrong_arch)
    with pytest.raises(ValueError, match='wrong_arch.pth.*shapes'):
        _tiny(checkpoint=str(wrong_arch))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        _tiny(checkpoint=str(tmp_path / 'missing.pth'))
    pickled = tmp_path / 'pickled.pth'
    torch.save({'meta': object()}, pickled)
    with pytest.raises(RuntimeError, match='pickled.pth.*weights_only=True'):
        _tiny(checkpoint=str(pickled))


def test_vit_b_builds_with_meta_layout():
    model = SAMDecoderSegmentor(image_encoder=dict(type='MetaSAMViTEncoder', arch='vit_b'))
    meta = sam_model_registry['vit_b']()
    ours, theirs = model.state_dict(), meta.state_dict()
    assert len(ours) == len(theirs) == 314
    assert {k: tuple(v.shape) for k, v in ours.items()} == \
        {k: tuple(v.shape) for k, v in theirs.items()}
    counts = model.parameter_counts()
    assert counts['trainable'] == sum(p.numel() for p in meta.mask_decoder.parameters())
    assert counts['frozen'] == sum(p.numel() for p in meta.image_encoder.parameters()) + \
        sum(p.numel() for p in meta.prompt_encoder.parameters())


def _train_batch(shape=(48, 48)):
    images, samples = [], []
    for i, (top, left) in enumerate([(8, 8), (20, 16)]):
        mask = _blob_mask(shape, top, left, 20)
        image = _image(10 + i, shape)
        image[mask > 0] = [200, 60, 90]  # the target is visible in the image
        sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(mask)[None].long())
        images.append(torch.from_numpy(image).permute(2, 0, 1).float())
        samples.append(sample)
    return torch.stack(images), samples


def test_overfitting_one_batch_trains_only_the_decoder():
    model = _tiny(train_cfg=dict(views=('hflip', 'rot90'), view_prob=0.5)).train()
    assert not model.image_encoder.training and not model.prompt_encoder.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs, samples = _train_batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss = sum(model.loss(inputs, samples).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith('mask_decoder.') for k in changed)
    assert all(not p.requires_grad for p in model.image_encoder.parameters())


def soft_dice_iou_loss(logits, target, smooth=1e-3):
    """Soft Dice and soft IoU losses as SAMDecoderSegmentor computed them before
    ``loss_decode`` (docs/method.md §5): the reference the loss modules must reproduce."""
    prob = logits.sigmoid().reshape(-1)
    target = target.reshape(-1).to(prob.dtype)
    if not target.any():
        prob, target = 1 - prob, 1 - target
    intersection = (prob * target).sum()
    total = prob.sum() + target.sum()
    dice = 1 - (2 * intersection + smooth) / (total + smooth)
    iou = 1 - (intersection + smooth) / (total - intersection + smooth)
    return dice, iou


def _soft_losses(logits, target, smooth=1e-3):
    return soft_dice_loss(logits, target, smooth), soft_iou_loss(logits, target, smooth)


def test_default_loss_decode_equals_the_soft_dice_and_iou_loss():
    """The default loss_decode (SAMSoftDiceLoss + SAMSoftIoULoss) gives the values of the
    former inline soft Dice + soft IoU, all-zero targets (scored on the background) included."""
    losses = build_decode_losses(None)
    assert [loss.loss_name for loss in losses] == ['loss_dice', 'loss_iou']
    generator = torch.Generator().manual_seed(0)
    for k in range(6):
        logits = 3 * torch.randn(1, 1, 24, 20, generator=generator)
        target = (torch.rand(1, 24, 20, generator=generator) > 0.6).long()
        if k % 2:
            target.zero_()
        expected = soft_dice_iou_loss(logits[0, 0], target[0])
        for loss, value in zip(losses, expected):
            torch.testing.assert_close(loss(logits, target), value, rtol=0, atol=0)


def test_loss_decode_is_configurable():
    """loss_decode picks the losses and their weights; the dict keys are their loss_name."""
    inputs, samples = _train_batch()
    default = _tiny().loss(inputs, samples)
    assert set(default) == {'loss_dice', 'loss_iou'}
    explicit = _tiny(loss_decode=list(DEFAULT_LOSS_DECODE)).loss(inputs, samples)
    for key in default:
        torch.testing.assert_close(explicit[key], default[key], rtol=0, atol=0)
    dice_only = _tiny(loss_decode=dict(type='SAMSoftDiceLoss', loss_weight=2.0)).loss(
        inputs, samples)
    assert set(dice_only) == {'loss_dice'}
    torch.testing.assert_close(dice_only['loss_dice'], 2 * default['loss_dice'])
    with pytest.raises(ValueError, match='loss_name'):
        _tiny(loss_decode=dict(type='SAMSoftIoULoss', loss_name='iou'))


def test_loss_values_and_empty_targets():
    logits = torch.tensor([10.0, 10.0, -10.0, -10.0])
    target = torch.tensor([1, 1, 0, 0])
    dice, iou = _soft_losses(logits, target)
    assert dice.item() == pytest.approx(0.0, abs=1e-4) and iou.item() == pytest.approx(0, abs=1e-4)
    dice, iou = _soft_losses(-logits, target)
    assert dice.item() == pytest.approx(1.0, abs=1e-3) and iou.item() == pytest.approx(1, abs=1e-3)
    model = _tiny()
    inputs, samples = _train_batch()
    for s in samples:
        s.gt_sem_seg = PixelData(data=torch.zeros_like(s.gt_sem_seg.data))
    losses = model.loss(inputs, samples)
    assert losses['loss_dice'].item() == 0.0 and losses['loss_dice'].requires_grad


def test_empty_targets_of_negative_patches_are_scored_on_the_background():
    """An all-zero target scores the background: IoU loss = mean sigmoid = soft FP area, and
    a negative patch (img_label 0) trains towards an empty mask."""
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    empty = torch.zeros(4)
    dice, iou = _soft_losses(logits, empty, smooth=0.0)
    prob = logits.sigmoid()
    assert iou.item() == pytest.approx(prob.mean().item(), abs=1e-6)
    assert dice.item() == pytest.approx(1 - 2 * (1 - prob).sum().item()
                                        / ((1 - prob).sum().item() + 4), abs=1e-6)
    assert soft_iou_loss(torch.full((4,), -20.0), empty).item() < 1e-6
    model = _tiny().train()
    inputs, samples = _train_batch()
    for s in samples:
        s.gt_sem_seg = PixelData(data=torch.zeros_like(s.gt_sem_seg.data))
        s.set_metainfo(dict(img_label=0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    fp_losses = []
    for _ in range(25):
        losses = model.loss(inputs, samples)
        fp_losses.append(losses['loss_iou'].item())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert fp_losses[0] > 0.3 and fp_losses[-1] < 0.5 * fp_losses[0]


def test_optional_bce_term():
    """bce_weight adds a weighted BCE term and leaves the paper's two terms unchanged."""
    inputs, samples = _train_batch()
    losses = {w: _tiny(bce_weight=w).loss(inputs, samples) for w in (0.0, 0.5, 1.0)}
    assert set(losses[0.0]) == {'loss_dice', 'loss_iou'}
    for w in (0.5, 1.0):
        for key in ('loss_dice', 'loss_iou'):
            torch.testing.assert_close(losses[w][key], losses[0.0][key], rtol=0, atol=1e-6)
    assert losses[1.0]['loss_bce'].item() > 0.1
    torch.testing.assert_close(losses[0.5]['loss_bce'] * 2, losses[1.0]['loss_bce'])


def test_soft_losses_cannot_leave_a_saturated_whole_patch_mask_but_bce_can():
    """The decoder's collapse to the whole patch (README, demo results): once the logits of
    a whole-patch mask saturate, the soft Dice + IoU gradient on the wrongly marked pixels is
    scaled by sigmoid' ~ e^-15 and vanishes, while BCE's stays sigmoid - 0 ~ 1 per pixel."""
    target = torch.zeros(64, 64, dtype=torch.long)
    target[:, :26] = 1  # 40 % of the patch
    outside = target == 0
    gradients = {}
    for name in ('soft', 'bce'):
        logits = torch.full((1, 1, 64, 64), 15.0, requires_grad=True)
        if name == 'soft':
            loss = sum(_soft_losses(logits, target))
        else:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target[None, None].float())
        loss.backward()
        gradients[name] = logits.grad[0, 0][outside].mean().item()
    dice, iou = _soft_losses(torch.full((64, 64), 15.0), target)
    assert dice.item() == pytest.approx(1 - 2 * 0.40625 / 1.40625, abs=1e-4)  # far from 0
    assert 0 < gradients['soft'] < 1e-9
    assert gradients['bce'] == pytest.approx(1 / target.numel(), rel=1e-4)


def test_reset_decoder_restores_exactly():
    model = _tiny()
    pretrained = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}
    params = list(model.mask_decoder.parameters())
    with torch.no_grad():
        for p in params:
            p.add_(0.5)
    snapshot = model.snapshot_decoder()
    model.reset_decoder('pretrained')
    for k, v in model.mask_decoder.state_dict().items():
        assert torch.equal(v, pretrained[k])
    assert all(a is b for a, b in zip(params, model.mask_decoder.parameters()))
    model.reset_decoder('previous')
    for k, v in model.mask_decoder.state_dict().items():
        assert torch.equal(v, snapshot[k])
    model.reset_decoder('random', seed=3)
    first = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}
    model.reset_decoder('random', seed=3)
    assert all(torch.equal(v, first[k]) for k, v in model.mask_decoder.state_dict().items())
    assert not torch.equal(first['iou_token.weight'], pretrained['iou_token.weight'])
    with pytest.raises(ValueError, match='mode'):
        model.reset_decoder('imagenet')
    with pytest.raises(RuntimeError, match='snapshot'):
        _tiny().reset_decoder('previous')


def test_normalising_preprocessor_is_refused():
    init_default_scope('mmseg')
    with pytest.raises(ValueError, match='mean=None'):
        SAMDecoderSegmentor(image_encoder=TINY, data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]))


def _write_stage1(root, name, cam, initial_mask, cls_score):
    import cv2
    for sub in ('cams/test', 'initial_masks/test', 'img'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    np.save(root / 'cams/test' / f'{name}.npy', cam.astype(np.float16))
    cv2.imwrite(str(root / 'initial_masks/test' / f'{name}.png'), initial_mask)
    with open(root / 'manifest_test.csv', 'a') as f:
        if f.tell() == 0:
            f.write('name,label,cls_score,cam_area,mask_area\n')
        f.write(f'{name},1,{cls_score},{int((cam > 0).sum())},{int(initial_mask.sum())}\n')


def test_stage1_outputs_reach_predict_through_the_pipeline(tmp_path):
    """LoadCAMAndInitialMask -> PackSegInputs -> test_step: PEPM prompts and the gate."""
    import cv2
    from mmcv.transforms import Compose
    init_default_scope('mmseg')
    initial_mask = _blob_mask((40, 40), 8, 8, 16)
    cam = initial_mask * 0.8
    for name, score in [('kept', 0.9), ('gated', 0.2)]:
        _write_stage1(tmp_path, name, cam, initial_mask, score)
        cv2.imwrite(str(tmp_path / 'img' / f'{name}.png'), _image(4, (40, 40)))
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadCAMAndInitialMask', with_cls_score=True),
        dict(type='PackSegInputs', meta_keys=('img_path', 'ori_shape', 'img_shape',
                                              'cam', 'initial_mask', 'cls_score'))])
    prefix = {key: str(tmp_path / value) for key, value in stage1_data_prefix('test').items()}

    def info(name):  # a data info as HistoPatchDataset gives it, stage-1 paths included
        return dict(img_path=str(tmp_path / 'img' / f'{name}.png'), patch_name=name,
                    **stage1_sample_paths(prefix, name))

    packed = [pipeline(info(n)) for n in ('kept', 'gated')]
    np.testing.assert_allclose(packed[0]['data_samples'].metainfo['cam'], cam, atol=1e-3)
    model = _tiny(test_cfg=dict(classifier_gate=0.5)).eval()
    results = model.test_step(dict(inputs=[p['inputs'] for p in packed],
                                   data_samples=[p['data_samples'] for p in packed]))
    assert not results[0].metainfo['prompt_empty'] and results[1].metainfo['classifier_gated']
    points = results[0].metainfo['prompt_points']
    assert len(points) == 50 and initial_mask[points[:, 1].astype(int),
                                              points[:, 0].astype(int)].all()
    assert results[1].pred_sem_seg.data.sum() == 0

    (tmp_path / 'cams/test/kept.npy').unlink()
    with pytest.raises(FileNotFoundError, match='kept.npy'):
        pipeline(info('kept'))
    np.save(tmp_path / 'cams/test/kept.npy', np.full((40, 40), 3.0, np.float16))
    with pytest.raises(ValueError, match=r'kept.npy.*\[0, 1\]'):
        pipeline(info('kept'))
