"""A background thread for file writes, so that encoding and disk I/O overlap the compute.

:class:`BackgroundWriter` runs submitted jobs in order on one thread, through a bounded
queue (a producer faster than the disk waits instead of piling results up in memory). The
first error of a job is raised in the caller's thread by the next ``submit``, ``flush`` or
``close`` (and every one after); the jobs after it are dropped, so nothing is written past
a failure.
"""
import queue
import threading
from typing import Callable, Optional


class BackgroundWriter:
    """Ordered background execution of write jobs with a bounded queue.

    Use as a context manager (``close`` on exit, which waits for the pending jobs), or call
    :meth:`flush` before reading back what was written.

    Args:
        max_pending: jobs that may wait in the queue before ``submit`` blocks.
        name: the thread's name (shown in tracebacks and debuggers).
    """

    def __init__(self, max_pending: int = 8, name: str = 'background-writer') -> None:
        if max_pending < 1:
            raise ValueError(f'max_pending must be at least 1, got {max_pending}')
        self._jobs: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: Optional[BaseException] = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    fn, args, kwargs = job
                    fn(*args, **kwargs)
            except BaseException as err:  # noqa: BLE001  (handed to the caller's thread)
                self._error = err
            finally:
                self._jobs.task_done()

    def _raise_error(self) -> None:
        if self._error is not None:  # sticky: every later call fails too
            raise self._error

    def submit(self, fn: Callable, *args, **kwargs) -> None:
        """Queue ``fn(*args, **kwargs)``; raises the error of an earlier job, if any."""
        if self._closed:
            raise RuntimeError('BackgroundWriter.submit after close')
        self._raise_error()
        self._jobs.put((fn, args, kwargs))

    def flush(self) -> None:
        """Wait until every queued job has run; raise the first error among them."""
        self._jobs.join()
        self._raise_error()

    def close(self) -> None:
        """Run the pending jobs, stop the thread and raise the first error (idempotent)."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
            self._thread.join()
        self._raise_error()

    def __enter__(self) -> 'BackgroundWriter':
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
            return
        # Leaving with an error: still finish the thread, but let the first error win.
        self._closed = True
        self._jobs.put(None)
        self._thread.join()
