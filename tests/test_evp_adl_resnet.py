"""Tests for the EVP-ADL ResNet backbone (mmseg_epsam/models/backbones/evp_adl_resnet.py)."""
import pytest
import torch
from mmseg.registry import MODELS

import mmseg_epsam  # noqa: F401  (registers EVPADLResNet)
from mmseg_epsam.functional.evp import evp_high_frequency
from mmseg_epsam.models.backbones import evp_adl_resnet
from mmseg_epsam.models.classifiers import module_output


def build(**kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(type='EVPADLResNet', **kwargs))


@pytest.fixture(scope='module')
def backbone():
    return build().eval()


def test_output_stride_16_and_layer4_dilation(backbone):
    inputs = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        stages = backbone(inputs)
        out = stages[-1]
        cam_features = module_output(backbone, 'layer4.0', inputs)
        layer3 = module_output(backbone, 'layer3.5', inputs)
    # MMSeg's backbone contract: one map per out_indices entry (default all four stages)
    assert isinstance(stages, tuple)
    assert [tuple(s.shape) for s in stages] == [(2, 256, 16, 24), (2, 512, 8, 12),
                                                (2, 1024, 4, 6), (2, 2048, 4, 6)]
    assert out.shape == (2, 2048, 4, 6)
    assert cam_features.shape == (2, 2048, 4, 6)
    assert layer3.shape == (2, 1024, 4, 6)
    # default = the reference: layer4 has stride 1 and no dilation
    assert all(block.conv2.stride == (1, 1) and block.conv2.dilation == (1, 1)
               and block.conv2.padding == (1, 1) for block in backbone.layer4)
    dilated = build(dilate_layer4=True).eval()
    assert dilated.layer4[0].conv2.stride == (1, 1) and dilated.layer4[0].conv2.dilation == (1, 1)
    assert all(block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2)
               for block in dilated.layer4[1:])
    with torch.no_grad():
        assert dilated(inputs)[-1].shape == (2, 2048, 4, 6)
    assert backbone.layer4[0].conv3.out_channels == 2048
    assert backbone.block_names[0] == 'layer1.0' and backbone.block_names[-1] == 'layer4.2'


def test_module_output_returns_the_named_block_output_and_stops_there(backbone):
    inputs = torch.rand(1, 3, 32, 32)
    captured, later = {}, []
    handles = [backbone.layer4[0].register_forward_hook(
        lambda module, args, output: captured.update(out=output)),
        backbone.layer4[1].register_forward_hook(lambda *args: later.append(1))]
    with torch.no_grad():
        stopped = module_output(backbone, 'layer4.0', inputs)
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(stopped, captured['out'])
    assert not later  # the blocks after the named one do not run
    assert not backbone.layer4[0]._forward_hooks  # the stopping hook is removed
    with pytest.raises(ValueError, match='layer5.0'):
        module_output(backbone, 'layer5.0', inputs)


def test_out_indices_select_the_stages(backbone):
    inputs = torch.rand(1, 3, 32, 32)
    last_two = build(out_indices=(2, 3)).eval()
    last_two.load_state_dict(backbone.state_dict())
    with torch.no_grad():
        every, selected = backbone(inputs), last_two(inputs)
    assert len(selected) == 2
    for kept, full in zip(selected, every[2:]):
        torch.testing.assert_close(kept, full)
    with pytest.raises(ValueError, match='out_indices'):
        build(out_indices=(4, ))


@pytest.mark.parametrize('fusion,in_channels', [('concat', 4), ('add', 3)])
def test_evp_channel_reaches_first_conv(monkeypatch, fusion, in_channels):
    model = build(evp_fusion=fusion, adl_positions=()).eval()
    assert model.conv1.in_channels == in_channels
    inputs = torch.rand(1, 3, 32, 32)
    seen = {}
    model.conv1.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    with torch.no_grad():
        reference = model(inputs)[-1]
    evp = evp_high_frequency(inputs)
    expected_stem_input = torch.cat([inputs, evp], 1) if fusion == 'concat' else inputs + evp
    torch.testing.assert_close(seen['x'], expected_stem_input)
    # change only the EVP (the 4th channel for concat): the output must change
    monkeypatch.setattr(evp_adl_resnet, 'evp_high_frequency',
                        lambda images, *args: torch.zeros_like(images[:, :1]))
    with torch.no_grad():
        changed = model(inputs)[-1]
    assert (changed - reference).abs().max() > 1e-4


def test_no_evp_means_plain_rgb_stem():
    model = build(evp_fusion=None).eval()
    assert model.conv1.in_channels == 3
    with pytest.raises(ValueError, match='evp_fusion'):
        build(evp_fusion='multiply')
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        model(torch.rand(1, 4, 32, 32))


def test_adl_positions_and_identity_in_eval():
    with_adl = build()
    assert sorted(with_adl.adl) == ['layer3_0', 'layer4_0', 'layer4_2']
    assert with_adl.adl['layer4_0'].drop_rate == 0.75
    assert with_adl.adl['layer4_0'].drop_threshold == 0.8
    without_adl = build(adl_positions=())
    without_adl.load_state_dict(with_adl.state_dict())  # ADL has no parameters
    inputs = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(with_adl.eval()(inputs), without_adl.eval()(inputs))
        torch.manual_seed(1)
        trained = with_adl.train()(inputs)[-1]
        plain = without_adl.train()(inputs)[-1]
    assert (trained - plain).abs().max() > 1e-4
    with pytest.raises(ValueError, match='adl_positions'):
        build(adl_positions=('layer4.7', ))


def test_attention_dropout_module_uses_one_draw_per_forward():
    adl = evp_adl_resnet.AttentionDropout(drop_rate=0.75, drop_threshold=0.8).train()
    features = torch.rand(3, 4, 5, 5)
    attention = features.mean(1, keepdim=True)
    dropped = features * (attention < 0.8 * attention.amax(dim=(2, 3), keepdim=True))
    weighted = features * torch.sigmoid(attention)
    outcomes = set()
    for seed in range(12):
        torch.manual_seed(seed)
        draw = torch.rand(()).item()
        torch.manual_seed(seed)
        out = adl(features)
        expected = dropped if draw < 0.75 else weighted
        torch.testing.assert_close(out, expected)  # the whole batch follows one draw
        outcomes.add(draw < 0.75)
    assert outcomes == {True, False}
    torch.testing.assert_close(adl.eval()(features), features)


def test_random_init_options():
    """Xavier-uniform (the reference) vs Kaiming-normal (torchvision) convolutions."""
    xavier, kaiming = build(), build(conv_init='kaiming_normal')
    weight = xavier.layer1[0].conv2.weight  # 64 -> 64, 3x3: fan_in = fan_out = 576
    bound = (6 / (576 + 576)) ** 0.5
    assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
    assert abs(weight.std().item() - bound / 3 ** 0.5) < 0.03 * bound  # uniform's std
    weight = kaiming.layer1[0].conv2.weight
    assert abs(weight.std().item() - (2 / 576) ** 0.5) < 0.03 * (2 / 576) ** 0.5
    assert weight.abs().max() > bound  # a normal law's tail, beyond Xavier's bound
    for model in (xavier, kaiming):
        torch.testing.assert_close(model.layer2[0].bn1.weight, torch.ones(128))
        torch.testing.assert_close(model.layer2[0].bn1.bias, torch.zeros(128))
    with pytest.raises(ValueError, match='conv_init'):
        build(conv_init='orthogonal')


@pytest.mark.parametrize('layout', ['torchvision', 'mmpretrain', 'data_parallel'])
def test_imagenet_state_dict_loads_with_mean_rgb_rule(tmp_path, layout):
    from torchvision.models import resnet50
    torch.manual_seed(3)
    imagenet = resnet50().state_dict()  # random weights in the ImageNet layout, no download
    if layout == 'torchvision':
        # old torchvision files lack num_batches_tracked
        saved = {k: v for k, v in imagenet.items() if not k.endswith('num_batches_tracked')}
    elif layout == 'data_parallel':
        # a pathology self-supervised ResNet-50 saved from DataParallel, without its fc
        saved = dict(state_dict={'module.' + k: v for k, v in imagenet.items()
                                 if not k.startswith('fc.')})
    else:
        saved = dict(meta=dict(arch='resnet50'), state_dict={
            **{'backbone.' + k: v for k, v in imagenet.items() if not k.startswith('fc.')},
            'head.fc.weight': imagenet['fc.weight'], 'head.fc.bias': imagenet['fc.bias']})
    path = tmp_path / 'resnet50_imagenet.pth'
    torch.save(saved, path)
    model = build(pretrained=str(path))
    model.init_weights()
    conv1 = imagenet['conv1.weight']
    torch.testing.assert_close(model.conv1.weight[:, :3], conv1)
    torch.testing.assert_close(model.conv1.weight[:, 3], conv1.mean(dim=1))
    torch.testing.assert_close(model.layer4[2].conv3.weight, imagenet['layer4.2.conv3.weight'])
    torch.testing.assert_close(model.layer2[0].downsample[1].running_var,
                               imagenet['layer2.0.downsample.1.running_var'])
    rgb_model = build(evp_fusion='add', pretrained=str(path))
    rgb_model.init_weights()
    torch.testing.assert_close(rgb_model.conv1.weight, conv1)


def test_bad_pretrained_file_names_the_file(tmp_path):
    path = tmp_path / 'not_a_resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'layer9.weight': torch.zeros(1)}, path)
    model = build(pretrained=str(path))
    with pytest.raises(KeyError, match='not_a_resnet.pth'):
        model.init_weights()


def test_pretrained_weights_come_through_init_cfg(tmp_path):
    from torchvision.models import resnet50
    torch.manual_seed(4)
    imagenet = resnet50().state_dict()
    path = tmp_path / 'resnet50.pth'
    torch.save(imagenet, path)
    init_cfg = dict(type='Pretrained', checkpoint=str(path))
    model = build(init_cfg=init_cfg)
    assert build(pretrained=str(path)).init_cfg == init_cfg  # the shorthand, same route
    model.init_weights()
    torch.testing.assert_close(model.conv1.weight[:, :3], imagenet['conv1.weight'])
    torch.testing.assert_close(model.layer3[1].bn2.weight, imagenet['layer3.1.bn2.weight'])
    with pytest.raises(ValueError, match='not both'):
        build(pretrained=str(path), init_cfg=init_cfg)
    constant = build(init_cfg=dict(type='Constant', layer='Conv2d', val=0.5))
    constant.init_weights()  # any other initialiser is MMEngine's
    assert (constant.layer2[0].conv1.weight == 0.5).all()
