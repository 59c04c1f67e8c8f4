"""Tests for EPSAMPatchClassifier, the image-label metric and the classifier transforms."""
import os.path as osp
import warnings

import cv2
import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmseg.registry import METRICS, MODELS, TRANSFORMS
from mmseg.structures import SegDataSample

import mmseg_epsam  # noqa: F401  (registers the classifier, metric and transforms)
from mmseg_epsam.datasets.transforms.color_jitter import shift_hue
from mmseg_epsam.functional.classification import (accuracy_at_threshold,
                                                    binary_cross_entropy, roc_auc)
from mmseg_epsam.models.classifiers import module_output

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', 'configs', 'epsam')
BACKBONE = dict(type='EVPADLResNet', depth=50)


def build_classifier(**kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='EPSAMPatchClassifier', backbone=BACKBONE,
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0],
                               std=[255, 255, 255], bgr_to_rgb=True, size_divisor=16),
        **kwargs))


@pytest.fixture(scope='module')
def classifier():
    return build_classifier()


def sample(label):
    return SegDataSample(metainfo=dict(img_label=label, patch_name=f'p{label}'))


def test_compute_cam_is_relu_of_fc_weights_on_cam_layer(classifier):
    classifier.train()
    inputs = torch.rand(2, 3, 64, 64)
    captured = {}
    handle = classifier.backbone.layer4[0].register_forward_hook(
        lambda module, args, output: captured.update(features=output))
    cam = classifier.compute_cam(inputs)
    handle.remove()
    assert classifier.training  # mode restored
    features = captured['features']
    weights = classifier.fc.weight[0]
    manual = torch.relu((features * weights[None, :, None, None]).sum(1))
    assert cam.shape == (2, 4, 4)
    torch.testing.assert_close(cam, manual)
    assert (cam >= 0).all() and cam.max() > 0 and not cam.requires_grad
    # eval mode: deterministic (ADL off) and equal to an eval-mode backbone forward
    classifier.eval()
    with torch.no_grad():
        direct = module_output(classifier.backbone, 'layer4.0', inputs)
    torch.testing.assert_close(cam, torch.relu(torch.einsum('bchw,c->bhw', direct, weights)))
    torch.testing.assert_close(classifier.compute_cam(inputs), cam)
    assert classifier.compute_cam(inputs, cam_layer='layer4.2').shape == (2, 4, 4)
    with pytest.raises(ValueError, match='channels'):
        classifier.compute_cam(inputs, cam_layer='layer3.0')


def test_predict_and_tensor_modes(classifier):
    classifier.eval()
    data = dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(2)],
                data_samples=[sample(1), sample(0)])
    processed = classifier.data_preprocessor(data, training=False)
    assert processed['inputs'].max() <= 1.0 and processed['inputs'].dtype == torch.float32
    # bgr_to_rgb: channel 0 of the model input is channel 2 of the uint8 image / 255
    torch.testing.assert_close(processed['inputs'][0, 0], data['inputs'][0][2].float() / 255)
    with torch.no_grad():
        logits = classifier(processed['inputs'], mode='tensor')
        predictions = classifier(processed['inputs'], processed['data_samples'], mode='predict')
    assert logits.shape == (2, )
    for prediction, logit, label in zip(predictions, logits, (1, 0)):
        assert prediction.pred_score.shape == (1, )
        torch.testing.assert_close(prediction.pred_score, torch.sigmoid(logit).reshape(1))
        assert prediction.metainfo['img_label'] == label
    bare = classifier(processed['inputs'], None, mode='predict')
    assert len(bare) == 2 and bare[0].pred_score.shape == (1, )
    with pytest.raises(ValueError, match='mode'):
        classifier(processed['inputs'], mode='cam')


def test_loss_reads_img_label_and_training_lowers_it():
    model = build_classifier()
    # tumour-like patches: a dark textured square; normal: smooth light background
    rng = np.random.default_rng(0)
    images, samples = [], []
    for i in range(4):
        image = 220 + rng.integers(0, 10, (3, 64, 64), dtype=np.uint8)
        label = i % 2
        if label:
            image[:, 16:48, 16:48] = rng.integers(40, 120, (3, 32, 32), dtype=np.uint8)
        images.append(torch.from_numpy(image))
        samples.append(sample(label))
    data = dict(inputs=images, data_samples=samples)
    inputs = model.data_preprocessor(data, True)['inputs']
    labels = torch.tensor([s.metainfo['img_label'] for s in samples], dtype=torch.float32)
    torch.manual_seed(5)
    logits = model(inputs, mode='tensor')
    torch.manual_seed(5)  # same ADL draws
    loss = model(inputs, samples, mode='loss')
    torch.testing.assert_close(
        loss['loss_bce'], torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))
    assert set(loss) == {'loss_bce', 'accuracy'}
    assert 0 < loss['loss_bce'].item() < 5
    # Each training step draws new ADL drop masks, so single-step losses are noisy; compare
    # the loss under one fixed set of ADL draws before and after training.
    def loss_fixed_draws():
        torch.manual_seed(5)
        with torch.no_grad():
            return model(inputs, samples, mode='loss')['loss_bce'].item()

    loss_before = loss_fixed_draws()
    optim_wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='Adam', lr=1e-3)))
    torch.manual_seed(0)
    step_losses = [model.train_step(data, optim_wrapper)['loss_bce'].item() for _ in range(10)]
    assert loss_fixed_draws() < 0.5 * loss_before, (loss_before, step_losses)
    with pytest.raises(ValueError, match='img_label'):
        model(torch.rand(1, 3, 32, 32), [SegDataSample()], mode='loss')


def test_roc_auc_and_accuracy_by_hand():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # ties count one half: pos {0.5, 0.9}, neg {0.5, 0.2} -> (0.5 + 1 + 1 + 1) / 4
    assert roc_auc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == pytest.approx(0.875)
    assert roc_auc([0.3, 0.3, 0.3], [1, 0, 1]) == pytest.approx(0.5)
    assert np.isnan(roc_auc([0.2, 0.9], [1, 1]))
    assert accuracy_at_threshold([0.5, 0.49, 0.7, 0.1], [1, 1, 0, 0]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40) / 4  # many ties
    labels = rng.integers(0, 2, 40)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean()
    assert roc_auc(scores, labels) == pytest.approx(pairwise)
    with pytest.raises(ValueError, match='0/1'):
        roc_auc([0.1, 0.2], [0, 2])


def test_cross_entropy_by_hand_and_it_scores_calibration():
    # -(log 0.8 + log(1 - 0.3) + log 0.6) / 3
    expected = -(np.log(0.8) + np.log(0.7) + np.log(0.6)) / 3
    assert binary_cross_entropy([0.8, 0.3, 0.6], [1, 0, 1]) == pytest.approx(expected)
    # a certain mistake is clipped, not infinite
    assert binary_cross_entropy([0.0], [1]) == pytest.approx(-np.log(1e-7))
    assert np.isnan(binary_cross_entropy([], []))
    # two perfect rankers (AUC 1): one calibrated, one with every probability above the gate
    labels = [1, 1, 0, 0]
    calibrated, shifted = [0.9, 0.8, 0.2, 0.1], [0.99, 0.98, 0.96, 0.95]
    assert roc_auc(calibrated, labels) == roc_auc(shifted, labels) == 1.0
    assert binary_cross_entropy(calibrated, labels) < 0.2
    assert binary_cross_entropy(shifted, labels) > 1.0


def test_image_label_metric():
    metric = METRICS.build(dict(type='ImageLabelMetric'))
    scores = [0.9, 0.4, 0.6, 0.2, 0.7]
    labels = [1, 1, 0, 0, 1]
    metric.process({}, [dict(pred_score=torch.tensor([s]), img_label=y, img_path=f'{i}.png')
                        for i, (s, y) in enumerate(zip(scores, labels))])
    results = metric.evaluate(5)
    # pos {0.9, 0.4, 0.7}, neg {0.6, 0.2}: pairs won 2 + 1 + 2 = 5 of 6
    assert results['img_label/auc'] == pytest.approx(5 / 6)
    assert results['img_label/accuracy'] == pytest.approx(3 / 5)
    assert results['img_label/cross_entropy'] == pytest.approx(
        -np.mean(np.log([0.9, 0.4, 1 - 0.6, 1 - 0.2, 0.7])))
    assert results['img_label/num_pos'] == 3 and results['img_label/num_neg'] == 2
    # MMEngine's logger prints keys matching its mean pattern ('loss', 'time', ...) as a
    # moving mean over the last validations; every figure of this metric must print as is
    from mmengine.runner import LogProcessor
    assert not [key for key in results if LogProcessor().mean_pattern.search(key)]
    one_class = METRICS.build(dict(type='ImageLabelMetric'))
    one_class.process({}, [dict(pred_score=torch.tensor([0.8]), img_label=1)])
    with pytest.warns(UserWarning, match='undefined'):
        single = one_class.evaluate(1)
    assert np.isnan(single['img_label/auc']) and single['img_label/accuracy'] == 1.0
    broken = METRICS.build(dict(type='ImageLabelMetric'))
    with pytest.raises(KeyError, match='x.png'):
        broken.process({}, [dict(pred_score=torch.tensor([0.8]), img_path='x.png')])


def test_classifier_transforms():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    seg = np.arange(48, dtype=np.uint8).reshape(8, 6)
    rotate = TRANSFORMS.build(dict(type='RandomRot90'))
    seen = set()
    for seed in range(20):
        np.random.seed(seed)
        out = rotate(dict(img=img.copy(), gt_seg_map=seg.copy(), seg_fields=['gt_seg_map']))
        k = out['rot90_k']
        seen.add(k)
        np.testing.assert_array_equal(out['img'], np.rot90(img, k))
        np.testing.assert_array_equal(out['gt_seg_map'], np.rot90(seg, k))
        assert out['img_shape'] == out['img'].shape[:2]
    assert seen == {0, 1, 2, 3}
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        jitter = TRANSFORMS.build(dict(type='HistoColorJitter', brightness=0.2, contrast=0.2,
                                       saturation=0.2, hue=0.1))
        outs = []
        for seed in range(5):
            np.random.seed(seed)
            outs.append(jitter(dict(img=img.copy()))['img'])
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    assert any(np.abs(o.astype(int) - img).max() > 0 for o in outs)
    # only brightness: a factor in [0.8, 1.2] scales every pixel alike
    only_brightness = TRANSFORMS.build(dict(type='HistoColorJitter', brightness=0.2,
                                            contrast=0, saturation=0, hue=0))
    np.random.seed(0)
    bright = only_brightness(dict(img=np.full((4, 4, 3), 100, np.uint8)))['img']
    assert len(np.unique(bright)) == 1 and 80 <= bright[0, 0, 0] <= 120
    with pytest.raises(ValueError, match='hue'):
        TRANSFORMS.build(dict(type='HistoColorJitter', hue=0.7))
    # hue: same maths as mmcv.adjust_hue (which fails for negative shifts under NumPy 2)
    np.testing.assert_array_equal(shift_hue(img, 0.3), mmcv.adjust_hue(img, 0.3))
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL).astype(int)
    shifted = cv2.cvtColor(shift_hue(img, -0.1), cv2.COLOR_BGR2HSV_FULL).astype(int)
    coloured = hsv[..., 1] > 100  # hue is well defined where saturation is high
    hue_change = np.mod(shifted[..., 0] - hsv[..., 0], 256)[coloured]
    assert np.abs(hue_change - (256 - 25)).max() <= 3


def test_head_init_options():
    reference = build_classifier()  # N(0, 0.01^2) weights, zero bias
    assert abs(reference.fc.weight.std().item() - 0.01) < 0.001
    assert reference.fc.bias.item() == 0.0
    default = build_classifier(head_init_std=None)  # PyTorch's U(-1/sqrt(C), 1/sqrt(C))
    bound = 1 / 2048 ** 0.5
    assert default.fc.weight.abs().max() <= bound
    assert abs(default.fc.weight.std().item() - bound / 3 ** 0.5) < 0.05 * bound
    assert default.fc.bias.item() != 0.0
    with pytest.raises(ValueError, match='head_init_std'):
        build_classifier(head_init_std=0.0)


REFERENCE_MODEL = dict(dilate_layer4=False, conv_init='xavier_uniform', pretrained=None)
DEMO_MODEL = dict(dilate_layer4=True, conv_init='kaiming_normal', pretrained=None)


def augmentations(cfg):
    return [t['type'] for t in cfg.train_dataloader.dataset.pipeline]


def test_presets_state_reference_values_and_the_demo_keeps_its_own():
    for name in ('classifier_camelyon16', 'classifier_camelyon17', 'classifier_reference'):
        cfg = Config.fromfile(osp.join(CONFIG_DIR, f'{name}.py'))
        assert {k: cfg.model.backbone[k] for k in REFERENCE_MODEL} == REFERENCE_MODEL, name
        assert cfg.model.head_init_std == 0.01
        assert 'RandomRotate' in augmentations(cfg) and 'RandomRot90' not in augmentations(cfg)
        rotate = [t for t in cfg.train_dataloader.dataset.pipeline
                  if t['type'] == 'RandomRotate'][0]
        assert (rotate['prob'], rotate['degree']) == (1.0, 180)  # any angle in [-180, 180]
        jitter = [t for t in cfg.train_dataloader.dataset.pipeline
                  if t['type'] == 'HistoColorJitter'][0]
        assert [jitter[k] for k in ('brightness', 'contrast', 'saturation', 'hue')] == [0.2] * 4
        assert cfg.param_scheduler == [dict(type='StepLR', step_size=10, gamma=0.9,
                                            by_epoch=True)]
        assert cfg.randomness.seed == 0
    for name in ('classifier_demo', 'classifier_demo_full'):  # the README's figures
        cfg = Config.fromfile(osp.join(CONFIG_DIR, f'{name}.py'))
        assert {k: cfg.model.backbone[k] for k in DEMO_MODEL} == DEMO_MODEL, name
        assert cfg.model.head_init_std is None
        assert 'RandomRot90' in augmentations(cfg) and 'RandomRotate' not in augmentations(cfg)
        jitter = [t for t in cfg.train_dataloader.dataset.pipeline
                  if t['type'] == 'HistoColorJitter'][0]
        assert jitter['hue'] == 0.0 and cfg.randomness.seed == 0
    demo_full = Config.fromfile(osp.join(CONFIG_DIR, 'classifier_demo_full.py'))
    assert demo_full.param_scheduler == []
    assert demo_full.default_hooks.checkpoint.save_best == 'img_label/auc'
    demo_schedule = Config.fromfile(osp.join(CONFIG_DIR, 'classifier_demo.py')).param_scheduler
    assert [s['type'] for s in demo_schedule] == ['CosineAnnealingLR']


def test_reference_augmentation_rotates_by_any_angle():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'classifier_reference.py'))
    steps = [TRANSFORMS.build(t) for t in cfg.train_dataloader.dataset.pipeline
             if t['type'] not in ('LoadImageFromFile', 'PackSegInputs')]
    img = np.full((32, 32, 3), 200, np.uint8)
    rotate = [step for step in steps if type(step).__name__ == 'RandomRotate'][0]
    corners = []
    for seed in range(8):
        np.random.seed(seed)
        results = dict(img=img.copy(), img_shape=(32, 32), seg_fields=[])
        for step in steps:  # the whole augmentation runs on an image as loaded
            results = step(results)
        assert results['img'].shape == img.shape and results['img'].dtype == np.uint8
        corners.append(int(rotate(dict(img=img.copy(), seg_fields=[]))['img'][0, 0].max()))
    # a rotation by an arbitrary angle leaves black (pad_val 0) corners; only angles within
    # a few degrees of a multiple of 90 keep the corner pixel partly covered
    assert sum(corner == 0 for corner in corners) >= 6


def test_configs_share_the_model_and_paper_schedule():
    for name, paper_schedule in (('classifier_demo', False), ('classifier_camelyon16', True),
                                 ('classifier_camelyon17', True),
                                 ('classifier_reference', True)):
        cfg = Config.fromfile(osp.join(CONFIG_DIR, f'{name}.py'))
        assert cfg.model.type == 'EPSAMPatchClassifier'
        assert tuple(cfg.model.backbone.adl_positions) == ('layer3.0', 'layer4.0', 'layer4.2')
        assert cfg.model.cam_layer == 'layer4.0'
        meta_keys = cfg.train_dataloader.dataset.pipeline[-1].meta_keys
        assert 'img_label' in meta_keys and 'patch_name' in meta_keys
        assert cfg.val_evaluator.type == 'ImageLabelMetric'
        # GT-free selection on image labels: the reference's validation loss
        assert (cfg.default_hooks.checkpoint.save_best, cfg.default_hooks.checkpoint.rule
                ) == ('img_label/cross_entropy', 'less')
        if paper_schedule:
            assert cfg.optim_wrapper.optimizer == dict(type='Adam', lr=1e-5, weight_decay=1e-3)
            assert cfg.train_dataloader.batch_size == 16 and cfg.train_cfg.max_epochs == 50


def test_demo_config_trains_and_validates_through_the_runner(tmp_path):
    from mmengine.runner import Runner
    from conftest import write_patch_dataset
    for split in ('train', 'val'):
        write_patch_dataset(str(tmp_path / 'data'), split, n_pos=2, n_neg=2, size=32)
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'classifier_demo.py'))
    cfg.work_dir = str(tmp_path / 'work')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = str(tmp_path / 'data')
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.pipeline[1].scale = (32, 32)
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 1
    cfg.custom_hooks = []  # CAM generation after training: tests/test_stages_by_tools.py
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    assert set(metrics) >= {'img_label/accuracy', 'img_label/auc', 'img_label/cross_entropy'}
    assert metrics['img_label/num_pos'] == 2 and metrics['img_label/num_neg'] == 2
    assert 0.0 <= metrics['img_label/auc'] <= 1.0
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
    assert len(list((tmp_path / 'work').glob('best_img_label_cross_entropy_epoch_1.pth'))) == 1


@pytest.mark.parametrize('key', ['pretrained', 'init_cfg'])
def test_pretrained_init_from_the_command_line(tmp_path, key):
    """--cfg-options model.backbone.pretrained=FILE, or its long form init_cfg=dict(
    type='Pretrained', checkpoint=FILE): ImageNet-style weights, random head."""
    from torchvision.models import resnet50
    torch.manual_seed(5)
    imagenet = resnet50().state_dict()  # generated weights in the torchvision layout
    path = tmp_path / 'resnet50.pth'
    torch.save(imagenet, path)
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'classifier_reference.py'))
    value = str(path) if key == 'pretrained' else dict(type='Pretrained', checkpoint=str(path))
    cfg.merge_from_dict({f'model.backbone.{key}': value})
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()  # what the runner calls before training
    torch.testing.assert_close(model.backbone.conv1.weight[:, :3], imagenet['conv1.weight'])
    torch.testing.assert_close(model.backbone.layer3[4].conv2.weight,
                               imagenet['layer3.4.conv2.weight'])
    torch.testing.assert_close(model.backbone.layer4[0].bn3.running_mean,
                               imagenet['layer4.0.bn3.running_mean'])
    # the 1000-class ImageNet head is dropped; the tumour head keeps its N(0, 0.01^2) init
    assert abs(model.fc.weight.std().item() - 0.01) < 0.001 and model.fc.bias.item() == 0.0


STOCK_BACKBONES = [
    # MMSeg's ResNetV1c (deep stem, stride 32): the CAM of its last stage
    (dict(type='ResNetV1c', depth=18, norm_cfg=dict(type='BN', requires_grad=True)), 'layer4',
     512, 32),
    # MMPretrain's ResNet, from its own registry (an ImageNet classifier's backbone)
    (dict(type='mmpretrain.ResNet', depth=18), 'layer4.1', 512, 32),
]


@pytest.mark.parametrize('backbone,cam_layer,channels,stride', STOCK_BACKBONES,
                         ids=['mmseg.ResNetV1c', 'mmpretrain.ResNet'])
def test_stock_backbones_give_cams_through_the_named_layer(backbone, cam_layer, channels,
                                                           stride):
    """Any backbone serves: the CAM layer is a module name, read with a forward hook."""
    if backbone['type'].startswith('mmpretrain.'):
        pytest.importorskip('mmpretrain')
    from mmseg_epsam.functional.cam import rotate_and_fuse_cams
    from mmseg_epsam.models.classifiers import cam_function
    torch.manual_seed(0)
    model = MODELS.build(dict(type='EPSAMPatchClassifier', backbone=backbone,
                              cam_layer=cam_layer, head_init_std=None))
    assert model.fc.in_features == channels
    inputs = torch.rand(2, 3, 128, 96)
    loss = model(inputs, [sample(1), sample(0)], mode='loss')['loss_bce']
    loss.backward()  # it trains like the default classifier
    assert all(p.grad is not None for p in model.backbone.layer1.parameters())
    model.zero_grad(set_to_none=True)
    fused = rotate_and_fuse_cams(model.compute_cam, inputs[:, :, :96])  # square: 4 views
    assert fused.shape == (2, 96 // stride, 96 // stride)
    assert torch.isfinite(fused).all() and fused.min() >= 0 and fused.max() <= 1
    assert fused.max() > 0
    raw = model.compute_cam(inputs)
    assert raw.shape == (2, 128 // stride, 96 // stride) and (raw >= 0).all()
    gradcam = cam_function(model, 'gradcam')(inputs)  # the package's methods use the name too
    assert gradcam.shape == raw.shape and torch.isfinite(gradcam).all()
    assert 0.0 <= gradcam.min() and gradcam.max() <= 1.0
    with pytest.raises(ValueError, match='channels'):
        model.compute_cam(inputs, cam_layer='layer3')
    with pytest.raises(ValueError, match='names no module'):
        MODELS.build(dict(type='EPSAMPatchClassifier', backbone=backbone, cam_layer='layer9'))
