"""On-disk cache of SAM image embeddings (docs/method.md §5).

SAM's image encoder is frozen, so the embedding of an image never changes while its weights
do not: encode each image (and each cached augmentation view) once, store the embedding in
float16, and train the mask decoder, generate pseudo-labels and evaluate from the cache.

Key = (encoder fingerprint, image content hash, view). Layout::

    <cache_dir>/<encoder fingerprint[:16]>/encoder.txt          full fingerprint
    <cache_dir>/<encoder fingerprint[:16]>/<h[:2]>/<h>.<view>.npy   float16 CxHxW

The fingerprint is a SHA-1 over the encoder's parameters and buffers (names, shapes, dtypes,
bytes) plus a description of the preprocessing, so entries written under other weights live
in another folder and are never read (``prune_stale`` deletes them). ``ModuleFingerprint``
recomputes the hash whenever a parameter changes: each call compares a cheap signature
(tensor identity, storage pointer, in-place version counter and a strided sample of values)
and re-hashes on any difference. Writes are atomic (temporary file + ``os.replace``), so
concurrent writers (several ranks) and interrupted runs leave no partial entry.

Each entry is the ``.npy`` payload followed by the hex SHA-1 of that payload (40 bytes,
which ``np.load`` ignores). Loading checks the checksum, the dtype and that every value is
finite; an entry that fails (truncated, overwritten, NaN) is a miss, with a warning naming
the file, and the caller's recomputed embedding replaces it.
"""
from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from mmengine.logging import MMLogger

from mmseg_epsam.utils.io import write_bytes, write_text

CHECKSUM_BYTES = 40  # hex SHA-1 of the .npy payload, appended to each entry

#: Cached augmentation views: name -> function on an HxW[xC] array (numpy).
VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'identity': lambda a: a,
    'hflip': lambda a: a[:, ::-1],
    'vflip': lambda a: a[::-1],
    'rot90': lambda a: np.rot90(a, 1),
    'rot180': lambda a: np.rot90(a, 2),
    'rot270': lambda a: np.rot90(a, 3),
}


def apply_view(array: np.ndarray, view: str) -> np.ndarray:
    """Apply a named view (see ``VIEWS``) to an HxW or HxWxC array; returns a contiguous copy."""
    if view not in VIEWS:
        raise ValueError(f'unknown view {view!r}; choose from {sorted(VIEWS)}')
    return np.ascontiguousarray(VIEWS[view](array))


def image_content_hash(image: np.ndarray) -> str:
    """SHA-1 of an image's shape, dtype and pixel bytes (hex)."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha1(f'{image.shape}|{image.dtype.str}|'.encode())
    digest.update(memoryview(image).cast('B'))
    return digest.hexdigest()


class ModuleFingerprint:
    """SHA-1 of a module's parameters and buffers, recomputed whenever they change.

    Args:
        module: the module to fingerprint (SAM's image encoder).
        extra: text folded into the hash (e.g. the preprocessing settings).
    """

    _SAMPLES = 64

    def __init__(self, module: nn.Module, extra: str = '') -> None:
        self.module = module
        self.extra = extra
        self._signature: Optional[tuple] = None
        self._value: Optional[str] = None

    def _tensors(self) -> list[tuple[str, torch.Tensor]]:
        named = list(self.module.named_parameters()) + list(self.module.named_buffers())
        return sorted(named, key=lambda item: item[0])

    @torch.no_grad()
    def _signature_now(self) -> tuple:
        tensors = self._tensors()
        samples = [t.detach().reshape(-1)[::max(1, t.numel() // self._SAMPLES)].double().sum()
                   for _, t in tensors]
        sampled = torch.stack(samples).tolist() if samples else []
        return tuple((name, id(t), t.data_ptr(), t._version, tuple(t.shape), str(t.dtype), s)
                     for (name, t), s in zip(tensors, sampled))

    @torch.no_grad()
    def value(self) -> str:
        """The current fingerprint (hex); cheap when the weights have not changed."""
        signature = self._signature_now()
        if signature != self._signature:
            digest = hashlib.sha1(self.extra.encode())
            for name, tensor in self._tensors():
                flat = tensor.detach().cpu().contiguous().reshape(-1)
                digest.update(f'|{name}|{tuple(tensor.shape)}|{tensor.dtype}|'.encode())
                digest.update(memoryview(flat.view(torch.uint8).numpy()))
            self._value = digest.hexdigest()
            self._signature = signature
        return self._value


def encode_entry(embedding: np.ndarray) -> bytes:
    """An embedding as float16 ``.npy`` bytes followed by their hex SHA-1."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(embedding, dtype=np.float16), allow_pickle=False)
    payload = buffer.getvalue()
    return payload + hashlib.sha1(payload).hexdigest().encode()


def decode_entry(data: bytes, source: str) -> np.ndarray:
    """The embedding of an entry's bytes; ``ValueError`` naming ``source`` when the checksum,
    dtype or finiteness check fails."""
    payload, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    if len(data) <= CHECKSUM_BYTES or hashlib.sha1(payload).hexdigest().encode() != checksum:
        raise ValueError(f'{source}: embedding cache entry fails its checksum (empty, '
                         'truncated or overwritten)')
    embedding = np.load(io.BytesIO(payload), allow_pickle=False)
    if embedding.dtype != np.float16 or not np.isfinite(embedding).all():
        raise ValueError(f'{source}: embedding cache entry is not finite float16 '
                         f'({embedding.dtype})')
    return embedding


class EmbeddingCache:
    """Image embeddings on disk in float16, keyed by encoder fingerprint, image hash and view.

    Args:
        cache_dir: root folder (created on first write).

    Attributes:
        hits, misses: counters since construction (or :meth:`reset_counters`).
    """

    def __init__(self, cache_dir: str) -> None:
        self.cache_dir = Path(cache_dir)
        self.hits = 0
        self.misses = 0

    def reset_counters(self) -> None:
        """Set ``hits`` and ``misses`` to 0."""
        self.hits = self.misses = 0

    def _encoder_dir(self, encoder_fingerprint: str) -> Path:
        return self.cache_dir / encoder_fingerprint[:16]

    def path_for(self, encoder_fingerprint: str, image_hash: str, view: str) -> Path:
        """Where the embedding of (encoder, image, view) is stored."""
        if view not in VIEWS:
            raise ValueError(f'unknown view {view!r}; choose from {sorted(VIEWS)}')
        return (self._encoder_dir(encoder_fingerprint) / image_hash[:2] /
                f'{image_hash}.{view}.npy')

    def load(self, encoder_fingerprint: str, image_hash: str,
             view: str = 'identity') -> Optional[np.ndarray]:
        """The cached float16 embedding, or None (counted as a miss) when absent or unreadable."""
        path = self.path_for(encoder_fingerprint, image_hash, view)
        recorded = self._encoder_dir(encoder_fingerprint) / 'encoder.txt'
        try:
            if recorded.read_text().strip() != encoder_fingerprint:
                raise FileNotFoundError(recorded)  # fingerprint prefix collision: not ours
            embedding = decode_entry(path.read_bytes(), str(path))
        except FileNotFoundError:
            self.misses += 1
            return None
        except (ValueError, OSError) as exc:
            MMLogger.get_current_instance().warning(f'{exc}; recomputing this embedding')
            self.misses += 1
            return None
        self.hits += 1
        return embedding

    def save(self, encoder_fingerprint: str, image_hash: str, view: str,
             embedding: np.ndarray) -> Path:
        """Store an embedding as float16, atomically; returns its path."""
        encoder_dir = self._encoder_dir(encoder_fingerprint)
        recorded = encoder_dir / 'encoder.txt'
        if not recorded.exists():
            write_text(str(recorded), encoder_fingerprint)
        path = self.path_for(encoder_fingerprint, image_hash, view)
        write_bytes(str(path), encode_entry(embedding))
        return path

    def prune_stale(self, encoder_fingerprint: str) -> int:
        """Delete the entries of every other encoder fingerprint; returns how many folders."""
        keep = self._encoder_dir(encoder_fingerprint)
        removed = 0
        if self.cache_dir.is_dir():
            for folder in self.cache_dir.iterdir():
                if folder.is_dir() and folder != keep and (folder / 'encoder.txt').exists():
                    shutil.rmtree(folder)
                    removed += 1
        return removed

