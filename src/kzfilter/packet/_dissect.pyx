# cython: language_level=3
"""Packet dissector: one captured frame in, the innermost IP flow key and the L4 payload out.

The C entry point is :c:func:`dissect` (declared in ``_dissect.pxd``); it runs without the GIL,
allocates nothing and reads the frame only after checking, by hand, that every byte it needs was
captured.  Tunnels that nDPI also removes (IP-in-IP, GRE, GTP-U, VXLAN, CAPWAP, TZSP, L2TP) are
peeled so that the flow key is the inner one; a tunnel whose inner packet does not decode is left in
place and the outer packet is the flow (nDPI behaves the same way).

Python callers get :func:`dissect_frame` (one frame, a dict, for tests and debugging) and
:func:`dissect_batch` (many frames, a numpy array of statuses, the GIL released around the loop).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import ipaddress

import numpy as np

cimport numpy as cnp

cnp.import_array()

# ---------------------------------------------------------------------------------------------------
# Internal constants.
# ---------------------------------------------------------------------------------------------------

cdef enum:
    MAX_TUNNEL_DEPTH = 4    # tunnels peeled per frame: stops "tunnel bombs" (GRE in GRE in ...)
    MAX_L2_HOPS = 16        # VLAN tags + SNAP + PPPoE steps in one link header
    MAX_MPLS_LABELS = 16    # RFC 3032 label stack entries before bottom-of-stack
    MAX_IPV6_EXT = 16       # RFC 8200 extension headers followed before giving up
    MAX_GTP_EXT = 8         # 3GPP TS 29.281 extension headers
    MAX_TZSP_TAGS = 64

# Detailed tunnel kinds, for the Python wrapper (packet_t.tunnel keeps the coarse TUN_* value).
cdef enum:
    TK_NONE = 0
    TK_IPIP = 1
    TK_GRE = 2
    TK_GTP = 3
    TK_VXLAN = 4
    TK_CAPWAP = 5
    TK_TZSP = 6
    TK_L2TP = 7

# How the bytes inside a tunnel start.
cdef enum:
    IN_IPV4 = 0
    IN_IPV6 = 1
    IN_IP_NIBBLE = 2
    IN_ETHER = 3
    IN_ETHERTYPE = 4
    IN_PPP = 5

# Well-known ports of the UDP tunnels nDPI decapsulates.
cdef enum:
    PORT_L2TP = 1701
    PORT_GTPU = 2152        # 3GPP TS 29.281
    PORT_VXLAN = 4789       # RFC 7348
    PORT_CAPWAP_DATA = 5247 # RFC 5415
    PORT_TZSP = 37008

ctypedef struct ctx_t:
    int depth               # tunnels entered so far
    uint8_t kind            # TK_* of the outermost tunnel removed


cdef uint8_t _EMPTY[1]


# ---------------------------------------------------------------------------------------------------
# Byte readers (callers have checked the length).
# ---------------------------------------------------------------------------------------------------

cdef inline uint32_t _be16(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint32_t _le16(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[1] << 8) | p[0]


cdef inline uint32_t _le32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]


cdef inline int _need(uint32_t want, uint32_t captured, uint32_t declared) noexcept nogil:
    """0 when `want` bytes are there; MALFORMED when the header's own length cannot hold them
    (inconsistent whatever the snap length), TRUNCATED when only the capture is too short."""
    if want > declared:
        return DS_MALFORMED
    if want > captured:
        return DS_TRUNCATED
    return 0


cdef inline void _reset_l4(packet_t* out) noexcept nogil:
    out.sport = 0
    out.dport = 0
    out.tcp_flags = 0
    out.seq = 0
    out.ack = 0
    out.payload = NULL
    out.payload_len = 0
    out.payload_wire_len = 0


# ---------------------------------------------------------------------------------------------------
# Tunnels.
# ---------------------------------------------------------------------------------------------------

cdef int _tunnel(const uint8_t* p, uint32_t n, int inner, uint32_t etype, uint8_t tun,
                 uint8_t kind, packet_t* out, ctx_t* ctx) noexcept nogil:
    """Decode the packet inside a tunnel; -1 (keep the outer flow) if it is not a usable IP packet.

    The outer result is saved and restored on failure, so a GRE keepalive or a truncated inner
    header leaves the outer flow intact instead of losing the packet.
    """
    cdef packet_t saved
    cdef uint8_t saved_kind
    cdef int st
    if ctx.depth >= MAX_TUNNEL_DEPTH:
        return -1
    saved = out[0]
    saved_kind = ctx.kind
    if out.tunnel == TUN_NONE:
        out.tunnel = tun
        ctx.kind = kind
    ctx.depth += 1
    if inner == IN_IPV4:
        st = _ipv4(p, n, out, ctx)
    elif inner == IN_IPV6:
        st = _ipv6(p, n, out, ctx)
    elif inner == IN_IP_NIBBLE:
        st = _ip_nibble(p, n, out, ctx)
    elif inner == IN_ETHER:
        st = _ether(p, n, out, ctx)
    elif inner == IN_ETHERTYPE:
        st = _ethertype(p, n, etype, out, ctx)
    else:
        st = _ppp(p, n, out, ctx)
    ctx.depth -= 1
    if st == DS_OK or st == DS_UNSUPPORTED_L4 or st == DS_FRAGMENT:
        return st
    out[0] = saved
    ctx.kind = saved_kind
    return -1


cdef int _gre(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """GRE (RFC 2784/2890 version 0, RFC 2637 enhanced version 1 for PPTP); -1 = not decapsulated."""
    cdef uint32_t flags, version, proto, off
    if n < 4:
        return -1
    flags = p[0]
    version = p[1] & 0x07
    proto = _be16(p + 2)
    off = 4
    if version == 0:
        if flags & 0x40:            # routing present (RFC 1701 source routes): not followed
            return -1
        if flags & 0x80:            # checksum + reserved1
            off += 4
        if flags & 0x20:            # key
            off += 4
        if flags & 0x10:            # sequence number
            off += 4
        if off > n:
            return -1
        if proto == 0x6558:         # transparent Ethernet bridging
            return _tunnel(p + off, n - off, IN_ETHER, 0, TUN_GRE, TK_GRE, out, ctx)
        if proto == 0x88BE:         # ERSPAN type II: 8-byte header, then Ethernet
            if off + 8 > n:
                return -1
            return _tunnel(p + off + 8, n - off - 8, IN_ETHER, 0, TUN_GRE, TK_GRE, out, ctx)
        if proto == 0x22EB:         # ERSPAN type III: 12 bytes (+8 platform subheader when O set)
            if off + 12 > n:
                return -1
            if p[off + 11] & 0x01:
                off += 8
            off += 12
            if off > n:
                return -1
            return _tunnel(p + off, n - off, IN_ETHER, 0, TUN_GRE, TK_GRE, out, ctx)
        return _tunnel(p + off, n - off, IN_ETHERTYPE, proto, TUN_GRE, TK_GRE, out, ctx)
    if version == 1:
        # RFC 2637 section 4.1: key present (payload length + call id), PPP payload.
        if proto != 0x880B or not (flags & 0x20):
            return -1
        off = 8
        if flags & 0x10:
            off += 4
        if p[1] & 0x80:             # acknowledgment number present
            off += 4
        if off >= n:                # ack-only packet: nothing to decapsulate
            return -1
        return _tunnel(p + off, n - off, IN_PPP, 0, TUN_GRE, TK_GRE, out, ctx)
    return -1


cdef int _gtpu(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """GTP-U v1 G-PDU (3GPP TS 29.281 section 5): 8-byte header, optional 4 bytes, extensions."""
    cdef uint32_t flags, off, end, ext_len, nxt
    cdef int i
    if n < 8:
        return -1
    flags = p[0]
    if (flags >> 5) != 1 or not (flags & 0x10) or p[1] != 0xFF:
        return -1
    end = 8 + _be16(p + 2)          # the length field counts the bytes after the mandatory header
    if end > n:
        end = n
    off = 8
    if flags & 0x07:                # sequence number, N-PDU number, next extension type
        off = 12
        if off > end:
            return -1
        if flags & 0x04:
            nxt = p[11]
            i = 0
            while nxt != 0:
                i += 1
                if i > MAX_GTP_EXT or off + 1 > end:
                    return -1
                ext_len = <uint32_t>p[off] * 4
                if ext_len == 0 or off + ext_len > end:
                    return -1
                nxt = p[off + ext_len - 1]
                off += ext_len
    if off >= end:
        return -1
    return _tunnel(p + off, end - off, IN_IP_NIBBLE, 0, TUN_OTHER, TK_GTP, out, ctx)


cdef int _ieee80211_data(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """802.11 data frame + LLC/SNAP (as CAPWAP carries it in native format); -1 when not IP."""
    cdef uint32_t fc0, fc1, hdr
    if n < 24:
        return -1
    fc0 = p[0]
    fc1 = p[1]
    if ((fc0 >> 2) & 0x03) != 2 and ((fc1 >> 2) & 0x03) == 2:
        # Cisco controllers send the frame-control field byte-swapped (Wireshark's
        # "swap frame control" CAPWAP option; nDPI tests the second byte for 0x08).
        fc0 = p[1]
        fc1 = p[0]
    if ((fc0 >> 2) & 0x03) != 2:    # not a data frame
        return -1
    if fc0 & 0x40:                  # null-function subtypes carry no body
        return -1
    if fc1 & 0x40:                  # protected frame: body is encrypted
        return -1
    hdr = 24
    if (fc1 & 0x03) == 0x03:        # ToDS and FromDS: fourth address
        hdr += 6
    if fc0 & 0x80:                  # QoS data: QoS control
        hdr += 2
        if fc1 & 0x80:              # +HTC
            hdr += 4
    if hdr + 8 > n or p[hdr] != 0xAA or p[hdr + 1] != 0xAA or p[hdr + 2] != 0x03:
        return -1
    return _tunnel(p + hdr + 8, n - hdr - 8, IN_ETHERTYPE, _be16(p + hdr + 6), TUN_OTHER,
                   TK_CAPWAP, out, ctx)


cdef int _capwap(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """CAPWAP data channel (RFC 5415 section 4.3); -1 when not decapsulated."""
    cdef uint32_t hlen, wbid
    if n < 8 or p[0] != 0:          # preamble: version 0, type 0 (type 1 is DTLS)
        return -1
    hlen = (<uint32_t>p[1] >> 3) * 4
    if hlen < 8 or hlen > n:
        return -1
    if p[3] & 0x80:                 # F: fragment, the inner frame is incomplete
        return -1
    wbid = (p[2] >> 1) & 0x1F
    if p[2] & 0x01:                 # T: native frame format of the wireless binding
        if wbid != 1:               # only IEEE 802.11
            return -1
        return _ieee80211_data(p + hlen, n - hlen, out, ctx)
    return _tunnel(p + hlen, n - hlen, IN_ETHER, 0, TUN_OTHER, TK_CAPWAP, out, ctx)


cdef int _tzsp(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """TZSP (TaZmen Sniffer Protocol): version 1, encapsulation 1 = Ethernet, tagged fields."""
    cdef uint32_t off = 4
    cdef int i
    if n < 4 or p[0] != 1 or p[1] > 1 or _be16(p + 2) != 1:
        return -1
    for i in range(MAX_TZSP_TAGS):
        if off >= n:
            return -1
        if p[off] == 1:             # TAG_END
            off += 1
            return _tunnel(p + off, n - off, IN_ETHER, 0, TUN_OTHER, TK_TZSP, out, ctx)
        if p[off] == 0:             # TAG_PADDING, no length byte
            off += 1
            continue
        if off + 2 > n:
            return -1
        off += 2 + p[off + 1]
    return -1


cdef int _l2tp(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """L2TPv2 data message (RFC 2661 section 3.1) carrying PPP."""
    cdef uint32_t flags, off
    if n < 6:
        return -1
    flags = _be16(p)
    if (flags & 0x8000) or (flags & 0x000F) != 2:   # control message, or not version 2
        return -1
    off = 2
    if flags & 0x4000:              # L: length
        off += 2
    off += 4                        # tunnel id, session id
    if flags & 0x0800:              # S: Ns, Nr
        off += 4
    if flags & 0x0200:              # O: offset size + padding
        if off + 2 > n:
            return -1
        off += 2 + _be16(p + off)
    if off >= n:
        return -1
    return _tunnel(p + off, n - off, IN_PPP, 0, TUN_OTHER, TK_L2TP, out, ctx)


# ---------------------------------------------------------------------------------------------------
# Transport.
# ---------------------------------------------------------------------------------------------------

cdef int _l4(uint32_t proto, const uint8_t* p, uint32_t avail, uint32_t declared, packet_t* out,
             ctx_t* ctx) noexcept nogil:
    """Transport header at p: `avail` bytes captured inside the datagram, `declared` by the IP header."""
    cdef uint32_t doff, ulen, wire, sp, dp
    cdef int st
    out.l4proto = <uint8_t>proto
    if proto == 6:                  # TCP, RFC 9293 section 3.1
        st = _need(20, avail, declared)
        if st:
            return st
        doff = (<uint32_t>p[12] >> 4) * 4
        if doff < 20:
            return DS_MALFORMED
        st = _need(doff, avail, declared)
        if st:
            return st
        out.sport = <uint16_t>_be16(p)
        out.dport = <uint16_t>_be16(p + 2)
        out.seq = _be32(p + 4)
        out.ack = _be32(p + 8)
        out.tcp_flags = p[13]
        out.payload = p + doff
        out.payload_len = avail - doff
        out.payload_wire_len = declared - doff
        return DS_OK
    if proto == 17:                 # UDP, RFC 768
        st = _need(8, avail, declared)
        if st:
            return st
        sp = _be16(p)
        dp = _be16(p + 2)
        ulen = _be16(p + 4)
        # A UDP length outside [8, IP payload] (first fragments, fuzzed headers): trust IP.
        if ulen >= 8 and ulen <= declared:
            wire = ulen - 8
        else:
            wire = declared - 8
        out.sport = <uint16_t>sp
        out.dport = <uint16_t>dp
        out.payload = p + 8
        out.payload_len = avail - 8
        if out.payload_len > wire:
            out.payload_len = wire
        out.payload_wire_len = wire
        st = -1
        if sp == PORT_GTPU or dp == PORT_GTPU:
            st = _gtpu(out.payload, out.payload_len, out, ctx)
        elif sp == PORT_VXLAN or dp == PORT_VXLAN:
            if out.payload_len >= 8 and (out.payload[0] & 0x08):   # I flag: valid VNI
                st = _tunnel(out.payload + 8, out.payload_len - 8, IN_ETHER, 0, TUN_OTHER,
                             TK_VXLAN, out, ctx)
        elif sp == PORT_CAPWAP_DATA or dp == PORT_CAPWAP_DATA:
            st = _capwap(out.payload, out.payload_len, out, ctx)
        elif sp == PORT_TZSP or dp == PORT_TZSP:
            st = _tzsp(out.payload, out.payload_len, out, ctx)
        elif sp == PORT_L2TP or dp == PORT_L2TP:
            st = _l2tp(out.payload, out.payload_len, out, ctx)
        if st >= 0:
            return st
        return DS_OK
    # Everything else is a flow without ports; the L4 bytes are exposed as the payload.
    out.payload = p
    out.payload_len = avail
    out.payload_wire_len = declared
    st = -1
    if proto == 4:                  # IPv4 in IP (RFC 2003)
        st = _tunnel(p, avail, IN_IPV4, 0, TUN_IPIP, TK_IPIP, out, ctx)
    elif proto == 41:               # IPv6 in IP (RFC 4213)
        st = _tunnel(p, avail, IN_IPV6, 0, TUN_IPIP, TK_IPIP, out, ctx)
    elif proto == 47:
        st = _gre(p, avail, out, ctx)
    if st >= 0:
        return st
    return DS_UNSUPPORTED_L4


# ---------------------------------------------------------------------------------------------------
# Network layer.
# ---------------------------------------------------------------------------------------------------

cdef int _ipv4(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """IPv4 (RFC 791): header with options, total length, fragments."""
    cdef uint32_t hl, total, end, frag
    if n < 20:
        return DS_TRUNCATED
    if (p[0] >> 4) != 4:
        return DS_MALFORMED
    hl = (<uint32_t>p[0] & 0x0F) * 4
    if hl < 20:
        return DS_MALFORMED
    total = _be16(p + 2)
    if total == 0:                  # TSO/GSO captures leave the length 0: use what was captured
        total = n
        if total < hl:
            return DS_TRUNCATED
    elif total < hl:
        return DS_MALFORMED
    if n < hl:
        return DS_TRUNCATED
    end = total if total < n else n
    memset(out.src, 0, 16)
    memset(out.dst, 0, 16)
    memcpy(out.src, p + 12, 4)
    memcpy(out.dst, p + 16, 4)
    out.ip_version = 4
    out.l4proto = p[9]
    _reset_l4(out)
    frag = _be16(p + 6)
    if frag & 0x1FFF:               # non-first fragment: no transport header here
        return DS_FRAGMENT
    if frag & 0x2000:               # MF with offset 0: first fragment, ports valid
        out.is_fragment = 1
    return _l4(p[9], p + hl, end - hl, total - hl, out, ctx)


cdef int _ipv6(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """IPv6 (RFC 8200) with its extension-header chain, bounded to MAX_IPV6_EXT headers."""
    cdef uint32_t total, end, off, nh, hlen, fo
    cdef int st, i
    if n < 40:
        return DS_TRUNCATED
    if (p[0] >> 4) != 6:
        return DS_MALFORMED
    total = 40 + _be16(p + 4)
    if total == 40 and n > 40:      # jumbogram or TSO capture: length 0, use the captured bytes
        total = n
    end = total if total < n else n
    memset(out.src, 0, 16)
    memset(out.dst, 0, 16)
    memcpy(out.src, p + 8, 16)
    memcpy(out.dst, p + 24, 16)
    out.ip_version = 6
    _reset_l4(out)
    nh = p[6]
    off = 40
    for i in range(MAX_IPV6_EXT + 1):
        out.l4proto = <uint8_t>nh
        if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140:
            # hop-by-hop, routing, destination options, mobility, HIP, shim6: (len + 1) * 8
            st = _need(off + 2, end, total)
            if st:
                return st
            hlen = (<uint32_t>p[off + 1] + 1) * 8
        elif nh == 51:              # AH (RFC 4302): (len + 2) * 4
            st = _need(off + 2, end, total)
            if st:
                return st
            hlen = (<uint32_t>p[off + 1] + 2) * 4
        elif nh == 44:              # fragment header (RFC 8200 section 4.5)
            st = _need(off + 8, end, total)
            if st:
                return st
            fo = _be16(p + off + 2)
            if fo & 0xFFF8:
                out.l4proto = p[off]
                return DS_FRAGMENT
            if fo & 0x0001:
                out.is_fragment = 1
            hlen = 8
        else:
            return _l4(nh, p + off, end - off, total - off, out, ctx)
        st = _need(off + hlen, end, total)
        if st:
            return st
        nh = p[off]
        off += hlen
    return DS_MALFORMED            # pathological chain


cdef int _ip_nibble(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """Raw IP whose version is only given by the first nibble."""
    if n < 1:
        return DS_TRUNCATED
    if (p[0] >> 4) == 4:
        return _ipv4(p, n, out, ctx)
    if (p[0] >> 4) == 6:
        return _ipv6(p, n, out, ctx)
    return DS_MALFORMED


# ---------------------------------------------------------------------------------------------------
# Link layer.
# ---------------------------------------------------------------------------------------------------

cdef int _ethertype(const uint8_t* p, uint32_t n, uint32_t etype, packet_t* out,
                    ctx_t* ctx) noexcept nogil:
    """Bytes at p follow a field holding `etype` (EtherType, or an 802.3 length <= 1500)."""
    cdef int hop, lab, bos
    for hop in range(MAX_L2_HOPS):
        if etype == 0x0800:
            return _ipv4(p, n, out, ctx)
        if etype == 0x86DD:
            return _ipv6(p, n, out, ctx)
        if etype == 0x8100 or etype == 0x88A8 or etype == 0x9100 or etype == 0x9200:
            # IEEE 802.1Q / 802.1ad tag (0x9100/0x9200: pre-standard QinQ)
            if n < 4:
                return DS_TRUNCATED
            if out.vlan == 0:
                out.vlan = <uint16_t>(_be16(p) & 0x0FFF)
            etype = _be16(p + 2)
            p += 4
            n -= 4
            continue
        if etype <= 1500:
            # IEEE 802.3 length: LLC follows; only SNAP (AA AA 03, OUI, EtherType) can carry IP.
            if n < 3:
                return DS_TRUNCATED
            if p[0] != 0xAA or p[1] != 0xAA or p[2] != 0x03:
                return DS_NOT_IP
            if n < 8:
                return DS_TRUNCATED
            etype = _be16(p + 6)
            if etype <= 1500:
                return DS_NOT_IP
            p += 8
            n -= 8
            continue
        if etype == 0x8847 or etype == 0x8848:
            # MPLS (RFC 3032): labels up to bottom-of-stack, then IP by version nibble.
            for lab in range(MAX_MPLS_LABELS + 1):
                if lab == MAX_MPLS_LABELS:
                    return DS_MALFORMED
                if n < 4:
                    return DS_TRUNCATED
                bos = p[2] & 0x01
                p += 4
                n -= 4
                if bos:
                    break
            if n < 1:
                return DS_TRUNCATED
            if (p[0] >> 4) == 4:
                return _ipv4(p, n, out, ctx)
            if (p[0] >> 4) == 6:
                return _ipv6(p, n, out, ctx)
            return DS_NOT_IP        # pseudowire (Ethernet over MPLS) and the like
        if etype == 0x8864:
            # PPPoE session stage (RFC 2516): ver/type 0x11, code 0, session, length, PPP protocol.
            if n < 8:
                return DS_TRUNCATED
            if p[0] != 0x11 or p[1] != 0:
                return DS_MALFORMED
            etype = _be16(p + 6)
            p += 8
            n -= 8
            if etype == 0x0021:
                return _ipv4(p, n, out, ctx)
            if etype == 0x0057:
                return _ipv6(p, n, out, ctx)
            return DS_NOT_IP
        return DS_NOT_IP
    return DS_MALFORMED


cdef int _ether(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    if n < 14:
        return DS_TRUNCATED
    return _ethertype(p + 14, n - 14, _be16(p + 12), out, ctx)


cdef int _chdlc(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """Cisco HDLC: address (0x0F unicast, 0x8F broadcast), control, EtherType."""
    if n < 4:
        return DS_TRUNCATED
    return _ethertype(p + 4, n - 4, _be16(p + 2), out, ctx)


cdef int _ppp(const uint8_t* p, uint32_t n, packet_t* out, ctx_t* ctx) noexcept nogil:
    """PPP (RFC 1661), optional HDLC address/control FF 03 (RFC 1662), 1-byte protocol (PFC)."""
    cdef uint32_t proto
    if n >= 1 and p[0] == 0xFF:    # 0xFF is never a (compressed) protocol: address field
        if n < 2:
            return DS_TRUNCATED
        if p[1] == 0x03:
            p += 2
            n -= 2
    if n < 1:
        return DS_TRUNCATED
    if p[0] & 0x01:                 # protocol field compressed to one byte (RFC 1661 section 6.5)
        proto = p[0]
        p += 1
        n -= 1
    else:
        if n < 2:
            return DS_TRUNCATED
        proto = _be16(p)
        p += 2
        n -= 2
    if proto == 0x0021:
        return _ipv4(p, n, out, ctx)
    if proto == 0x0057:
        return _ipv6(p, n, out, ctx)
    if proto == 0x0281 or proto == 0x0283:     # MPLS unicast / multicast (RFC 3032 section 4.3)
        return _ethertype(p, n, 0x8847, out, ctx)
    return DS_NOT_IP


cdef inline bint _is_af_inet6(uint32_t fam) noexcept nogil:
    return fam == 24 or fam == 28 or fam == 30 or fam == 10


cdef int _link(const uint8_t* p, uint32_t n, uint32_t linktype, packet_t* out,
               ctx_t* ctx) noexcept nogil:
    cdef uint32_t fam, fam_le, fam_be, hl
    if linktype == 1:               # LINKTYPE_ETHERNET
        return _ether(p, n, out, ctx)
    if linktype == 113:             # LINKTYPE_LINUX_SLL: 16-byte header, protocol last
        if n < 16:
            return DS_TRUNCATED
        return _ethertype(p + 16, n - 16, _be16(p + 14), out, ctx)
    if linktype == 276:             # LINKTYPE_LINUX_SLL2: 20-byte header, protocol first
        if n < 20:
            return DS_TRUNCATED
        return _ethertype(p + 20, n - 20, _be16(p), out, ctx)
    if linktype == 101 or linktype == 12 or linktype == 14:
        return _ip_nibble(p, n, out, ctx)
    if linktype == 228:
        return _ipv4(p, n, out, ctx)
    if linktype == 229:
        return _ipv6(p, n, out, ctx)
    if linktype == 0 or linktype == 108:
        # BSD NULL (host byte order) / OpenBSD LOOP (network order): accept both orders, since
        # captures travel between machines.  AF_INET6 is 24 (NetBSD/OpenBSD), 28 (FreeBSD),
        # 30 (macOS) or 10 (Linux).
        if n < 4:
            return DS_TRUNCATED
        fam_le = _le32(p)
        fam_be = _be32(p)
        if fam_le == 2 or fam_be == 2:
            return _ipv4(p + 4, n - 4, out, ctx)
        if _is_af_inet6(fam_le) or _is_af_inet6(fam_be):
            return _ipv6(p + 4, n - 4, out, ctx)
        return DS_NOT_IP
    if linktype == 9 or linktype == 50:
        # PPP / PPP in HDLC framing; such captures may hold Cisco HDLC frames too.
        if n >= 1 and (p[0] == 0x0F or p[0] == 0x8F):
            return _chdlc(p, n, out, ctx)
        return _ppp(p, n, out, ctx)
    if linktype == 104:
        return _chdlc(p, n, out, ctx)
    if linktype == 192:
        # PPI: version, flags, header length (LE), DLT of the frame after the header (LE).
        if n < 8:
            return DS_TRUNCATED
        hl = _le16(p + 2)
        if hl < 8:
            return DS_MALFORMED
        if hl > n:
            return DS_TRUNCATED
        fam = _le32(p + 4)
        if fam == 192:              # PPI in PPI: refuse rather than recurse
            return DS_MALFORMED
        return _link(p + hl, n - hl, fam, out, ctx)
    return DS_UNSUPPORTED_LINK


cdef inline int _dissect_ctx(const uint8_t* data, uint32_t caplen, uint32_t linktype,
                             packet_t* out, ctx_t* ctx) noexcept nogil:
    memset(out, 0, sizeof(packet_t))
    ctx.depth = 0
    ctx.kind = TK_NONE
    return _link(data, caplen, linktype, out, ctx)


cdef int dissect(const uint8_t* data, uint32_t caplen, uint32_t linktype,
                 packet_t* out) noexcept nogil:
    """Decode one frame into `out`; return a DS_* status.  Reads only data[0:caplen]."""
    cdef ctx_t ctx
    return _dissect_ctx(data, caplen, linktype, out, &ctx)


# ---------------------------------------------------------------------------------------------------
# Python surface.
# ---------------------------------------------------------------------------------------------------

# The contract's DS_* / TUN_* values under the same names (C enum constants cannot be assigned to
# a module attribute of the same name directly in Cython).
globals().update({
    "DS_OK": DS_OK, "DS_NOT_IP": DS_NOT_IP, "DS_TRUNCATED": DS_TRUNCATED, "DS_MALFORMED": DS_MALFORMED,
    "DS_UNSUPPORTED_LINK": DS_UNSUPPORTED_LINK, "DS_FRAGMENT": DS_FRAGMENT,
    "DS_UNSUPPORTED_L4": DS_UNSUPPORTED_L4,
    "TUN_NONE": TUN_NONE, "TUN_IPIP": TUN_IPIP, "TUN_GRE": TUN_GRE, "TUN_OTHER": TUN_OTHER,
})
STATUS_NAMES = {
    DS_OK: "ok", DS_NOT_IP: "not_ip", DS_TRUNCATED: "truncated", DS_MALFORMED: "malformed",
    DS_UNSUPPORTED_LINK: "unsupported_link", DS_FRAGMENT: "fragment",
    DS_UNSUPPORTED_L4: "unsupported_l4",
}

# Detailed kind of the outermost tunnel, named as nDPI's ndpiReader prints it (None: no tunnel).
TUNNEL_KIND_NAMES = {
    TK_NONE: None, TK_IPIP: "IPIP", TK_GRE: "GRE", TK_GTP: "GTP", TK_VXLAN: "VXLAN",
    TK_CAPWAP: "CAPWAP", TK_TZSP: "TZSP", TK_L2TP: "L2TP",
}

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW_12 = 12
LINKTYPE_RAW_14 = 14
LINKTYPE_PPP_HDLC = 50
LINKTYPE_RAW = 101
LINKTYPE_C_HDLC = 104
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_PPI = 192
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = frozenset({0, 1, 9, 12, 14, 50, 101, 104, 108, 113, 192, 228, 229, 276})


def dissect_frame(data, linktype):
    """Dissect one frame (for tests and debugging; the flow table calls the C function).

    Parameters: ``data`` a bytes-like frame as captured; ``linktype`` its LINKTYPE_* number.
    Returns ``(status, fields)``; ``fields`` is None unless the status is OK, UNSUPPORTED_L4 or
    FRAGMENT, else a dict: src, dst (address text), ip_version, l4proto, sport, dport, tcp_flags,
    seq, ack, vlan, tunnel (TUN_*), tunnel_kind (name or None), is_fragment, payload (bytes),
    payload_offset (index of the payload in ``data``), payload_len, payload_wire_len.
    Raises TypeError for a non-buffer ``data``.

    Example: ``dissect_frame(frame, LINKTYPE_ETHERNET)`` gives
    ``(DS_OK, {"src": "192.0.2.1", "dport": 443, "payload": b"\\x16\\x03\\x01...", ...})``.
    """
    cdef const unsigned char[::1] buf = data
    cdef packet_t pkt
    cdef ctx_t ctx
    cdef uint32_t n = <uint32_t>buf.shape[0]
    cdef const uint8_t* base = _EMPTY
    cdef int st
    cdef uint32_t lt
    cdef Py_ssize_t off
    if buf.shape[0] > 0xFFFFFFFF:
        raise ValueError("frame longer than 4 GiB")
    if not (0 <= linktype <= 0xFFFFFFFF):
        return DS_UNSUPPORTED_LINK, None
    lt = <uint32_t>linktype
    if n:
        base = &buf[0]
    with nogil:
        st = _dissect_ctx(base, n, lt, &pkt, &ctx)
    if st != DS_OK and st != DS_UNSUPPORTED_L4 and st != DS_FRAGMENT:
        return st, None
    if pkt.ip_version == 4:
        src = ipaddress.IPv4Address(bytes(pkt.src[:4]))
        dst = ipaddress.IPv4Address(bytes(pkt.dst[:4]))
    else:
        src = ipaddress.IPv6Address(bytes(pkt.src[:16]))
        dst = ipaddress.IPv6Address(bytes(pkt.dst[:16]))
    if pkt.payload != NULL:
        off = pkt.payload - base
        payload = bytes(buf[off:off + pkt.payload_len])
    else:
        off = -1
        payload = b""
    return st, {
        "src": str(src), "dst": str(dst), "ip_version": pkt.ip_version, "l4proto": pkt.l4proto,
        "sport": pkt.sport, "dport": pkt.dport, "tcp_flags": pkt.tcp_flags, "seq": pkt.seq,
        "ack": pkt.ack, "vlan": pkt.vlan, "tunnel": pkt.tunnel,
        "tunnel_kind": TUNNEL_KIND_NAMES[ctx.kind], "is_fragment": pkt.is_fragment,
        "payload": payload, "payload_offset": off, "payload_len": pkt.payload_len,
        "payload_wire_len": pkt.payload_wire_len,
    }


def dissect_batch(data, offsets, lengths, linktype):
    """Dissect many frames stored back to back in one buffer; return their statuses.

    Parameters: ``data`` bytes-like holding the frames; ``offsets`` and ``lengths`` (array-likes of
    equal size) locate frame i at ``data[offsets[i]:offsets[i] + lengths[i]]``; ``linktype`` the
    LINKTYPE_* number of all of them.  Returns a ``numpy.uint8`` array of DS_* statuses.
    Raises ValueError when a frame lies outside ``data``.  The GIL is released during the loop.
    """
    cdef const unsigned char[::1] buf = data
    cdef const uint64_t[::1] offs = np.ascontiguousarray(offsets, dtype=np.uint64)
    cdef const uint32_t[::1] lens = np.ascontiguousarray(lengths, dtype=np.uint32)
    cdef Py_ssize_t i, count = offs.shape[0]
    cdef uint64_t size = <uint64_t>buf.shape[0]
    cdef uint32_t lt
    cdef packet_t pkt
    cdef const uint8_t* base = _EMPTY
    if lens.shape[0] != count:
        raise ValueError("offsets and lengths differ in size")
    if not (0 <= linktype <= 0xFFFFFFFF):
        raise ValueError(f"link type out of range: {linktype}")
    lt = <uint32_t>linktype
    for i in range(count):
        if offs[i] > size or lens[i] > size - offs[i]:
            raise ValueError(f"frame {i} lies outside the buffer")
    result = np.empty(count, dtype=np.uint8)
    cdef uint8_t[::1] res = result
    if size:
        base = &buf[0]
    with nogil:
        for i in range(count):
            res[i] = <uint8_t>dissect(base + offs[i], lens[i], lt, &pkt)
    return result
