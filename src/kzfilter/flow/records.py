"""Flow records: the schema, one record object, and a columnar batch of records.

A flow record describes one bidirectional flow: who started it (the *client*), what it carried
(packets and bytes each way), how it ended, and the host name it went to (or why none was found).
The verdict fields (``action``, ``category``, ``rule``, ``lists``, ``matched_on``) are empty here;
the classifier fills them in batch with :meth:`RecordBatch.set_verdicts`.

Conventions (a contract: other tools read these names):

* ``ts_start`` / ``ts_end`` are float seconds since the epoch (capture time of the first and last
  packet); ``ts_start_ns`` / ``ts_end_ns`` keep the exact nanoseconds.
* ``bytes_*`` count *frame wire lengths* (pcap ``orig_len``: the whole link-layer frame as it was on
  the wire, not just the captured part, not just the IP payload).
* ``rate_*_bps`` are bits per second over the flow duration (``bytes * 8 / duration``), 0 when the
  duration is 0 (a single-packet flow).
* ``name`` is the raw name as sent on the wire (SNI, QUIC SNI, HTTP Host without its ``:port``,
  DNS question name).  The batch keeps it as bytes (:meth:`RecordBatch.names_packed`); the Python
  ``str`` views decode it as ASCII with ``errors="replace"`` so a hostile byte can never raise.
  Normalisation for matching is the classifier's job.

``no_name_reason`` (None exactly when ``name`` is set):

========================  ========================================================================
``no-payload``            the client sent no payload at all (handshake only, scans, one-way server)
``unknown-protocol``      the client's first bytes are not TLS, HTTP, DNS or a QUIC Initial
``no-sni``                a complete TLS ClientHello (TCP or QUIC) without server_name
``ech-only``              a complete ClientHello with ECH/ESNI and no server_name at all
``no-host``               a complete HTTP request header block without Host
``reassembly-gap``        the flow ended while a hole in the client's first bytes was never filled
``reassembly-limit``      ``reasm_limit`` client bytes (or QUIC CRYPTO bytes) without a complete message
``truncated``             the flow ended inside the message (or the capture snapped the packets)
``malformed``             the message is recognised but inconsistent (bad length, bad field)
``quic-unknown-version``  a QUIC long-header Initial of a version whose Initial keys we do not know
``quic-undecryptable``    a QUIC Initial of a known version that does not decrypt or parse
``not-applicable``        no name can exist: ICMP, ICMPv6, SCTP, other transports without ports
========================  ========================================================================

``name_source`` is one of ``sni`` (TLS over TCP), ``quic`` (TLS ClientHello in QUIC Initials, or the SNI tag of a gQUIC Q0xx CHLO),
``http`` (HTTP/1.x Host, a trailing ``:port`` removed), ``dns-query`` (question of a DNS query, or of a response when only the
response was seen) or ``dns-answer`` (no name of its own, but an earlier DNS response to this client
gave the server address as an A/AAAA answer still within its TTL).
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    from .buffers import BufferPool

__all__ = [
    "RECORD_FIELDS", "RECORD_DTYPE", "FlowRecord", "RecordBatch", "tcp_flags_text",
    "END_REASONS", "NAME_SOURCES", "NO_NAME_REASONS", "TRANSPORTS",
]

# Code tables: the compiled table stores small integer codes; index 0 means "none".
END_REASONS: tuple[str | None, ...] = (
    None, "fin", "rst", "idle", "active-timeout", "evicted", "end-of-capture", "dns-next-query")
NAME_SOURCES: tuple[str | None, ...] = (None, "sni", "quic", "http", "dns-query", "dns-answer")
NO_NAME_REASONS: tuple[str | None, ...] = (
    None, "no-payload", "unknown-protocol", "no-sni", "ech-only", "no-host", "reassembly-gap",
    "reassembly-limit", "truncated", "malformed", "quic-unknown-version", "quic-undecryptable",
    "not-applicable")
TRANSPORTS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp"}

# The fixed-width part of a record.  The layout (order, widths, align=True) is the C struct
# ``rec_t`` of kzfilter.flow._table byte for byte, so records are copied out with one memcpy;
# _table checks ``RECORD_DTYPE.itemsize == sizeof(rec_t)`` at import.
RECORD_DTYPE = np.dtype([
    ("flow_id", "<i8"),
    ("ts_start_ns", "<i8"),
    ("ts_end_ns", "<i8"),
    ("emitted_ns", "<i8"),
    ("ts_start", "<f8"),
    ("ts_end", "<f8"),
    ("duration", "<f8"),
    ("rate_c2s_bps", "<f8"),
    ("rate_s2c_bps", "<f8"),
    ("packets_c2s", "<u8"),
    ("bytes_c2s", "<u8"),
    ("packets_s2c", "<u8"),
    ("bytes_s2c", "<u8"),
    ("name_off", "<u4"),
    ("name_len", "<u4"),
    ("alpn_off", "<u4"),
    ("alpn_len", "<u4"),
    ("client_port", "<u2"),
    ("server_port", "<u2"),
    ("vlan", "<u2"),
    ("capture_idx", "<u2"),
    ("client_ip_raw", "u1", (16,)),
    ("server_ip_raw", "u1", (16,)),
    ("ip_version", "u1"),
    ("l4proto", "u1"),
    ("tcp_flags", "u1"),
    ("end_reason_code", "u1"),
    ("name_source_code", "u1"),
    ("no_name_reason_code", "u1"),
    ("ech", "u1"),
    ("tunnel", "u1"),
], align=True)

# (name, dtype, doc) in record order.  dtype "str" / "str?" (nullable) / "list" are Python columns.
RECORD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("flow_id", "int64", "0-based ordinal of the flow's first frame among the frames its FlowTable read; increasing in creation order; independent of sharding"),
    ("capture", "str", "capture_name given to the FlowTable / process_reader"),
    ("ts_start", "float64", "capture time of the first packet, seconds since the epoch"),
    ("ts_end", "float64", "capture time of the last packet, seconds since the epoch"),
    ("duration", "float64", "ts_end - ts_start, seconds"),
    ("transport", "str", "tcp, udp, icmp, icmp6, sctp, or the IP protocol number as text"),
    ("ip_version", "uint8", "4 or 6 (innermost IP header)"),
    ("client_ip", "str", "initiator address: SYN sender, SYN+ACK receiver, else first sender"),
    ("client_port", "uint16", "initiator port (0 without ports)"),
    ("server_ip", "str", "responder address"),
    ("server_port", "uint16", "responder port (0 without ports)"),
    ("vlan", "uint16", "outermost 802.1Q VLAN id, 0 when untagged"),
    ("packets_c2s", "uint64", "packets client -> server"),
    ("bytes_c2s", "uint64", "frame wire lengths client -> server"),
    ("packets_s2c", "uint64", "packets server -> client"),
    ("bytes_s2c", "uint64", "frame wire lengths server -> client"),
    ("rate_c2s_bps", "float64", "bytes_c2s * 8 / duration, 0 for a zero-length flow"),
    ("rate_s2c_bps", "float64", "bytes_s2c * 8 / duration, 0 for a zero-length flow"),
    ("tcp_flags", "uint8", "OR of the TCP flags of every packet (tcp_flags_text for SAFPRU text)"),
    ("end_reason", "str", "fin, rst, idle, active-timeout, evicted, end-of-capture, dns-next-query"),
    ("name", "str?", "host name the flow went to (raw bytes decoded as ASCII, errors=replace)"),
    ("name_source", "str?", "sni, quic, http, dns-query, dns-answer, or None"),
    ("no_name_reason", "str?", "why no name (see module docstring), None when name is set"),
    ("alpn", "str?", "first ALPN protocol the ClientHello offered"),
    ("ech", "bool", "the ClientHello carried ECH/ESNI (name is then the outer/public name)"),
    ("action", "str?", "verdict (set by the classifier)"),
    ("category", "str?", "category of the matching rule (classifier)"),
    ("rule", "str?", "the rule that decided (classifier)"),
    ("lists", "list", "names of the lists that matched (classifier)"),
    ("matched_on", "str?", "what matched: name, ip, ... (classifier)"),
    ("ts_start_ns", "int64", "ts_start in integer nanoseconds"),
    ("ts_end_ns", "int64", "ts_end in integer nanoseconds"),
    ("l4proto", "uint8", "IP protocol number"),
    ("tunnel", "uint8", "TUN_* code of the outer tunnel removed by the dissector (0 none)"),
)
FIELD_NAMES: tuple[str, ...] = tuple(f[0] for f in RECORD_FIELDS)
_VERDICT_FIELDS = ("action", "category", "rule", "lists", "matched_on")
_FLAG_LETTERS = ((0x02, "S"), (0x10, "A"), (0x01, "F"), (0x08, "P"), (0x04, "R"), (0x20, "U"),
                 (0x40, "E"), (0x80, "C"))


def tcp_flags_text(flags: int) -> str:
    """Return the TCP flags as letters in the order ``SAFPRUEC`` (``0x12`` -> ``"SA"``)."""
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)


def _ip_text(raw: np.ndarray, version: int) -> str:
    return str(ipaddress.ip_address(bytes(raw[:4] if version == 4 else raw)))


class FlowRecord:
    """One flow record; every name of :data:`RECORD_FIELDS` is an attribute."""

    __slots__ = FIELD_NAMES

    # One attribute per RECORD_FIELDS entry (annotations only: the values live in the slots).
    flow_id: int
    capture: str
    ts_start: float
    ts_end: float
    duration: float
    transport: str
    ip_version: int
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    vlan: int
    packets_c2s: int
    bytes_c2s: int
    packets_s2c: int
    bytes_s2c: int
    rate_c2s_bps: float
    rate_s2c_bps: float
    tcp_flags: int
    end_reason: str
    name: str | None
    name_source: str | None
    no_name_reason: str | None
    alpn: str | None
    ech: bool
    action: str | None
    category: str | None
    rule: str | None
    lists: list[str]
    matched_on: str | None
    ts_start_ns: int
    ts_end_ns: int
    l4proto: int
    tunnel: int

    def __init__(self, **values: Any) -> None:
        for name in FIELD_NAMES:
            setattr(self, name, values.get(name))

    @property
    def tcp_flags_text(self) -> str:
        return tcp_flags_text(self.tcp_flags or 0)

    def as_dict(self) -> dict[str, Any]:
        """Return the record as a dict in :data:`RECORD_FIELDS` order."""
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def __repr__(self) -> str:
        return (f"FlowRecord(flow_id={self.flow_id}, {self.transport} {self.client_ip}:"
                f"{self.client_port} -> {self.server_ip}:{self.server_port}, name={self.name!r}, "
                f"end_reason={self.end_reason!r})")


class RecordBatch:
    """A columnar batch of flow records.

    The fixed-width fields live in one numpy structured array (:data:`RECORD_DTYPE`); names and
    ALPN strings live in byte arenas addressed by ``name_off``/``name_len`` (packed in record
    order, so ``names_packed()`` is free); verdict columns are object arrays set in batch.
    """

    __slots__ = ("_arr", "_names", "_alpn", "_captures", "_verdicts")

    def __init__(self, arr: np.ndarray | None = None, names: bytes = b"", alpn: bytes = b"",
                 captures: Sequence[str] = ("",)) -> None:
        self._arr = np.zeros(0, RECORD_DTYPE) if arr is None else arr
        if self._arr.dtype != RECORD_DTYPE:
            raise TypeError("RecordBatch needs an array of RECORD_DTYPE")
        self._names = bytes(names)
        self._alpn = bytes(alpn)
        self._captures = list(captures) or [""]
        # Verdict columns exist only once set: numpy object arrays, so that concatenating and
        # reordering batches (the parallel merge) are array operations, not Python loops.
        self._verdicts: dict[str, np.ndarray] = {}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def concat(cls, batches: Iterable["RecordBatch"]) -> "RecordBatch":
        """Concatenate batches in order (arena offsets are rebased, verdicts kept)."""
        batches = list(batches)
        if not batches:
            return cls()
        if len(batches) == 1:
            return batches[0]
        captures, remaps = _capture_remaps([b._captures for b in batches])
        arr = np.concatenate([_raw(b._arr) for b in batches]).view(RECORD_DTYPE)   # one copy
        start = name_base = alpn_base = 0
        for b, remap in zip(batches, remaps):
            part = arr[start:start + len(b)]   # a view: the offsets are rebased in place
            part["name_off"] += name_base
            part["alpn_off"] += alpn_base
            part["capture_idx"] = remap[part["capture_idx"]]
            start += len(b)
            name_base += len(b._names)
            alpn_base += len(b._alpn)
        out = cls(arr, b"".join(b._names for b in batches), b"".join(b._alpn for b in batches),
                  captures or [""])
        out._verdicts = _joined_verdicts(batches)
        return out

    @classmethod
    def merge(cls, batches: Iterable["RecordBatch"],
              pool: BufferPool | None = None) -> "RecordBatch":
        """Merge batches each sorted on (emitted_ns, flow_id) into one sorted batch (equal keys
        keep the batches' order); arenas packed in record order, verdicts kept.  One pass in C:
        the records of a capture split over flow-table shards.  ``pool`` supplies the array."""
        from ._merge import merge_records

        batches = list(batches)
        captures, remaps = _capture_remaps([b._captures for b in batches])
        raw, names, alpn, order = merge_records([_raw(b._arr) for b in batches],
                                                [b._names for b in batches],
                                                [b._alpn for b in batches], remaps, pool)
        out = cls(raw.view(RECORD_DTYPE), names, alpn, captures or [""])
        out._verdicts = {key: values[order] for key, values in _joined_verdicts(batches).items()}
        return out

    @classmethod
    def merge_chunks(cls, chunks: Sequence[Any], pool: BufferPool | None = None) -> "RecordBatch":
        """Merge the ``RecordChunk`` s of N flow-table shards (``FlowTable.swap_records``) in
        place: the merge of their ``take_records()`` batches, without making those batches
        (the threads of a split capture)."""
        from ._merge import merge_chunks

        chunks = list(chunks)
        captures, remaps = _capture_remaps([c.captures for c in chunks])
        raw, names, alpn = merge_chunks(chunks, remaps, pool)
        return cls(raw.view(RECORD_DTYPE), names, alpn, captures or [""])

    def take(self, order: np.ndarray) -> "RecordBatch":
        """A new batch with the records at positions ``order`` (arenas repacked, verdicts kept)."""
        arr = _raw(self._arr)[order].view(RECORD_DTYPE)
        names, arr["name_off"] = _gather(self._names, arr["name_off"], arr["name_len"])
        alpn, arr["alpn_off"] = _gather(self._alpn, arr["alpn_off"], arr["alpn_len"])
        out = RecordBatch(arr, names, alpn, self._captures)
        for key, values in self._verdicts.items():
            out._verdicts[key] = values[order]
        return out

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._arr)

    @property
    def array(self) -> np.ndarray:
        """The fixed-width fields (read them, do not resize them)."""
        return self._arr

    def names_packed(self) -> tuple[bytes, np.ndarray]:
        """Return ``(buf, offsets)``: name i is ``buf[offsets[i]:offsets[i+1]]`` (empty = none).

        Names are packed in record order, so this is the arena itself plus an int64 offset array
        of ``len(self) + 1`` entries.
        """
        offsets = np.empty(len(self._arr) + 1, dtype=np.int64)
        offsets[0] = 0
        np.cumsum(self._arr["name_len"], out=offsets[1:])
        return self._names, offsets

    def name_bytes(self, i: int) -> bytes | None:
        """Raw name of record ``i``, or None."""
        r = self._arr[i]
        if r["name_source_code"] == 0:
            return None
        return self._names[int(r["name_off"]):int(r["name_off"]) + int(r["name_len"])]

    def column(self, name: str) -> np.ndarray | list[Any]:
        """One column by field name: a numpy array for numbers, a list for text and verdicts."""
        a = self._arr
        if name in _VERDICT_FIELDS:
            return self._verdict(name)
        if name == "capture":
            return [self._captures[i] for i in a["capture_idx"].tolist()]
        if name == "transport":
            return [TRANSPORTS.get(p, str(p)) for p in a["l4proto"].tolist()]
        if name in ("client_ip", "server_ip"):
            raw = a[name + "_raw"]
            return [_ip_text(raw[i], v) for i, v in enumerate(a["ip_version"].tolist())]
        if name == "end_reason":
            return [END_REASONS[c] for c in a["end_reason_code"].tolist()]
        if name == "name_source":
            return [NAME_SOURCES[c] for c in a["name_source_code"].tolist()]
        if name == "no_name_reason":
            return [NO_NAME_REASONS[c] for c in a["no_name_reason_code"].tolist()]
        if name == "name":
            return self._strings(self._names, a["name_off"], a["name_len"], a["name_source_code"])
        if name == "alpn":
            return self._strings(self._alpn, a["alpn_off"], a["alpn_len"], a["alpn_len"])
        if name == "ech":
            return a["ech"].astype(bool)
        if name in (RECORD_DTYPE.names or ()):
            return a[name].copy()
        raise KeyError(f"no record field {name!r}")

    def _verdict(self, key: str) -> list[Any]:
        values = self._verdict_array(key).tolist()
        # ``lists`` is stored as tuples (one shared () for every unmatched flow); callers get lists
        return [list(v) for v in values] if key == "lists" else values

    def _verdict_array(self, key: str) -> np.ndarray:
        if key in self._verdicts:
            return self._verdicts[key]
        column = np.empty(len(self._arr), dtype=object)
        column.fill(() if key == "lists" else None)
        return column

    @staticmethod
    def _strings(arena: bytes, offs: np.ndarray, lens: np.ndarray, present: np.ndarray) -> list:
        return [arena[o:o + n].decode("ascii", "replace") if p else None
                for o, n, p in zip(offs.tolist(), lens.tolist(), present.tolist())]

    def columns(self) -> dict[str, Any]:
        """Every field of :data:`RECORD_FIELDS` as a column, in order."""
        return {name: self.column(name) for name in FIELD_NAMES}

    def __iter__(self) -> Iterator[FlowRecord]:
        cols = self.columns()
        for i in range(len(self)):
            yield FlowRecord(**{k: _scalar(v[i]) for k, v in cols.items()})

    def __getitem__(self, i: int) -> FlowRecord:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        sub = RecordBatch(self._arr[i:i + 1], self._names, self._alpn, self._captures)
        for key, values in self._verdicts.items():
            sub._verdicts[key] = values[i:i + 1]
        return next(iter(sub))

    # -- verdicts -----------------------------------------------------------------------------
    def set_verdicts(self, action: _Column, category: _Column | None = None,
                     rule: _Column | None = None, lists: _Column | None = None,
                     matched_on: _Column | None = None) -> None:
        """Set the verdict columns in batch; each argument has one entry per record (or None)."""
        n = len(self)
        for key, values in (("action", action), ("category", category), ("rule", rule),
                            ("lists", lists), ("matched_on", matched_on)):
            if values is None:
                continue
            column = _object_column(values)
            if len(column) != n:
                raise ValueError(f"{key}: {len(column)} values for {n} records")
            self._verdicts[key] = column

    # -- export -------------------------------------------------------------------------------
    def to_pandas(self) -> Any:
        """Return a pandas DataFrame with one column per :data:`RECORD_FIELDS` entry."""
        import pandas as pd

        return pd.DataFrame(self.columns(), columns=list(FIELD_NAMES))

    def to_arrow(self) -> Any:
        """Return a pyarrow Table with one column per :data:`RECORD_FIELDS` entry."""
        import pyarrow as pa

        arrays = []
        for name, dtype, _doc in RECORD_FIELDS:
            col = self.column(name)
            if dtype == "list":
                arrays.append(pa.array(col, type=pa.list_(pa.string())))
            elif dtype in ("str", "str?"):
                arrays.append(pa.array(col, type=pa.string()))
            else:
                arrays.append(pa.array(col))
        return pa.Table.from_arrays(arrays, names=list(FIELD_NAMES))

    def __repr__(self) -> str:
        return f"RecordBatch({len(self)} records)"


_Column = Union[Sequence[Any], np.ndarray]


def _object_column(values: _Column) -> np.ndarray:
    """A private 1-d object array of the values (their elements kept as they are, lists too)."""
    if isinstance(values, np.ndarray) and values.dtype == object and values.ndim == 1:
        return values.copy()
    seq = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return np.fromiter(seq, dtype=object, count=len(seq))


def _raw(arr: np.ndarray) -> np.ndarray:
    """The records as opaque fixed-size items: numpy copies, concatenates and takes those with
    one memcpy per record, a structured array field by field (measured 4x slower)."""
    return arr.view(np.dtype((np.void, RECORD_DTYPE.itemsize)))


def _gather(arena: bytes, offs: np.ndarray, lens: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The arena slices in the given order, packed; returns (bytes, new offsets as uint32)."""
    lens = lens.astype(np.int64)
    new_off = np.zeros(len(lens), dtype=np.int64)
    if len(lens) > 1:
        np.cumsum(lens[:-1], out=new_off[1:])
    total = int(lens.sum())
    if total == 0:
        return b"", np.zeros(len(lens), np.uint32)
    src = np.frombuffer(arena, dtype=np.uint8)
    idx = np.repeat(offs.astype(np.int64) - new_off, lens) + np.arange(total, dtype=np.int64)
    return src[idx].tobytes(), new_off.astype(np.uint32)


def _capture_remaps(lists: list[list[str]]) -> tuple[list[str], list[np.ndarray]]:
    """The capture names of all batches (``lists``: each one's captures), and per batch its
    capture_idx -> index in them."""
    captures: list[str] = []
    remaps = [np.array([_index_of(captures, c) for c in names], dtype=np.uint16)
              for names in lists]
    return captures, remaps


def _joined_verdicts(batches: list["RecordBatch"]) -> dict[str, np.ndarray]:
    """Each verdict column any batch has, the batches' columns one after the other."""
    return {key: np.concatenate([b._verdict_array(key) for b in batches])
            for key in _VERDICT_FIELDS if any(key in b._verdicts for b in batches)}


def _index_of(items: list[str], item: str) -> int:
    try:
        return items.index(item)
    except ValueError:
        items.append(item)
        return len(items) - 1


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
