"""Shared plumbing of the atheris harnesses: import paths, seed corpora, the libFuzzer entry point.

Every harness is a script: ``python tests/fuzz/fuzz_x.py -atheris_runs=N`` or
``-max_total_time=SECONDS`` (any libFuzzer flag works).  When no corpus directory is given on the
command line, :func:`run` writes the harness's seed corpus into a temporary directory and fuzzes
from there, so a bare invocation starts from real inputs, not from empty bytes.

Seeds come from the shared captures (``/work/shared/data/pcaps/ndpi`` and ``malformed``, or
``$KZFILTER_SHARED_DATA``) and the project's own ``pcaps/demo.pcapng`` (tools/gen_captures.py).

Import path: ``kzfilter`` is imported from ``$PYTHONPATH`` when it is found there (the sanitizer
job points it at a debug build), else from the repository's ``src/``.

Coverage: atheris instruments the Python modules imported under ``atheris.instrument_imports()``
(the QUIC decryptor, the rule loaders, the record batch).  The Cython modules are built by gcc
without SanitizerCoverage, so inside them the fuzzer is mutation-driven without edge feedback;
the seeds (real protocol messages) make up for much of that, and the sanitizer build catches the
memory errors a plain build would not show.
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ARTIFACTS = Path(os.environ.get("KZFILTER_FUZZ_ARTIFACTS", Path(tempfile.gettempdir()) / "kzfuzz-artifacts"))
SHARED = Path(os.environ.get("KZFILTER_SHARED_DATA", REPO.parent / "shared" / "data"))

# tests.* (reference models, frame builders) and tools/ (the capture generator) importable; src/
# appended last so that a PYTHONPATH debug build wins.
for p in (str(REPO), str(REPO / "tools")):
    if p not in sys.path:
        sys.path.insert(0, p)
if str(REPO / "src") not in sys.path:
    sys.path.append(str(REPO / "src"))

from tests.robustness.captures import tls_client_hello  # noqa: E402  (needs the path set above)

# Small real captures whose first client messages make good seeds (TLS, QUIC, HTTP, DNS).
NDPI_SEEDS = (
    "chrome.pcap", "443-curl.pcap", "tls_ech.pcapng", "tls_esni_sni_both.pcap", "no_sni.pcap",
    "tls_2_reasms.pcapng", "quic-29.pcap", "quic-27.pcap", "quic_0RTT.pcap", "quic-v2.pcapng",
    "quic_frags_ch_in_multiple_packets.pcapng", "quic-mvfst-27.pcapng", "quic_q50.pcap",
    "quic_crypto_aes_auth_size.pcap", "http-lines-split.pcap", "http_invalid_server.pcap",
    "http_origin_different_than_host.pcap", "http-crash-content-disposition.pcap",
    "dns_ambiguous_names.pcap", "malformed_dns.pcap", "dns-exf.pcap", "dns_invert_query.pcapng",
    "bt-dns.pcap", "fuzz-2021-10-13.pcap", "fuzz-2006-06-26-2594.pcap", "fuzz-2006-09-29-28586.pcap",
    "6in4tunnel.pcap", "vxlan.pcap", "gre.pcapng", "teredo.pcap",
)


def capture_files(max_size: int = 64 * 1024) -> list[Path]:
    """Capture files used as seeds: the project's demo, the malformed set, small nDPI files."""
    out = [REPO / "pcaps" / "demo.pcapng"]
    mal = SHARED / "pcaps" / "malformed"
    if mal.is_dir():
        out += sorted(p for p in mal.iterdir() if p.suffix in (".pcap", ".pcapng"))
    ndpi = SHARED / "pcaps" / "ndpi"
    out += [ndpi / n for n in NDPI_SEEDS]
    return [p for p in out if p.is_file() and p.stat().st_size <= max_size]


def _frames_of(path: Path) -> Iterator[tuple[int, bytes]]:
    """(linktype, frame) of a capture, read with dpkt (an independent reader); bad files end early."""
    import dpkt

    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0)
            reader = dpkt.pcapng.Reader(f) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
            lt = reader.datalink()
            for _ts, buf in reader:
                yield lt, bytes(buf)
    except Exception:   # noqa: BLE001 - seeds are best effort, the fuzzer checks kzfilter, not dpkt
        return


@lru_cache(maxsize=1)
def all_frames() -> tuple[tuple[int, bytes], ...]:
    out = []
    for path in capture_files():
        for i, item in enumerate(_frames_of(path)):
            if i >= 400:
                break
            out.append(item)
    return tuple(out)


def _l4_payloads() -> Iterator[tuple[str, int, int, bytes]]:
    """(transport, sport, dport, payload) of every Ethernet/IP frame of the seed captures."""
    import dpkt

    for lt, buf in all_frames():
        if lt != 1:
            continue
        try:
            ip = dpkt.ethernet.Ethernet(buf).data
            l4 = ip.data
        except Exception:   # noqa: BLE001
            continue
        if isinstance(l4, dpkt.tcp.TCP):
            yield "tcp", l4.sport, l4.dport, bytes(l4.data)
        elif isinstance(l4, dpkt.udp.UDP):
            yield "udp", l4.sport, l4.dport, bytes(l4.data)


def payload_seeds(kind: str, limit: int = 200) -> list[bytes]:
    """First client messages of one kind from the seed captures: tls, http, dns, quic."""
    out: list[bytes] = []
    for proto, sport, dport, data in _l4_payloads():
        if not data:
            continue
        if kind == "tls" and proto == "tcp" and data[0] == 0x16:
            out.append(data)
        elif kind == "http" and proto == "tcp" and data.split(b" ", 1)[0] in (
                b"GET", b"POST", b"HEAD", b"PUT", b"CONNECT", b"OPTIONS", b"DELETE"):
            out.append(data)
        elif kind == "dns" and proto == "udp" and 53 in (sport, dport):
            out.append(data)
        elif kind == "quic" and proto == "udp" and data[0] & 0x80 and 443 in (dport, sport):
            out.append(data)
        if len(out) >= limit:
            break
    if kind == "tls":
        out += [tls_client_hello(b"example.com"), tls_client_hello(b"a" * 300)]
    if kind == "http":
        out += [b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"]
    return list(dict.fromkeys(out))


def rule_seeds() -> list[bytes]:
    """Heads of real rule lists of every format, plus small hand-written ones."""
    out = [
        b"# hosts\n0.0.0.0 ads.example.com tracker.example.net\n127.0.0.1 localhost\n",
        b"||ads.example.com^\n@@||good.example.com^\n! comment\n##.banner\n||x.com^$third-party\n",
        b"10.0.0.0/8\n192.0.2.1-192.0.2.9\n2001:db8::/32\n; comment\n",
        b"#separator \\x09\n#fields\tindicator\tindicator_type\tmeta.source\n"
        b"evil.example\tIntel::DOMAIN\tfeed\n192.0.2.7\tIntel::ADDR\tfeed\n",
        b"url,category_code,category_description,date_added,source,notes\n"
        b"https://akorda.kz/,GOVT,Government,2014-04-15,,\nhttp://xn--80ak6aa92e.com/,NEWS,News,,,\n",
        "пример.қаз\nexample.com\n*.wild.example\n".encode(),
    ]
    lists = SHARED / "lists"
    for rel in ("citizenlab/kz.csv", "domains/ut1/doh.domains", "ip/ipsum/ipsum.txt",
                "ip/x4bnet-vpn/vpn-ipv6.txt", "domains/blocklistproject/scam-nl.txt"):
        p = lists / rel
        if p.is_file():
            with open(p, "rb") as f:
                out.append(f.read(3000))
    return out


def write_corpus(seeds: Iterable[bytes], directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, s in enumerate(seeds):
        (directory / f"seed-{i:05d}").write_bytes(s)
        n += 1
    return n


def run(test_one_input: Callable[[bytes], None], seeds: Callable[[], Iterable[bytes]],
        max_len: int = 4096) -> None:
    """Start libFuzzer through atheris; add a seed corpus and -max_len unless the caller gave them."""
    import atheris

    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix=f"kzfuzz-{Path(argv[0]).stem}-"))
        write_corpus(seeds(), corpus)
        argv.append(str(corpus))
    if not any(a.startswith("-max_len=") for a in argv[1:]):
        argv.insert(1, f"-max_len={max_len}")
    if not any(a.startswith("-artifact_prefix=") for a in argv[1:]):
        # crash-*/timeout-* files go here, not into the current directory (the repository)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        argv.insert(1, f"-artifact_prefix={ARTIFACTS}/{Path(argv[0]).stem}-")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def bytes_io(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
