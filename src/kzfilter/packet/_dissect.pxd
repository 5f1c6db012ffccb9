# Contract of the packet dissector: one frame in, the innermost IP flow key and L4 payload out.
# No allocation, no Python objects, no GIL: every read is length-checked by hand.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef enum:
    DS_OK = 0               # packet_t is filled
    DS_NOT_IP = 1           # well-formed frame that carries no IP (ARP, LLDP, STP, ...)
    DS_TRUNCATED = 2        # captured bytes end inside a header we need
    DS_MALFORMED = 3        # a header is inconsistent (bad version, IHL < 5, length < header, ...)
    DS_UNSUPPORTED_LINK = 4 # link type we do not decode
    DS_FRAGMENT = 5         # non-first IP fragment: counted, not attributed to a flow
    DS_UNSUPPORTED_L4 = 6   # IP packet whose transport is not TCP/UDP (ICMP, SCTP, ...): key without ports

cdef enum:
    TUN_NONE = 0
    TUN_IPIP = 1            # IPv4/IPv6 in IPv4/IPv6 (protocols 4 and 41)
    TUN_GRE = 2
    TUN_OTHER = 3           # room for GTP-U, VXLAN, ... later

ctypedef struct packet_t:
    uint8_t src[16]         # innermost IP source; IPv4 in src[0:4], the rest zero
    uint8_t dst[16]
    uint8_t ip_version      # 4 or 6
    uint8_t l4proto         # IPPROTO_* after IPv6 extension headers
    uint8_t tcp_flags       # TCP flags byte (FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 ...)
    uint8_t tunnel          # TUN_* of the outermost tunnel that was removed
    uint8_t is_fragment     # 1 for a first fragment (offset 0, MF set): ports valid, payload partial
    uint8_t _pad[3]
    uint16_t sport          # 0 when the transport has no ports
    uint16_t dport
    uint16_t vlan           # outermost 802.1Q VLAN id, 0 when untagged
    uint16_t _pad2
    uint32_t seq            # TCP sequence number (host order)
    uint32_t ack
    const uint8_t* payload  # L4 payload inside the frame
    uint32_t payload_len    # captured payload bytes at payload (never past the IP datagram's end)
    uint32_t payload_wire_len  # payload length the IP/UDP headers declare (>= payload_len when snapped)

cdef int dissect(const uint8_t* data, uint32_t caplen, uint32_t linktype, packet_t* out) noexcept nogil
