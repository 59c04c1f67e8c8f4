"""Embedding cache: hit, miss, views, invalidation when the encoder weights change."""
import numpy as np
import pytest
import torch

from mmseg_epsam.cache import EmbeddingCache, ModuleFingerprint, apply_view, image_content_hash

pytest.importorskip('segment_anything')
from mmseg_epsam.models.segmentors import SAMDecoderSegmentor  # noqa: E402


def _image(seed=0, shape=(48, 64)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _count_encoded_images(encoder):
    """Count the images ``encoder`` encodes, in ``encoder.calls`` (a forward hook)."""
    encoder.calls = 0

    def count(module, inputs, output):
        module.calls += inputs[0].shape[0]
    encoder.register_forward_hook(count)


def _segmentor(tmp_path):
    torch.manual_seed(0)
    model = SAMDecoderSegmentor(image_encoder=dict(type='MetaSAMViTEncoder', arch='tiny'),
                                embedding_cache=dict(cache_dir=str(tmp_path)))
    _count_encoded_images(model.image_encoder)
    return model


def test_cache_store_and_load(tmp_path):
    cache = EmbeddingCache(str(tmp_path))
    embedding = np.random.default_rng(0).standard_normal((4, 2, 2)).astype(np.float32)
    key = image_content_hash(_image())
    assert cache.load('f' * 40, key) is None and cache.misses == 1
    path = cache.save('f' * 40, key, 'identity', embedding)
    loaded = cache.load('f' * 40, key)
    assert loaded.dtype == np.float16 and cache.hits == 1
    np.testing.assert_array_equal(loaded, embedding.astype(np.float16))
    assert cache.load('f' * 40, key, 'hflip') is None  # views are separate entries
    assert cache.load('e' * 40, key) is None  # other encoder weights: other entries
    assert list(path.parent.iterdir()) == [path]  # atomic writes leave no temporary file
    cache.save('e' * 40, key, 'identity', embedding)
    assert cache.prune_stale('e' * 40) == 1
    assert cache.load('f' * 40, key) is None and cache.load('e' * 40, key) is not None


def test_image_hash_and_views():
    image = _image()
    assert image_content_hash(image) == image_content_hash(image.copy())
    assert image_content_hash(image) != image_content_hash(image[:, ::-1])
    assert image_content_hash(image) != image_content_hash(image.reshape(64, 48, 3))
    np.testing.assert_array_equal(apply_view(image, 'rot90'), np.rot90(image))
    with pytest.raises(ValueError, match='unknown view'):
        apply_view(image, 'shear')


def test_module_fingerprint_tracks_every_kind_of_change():
    layer = torch.nn.Linear(3, 2)
    original = {k: v.clone() for k, v in layer.state_dict().items()}
    fingerprint = ModuleFingerprint(layer, extra='x')
    first = fingerprint.value()
    assert fingerprint.value() == first
    assert ModuleFingerprint(layer, extra='y').value() != first
    with torch.no_grad():
        layer.weight.add_(1.0)  # in-place: version counter
    second = fingerprint.value()
    assert second != first
    layer.weight.data.copy_(layer.weight.data + 1.0)  # no version bump: sampled values
    third = fingerprint.value()
    assert third not in (first, second)
    layer.load_state_dict(original)
    assert fingerprint.value() == first  # same weights, same fingerprint


def test_segmentor_hit_miss_and_invalidation(tmp_path):
    model = _segmentor(tmp_path)
    encoder = model.image_encoder
    images = [_image(0), _image(1)]
    first = model.image_embeddings(images)
    assert encoder.calls == 2 and model.embedding_cache.misses == 2
    again = model.image_embeddings(images)
    assert encoder.calls == 2 and model.embedding_cache.hits == 2
    torch.testing.assert_close(first, again, rtol=0, atol=0)

    model.embedding_cache, cache = None, model.embedding_cache
    fresh = model.image_embeddings(images)  # no cache: encoder output, not fp16-rounded
    model.embedding_cache = cache
    torch.testing.assert_close(first, fresh.half().float(), rtol=0, atol=0)

    model.image_embeddings([images[0]], ['rot90'])
    assert encoder.calls == 5  # the rot90 view is its own entry
    torch.testing.assert_close(model.image_embeddings([images[0]], ['rot90']),
                               model.image_embeddings([np.rot90(images[0]).copy()]))

    with torch.no_grad():
        encoder.neck[0].weight.mul_(2.0)  # encoder weights change
    calls = encoder.calls
    changed = model.image_embeddings(images)
    assert encoder.calls == calls + 2  # stale entries are not used
    assert not torch.equal(changed, first)
    model.embedding_cache = None
    torch.testing.assert_close(changed, model.image_embeddings(images).half().float(),
                               rtol=0, atol=0)


def test_training_and_prediction_read_the_cache(tmp_path):
    from mmengine.structures import PixelData

    from mmseg.structures import SegDataSample

    model = _segmentor(tmp_path)
    image = _image(0, (32, 32))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    inputs = torch.from_numpy(image).permute(2, 0, 1)[None].float()

    def sample():
        s = SegDataSample(metainfo=dict(img_shape=(32, 32), ori_shape=(32, 32),
                                        cam=mask.astype(np.float32), initial_mask=mask,
                                        patch_name='p'))
        s.gt_sem_seg = PixelData(data=torch.from_numpy(mask)[None].long())
        return s

    model.loss(inputs, [sample()])
    assert model.image_encoder.calls == 1
    model.predict(inputs, [sample()])
    model.loss(inputs, [sample()])
    assert model.image_encoder.calls == 1 and model.embedding_cache.hits == 2
