"""Stubs for the compiled flow table (``_table.pyx``)."""
from typing import Any, Iterable

from kzfilter.flow.records import RecordBatch
from kzfilter.packet._capture import CaptureReader

FLOW_STRUCT_SIZE: int   # sizeof(flow_t): bytes per flow outside reassembly buffers and names
RECORD_SIZE: int        # sizeof(rec_t) == RECORD_DTYPE.itemsize

class StreamBuffer:
    """Reassembly buffer of a stream's first bytes (exposed for tests)."""
    def __init__(self, limit: int = ...) -> None: ...
    def add(self, offset: int, data: bytes | bytearray | memoryview) -> bool: ...
    def prefix(self) -> bytes: ...
    @property
    def has_gap(self) -> bool: ...
    @property
    def dropped(self) -> int: ...

class FlowTable:
    """Flow table; counters keys: packets, bytes (wire), packets_attributed, skipped_truncated,
    skipped_malformed, skipped_unsupported_link, skipped_fragment, skipped_not_ip, skipped_other,
    flows, flows_active, flows_evicted, flows_idle, flows_active_timeout, records, names_sni,
    names_quic, names_http, names_dns_query, names_dns_answer, quic_initials, quic_failed,
    gquic_hellos,
    reasm_dropped, reasm_alloc_failed, dns_answers_stored, dns_answers_evicted,
    dns_answers_dropped, dns_assoc_entries, alloc_failed.

    Sharding (``shard_count`` > 1): the table keeps only the flows whose symmetric key hash falls
    to ``shard_index``; other frames still drive its clock and feed its DNS-answer table.  Counters
    add up over shards (frames of no flow and DNS-answer counters come from shard 0 only).
    ``flow_id`` is the ordinal of the flow's first frame among all frames the table has read."""
    capture_name: str
    def __init__(self, max_flows: int = 1_000_000, idle_timeout: float = 300.0,
                 active_timeout: float = 1800.0, udp_idle_timeout: float = 120.0,
                 reasm_limit: int = 16384, dns_assoc: bool = True, capture_name: str = "",
                 close_grace: float = 2.0, sweep_interval: float = 1.0,
                 dns_assoc_max: int = 1_000_000, shard_count: int = 1,
                 shard_index: int = 0) -> None: ...
    def process_reader(self, reader: CaptureReader, capture_name: str | None = None,
                       max_frames: int = 0) -> int: ...
    def process_frame(self, ts_ns: int, data: bytes | bytearray | memoryview, linktype: int = 1,
                      wirelen: int | None = None) -> None: ...
    def process_frames(self, frames: Iterable[tuple[Any, ...]], linktype: int = 1) -> int: ...
    def process_dispatched(self, dispatch: FrameDispatch, slot: int) -> int: ...
    def expire(self, now_ns: int) -> None: ...
    def flush(self) -> None: ...
    def take_records(self) -> RecordBatch: ...
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def flows_active(self) -> int: ...
    @staticmethod
    def flow_struct_size() -> int: ...


class FrameDispatch:
    """One read of a mapped capture, dissected once, as per-shard events (see _table.pyx)."""
    nshards: int
    nslots: int
    def __init__(self, tables: Iterable[FlowTable], slots: int = 4) -> None: ...
    def fill(self, reader: CaptureReader, slot: int, max_frames: int) -> int: ...
    @property
    def frames_read(self) -> int: ...
