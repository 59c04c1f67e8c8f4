"""Atomic, durable file output: every writer of the project goes through this module.

A file is written to a temporary name beside its target, flushed to disk (``fsync``),
given the permissions a plain ``open`` would give under the user's umask (``mkstemp``
alone creates 0600, which other accounts on a shared server cannot read), renamed onto the
target, and the folder is fsynced so the rename itself survives a crash. A stopped or
crashed run therefore leaves either the old file (or none) or the complete new one, never
a zero-length or half-written file under the final name.

PNG writers take an explicit channel order: OpenCV encodes BGR, while slide readers and
PIL give RGB; ``write_png(..., channel_order='rgb')`` converts, ``'bgr'`` writes as is.
"""
import io
import json
import os
import os.path as osp
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import cv2
import numpy as np

CHANNEL_ORDERS = ('bgr', 'rgb')
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def fsync_dir(folder: str) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str, suffix: str = '') -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success publish it as ``path``.

    Publishing fsyncs the file, sets its mode to ``0o666 & ~umask``, renames it onto
    ``path`` and fsyncs the folder. On any error the temporary file is removed and the
    previous ``path`` (if any) is untouched. ``suffix`` keeps the extension for writers
    that infer the format from it (``cv2.imwrite``, ``np.save``).
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        prefix='.' + osp.basename(path) + '.tmp.', suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp_path
        if not osp.isfile(tmp_path):
            raise OSError(f'{path}: the writer removed its temporary file {tmp_path}')
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
        fsync_dir(folder)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    with atomic_write(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines written as given)."""
    write_bytes(path, text.encode('utf-8'))


def write_json(path: str, obj, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as UTF-8 JSON with a final newline, atomically.

    Values JSON cannot hold (paths, numpy scalars) are written as their ``str``.
    """
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + '\n')


def write_npy(path: str, array: np.ndarray) -> None:
    """Save ``array`` in ``.npy`` format (no pickles) atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    write_bytes(path, buffer.getvalue())


def write_png(path: str, image: np.ndarray, channel_order: str,
              compression: Optional[int] = None) -> None:
    """Encode a uint8 image (``HxW`` grey or ``HxWx3``) as PNG and write it atomically.

    Args:
        path: the target file.
        image: the pixels; a grey image ignores ``channel_order``.
        channel_order: ``'bgr'`` (OpenCV arrays) or ``'rgb'`` (slide readers, PIL).
        compression: zlib level 0-9 (None: OpenCV's default).
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f'channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}')
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f'{path}: expected a uint8 HxW or HxWx3 image, got {image.dtype} '
                         f'{image.shape}')
    if image.ndim == 3 and channel_order == 'rgb':
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]
    ok, encoded = cv2.imencode('.png', image, params)
    if not ok:
        raise OSError(f'{path}: PNG encoding failed for an image of shape {image.shape}')
    write_bytes(path, encoded.tobytes())
