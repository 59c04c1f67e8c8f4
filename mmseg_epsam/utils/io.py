"""Atomic file output: write to a temporary file beside the target, then rename."""
import os
import os.path as osp
import tempfile
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def atomic_write(path: str, suffix: str = '') -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success rename it onto ``path``.

    A stopped run never leaves a half-written ``path``: either the old file (or none) or
    the complete new one. ``suffix`` keeps the extension for writers that infer the format
    from it (``cv2.imwrite``, ``np.save``).
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        prefix='.' + osp.basename(path) + '.tmp.', suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise
