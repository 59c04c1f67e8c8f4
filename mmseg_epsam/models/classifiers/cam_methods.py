"""Which class activation map seeds the initial masks (paper Table 3, CAM methods).

``'cam'`` is the paper's CAM, ``ReLU(w_fc . F)`` (:meth:`EPSAMPatchClassifier.compute_cam`).
The others are the maintained implementations of the ``grad-cam`` package
(pytorch-grad-cam) on the same classifier and the same layer:

- ``'gradcam'``: channel weights = spatial mean of d(tumour logit)/dF (Selvaraju et al.);
- ``'gradcam++'``: channel weights from second- and third-order gradient terms (Chattopadhay
  et al., Eq. 19);
- ``'eigencam'``: projection of F on its first principal component (Muhammad & Yeasin);
  gradient-free and class-agnostic, and its sign is that of the SVD (the package's choice).

Every method returns maps ``[N, h, w]`` at the CAM layer's feature resolution, so that
rotate & fuse, quantile threshold and opening (:mod:`mmseg_epsam.functional.cam`) apply to
all of them alike. The package's maps are min-max normalised per image (the paper's CAM is
normalised later by :func:`~mmseg_epsam.functional.cam.rotate_and_fuse_cams`; the fused
result is the same).
"""
from typing import Callable, Optional

import torch
import torch.nn as nn

from .module_output import named_submodule

CAM_METHODS = ('cam', 'gradcam', 'gradcam++', 'eigencam')
# Class names in pytorch_grad_cam of each gradient-based / eigen method.
GRAD_CAM_CLASSES = {'gradcam': 'GradCAM', 'gradcam++': 'GradCAMPlusPlus',
                    'eigencam': 'EigenCAM'}


class TumourLogit(nn.Module):
    """The classifier as pytorch-grad-cam expects a model: images -> logits ``[N, 1]``."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The tumour logit of each image, as a one-class score ``[N, 1]``."""
        return self.classifier(inputs, mode='tensor').reshape(-1, 1)


def _feature_resolution_class(method: str) -> type:
    """The package's class for ``method``, returning maps at feature resolution.

    pytorch-grad-cam resizes its maps to the input size unless the target size is None;
    the initial-mask settings choose the resolution and interpolation here instead.
    """
    try:
        import pytorch_grad_cam
    except ImportError as exc:
        raise ImportError(f'cam method {method!r} needs the grad-cam package '
                          '(pip install grad-cam; it is in requirements.txt)') from exc
    base = getattr(pytorch_grad_cam, GRAD_CAM_CLASSES[method])

    class FeatureResolutionCAM(base):

        def get_target_width_height(self, input_tensor: torch.Tensor) -> None:
            """No target size: the package keeps the maps at feature resolution."""
            return None

    FeatureResolutionCAM.__name__ = f'FeatureResolution{base.__name__}'
    return FeatureResolutionCAM


def cam_function(model: nn.Module, method: str = 'cam',
                 cam_layer: Optional[str] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``inputs [N, 3, H, W] -> CAMs [N, h, w]`` of ``model`` by ``method``.

    Args:
        model: An ``EPSAMPatchClassifier`` (``compute_cam``, ``backbone``, ``cam_layer`` and
            ``forward(inputs, mode='tensor')`` giving one logit per image).
        method: One of :data:`CAM_METHODS`.
        cam_layer: Name of the backbone module whose output the map is computed from
            (default: the model's configured ``cam_layer``).

    Returns:
        The function; it runs the model in eval mode and restores its mode. The gradient
        methods run with gradients enabled inside (also under ``torch.no_grad``) and clear
        the parameter gradients they make.
    """
    if method not in CAM_METHODS:
        raise ValueError(f'unknown cam method {method!r}; choose one of {CAM_METHODS}')
    if method == 'cam':
        if cam_layer is None:
            return model.compute_cam
        return lambda inputs: model.compute_cam(inputs, cam_layer=cam_layer)
    layer_name = cam_layer or model.cam_layer
    target_layer = named_submodule(model.backbone, layer_name)
    extractor_class = _feature_resolution_class(method)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def package_cam(inputs: torch.Tensor) -> torch.Tensor:
        if method != 'eigencam' and not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f'cam method {method!r} needs gradients, but every parameter of '
                             f'{type(model).__name__} has requires_grad=False')
        was_training = model.training
        try:
            with torch.enable_grad(), extractor_class(TumourLogit(model),
                                                      [target_layer]) as extractor:
                maps = extractor(inputs, targets=[ClassifierOutputTarget(0)] * len(inputs))
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        return torch.from_numpy(maps).to(inputs.device)

    return package_cam
