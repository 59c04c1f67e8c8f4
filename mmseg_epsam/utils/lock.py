"""One run per work dir: an ``fcntl`` advisory lock with its holder written in the file.

``<work_dir>/.lock`` holds ``pid=<pid> host=<host> started=<UTC time>`` of the run that
holds it. The kernel releases an ``flock`` when its process dies (even by ``kill -9``), so
a lock file whose lock can be taken is stale: its recorded holder is reported and the lock
is taken over. A lock that is held makes a second run stop at once, naming the holder.
"""
import fcntl
import os
import os.path as osp
import socket
import time
from typing import Optional

LOCK_NAME = '.lock'


class WorkDirLocked(RuntimeError):
    """Another live run holds the work dir's lock."""


class WorkDirLock:
    """Exclusive, non-blocking lock on a work dir; use as a context manager.

    Args:
        work_dir: the folder to lock (created if missing).

    Attributes:
        stale_holder: after :meth:`acquire`, the holder recorded by a run that died without
            releasing the lock (None when the file was new or released cleanly).
    """

    def __init__(self, work_dir: str) -> None:
        self.path = osp.join(osp.abspath(work_dir), LOCK_NAME)
        self.stale_holder: Optional[str] = None
        self._fd: Optional[int] = None

    def acquire(self) -> 'WorkDirLock':
        """Take the lock or raise :class:`WorkDirLocked` naming the holder."""
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            holder = holder or 'holder unknown'
            raise WorkDirLocked(
                f'{osp.dirname(self.path)} is in use by another run ({holder}; lock file '
                f'{self.path}). Wait for it to finish, or use another --work-dir.') from None
        previous = _read_holder(fd)
        self.stale_holder = previous or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_text().encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the holder record and release the lock (idempotent)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> 'WorkDirLock':
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder_text() -> str:
    """``pid=... host=... started=...`` of this process."""
    started = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    return f'pid={os.getpid()} host={socket.gethostname()} started={started}\n'


def _read_holder(fd: int) -> str:
    """The holder line recorded in an open lock file ('' when empty)."""
    return os.pread(fd, 4096, 0).decode('utf-8', 'replace').strip()
