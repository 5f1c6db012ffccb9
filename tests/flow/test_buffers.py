"""BufferPool: record arrays reuse memory only once nothing refers to it."""
from __future__ import annotations

import sys
import threading
import time
import types

import numpy as np
import pytest

from kzfilter.flow import buffers
from kzfilter.flow.buffers import BufferPool


def _address(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


def test_a_dropped_buffer_is_reused():
    pool = BufferPool()
    a = pool.take(1 << 20)
    first = _address(a)
    del a
    b = pool.take(1 << 20)
    assert _address(b) == first
    assert (pool.made, pool.reused) == (1, 1)


def test_a_buffer_in_use_is_not_handed_out_again():
    pool = BufferPool()
    held = pool.take(1 << 20).view(np.int64)[10:20]   # a view of a view keeps the buffer
    held[:] = 7
    other = pool.take(1 << 20)
    other[:] = 0xFF
    assert (held == 7).all()
    assert pool.made == 2 and pool.reused == 0


def test_a_buffer_serves_only_requests_near_its_size():
    pool = BufferPool()
    big = pool.take(8 << 20)
    del big
    small = pool.take(1 << 20)       # would waste 7/8 of the big buffer: a buffer of its own
    assert pool.made == 2 and len(small) == 1 << 20


def test_small_requests_bypass_the_pool():
    pool = BufferPool()
    x = pool.take(1000)
    assert len(x) == 1000 and len(pool) == 0 and pool.made == 0


def test_the_pool_keeps_at_most_max_buffers_and_never_loses_held_data():
    pool = BufferPool(max_buffers=2)
    held = []
    for i in range(5):
        arr = pool.take((1 << 20) + i * 4096)
        arr[:] = i
        held.append(arr)
        assert len(pool) <= 2
    for i, arr in enumerate(held):
        assert (arr == i).all()
    del held
    pool.take(1 << 20)
    assert pool.reused == 1


def test_max_buffers_is_checked():
    with pytest.raises(ValueError):
        BufferPool(0)


def test_threads_never_share_a_buffer(monkeypatch):
    pool = BufferPool(max_buffers=8)
    errors: list[str] = []
    real = sys.getrefcount

    def getrefcount_then_yield(obj):
        # as sys.getrefcount seen from the pool (this frame holds one more reference), then let
        # another thread run: right between finding a free buffer and handing it out
        count = real(obj) - 1
        time.sleep(0.0002)
        return count

    monkeypatch.setattr(buffers, "sys", types.SimpleNamespace(getrefcount=getrefcount_then_yield))

    def work(k: int) -> None:
        for i in range(40):
            arr = pool.take(300_000 + 4096 * (i % 3))
            arr[:] = k
            time.sleep(0.0002)
            if not (arr == k).all():
                errors.append(f"thread {k}: buffer overwritten at step {i}")
                return
            del arr

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.reused > 0


def test_pooled_runs_give_the_records_of_unpooled_runs(monkeypatch, tmp_path):
    """One worker and two threads with every record array pooled: batches kept stay intact, and
    batches dropped as they come (their buffers then reused) give the same records."""
    from kzfilter import classify as classify_mod
    from kzfilter import threaded
    from kzfilter.rules.loaders import load_rules
    from tests.conftest import DEMO_RULES, write_synthetic_capture

    monkeypatch.setattr(classify_mod, "CHUNK_FRAMES", 500)     # many chunks,
    monkeypatch.setattr(threaded, "BATCH_FRAMES", 100)         # many batches
    monkeypatch.setattr(threaded, "MIN_BATCH_BYTES", 1)
    clf = load_rules(*DEMO_RULES).compile()
    capture = str(write_synthetic_capture(tmp_path, 6000, concurrent=100))
    # short timeouts: flows end all along the capture, so that most chunks hand records over
    options = dict(idle_timeout=0.01, udp_idle_timeout=0.01, close_grace=0.001,
                   sweep_interval=0.001)
    def rows(batch):
        return [r.as_dict() for r in batch]

    reference = [row for b in clf.classify(capture, **options).batches() for row in rows(b)]
    assert len(reference) > 100
    pools: list[BufferPool] = []
    init = BufferPool.__init__

    def tracked(self, *args, **kwargs):
        init(self, *args, **kwargs)
        pools.append(self)

    monkeypatch.setattr(BufferPool, "__init__", tracked)
    monkeypatch.setattr(buffers, "MIN_POOLED", 1)              # pool the small arrays too
    monkeypatch.setattr(buffers, "GRAIN", 1)
    monkeypatch.setattr(buffers, "MAX_SLACK", 4.0)
    for workers in (1, 2):
        held = list(clf.classify(capture, workers=workers, **options).batches())   # all in use
        streamed = [row for b in clf.classify(capture, workers=workers, **options).batches()
                    for row in rows(b)]
        assert [row for b in held for row in rows(b)] == reference
        assert streamed == reference
    assert len(held) > 5
    assert sum(p.reused for p in pools) > 0
