"""CAM methods of paper Table 3 on the patch classifier
(mmseg_epsam/models/classifiers/cam_methods.py): the paper's CAM, and GradCAM, GradCAM++ and
EigenCAM from the grad-cam package, checked against properties derived by hand."""
import pytest
import torch
from mmseg.registry import MODELS

import mmseg_epsam  # noqa: F401  (registers the classifier)
from mmseg_epsam.functional.cam import normalize_cam
from mmseg_epsam.models.classifiers import CAM_METHODS, cam_function, module_output

pytest.importorskip('pytorch_grad_cam')
LAST_BLOCK = 'layer4.2'  # the block the linear head reads (through global average pooling)


@pytest.fixture(scope='module')
def classifier():
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='EPSAMPatchClassifier', backbone=dict(type='EVPADLResNet', depth=50),
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0.0] * 3, std=[255.0] * 3,
                               bgr_to_rgb=True)))
    with torch.no_grad():  # weights of order 1, so no epsilon of the package matters
        model.fc.weight.uniform_(-1.0, 1.0)
    return model.eval()


@pytest.fixture(scope='module')
def inputs():
    torch.manual_seed(1)
    return torch.rand(2, 3, 48, 48)


def features_of(model, inputs, layer=LAST_BLOCK):
    with torch.no_grad():
        return module_output(model.backbone, layer, inputs)


def test_gradcam_of_the_last_block_is_the_normalised_cam(classifier, inputs):
    # logit = w . mean_ij F_ij + b, so d logit / dF_cij = w_c / (h w) for every pixel:
    # GradCAM's channel weights are w / (h w) and its map is ReLU(w . F) / (h w).
    gradcam = cam_function(classifier, 'gradcam', LAST_BLOCK)(inputs)
    cam = classifier.compute_cam(inputs, cam_layer=LAST_BLOCK)
    assert gradcam.shape == cam.shape == (2, 3, 3)  # feature resolution, not resized
    assert cam.max() > 0 and (cam == 0).any()  # ReLU cuts: the comparison is not trivial
    torch.testing.assert_close(normalize_cam(gradcam), normalize_cam(cam), atol=1e-4, rtol=0)


def test_gradcam_plusplus_weights_by_hand(classifier, inputs):
    # Constant gradients g_c = w_c / (h w) in Eq. 19 (Chattopadhay et al.) give
    # alpha_c = g^2 / (2 g^2 + S_c g^3 + eps) with S_c = sum_ij F_cij (eps = 1e-6, the
    # package's guard), and the channel weight sum_ij alpha_c ReLU(g_c) = h w alpha_c g_c for
    # g_c > 0, 0 otherwise.
    features = features_of(classifier, inputs)
    h, w = features.shape[-2:]
    gradient = classifier.fc.weight[0].detach() / (h * w)
    total = features.sum(dim=(2, 3))  # [B, C]
    alpha = gradient ** 2 / (2 * gradient ** 2 + total * gradient ** 3 + 1e-6)
    weights = h * w * alpha * torch.relu(gradient)
    expected = torch.relu(torch.einsum('bchw,bc->bhw', features, weights))
    plusplus = cam_function(classifier, 'gradcam++', LAST_BLOCK)(inputs)
    torch.testing.assert_close(normalize_cam(plusplus), normalize_cam(expected), atol=1e-4,
                               rtol=0)
    # negative-weight channels are ignored, so it is not the CAM
    cam = normalize_cam(classifier.compute_cam(inputs, cam_layer=LAST_BLOCK))
    assert (normalize_cam(plusplus) - cam).abs().max() > 0.05


def test_eigencam_is_the_first_principal_component_and_class_agnostic(classifier, inputs):
    eigen = cam_function(classifier, 'eigencam')(inputs)  # the configured layer4.0
    features = features_of(classifier, inputs, 'layer4.0')
    for b in range(len(inputs)):
        pixels = features[b].flatten(1).T.double()  # [h w, C]
        centred = pixels - pixels.mean(0)
        projection = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[0]
        projection = projection.reshape(features.shape[-2:]).float()
        # the SVD fixes the sign: the map is the positive part of one of the two signs
        candidates = [normalize_cam(torch.relu(s * projection)) for s in (1, -1)]
        assert min((normalize_cam(eigen[b]) - c).abs().max() for c in candidates) < 1e-4
    with torch.no_grad():  # no gradient, no class: other head weights, same map
        saved = classifier.fc.weight.clone()
        classifier.fc.weight.mul_(-3.0)
        again = cam_function(classifier, 'eigencam')(inputs)
        classifier.fc.weight.copy_(saved)
    torch.testing.assert_close(again, eigen)


def test_cam_function_dispatch_modes_and_errors(classifier, inputs):
    assert CAM_METHODS == ('cam', 'gradcam', 'gradcam++', 'eigencam')
    torch.testing.assert_close(cam_function(classifier, 'cam')(inputs),
                               classifier.compute_cam(inputs))
    classifier.train()
    try:
        with torch.no_grad():  # as in CAM generation: gradients are enabled inside
            maps = cam_function(classifier, 'gradcam')(inputs)
        assert classifier.training  # mode restored
    finally:
        classifier.eval()
    assert maps.shape == (2, 3, 3) and 0.0 <= maps.min() and maps.max() <= 1.0
    assert all(p.grad is None for p in classifier.parameters())  # gradients cleared
    with pytest.raises(ValueError, match='unknown cam method'):
        cam_function(classifier, 'scorecam')
