"""Several workers give exactly the one-worker records (kzfilter.parallel, kzfilter.threaded,
FlowTable sharding and FrameDispatch).

References: the one-process pipeline (``workers=1``), and for the shard property the unsharded
FlowTable fed the same frames.  A capture split by flow runs both ways: flow-table threads over one
read of the capture (the default) and processes that each read it whole (``split="processes"``).  Real captures: every nDPI capture, the demo capture, and a
synthetic capture written by tools/gen_captures.py; all without eviction (``max_flows`` is per
worker, so eviction may legitimately differ).
"""
from __future__ import annotations

import gzip
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzfilter import classify as classify_mod
from kzfilter import threaded as threaded_mod
from kzfilter.errors import CaptureError
from kzfilter.flow._table import FlowTable, FrameDispatch, RecordChunk
from kzfilter.packet._capture import CaptureReader
from kzfilter.flow.records import RECORD_DTYPE, RecordBatch
from kzfilter.parallel import merge_sorted, parallel_batches
from kzfilter.rules.loaders import load_rules
from tests.conftest import DEMO, shared_path, write_synthetic_capture
from tests.flow.frames import ACK, FIN, NS, RST, SYN, dns_message, tcp, udp

FAST = dict(idle_timeout=0.01, udp_idle_timeout=0.01, close_grace=0.002, sweep_interval=0.001)


@pytest.fixture(scope="module")
def clf(demo_clf):
    return demo_clf


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic_capture(tmp_path_factory.mktemp("syn"), 12000, concurrent=300)


@pytest.fixture(scope="module")
def ndpi() -> list[Path]:
    root = shared_path("pcaps", "ndpi")
    paths = sorted(p for p in root.iterdir() if ".pcap" in p.name)
    assert len(paths) > 100
    return paths


def _frame(result) -> pd.DataFrame:
    return result.to_pandas()


SPLITS = ["threads", "processes"]


@pytest.fixture(params=SPLITS)
def split(request, monkeypatch):
    """Run the test with captures split by flow over threads, then over processes."""
    monkeypatch.setenv("KZFILTER_SPLIT", request.param)
    return request.param


def _run(clf, paths, workers, shard=None, split=None, **options):
    result = clf.classify(paths, workers=workers, **options)
    if shard is None and split is None:
        batches = list(result.batches())
    else:
        batches = list(parallel_batches(result, workers, shard=shard, split=split))
    return RecordBatch.concat(batches).to_pandas(), result.counters


def _split_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kzfilter-split")]


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b)
    pd.testing.assert_frame_equal(a, b)


# -- processes on real captures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def ndpi_clf(tmp_path_factory):
    """Domains that occur in the nDPI captures, so that verdicts are part of the comparison."""
    path = tmp_path_factory.mktemp("rules") / "domains.txt"
    path.write_text("google.com\nfacebook.com\nntop.org\ngithub.com\nwhatsapp.net\n")
    return load_rules(str(path)).compile()


def test_many_files_and_sharded_equal_one_worker_on_ndpi(ndpi_clf, ndpi):
    clf = ndpi_clf
    ref, ref_counters = _run(clf, ndpi, 1)
    assert len(ref) > 1000 and ref["action"].notna().any()
    for workers, shard, split in ((2, None, None), (3, None, None), (2, True, "threads"),
                                  (3, True, "threads"), (2, True, "processes")):
        got, counters = _run(clf, ndpi, workers, shard, split)
        _assert_same(ref, got)
        assert counters == ref_counters, (workers, shard, split)


@pytest.mark.parametrize("workers", [2, 3])
def test_one_capture_split_by_flow_demo(clf, workers, split):
    ref, ref_counters = _run(clf, [DEMO], 1)
    # The demo has a flow named only by an earlier DNS answer: the cross-shard case.
    assert "dns-answer" in set(ref["name_source"]) and (ref["action"] == "block").any()
    got, counters = _run(clf, [DEMO], workers)
    _assert_same(ref, got)
    assert counters == ref_counters


@pytest.mark.parametrize("workers", [2, 3])
def test_synthetic_in_many_chunks(clf, synthetic, monkeypatch, workers, split):
    # Small chunks: every worker hands over records many times; the chunk-wise merge must still
    # give the one-worker order exactly.
    # The synthetic capture spans 0.1 s: short timeouts make flows finish all along it.
    monkeypatch.setattr(classify_mod, "CHUNK_FRAMES", 1000)
    ref, ref_counters = _run(clf, [synthetic], 1, **FAST)
    chunks = list(clf.classify([synthetic], **FAST).batches())
    assert len(chunks) > 5 and len(ref) > 300 and ref["flow_id"].is_unique
    assert {"idle", "fin", "end-of-capture"} <= set(ref["end_reason"])
    got, counters = _run(clf, [synthetic], workers, **FAST)
    _assert_same(ref, got)
    assert counters == ref_counters
    # Two captures with three workers: still split by flow, capture after capture.
    ref2, _ = _run(clf, [synthetic, DEMO], 1, **FAST)
    got2, _ = _run(clf, [synthetic, DEMO], 3, **FAST)
    _assert_same(ref2, got2)


def test_progress_counts_each_byte_once(clf, synthetic, split):
    size = synthetic.stat().st_size + DEMO.stat().st_size
    for workers, paths in ((1, [synthetic, DEMO]), (2, [synthetic, DEMO]), (3, [synthetic])):
        seen: list[int] = []
        list(clf.classify(paths, workers=workers, progress=seen.append).batches())
        expected = size if len(paths) == 2 else synthetic.stat().st_size
        assert sum(seen) == expected and min(seen) >= 0, workers


def test_progress_moves_while_threads_split_one_capture(clf, synthetic, monkeypatch):
    # Per chunk of frames, which ends with a batch of BATCH_BYTES (processes report what a shared
    # counter holds every POLL_S seconds).
    monkeypatch.setattr(classify_mod, "CHUNK_FRAMES", 2000)
    monkeypatch.setattr(threaded_mod, "BATCH_BYTES", 1 << 20)
    monkeypatch.setenv("KZFILTER_SPLIT", "threads")
    seen: list[int] = []
    list(clf.classify([synthetic], workers=2, progress=seen.append).batches())
    assert sum(seen) == synthetic.stat().st_size
    assert len([n for n in seen if n > 0]) >= 3 and max(seen) < synthetic.stat().st_size / 2


def _count_calls(monkeypatch, name: str) -> list[str]:
    """Patch Classifier.<name> (a method or classmethod) to record its calls in this process."""
    from kzfilter.match.classifier import Classifier

    calls: list[str] = []
    original = getattr(Classifier, name)
    if name == "load":
        func = original.__func__
        monkeypatch.setattr(Classifier, name, classmethod(lambda cls, path: calls.append(name) or func(cls, path)))
    else:
        monkeypatch.setattr(Classifier, name, lambda self, path: calls.append(name) or original(self, path))
    return calls


def test_forked_workers_inherit_the_classifier(clf, monkeypatch):
    # Nothing is saved or loaded: the workers start with the parent's compiled classifier.
    saves, loads = _count_calls(monkeypatch, "save"), _count_calls(monkeypatch, "load")
    monkeypatch.setenv("KZFILTER_MP_START", "fork")
    got, _ = _run(clf, [DEMO] * 6, 2)
    assert saves == [] and loads == []
    pd.testing.assert_frame_equal(got, _run(clf, [DEMO] * 6, 1)[0])


def test_spawned_workers_get_one_saved_rule_set(clf, monkeypatch):
    saves = _count_calls(monkeypatch, "save")
    monkeypatch.setenv("KZFILTER_MP_START", "spawn")
    got, _ = _run(clf, [DEMO] * 3, 2)
    assert saves == ["save"]
    pd.testing.assert_frame_equal(got, _run(clf, [DEMO] * 3, 1)[0])


def test_errors_reach_the_parent(clf, tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x00" * 64)
    for workers in (1, 2, 3):
        with pytest.raises(CaptureError, match="not a pcap"):
            list(clf.classify([DEMO, bad], workers=workers).batches())
    with pytest.raises(FileNotFoundError):
        list(clf.classify([DEMO, tmp_path / "missing.pcap"], workers=2).batches())
    assert mp.active_children() == []


def test_stopping_early_ends_the_workers(clf, synthetic, monkeypatch, split):
    monkeypatch.setattr(classify_mod, "CHUNK_FRAMES", 500)
    monkeypatch.setattr(threaded_mod, "BATCH_BYTES", 1 << 16)     # chunks end at batch ends
    gen = clf.classify([synthetic], workers=2, **FAST).batches()   # flows end all along it
    first = next(gen)
    assert len(first) > 0
    if split == "threads":
        assert _split_threads()
    gen.close()
    assert mp.active_children() == [] and _split_threads() == []


# -- flow-table threads over one read of a capture (kzfilter.threaded) ------------------------------

@pytest.mark.parametrize("batch, slots", [(997, 1), (4099, 2), (65536, 3), (1 << 20, 4)])
def test_threads_any_batch_and_slot_count(clf, synthetic, monkeypatch, batch, slots):
    # Batches smaller and larger than a chunk, one and several slots in flight: the hand-over
    # between reading and the shard threads must not change a record.
    monkeypatch.setattr(classify_mod, "CHUNK_FRAMES", 3000)
    monkeypatch.setattr(threaded_mod, "BATCH_BYTES", batch)
    monkeypatch.setattr(threaded_mod, "SLOTS", slots)
    ref, ref_counters = _run(clf, [synthetic], 1, **FAST)
    got, counters = _run(clf, [synthetic], 2, shard=True, split="threads", **FAST)
    _assert_same(ref, got)
    assert counters == ref_counters


def test_threads_read_real_captures_in_small_spans(ndpi_clf, ndpi, monkeypatch):
    # Batches of 2 KiB after a head of one frame: most batches of every nDPI capture are read by
    # a span from a guessed first record, then committed or read again: records and counters
    # stay those of one worker.
    monkeypatch.setattr(threaded_mod, "BATCH_BYTES", 2048)
    monkeypatch.setattr(threaded_mod, "HEAD_FRAMES", 1)
    ref, ref_counters = _run(ndpi_clf, ndpi, 1)
    got, counters = _run(ndpi_clf, ndpi, 2, True, "threads")
    _assert_same(ref, got)
    assert counters == ref_counters


@pytest.mark.parametrize("damage", ["garbage-header", "cut"])
def test_threads_on_a_damaged_capture(clf, synthetic, tmp_path, monkeypatch, damage):
    # A record header of garbage two thirds in (the reader stops there, with an error), or a
    # capture cut inside a record: spans read past the damage are dropped, and the records and
    # counters (error and truncation included) are those of one worker.
    data = bytearray(synthetic.read_bytes())
    with CaptureReader(str(synthetic)) as r:
        starts = []
        while not r.exhausted and len(starts) < 8000:
            starts.append(r.position)
            next(iter(r), None)
    at = starts[-1]                      # a record start about two thirds in (64 frames a step)
    if damage == "garbage-header":
        data[at + 8:at + 12] = (0x7FFFFFFF).to_bytes(4, "little")
    else:
        del data[at + 30:]
    path = tmp_path / f"{damage}.pcap"
    path.write_bytes(bytes(data))
    monkeypatch.setattr(threaded_mod, "BATCH_BYTES", 1 << 16)
    ref, ref_counters = _run(clf, [path], 1, **FAST)
    capture = ref_counters["capture"]
    assert (capture["error"] is not None) if damage == "garbage-header" else capture["truncated_records"] == 1
    got, counters = _run(clf, [path], 2, shard=True, split="threads", **FAST)
    _assert_same(ref, got)
    assert counters == ref_counters


def test_compressed_capture_falls_back_to_processes(clf, tmp_path):
    # A gzip capture cannot be mapped: the threads cannot share it, processes read it instead.
    gz = tmp_path / "demo.pcapng.gz"
    with open(DEMO, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert threaded_mod.threaded_file(clf, str(gz), 2, False, {}) is None
    ref, ref_counters = _run(clf, [gz], 1)
    got, counters = _run(clf, [gz], 2, shard=True, split="threads")
    _assert_same(ref, got)
    assert counters == ref_counters


def test_thread_errors_reach_the_caller(clf, synthetic, monkeypatch):
    class Failing(FrameDispatch):
        calls = 0

        def read_span(self, reader, slot, at, stop, exact=False):
            Failing.calls += 1
            if Failing.calls == 3:
                raise MemoryError("no room for the events")
            return super().read_span(reader, slot, at, stop, exact)

    monkeypatch.setattr(threaded_mod._table, "FrameDispatch", Failing)
    monkeypatch.setattr(threaded_mod, "BATCH_BYTES", 50000)
    with pytest.raises(MemoryError, match="no room"):
        list(clf.classify([synthetic], workers=2).batches())
    assert _split_threads() == []


def test_split_name_is_checked(clf):
    with pytest.raises(ValueError, match="split"):
        list(parallel_batches(clf.classify([DEMO], workers=2), 2, split="fibers"))


# -- the shard property on the flow table (no processes) -------------------------------------------

def _records(frames, **options) -> pd.DataFrame:
    table = FlowTable(**options)
    table.process_frames(frames)
    table.flush()
    return table.take_records(), table.counters


def _sharded(frames, n, **options):
    batches, counters = [], []
    for k in range(n):
        b, c = _records(frames, shard_count=n, shard_index=k, **options)
        batches.append(b)
        counters.append(c)
    total: dict[str, int] = {}
    for c in counters:
        for key, v in c.items():
            total[key] = total.get(key, 0) + v
    return batches, total


CLIENTS = ["100.64.0.1", "100.64.0.2", "2001:db8::1"]
SERVERS = ["192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::53"]


@st.composite
def traffic(draw):
    """A few flows (TCP/UDP, both directions, closes), DNS answers naming servers, time jumps
    forwards past the timeouts and backwards."""
    n = draw(st.integers(1, 40))
    frames, t = [], 0
    for _ in range(n):
        # Capture time also jumps backwards now and then (real captures do: nDPI steam.pcapng).
        t += draw(st.sampled_from([0, 1, 1000, NS, 50 * NS, 200 * NS, -30 * NS]))
        ci = draw(st.integers(0, len(CLIENTS) - 1))
        c = CLIENTS[ci]
        v6 = ":" in c
        servers = [s for s in SERVERS if (":" in s) == v6]
        s = draw(st.sampled_from(servers))
        cp = draw(st.sampled_from([40000, 40001, 40002]))
        kind = draw(st.sampled_from(["syn", "synack", "data", "fin", "rst", "udp", "dns"]))
        back = draw(st.booleans())
        if kind == "dns":
            ans = draw(st.sampled_from(servers))
            payload = dns_message("named.example", [(ans, draw(st.sampled_from([1, 300])))], response=True)
            frames.append((t, udp("8.8.8.8" if not v6 else "2001:db8::8", 53, c, 5353 if back else 33000, payload)))
            continue
        if kind == "udp":
            ends = (s, 443, c, cp) if back else (c, cp, s, 443)
            frames.append((t, udp(*ends, b"\xc0" + b"x" * 20)))
            continue
        flags = {"syn": SYN, "synack": SYN | ACK, "data": ACK, "fin": FIN | ACK, "rst": RST}[kind]
        payload = b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n" if kind == "data" and not back else b""
        if back:
            frames.append((t, tcp(s, 443, c, cp, flags, 5000, 1001, payload)))
        else:
            frames.append((t, tcp(c, cp, s, 443, flags, 1000, 5001, payload)))
    return frames


@settings(max_examples=150, deadline=None)
@given(traffic(), st.integers(2, 4))
def test_shards_partition_the_flows_exactly(frames, n):
    options = dict(idle_timeout=100.0, udp_idle_timeout=60.0, sweep_interval=1.0)
    ref, ref_counters = _records(frames, **options)
    shards, total = _sharded(frames, n, **options)
    # Disjoint flow sets whose union is the whole; merged on (emitted_ns, flow_id): identical.
    ids = [set(b.array["flow_id"].tolist()) for b in shards]
    assert sum(len(s) for s in ids) == len(ref)
    pd.testing.assert_frame_equal(merge_sorted(shards).to_pandas(), ref.to_pandas())
    assert total == ref_counters


@settings(max_examples=150, deadline=None)
@given(traffic(), st.integers(2, 4), st.integers(0, 40))
def test_swapped_chunks_merge_to_the_whole_table(frames, n, cut):
    """Shards hand their records over by swapping buffers (what the threads do): merged chunk by
    chunk in place, they are the whole table's take_records() at the same points, and the spare
    buffers given back serve the next chunk."""
    options = dict(idle_timeout=100.0, udp_idle_timeout=60.0, sweep_interval=1.0)
    whole = FlowTable(**options)
    shards = [FlowTable(shard_count=n, shard_index=k, **options) for k in range(n)]
    spares = [RecordChunk() for _ in range(n)]
    for part, last in ((frames[:cut], False), (frames[cut:], True)):
        whole.process_frames(part)
        for t in shards:
            t.process_frames(part)
        if last:
            whole.flush()
            for t in shards:
                t.flush()
        ref = whole.take_records()
        chunks = [t.swap_records(spare) for t, spare in zip(shards, spares)]
        assert sum(len(c) for c in chunks) == len(ref)
        assert all(len(t.take_records()) == 0 for t in shards)     # handed over, not copied
        merged = RecordBatch.merge_chunks(chunks)
        pd.testing.assert_frame_equal(merged.to_pandas(), ref.to_pandas())
        assert merged.names_packed()[0] == ref.names_packed()[0]
        for c in chunks:
            c.clear()
        spares = chunks


def test_swap_records_needs_an_empty_chunk():
    table = FlowTable()
    table.process_frames([(0, udp("10.0.0.1", 1, "10.0.0.2", 2, b"x"))])
    table.flush()
    full = table.swap_records(RecordChunk())
    assert len(full) == 1 and full.captures == [""]
    with pytest.raises(ValueError, match="empty"):
        FlowTable().swap_records(full)
    full.clear()
    assert len(FlowTable().swap_records(full)) == 0


@st.composite
def sorted_batch(draw, captures=("a.pcap", "b.pcap", "c.pcap")):
    """A RecordBatch sorted on (emitted_ns, flow_id) with names, ALPN, its own capture list and
    perhaps verdicts; small key ranges so that batches share keys."""
    keys = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 40)), max_size=30, unique=True))
    keys.sort()
    n = len(keys)
    arr = np.zeros(n, dtype=RECORD_DTYPE)
    own = draw(st.lists(st.sampled_from(captures), min_size=1, max_size=3, unique=True))
    names, alpn = bytearray(), bytearray()
    for i, (emitted, flow_id) in enumerate(keys):
        arr[i]["emitted_ns"], arr[i]["flow_id"] = emitted, flow_id
        arr[i]["packets_c2s"] = draw(st.integers(0, 1 << 40))
        arr[i]["capture_idx"] = draw(st.integers(0, len(own) - 1))
        for arena, field in ((names, "name"), (alpn, "alpn")):
            value = draw(st.binary(max_size=12))
            arr[i][field + "_off"], arr[i][field + "_len"] = len(arena), len(value)
            arena += value
    batch = RecordBatch(arr, bytes(names), bytes(alpn), own)
    if n and draw(st.booleans()):
        actions = draw(st.lists(st.sampled_from(["block", "allow", None]), min_size=n, max_size=n))
        batch.set_verdicts(actions, lists=[("list-%d" % i,) for i in range(n)])
    return batch


def _merge_model(batches):
    """The plain model: concatenate, then a stable sort on (emitted_ns, flow_id)."""
    both = RecordBatch.concat(batches)
    return both.take(np.lexsort((both.array["flow_id"], both.array["emitted_ns"])))


@settings(max_examples=200, deadline=None)
@given(st.lists(sorted_batch(), min_size=1, max_size=5))
def test_merge_is_a_stable_sort_of_the_concatenation(batches):
    merged = RecordBatch.merge(batches)
    model = _merge_model(batches)
    pd.testing.assert_frame_equal(merged.to_pandas(), model.to_pandas())
    # the arenas are packed in record order, as names_packed() assumes
    for field, arena in (("name", merged._names), ("alpn", merged._alpn)):
        arr = merged.array
        assert (arr[f"{field}_off"] == np.cumsum(arr[f"{field}_len"]) - arr[f"{field}_len"]).all()
        assert len(arena) == int(arr[f"{field}_len"].sum())
    assert merged.names_packed()[0] == model.names_packed()[0]
    assert merge_sorted(batches).to_pandas().equals(merged.to_pandas())


def test_merge_refuses_offsets_outside_a_batch():
    arr = np.zeros(2, dtype=RECORD_DTYPE)
    arr["flow_id"] = [1, 2]
    arr["name_len"] = [3, 5]
    arr["name_off"] = [0, 3]                      # the arena holds 6 bytes, not 8
    with pytest.raises(ValueError, match="batch 1"):
        RecordBatch.merge([RecordBatch(np.zeros(0, RECORD_DTYPE)), RecordBatch(arr, b"abcdef")])


def test_dns_answer_from_another_shard():
    # A DNS response (flow A) names server S for client C; a later TCP flow C -> S (flow B) has
    # no name of its own.  Pick ports so that A and B fall to different shards.
    c, s = "100.64.0.9", "192.0.2.77"
    answer = udp("8.8.8.8", 53, c, 33000, dns_message("blocked.example", [(s, 300)], response=True))
    for cport in range(40000, 40100):
        frames = [(0, answer), (NS, tcp(c, cport, s, 443, SYN, 1000))]
        shards, _ = _sharded(frames, 2)
        owner = [int(len(b) and (b.array["server_port"] == 443).any()) for b in shards]
        dns_owner = [int(len(b) and (b.array["server_port"] == 33000).any()) for b in shards]
        if owner != dns_owner:
            break
    else:
        pytest.fail("no port put the two flows in different shards")
    k = owner.index(1)
    rec = [r for r in shards[k] if r.server_port == 443][0]
    assert rec.name == "blocked.example" and rec.name_source == "dns-answer"


def test_flow_id_is_the_first_frame_ordinal():
    frames = [(0, udp("10.0.0.1", 1, "10.0.0.2", 2, b"x")), (1, b"\x00" * 5),  # a broken frame
              (2, udp("10.0.0.2", 2, "10.0.0.1", 1, b"y")), (3, udp("10.0.0.3", 1, "10.0.0.2", 2, b"z"))]
    ref, _ = _records(frames)
    assert sorted(ref.array["flow_id"].tolist()) == [0, 3]
    for n in (2, 3):
        shards, _ = _sharded(frames, n)
        assert sorted(np.concatenate([b.array["flow_id"] for b in shards]).tolist()) == [0, 3]


def test_shard_options_are_checked():
    for bad in (dict(shard_count=0), dict(shard_count=2, shard_index=2), dict(shard_index=-1)):
        with pytest.raises((ValueError, OverflowError)):
            FlowTable(**bad)


# -- FrameDispatch: one read of a capture, N shards (no threads) ------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from gen_captures import PcapngWriter, PcapWriter  # noqa: E402

BASE_NS = 1_700_000_000 * NS       # capture times must be positive; the traffic goes backwards too


def _write(directory: str, frames, fmt: str) -> str:
    path = os.path.join(directory, f"t.{fmt}")
    with open(path, "wb") as fh:
        writer = PcapWriter(fh) if fmt == "pcap" else PcapngWriter(fh)
        for t, frame in frames:
            writer.write(BASE_NS + t, frame)
    return path


def _read_whole(path: str, **options):
    table = FlowTable(**options)
    with CaptureReader(path) as reader:
        table.process_reader(reader)
        table.flush()
        return table.take_records(), table.counters, dict(reader.counters)


def _dispatched(path: str, n: int, batch: int, slots: int, **options):
    """Read ``path`` once through a FrameDispatch of ``slots`` slots, ``batch`` frames per fill,
    applying every slot to the N shard tables in turn (what kzfilter.threaded does in threads)."""
    tables = [FlowTable(shard_count=n, shard_index=k, **options) for k in range(n)]
    dispatch = FrameDispatch(tables, slots)
    with CaptureReader(path) as reader:
        slot = 0
        while True:
            got = dispatch.fill(reader, slot, batch)
            for t in tables:
                t.process_dispatched(dispatch, slot)
            slot = (slot + 1) % slots
            if got < batch:
                break
        assert dispatch.frames_read == reader.counters["frames"]
        return (*_flushed(tables), dict(reader.counters))


def _flushed(tables):
    """Every shard's records (flushed) and the shards' counters added up."""
    out = []
    for t in tables:
        t.flush()
        out.append(t.take_records())
    total: dict[str, int] = {}
    for t in tables:
        for key, v in t.counters.items():
            total[key] = total.get(key, 0) + v
    return out, total


def _assert_whole(shards, total, capture, ref, ref_counters, ref_capture):
    """The shards' records are disjoint, their union is the whole table's, merged they are its
    records in its order, and the counters add up to its counters."""
    ids = [set(b.array["flow_id"].tolist()) for b in shards]
    assert sum(len(s) for s in ids) == len(ref) and len(set().union(*ids)) == len(ref)
    pd.testing.assert_frame_equal(merge_sorted(shards).to_pandas(), ref.to_pandas())
    assert total == ref_counters and capture == ref_capture


@settings(max_examples=100, deadline=None)
@given(traffic(), st.integers(2, 4), st.integers(1, 7), st.integers(1, 3), st.sampled_from(["pcap", "pcapng"]))
def test_dispatched_shards_are_the_whole_table(frames, n, batch, slots, fmt):
    # Garbage frames too: counted by shard 0 only, as in the single table.
    frames = list(frames) + [(frames[-1][0], b"\x00" * 9)]
    options = dict(idle_timeout=100.0, udp_idle_timeout=60.0, sweep_interval=1.0)
    with tempfile.TemporaryDirectory() as d:
        path = _write(d, frames, fmt)
        ref, ref_counters, ref_capture = _read_whole(path, **options)
        shards, total, capture = _dispatched(path, n, batch, slots, **options)
    _assert_whole(shards, total, capture, ref, ref_counters, ref_capture)


BIG = 1 << 62


def _spanned(path: str, n: int, span: int, slots: int, backwards: bool, head: int = 1, **options):
    """Read ``path`` as kzfilter.threaded does, without threads: ``head`` frames through fill(),
    then batches of ``span`` bytes read as spans ``slots`` at a time (the last of them first when
    ``backwards``: no span knows where the one before it ended), committed in order, a batch not
    taken whole read on through fill(), each batch applied to the N shard tables in turn."""
    tables = [FlowTable(shard_count=n, shard_index=k, **options) for k in range(n)]
    dispatch = FrameDispatch(tables, slots)
    taken = {0: 0, 1: 0, 2: 0}
    with CaptureReader(path) as reader:
        dispatch.fill(reader, 0, head)
        for t in tables:
            t.process_dispatched(dispatch, 0)
        origin = reader.position
        nb = -(-(reader.size - origin) // span)
        b = 0
        while b < nb and not reader.exhausted:
            group = list(range(b, min(b + slots, nb)))
            bounds = {i: (origin + i * span, BIG if i == nb - 1 else origin + (i + 1) * span)
                      for i in group}
            for i in (reversed(group) if backwards else group):
                dispatch.read_span(reader, i - b, *bounds[i])
            for i in group:
                if reader.exhausted:
                    break
                rc = dispatch.commit(reader, i - b)
                taken[rc] += 1
                if rc != 1:
                    stop = bounds[i][1]
                    dispatch.fill(reader, i - b, BIG, None if stop == BIG else stop, rc == 2)
                for t in tables:
                    t.process_dispatched(dispatch, i - b)
            b += len(group)
        assert reader.exhausted and dispatch.frames_read == reader.counters["frames"]
        return (*_flushed(tables), dict(reader.counters), taken)


@settings(max_examples=100, deadline=None)
@given(traffic(), st.integers(2, 3), st.integers(1, 3000), st.integers(1, 4), st.booleans(),
       st.sampled_from(["pcap", "pcapng"]))
def test_spans_give_the_whole_table(frames, n, span, slots, backwards, fmt):
    # Byte ranges read out of order, from guessed first records (a span of 1 byte rarely holds a
    # record start; one of 3000 holds several): committed in order, they make the whole table.
    frames = list(frames) + [(frames[-1][0], b"\x00" * 9)]
    options = dict(idle_timeout=100.0, udp_idle_timeout=60.0, sweep_interval=1.0)
    with tempfile.TemporaryDirectory() as d:
        path = _write(d, frames, fmt)
        ref, ref_counters, ref_capture = _read_whole(path, **options)
        shards, total, capture, _ = _spanned(path, n, span, slots, backwards, **options)
    _assert_whole(shards, total, capture, ref, ref_counters, ref_capture)


def test_spans_are_taken_whole_on_a_real_capture_size(synthetic):
    # Spans of 64 KiB of a 13 MB capture, four at a time, the last first: nearly every guess
    # of a first record is right, so nearly no batch is read twice.
    options = dict(FAST)
    ref, ref_counters, ref_capture = _read_whole(str(synthetic), **options)
    shards, total, capture, taken = _spanned(str(synthetic), 2, 1 << 16, 4, True, **options)
    _assert_whole(shards, total, capture, ref, ref_counters, ref_capture)
    assert taken[1] >= 0.95 * sum(taken.values()) and taken[0] <= 2, taken


def _sections_capture(directory: str) -> str:
    """pcapng whose interfaces change along the file: a second interface (raw IP, nanosecond
    clock) appears after some packets, with an unknown block between packets; then a big-endian
    section starts over with one Ethernet interface, then a little-endian one whose interface 0
    is raw IP.  A span read before the reader read such a block must not be taken."""
    from tests.packet.test_capture import block, epb, idb, opt, shb

    out = [shb("<"), idb(1, 0, b"", "<")]
    t_us = 1_700_000_000 * 1_000_000
    for i in range(60):
        f = udp("10.0.0.1", 40000 + i % 7, "192.0.2.1", 53, dns_message("a.example", [("192.0.2.9", 60)], response=False))
        out.append(epb(0, t_us + i * 1000, f, e="<"))
    out.append(idb(101, 0, opt(9, bytes([9]), "<"), "<"))            # raw IP, nanoseconds
    for i in range(60):
        f = tcp("100.64.0.1", 50000 + i % 5, "192.0.2.77", 443, SYN if i % 5 == 0 else ACK, 1000 + i, 1)
        out.append(epb(1, (t_us + 60_000 + i * 1000) * 1000, f[14:], e="<"))
        if i == 30:
            out.append(block(0x0BAD, b"not a packet", "<"))
    out.append(shb(">"))
    out.append(idb(1, 0, b"", ">"))
    for i in range(60):
        f = tcp("100.64.0.2", 51000 + i % 3, "192.0.2.78", 80, ACK, 7 + i, 9, b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n")
        out.append(epb(0, t_us + 200_000 + i * 1000, f, e=">"))
    # A last section in the first byte order, whose interface 0 is raw IP: the same records read
    # with the first section's interfaces would be Ethernet frames.
    out.append(shb("<"))
    out.append(idb(101, 0, b"", "<"))
    for i in range(60):
        f = udp("100.64.0.3", 52000 + i % 4, "192.0.2.79", 443, b"\xc0" + b"q" * 40)
        out.append(epb(0, t_us + 300_000 + i * 1000, f[14:], e="<"))
    path = os.path.join(directory, "sections.pcapng")
    with open(path, "wb") as fh:
        fh.write(b"".join(out))
    return path


@pytest.mark.parametrize("span", [4, 97, 1500, 20000])
def test_spans_across_sections_and_interfaces(span):
    options = dict(idle_timeout=100.0, udp_idle_timeout=60.0, sweep_interval=0.01)
    with tempfile.TemporaryDirectory() as d:
        path = _sections_capture(d)
        ref, ref_counters, ref_capture = _read_whole(path, **options)
        assert ref_capture["skipped_blocks"] == 1 and len(ref) > 10
        for backwards in (True, False):
            shards, total, capture, taken = _spanned(path, 2, span, 3, backwards, **options)
            _assert_whole(shards, total, capture, ref, ref_counters, ref_capture)


def test_dispatch_checks_its_arguments(tmp_path):
    tables = [FlowTable(shard_count=2, shard_index=k) for k in range(2)]
    dispatch = FrameDispatch(tables, 2)
    with pytest.raises(ValueError, match="one table per shard"):
        FrameDispatch(tables[:1], 2)
    with CaptureReader(DEMO) as reader:
        with pytest.raises(IndexError):
            dispatch.fill(reader, 2, 10)
        dispatch.fill(reader, 0, 10)
    with pytest.raises(ValueError, match="shards"):
        FlowTable().process_dispatched(dispatch, 0)
    gz = tmp_path / "demo.pcapng.gz"
    gz.write_bytes(gzip.compress(DEMO.read_bytes()))
    with CaptureReader(gz) as reader, pytest.raises(ValueError, match="mapped"):
        dispatch.fill(reader, 1, 10)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_pipe_is_read_once_not_split(clf, tmp_path):
    # A pipe can be read only once: classified in this process (threads cannot map it, and
    # processes would each read a part of it); forcing processes is a clear error.
    ref, ref_counters = _run(clf, [DEMO], 1)
    fifo = tmp_path / "demo.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(DEMO.read_bytes())

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        got, counters = _run(clf, [fifo], 2)
    finally:
        writer.join()
    pd.testing.assert_frame_equal(got.drop(columns="capture"), ref.drop(columns="capture"))
    assert counters["flows"] == ref_counters["flows"]
    with pytest.raises(ValueError, match="not a regular file"):
        list(parallel_batches(clf.classify([fifo], workers=2), 2, shard=True, split="processes"))
