"""FlowTracker: feed frames yourself (dpkt, scapy bytes, a socket) and get flow records back.

A thin Python face over the compiled :class:`kzfilter.flow._table.FlowTable`: each ``feed`` is one
call into C, no Python object is kept per packet.  For whole capture files prefer
``FlowTable.process_reader``, which never leaves C between frames.

Timestamps: a ``float`` is seconds since the epoch (as dpkt's readers give), an ``int`` is
nanoseconds since the epoch.

Example::

    tracker = FlowTracker(idle_timeout=60)
    for ts, buf in dpkt.pcap.Reader(f):
        tracker.feed(ts, buf)
    batch = tracker.close()
    for rec in batch:
        print(rec.client_ip, rec.server_ip, rec.name, rec.no_name_reason)
"""
from __future__ import annotations

from typing import Any, Iterable

from kzfilter.flow._table import FlowTable
from kzfilter.flow.records import RecordBatch

__all__ = ["FlowTracker", "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "LINKTYPE_LINUX_SLL",
           "LINKTYPE_LINUX_SLL2", "LINKTYPE_IPV4", "LINKTYPE_IPV6"]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101          # raw IPv4 or IPv6 (version nibble)
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229


def _ts_ns(ts: float | int) -> int:
    if isinstance(ts, int):
        return ts
    return round(ts * 1_000_000_000)


def _dpkt_linktype(pkt: Any) -> int:
    """The LINKTYPE of a dpkt object, by its class (imported lazily: dpkt is optional here)."""
    import dpkt

    for cls_path, lt in (("ethernet.Ethernet", LINKTYPE_ETHERNET), ("sll.SLL", LINKTYPE_LINUX_SLL),
                         ("sll2.SLL2", LINKTYPE_LINUX_SLL2), ("ip.IP", LINKTYPE_IPV4),
                         ("ip6.IP6", LINKTYPE_IPV6)):
        mod, name = cls_path.split(".")
        cls = getattr(getattr(dpkt, mod, None), name, None)
        if cls is not None and isinstance(pkt, cls):
            return lt
    raise TypeError(f"feed_dpkt: unsupported dpkt object {type(pkt).__name__} (Ethernet, SLL, "
                    "SLL2, IP or IP6)")


class FlowTracker:
    """Track flows over frames you feed one by one.

    Parameters: the options of :class:`~kzfilter.flow._table.FlowTable` (``max_flows``,
    ``idle_timeout``, ``active_timeout``, ``udp_idle_timeout``, ``reasm_limit``, ``dns_assoc``,
    ``capture_name``, ``close_grace``, ``sweep_interval``, ``dns_assoc_max``).
    """

    def __init__(self, **options: Any) -> None:
        self._table = FlowTable(**options)

    @property
    def table(self) -> FlowTable:
        return self._table

    def feed(self, ts: float | int, frame: bytes, linktype: int = LINKTYPE_ETHERNET,
             wirelen: int | None = None) -> None:
        """Add one captured frame (``ts``: float seconds or int ns since the epoch)."""
        self._table.process_frame(_ts_ns(ts), frame, linktype, wirelen)

    def feed_many(self, frames: Iterable[tuple[float | int, bytes]],
                  linktype: int = LINKTYPE_ETHERNET) -> int:
        """Add ``(ts, frame)`` pairs, e.g. straight from ``dpkt.pcap.Reader``; returns the count."""
        return self._table.process_frames(((_ts_ns(ts), buf) for ts, buf in frames), linktype)

    def feed_dpkt(self, ts: float | int, pkt: Any) -> None:
        """Add a dpkt Ethernet, SLL, SLL2, IP or IP6 object (serialised with ``bytes(pkt)``)."""
        self._table.process_frame(_ts_ns(ts), bytes(pkt), _dpkt_linktype(pkt), None)

    def records(self) -> RecordBatch:
        """Records of the flows finished so far (each record is returned once)."""
        return self._table.take_records()

    def flush(self) -> RecordBatch:
        """End every flow still open ("end-of-capture", or "fin"/"rst" if closed) and return the
        records not yet returned."""
        self._table.flush()
        return self.records()

    def close(self) -> RecordBatch:
        """Same as :meth:`flush`; the tracker stays usable."""
        return self.flush()

    @property
    def counters(self) -> dict[str, int]:
        return self._table.counters

    def __enter__(self) -> "FlowTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self._table.flush()
