"""EVP-ADL ResNet: the patch classifier's backbone in EP-SAM (docs/method.md §1-2).

A torchvision-layout ResNet-50 (so ImageNet weights from torchvision or mmpretrain load by
key) with

- the explicit visual prompt (EVP, :func:`mmseg_epsam.functional.evp.evp_high_frequency`)
  computed from the input inside ``forward`` and concatenated as a 4th input channel
  (default, the reference) or added to the RGB channels (the paper's wording);
- Attention Dropout Layers after named bottlenecks (default: the reference's three,
  ``layer3.0``, ``layer4.0`` and ``layer4.2``), active in training only;
- output stride 16: layer4 keeps stride 1. By default (the reference code) layer4 has no
  dilation either; ``dilate_layer4=True`` gives its later bottlenecks dilation 2
  (torchvision's ``replace_stride_with_dilation`` convention, which keeps the receptive
  field of a stride-2 layer4);
- random initialisation as the reference (Xavier-uniform convolutions) or torchvision's
  (Kaiming-normal), chosen by ``conv_init`` (docs/classifier_presets.md gives the source of
  every such choice), or ImageNet / pathology weights through
  ``init_cfg=dict(type='Pretrained', checkpoint=...)``.

It follows MMSeg's backbone contract: ``forward`` returns a tuple of stage outputs selected
by ``out_indices``, so it serves an ``EncoderDecoder`` as well as the patch classifier.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torchvision.models.resnet import Bottleneck

from mmseg_epsam.functional.adl import attention_dropout
from mmseg_epsam.functional.evp import evp_high_frequency
from mmseg_epsam.utils import load_foreign_state_dict

BLOCKS_PER_LAYER = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
EVP_FUSIONS = ('concat', 'add', None)
CONV_INITS = ('xavier_uniform', 'kaiming_normal')
# Keys of an ImageNet checkpoint that belong to its 1000-class head, not to the backbone.
CLASSIFIER_HEAD_PREFIXES = ('fc.', 'head.')


class AttentionDropout(nn.Module):
    """Attention Dropout Layer (Choe & Shim, CVPR 2019); identity in eval mode.

    One uniform draw per forward pass, shared by the whole batch, picks the drop mask (with
    probability ``drop_rate``) or the importance map; the maths is
    :func:`mmseg_epsam.functional.adl.attention_dropout`.
    """

    def __init__(self, drop_rate: float = 0.75, drop_threshold: float = 0.8) -> None:
        super().__init__()
        if not 0.0 <= drop_rate <= 1.0:
            raise ValueError(f'ADL drop_rate must lie in [0, 1], got {drop_rate}')
        self.drop_rate = drop_rate
        self.drop_threshold = drop_threshold

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return ``features`` unchanged in eval mode, else apply ADL with a fresh draw."""
        if not self.training:
            return features
        random_draw = torch.rand(()).item()
        return attention_dropout(features, self.drop_rate, self.drop_threshold, random_draw)

    def extra_repr(self) -> str:
        return f'drop_rate={self.drop_rate}, drop_threshold={self.drop_threshold}'


def make_res_layer(in_channels: int, planes: int, num_blocks: int, stride: int,
                   first_dilation: int, dilation: int) -> nn.Sequential:
    """A ResNet stage of torchvision ``Bottleneck`` blocks (stride on the 3x3 conv).

    The first block uses ``stride`` and ``first_dilation`` (and a 1x1 projection shortcut
    when the shape changes); the others use ``dilation``.
    """
    out_channels = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels))
    blocks = [Bottleneck(in_channels, planes, stride, downsample, dilation=first_dilation)]
    blocks += [Bottleneck(out_channels, planes, dilation=dilation) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


@MODELS.register_module()
class EVPADLResNet(BaseModule):
    """ResNet with the explicit visual prompt and Attention Dropout Layers, output stride 16.

    Input: RGB in [0, 1] (data preprocessor with mean 0 and std 255), ``[B, 3, H, W]``.
    Output of ``forward``: the outputs of the stages in ``out_indices`` (0: layer1 ...
    3: layer4), strides 4, 8, 16 and 16, channels 256, 512, 1024 and 2048. A single
    bottleneck (e.g. ``'layer4.0'``, the reference's CAM layer) is read by its module name
    with a forward hook (:func:`mmseg_epsam.models.classifiers.module_output.module_output`);
    that is its output before its ADL, the same in eval mode, where ADL is the identity.

    Args:
        depth: 50 (default) or 101.
        evp_fusion: ``'concat'`` (EVP as a 4th input channel; the reference), ``'add'``
            (EVP added to each RGB channel; the paper's wording) or None (no EVP: a plain
            or ADL-only ResNet for ablations).
        evp_mask_size: Side in frequency bins of the zeroed low-frequency square
            (default 2, the reference). Set None to use ``evp_mask_ratio`` instead.
        evp_mask_ratio: Area fraction tau of that square (the EVP paper uses 0.25).
        evp_fft_norm: FFT normalisation of the EVP (default ``'forward'``, the reference).
        adl_positions: Bottlenecks followed by an ADL, as ``'layer<i>.<j>'`` (``j`` from 0).
            Default: the reference's ``('layer3.0', 'layer4.0', 'layer4.2')``; the paper
            names only the first two. Empty for no ADL.
        adl_drop_rate: Probability of applying the drop mask (0.75).
        adl_drop_threshold: gamma of the drop mask (0.8).
        dilate_layer4: False (default, the reference): layer4 has stride 1 and no
            dilation. True: its bottlenecks after the first use dilation 2 (torchvision's
            convention; the demo presets were trained so).
        conv_init: Random initialisation of the convolutions: ``'xavier_uniform'``
            (default, the reference) or ``'kaiming_normal'`` (torchvision's, fan-out; the
            demo presets were trained so). BatchNorm starts at scale 1, shift 0 either way.
        out_indices: Stages whose outputs ``forward`` returns (default all four, as
            MMSeg's ``ResNet``).
        pretrained: Shorthand for ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``
            (MMSeg's ``EncoderDecoder(pretrained=...)`` sets it; it is also the short
            ``--cfg-options model.backbone.pretrained=FILE``). Give it or ``init_cfg``.
        init_cfg: ``dict(type='Pretrained', checkpoint=FILE)``: a local ImageNet or pathology
            ResNet state dict (torchvision / timm layout, or an mmpretrain checkpoint with
            ``backbone.`` keys, see :func:`imagenet_to_evp_state_dict`), loaded with
            ``weights_only=True`` in :meth:`init_weights`; with ``evp_fusion='concat'`` the
            EVP channel's first-conv filters are initialised to the mean of the RGB filters.
            Other types go to :class:`mmengine.model.BaseModule`. None (default, as the
            reference): the random initialisation of ``conv_init``.
    """

    def __init__(self,
                 depth: int = 50,
                 evp_fusion: Optional[str] = 'concat',
                 evp_mask_size: Optional[int] = 2,
                 evp_mask_ratio: Optional[float] = None,
                 evp_fft_norm: str = 'forward',
                 adl_positions: Sequence[str] = ('layer3.0', 'layer4.0', 'layer4.2'),
                 adl_drop_rate: float = 0.75,
                 adl_drop_threshold: float = 0.8,
                 dilate_layer4: bool = False,
                 conv_init: str = 'xavier_uniform',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('give the initial weights once, as pretrained or as '
                                 f'init_cfg, not both: {pretrained!r} and {init_cfg!r}')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        if depth not in BLOCKS_PER_LAYER:
            raise ValueError(f'depth must be one of {sorted(BLOCKS_PER_LAYER)}, got {depth}')
        if evp_fusion not in EVP_FUSIONS:
            raise ValueError(f'evp_fusion must be one of {EVP_FUSIONS}, got {evp_fusion!r}')
        if conv_init not in CONV_INITS:
            raise ValueError(f'conv_init must be one of {CONV_INITS}, got {conv_init!r}')
        self.evp_fusion = evp_fusion
        self.evp_mask_size = evp_mask_size
        self.evp_mask_ratio = evp_mask_ratio
        self.evp_fft_norm = evp_fft_norm

        in_channels = 4 if evp_fusion == 'concat' else 3
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        layer4_dilation = 2 if dilate_layer4 else 1
        stages = ((64, 1, 1, 1), (128, 2, 1, 1), (256, 2, 1, 1), (512, 1, 1, layer4_dilation))
        self.layer_names = ['layer1', 'layer2', 'layer3', 'layer4']
        channels = 64
        for name, num_blocks, (planes, stride, first_dil, dil) in zip(
                self.layer_names, BLOCKS_PER_LAYER[depth], stages):
            self.add_module(name, make_res_layer(channels, planes, num_blocks, stride,
                                                 first_dil, dil))
            channels = planes * Bottleneck.expansion
        if not out_indices or any(i not in range(len(self.layer_names)) for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of (0, 1, 2, 3), got '
                             f'{tuple(out_indices)}')
        self.out_indices = tuple(out_indices)
        self.block_names = [f'{name}.{j}' for name in self.layer_names
                            for j in range(len(getattr(self, name)))]

        unknown = [p for p in adl_positions if p not in self.block_names]
        if unknown:
            raise ValueError(f'adl_positions {unknown} name no bottleneck; valid names are '
                             f'layer<i>.<j>, e.g. {self.block_names[:2]} ... '
                             f'{self.block_names[-1]}')
        # ModuleDict keys may not contain '.', so 'layer4.0' is stored as 'layer4_0'.
        self.adl = nn.ModuleDict({
            p.replace('.', '_'): AttentionDropout(adl_drop_rate, adl_drop_threshold)
            for p in adl_positions})
        self.conv_init = conv_init
        self._init_random()

    def _init_random(self) -> None:
        """Random init: ``conv_init`` for the convolutions, unit scale for BatchNorm."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if self.conv_init == 'xavier_uniform':
                    nn.init.xavier_uniform_(module.weight)
                else:
                    nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def add_visual_prompt(self, inputs: torch.Tensor) -> torch.Tensor:
        """Fuse the EVP of ``inputs`` ``[B, 3, H, W]`` (RGB in [0, 1]) as configured."""
        if self.evp_fusion is None:
            return inputs
        evp = evp_high_frequency(inputs, self.evp_mask_size, self.evp_mask_ratio,
                                 self.evp_fft_norm)
        if self.evp_fusion == 'concat':
            return torch.cat([inputs, evp], dim=1)
        return inputs + evp

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Stage outputs of ``inputs`` ``[B, 3, H, W]`` (RGB in [0, 1]) for ``out_indices``.

        Each stage output is taken after the ADL of its last bottleneck, if any (the
        identity in eval mode). ``[B, C, h, w]`` with ``h = ceil(H / 16)`` for layer3 and
        layer4.
        """
        if inputs.ndim != 4 or inputs.shape[1] != 3:
            raise ValueError(f'{type(self).__name__} expects RGB inputs [B, 3, H, W] in '
                             f'[0, 1], got shape {tuple(inputs.shape)}')
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.add_visual_prompt(inputs)))))
        outs = []
        for stage, layer_name in enumerate(self.layer_names):
            for index, block in enumerate(getattr(self, layer_name)):
                x = block(x)
                adl_key = f'{layer_name}_{index}'
                if adl_key in self.adl:
                    x = self.adl[adl_key](x)
            if stage in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=FILE)`` through
        :func:`imagenet_to_evp_state_dict`; other ``init_cfg`` types go to MMEngine, and
        None keeps the random initialisation.

        MMEngine's own ``Pretrained`` initialiser would leave the 4-channel first conv
        random (a shape mismatch); hence the override, as MMSeg's ViT backbones do.
        """
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            super().init_weights()
            return
        checkpoint = self.init_cfg['checkpoint']
        state_dict = imagenet_to_evp_state_dict(
            load_foreign_state_dict(checkpoint), self.conv1.in_channels, checkpoint)
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        # Old torchvision files predate BatchNorm's num_batches_tracked buffer.
        missing = [k for k in missing if not k.endswith('num_batches_tracked')]
        if missing or unexpected:
            raise KeyError(f'{checkpoint}: not a ResNet state dict matching '
                           f'{type(self).__name__}; missing keys {missing[:5]} '
                           f'(of {len(missing)}), unexpected keys {unexpected[:5]} '
                           f'(of {len(unexpected)})')
        MMLogger.get_current_instance().info(
            f'{type(self).__name__}: loaded ImageNet weights from {checkpoint} '
            f'({len(state_dict)} tensors; first conv has {self.conv1.in_channels} inputs)')


def imagenet_to_evp_state_dict(state_dict: Dict[str, torch.Tensor], in_channels: int,
                               source: str) -> Dict[str, torch.Tensor]:
    """Map an ImageNet ResNet state dict onto :class:`EVPADLResNet` keys.

    Accepts torchvision and timm keys (``conv1.weight``, ``layer1.0.bn1.weight``, ``fc.*``),
    mmpretrain keys (the same under ``backbone.``, head under ``head.``) and either saved
    from ``DataParallel`` (under ``module.``), as ImageNet and pathology (self-supervised
    ResNet-50) checkpoints come; drops the classification head if any. With
    ``in_channels == 4`` the first conv's 4th input channel (the EVP) is initialised to the
    mean of its three RGB filters.

    Args:
        state_dict: The loaded weights.
        in_channels: Input channels of the target first conv (3 or 4).
        source: The file the weights came from, for error messages.
    """
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items()
                      if k.startswith('backbone.')}
    state_dict = {k: v for k, v in state_dict.items()
                  if not k.startswith(CLASSIFIER_HEAD_PREFIXES)}
    conv1 = state_dict.get('conv1.weight')
    if conv1 is None or conv1.ndim != 4 or conv1.shape[1] != 3:
        shape = None if conv1 is None else tuple(conv1.shape)
        raise KeyError(f'{source}: expected an RGB ResNet stem conv1.weight [64, 3, 7, 7], '
                       f'got {shape}')
    if in_channels == 4:
        evp_filters = conv1.mean(dim=1, keepdim=True)
        state_dict['conv1.weight'] = torch.cat([conv1, evp_filters], dim=1)
    return state_dict

