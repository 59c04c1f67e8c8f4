"""BackgroundWriter: order, bounded queue, flush, and errors raised in the caller."""
import threading

import pytest

from mmseg_epsam.utils.background import BackgroundWriter


def test_jobs_run_in_order_and_flush_waits_for_them():
    done = []
    with BackgroundWriter(max_pending=2) as writer:
        for i in range(20):
            writer.submit(done.append, i)
        writer.flush()
        assert done == list(range(20))
        writer.submit(done.append, 20)
    assert done == list(range(21))
    with pytest.raises(RuntimeError, match='after close'):
        writer.submit(done.append, 21)


def test_the_queue_is_bounded():
    release = threading.Event()
    writer = BackgroundWriter(max_pending=1)
    writer.submit(release.wait)       # taken by the thread, blocks it
    writer.submit(lambda: None)       # fills the queue
    third = threading.Thread(target=writer.submit, args=(lambda: None, ))
    third.start()
    third.join(timeout=0.3)
    assert third.is_alive()           # submit waits for room
    release.set()
    third.join(timeout=5)
    assert not third.is_alive()
    writer.close()


def test_an_error_is_raised_in_the_caller_and_later_jobs_are_dropped():
    done = []

    def fail():
        raise OSError('disk full')

    writer = BackgroundWriter()
    writer.submit(done.append, 1)
    writer.submit(fail)
    writer.submit(done.append, 2)
    with pytest.raises(OSError, match='disk full'):
        writer.flush()
    assert done == [1]
    with pytest.raises(OSError, match='disk full'):
        writer.submit(done.append, 3)
    with pytest.raises(OSError, match='disk full'):
        writer.close()
    assert done == [1]
    with pytest.raises(ValueError, match='max_pending'):
        BackgroundWriter(max_pending=0)
