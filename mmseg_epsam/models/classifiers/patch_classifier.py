"""EP-SAM's patch classifier: a backbone (EVP-ADL ResNet by default), global average pooling,
one tumour logit, and the CAM of a named backbone module."""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from .module_output import module_output

# Side of the blank image the constructor runs through the backbone to read its channels.
PROBE_SIZE = (64, 64)
ForwardResults = Union[Dict[str, torch.Tensor], List[SegDataSample], torch.Tensor]


@MODELS.register_module()
class EPSAMPatchClassifier(BaseModel):
    """Binary tumour / normal patch classifier whose CAM seeds EP-SAM (docs/method.md §2-3).

    ``backbone`` features (its last feature map) -> global average pooling ->
    ``Linear(C, 1)`` -> one logit, trained with binary cross-entropy on
    ``data_sample.metainfo['img_label']`` (0/1).

    Modes of :meth:`forward`:

    - ``'loss'``: ``{'loss_bce': ..., 'accuracy': ...}``;
    - ``'predict'``: the data samples with ``pred_score`` (tumour probability, a 1-element
      tensor) set; their metainfo, including ``img_label``, is kept;
    - ``'tensor'``: the logits ``[B]``.

    :meth:`compute_cam` gives the class activation map used by the CAM generator.

    Args:
        backbone: Config of any MMSeg-style backbone taking RGB ``[B, 3, H, W]`` and
            returning a feature map or a tuple of them (the last one is classified), e.g.
            ``EVPADLResNet``, MMSeg's ``ResNetV1c`` or ``mmpretrain.ResNet``. Its channels
            are read from one forward pass on a blank ``PROBE_SIZE`` image at construction.
        cam_layer: Name of the backbone module whose output the CAM is computed from, as
            in ``backbone.named_modules()`` (default ``'layer4.0'``, the first bottleneck of
            layer4, as the reference; ``'layer4'`` for a stock ResNet). It is read with a
            forward hook. Its channels must equal those of the classified feature map, since
            the CAM uses the classifier's weights.
        head_init_std: The linear head starts with weights from N(0, ``head_init_std``^2)
            and zero bias (default 0.01, the reference); None keeps PyTorch's default
            ``nn.Linear`` initialisation (uniform, as the demo presets were trained).
        data_preprocessor: Config of the data preprocessor; must map uint8 images to RGB in
            [0, 1] (``SegDataPreProcessor`` with mean 0, std 255, ``bgr_to_rgb=True``).
        init_cfg: Passed to :class:`mmengine.model.BaseModel`.
    """

    def __init__(self,
                 backbone: dict,
                 cam_layer: str = 'layer4.0',
                 head_init_std: Optional[float] = 0.01,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        # Built here from mmseg's registry so the model also builds outside a runner.
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.cam_layer = cam_layer
        self.fc = nn.Linear(self._probe_channels(), 1)
        if head_init_std is not None:
            if head_init_std <= 0:
                raise ValueError(f'head_init_std must be positive or None, got {head_init_std}')
            nn.init.normal_(self.fc.weight, mean=0.0, std=head_init_std)
            nn.init.zeros_(self.fc.bias)

    def _probe_channels(self) -> int:
        """Channels of the classified feature map, from eval-mode forward passes on a blank
        image (no randomness used, no statistics updated); checks ``cam_layer`` too."""
        blank = torch.zeros(1, 3, *PROBE_SIZE)
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                channels = last_feature_map(self.backbone(blank)).shape[1]
                check_cam_features(self.cam_layer,
                                   module_output(self.backbone, self.cam_layer, blank), channels)
        finally:
            self.backbone.train(was_training)
        return channels

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[SegDataSample]] = None,
                mode: str = 'tensor') -> ForwardResults:
        """Run in ``'loss'``, ``'predict'`` or ``'tensor'`` mode (see the class docstring)."""
        features = last_feature_map(self.backbone(inputs))
        logits = self.fc(features.mean(dim=(2, 3))).squeeze(1)
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            return self._loss(logits, data_samples)
        if mode == 'predict':
            return self._predict(logits, data_samples)
        raise ValueError(f'mode must be "loss", "predict" or "tensor", got {mode!r}')

    def _loss(self, logits: torch.Tensor,
              data_samples: Optional[List[SegDataSample]]) -> Dict[str, torch.Tensor]:
        """Binary cross-entropy against the image labels (and batch accuracy for the log)."""
        labels = image_labels(data_samples, logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        accuracy = ((logits > 0).float() == labels).float().mean().detach()
        return dict(loss_bce=loss, accuracy=accuracy)

    @staticmethod
    def _predict(logits: torch.Tensor,
                 data_samples: Optional[List[SegDataSample]]) -> List[SegDataSample]:
        """Attach the tumour probability to each data sample as ``pred_score``."""
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(len(logits))]
        probabilities = torch.sigmoid(logits.detach())
        for data_sample, probability in zip(data_samples, probabilities):
            data_sample.pred_score = probability.reshape(1)
        return data_samples

    def compute_cam(self, inputs: torch.Tensor, cam_layer: Optional[str] = None) -> torch.Tensor:
        """Raw class activation map ``ReLU(sum_c w_c F_c)`` (docs/method.md §3), not normalised.

        ``F`` is the output of the backbone module ``cam_layer`` (default: the configured
        one; the forward stops there) and ``w`` the weights of the final linear layer (its
        bias is not added). The model runs in eval mode (ADL is the identity, BatchNorm uses
        running statistics) without gradients; its previous mode is restored afterwards.

        Args:
            inputs: Preprocessed images ``[B, 3, H, W]`` (RGB in [0, 1]).
            cam_layer: Override of the configured CAM layer, e.g. ``'layer4.2'``.

        Returns:
            ``[B, h, w]`` at the feature resolution of ``cam_layer`` (``H/16`` for layer4).
        """
        cam_layer = self.cam_layer if cam_layer is None else cam_layer
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                features = module_output(self.backbone, cam_layer, inputs)
                check_cam_features(cam_layer, features, self.fc.in_features)
                cam = torch.einsum('bchw,c->bhw', features, self.fc.weight[0])
        finally:
            self.train(was_training)
        return F.relu(cam)


def last_feature_map(features: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
    """The map a backbone's output ends with: itself, or the last of a tuple / list."""
    return features[-1] if isinstance(features, (tuple, list)) else features


def check_cam_features(cam_layer: str, features: object, channels: int) -> None:
    """Raise unless ``features`` is a ``[B, channels, h, w]`` map the classifier weights
    apply to."""
    if not isinstance(features, torch.Tensor) or features.ndim != 4:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(f'cam_layer={cam_layer!r} must output a feature map [B, C, h, w], '
                         f'got {shape}')
    if features.shape[1] != channels:
        raise ValueError(f'cam_layer={cam_layer!r} has {features.shape[1]} channels but the '
                         f'classifier weights have {channels}; choose a module of the last '
                         f'stage')


def image_labels(data_samples: Optional[List[SegDataSample]],
                 device: torch.device) -> torch.Tensor:
    """Float tensor ``[B]`` of the 0/1 ``img_label`` metainfo of ``data_samples``."""
    if not data_samples:
        raise ValueError('loss mode needs data samples carrying metainfo "img_label"; give '
                         "PackSegInputs meta_keys that include 'img_label'")
    labels = []
    for index, data_sample in enumerate(data_samples):
        label = data_sample.metainfo.get('img_label')
        if label not in (0, 1):
            name = data_sample.metainfo.get('img_path', f'sample {index}')
            raise ValueError(f'{name}: img_label must be 0 or 1 in the data sample metainfo '
                             f"(PackSegInputs meta_keys must include 'img_label'), got {label!r}")
        labels.append(float(label))
    return torch.tensor(labels, device=device)
