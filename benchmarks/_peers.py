"""Peer implementations for ``bench_classify.py``: the same job done by other tools.

* :func:`dpkt_flows` — a plain dpkt program: pcap/pcapng reader -> Ethernet -> IPv4/IPv6 ->
  TCP/UDP, a dict flow table keyed by the symmetric 5-tuple with packet and byte counters per
  direction, and a name from the client's first payload (TLS SNI via ``dpkt.ssl``, HTTP Host via
  ``dpkt.http``, DNS question via ``dpkt.dns``).  No reassembly and no QUIC decryption: it does
  *less* than kzfilter, so its rate is an upper bound for a straightforward dpkt solution.
* :func:`run_ndpireader` — ``ndpiReader -i FILE -q`` (nDPI's demo tool, Debian ``libndpi-bin``):
  full DPI of every flow, one thread for a file, wall and CPU time of the subprocess.
* :func:`run_nfstream` — NFStream (``pip install nfstream``) with one meter process and its
  statistical features off, iterated flow by flow.

Each function returns a dict with at least ``packets`` (frames it went through) and ``flows``.
"""
from __future__ import annotations

import resource
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

try:
    import dpkt
except ImportError:  # pragma: no cover - the benchmark skips naming the package
    dpkt = None

try:
    import nfstream
except Exception as exc:  # pragma: no cover - import can fail on missing libpcap etc.
    nfstream = None
    NFSTREAM_ERROR = f"{type(exc).__name__}: {exc}"
else:
    NFSTREAM_ERROR = ""

__all__ = ["dpkt_flows", "dpkt_missing", "ndpireader_missing", "nfstream_missing",
           "run_ndpireader", "run_nfstream"]

_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_DNS_PORTS = (53, 5353, 5355)


def dpkt_missing() -> str:
    return "" if dpkt is not None else "dpkt is not installed: pip install dpkt"


def ndpireader_missing() -> str:
    if shutil.which("ndpiReader") is None:
        return "ndpiReader not found: apt-get install -y libndpi-bin"
    return ""


def nfstream_missing() -> str:
    if nfstream is None:
        return f"nfstream unavailable ({NFSTREAM_ERROR or 'not installed'}): pip install nfstream"
    return ""


# ---- dpkt ------------------------------------------------------------------------------------------

def _sni(payload: bytes) -> str | None:
    """SNI of a TLS ClientHello that is whole in this one segment (RFC 8446 4.1.2, RFC 6066 3)."""
    rec = dpkt.ssl.TLSRecord(payload)
    if rec.type != 22:
        return None
    hs = dpkt.ssl.TLSHandshake(rec.data)
    hello = hs.data
    if not isinstance(hello, dpkt.ssl.TLSClientHello):
        return None
    for ext_type, ext_data in getattr(hello, "extensions", ()):
        if ext_type == 0 and len(ext_data) >= 5:
            (n,) = struct.unpack_from(">H", ext_data, 3)
            return ext_data[5:5 + n].decode("ascii", "replace")
    return None


def _http_host(payload: bytes) -> str | None:
    req = dpkt.http.Request(payload)
    host = req.headers.get("host")
    if isinstance(host, list):
        host = host[0]
    return host.rsplit(":", 1)[0] if host and not host.endswith("]") else host


def _dns_qname(payload: bytes) -> str | None:
    msg = dpkt.dns.DNS(payload)
    return msg.qd[0].name if msg.qd else None


def _name(l4: Any, payload: bytes, sport: int, dport: int) -> str | None:
    """The name in the client's first payload, or None (parse errors are a counted miss)."""
    try:
        if isinstance(l4, dpkt.udp.UDP):
            if dport in _DNS_PORTS or sport in _DNS_PORTS:
                return _dns_qname(payload)
            return None
        if payload[0] == 0x16:
            return _sni(payload)
        if payload[:4] in (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"DELE", b"CONN", b"PATC"):
            return _http_host(payload)
    except (dpkt.UnpackError, ValueError, IndexError, struct.error, AttributeError, TypeError):
        return None
    return None


def dpkt_flows(path: str | Path, limit: int | None = None) -> dict[str, Any]:
    """Flows of the first ``limit`` frames of ``path`` the straightforward dpkt way.

    Flow value: ``[client (ip, port), packets_c2s, bytes_c2s, packets_s2c, bytes_s2c, name, tried]``;
    the client is the first sender, ``tried`` says the client's first payload was looked at.
    """
    flows: dict[tuple, list] = {}
    packets = names = 0
    with open(path, "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if magic == _PCAPNG_MAGIC else dpkt.pcap.Reader(fh)
        for _ts, buf in reader:
            if limit is not None and packets >= limit:
                break
            packets += 1
            try:
                eth = dpkt.ethernet.Ethernet(buf)
            except (dpkt.UnpackError, struct.error):
                continue
            ip = eth.data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            l4 = ip.data
            if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                sport, dport, payload = l4.sport, l4.dport, bytes(l4.data)
            else:
                sport = dport = 0
                payload = b""
            a, b = (ip.src, sport), (ip.dst, dport)
            key = (ip.p, a, b) if a <= b else (ip.p, b, a)
            flow = flows.get(key)
            if flow is None:
                flow = flows[key] = [a, 0, 0, 0, 0, None, False]
            if a == flow[0]:
                flow[1] += 1
                flow[2] += len(buf)
                if payload and not flow[6]:
                    flow[6] = True
                    flow[5] = _name(l4, payload, sport, dport)
                    names += flow[5] is not None
            else:
                flow[3] += 1
                flow[4] += len(buf)
    return {"packets": packets, "flows": len(flows), "names": names}


# ---- ndpiReader ------------------------------------------------------------------------------------

def run_ndpireader(path: str | Path, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``ndpiReader -i path -q``; return wall seconds and the child's CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(["ndpiReader", "-i", str(path), "-q"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"ndpiReader failed ({proc.returncode}): {proc.stderr[-500:]!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu}


# ---- NFStream --------------------------------------------------------------------------------------

def run_nfstream(path: str | Path) -> dict[str, Any]:
    """Iterate NFStream's flows of ``path`` (one meter, DPI on, statistics off)."""
    streamer = nfstream.NFStreamer(source=str(path), n_meters=1, statistical_analysis=False,
                                   splt_analysis=0, n_dissections=20)
    flows = packets = names = 0
    for flow in streamer:
        flows += 1
        packets += flow.bidirectional_packets
        names += bool(flow.requested_server_name)
    return {"flows": flows, "packets": packets, "names": names}
