# Declarations of the flow table: per-flow state, the record layout, the table itself.
# kzfilter.flow.records.RECORD_DTYPE mirrors rec_t field for field (checked at import).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t


# Bounded buffer for the first bytes of a stream (TCP client bytes or QUIC CRYPTO data).  Bytes
# below `contig` form the contiguous prefix; `have` marks bytes held past it (out of order).
ctypedef struct reasm_t:
    uint8_t* buf
    uint8_t* have           # one bit per byte of buf, meaningful at offsets >= contig only
    uint32_t cap            # bytes allocated at buf
    uint32_t contig         # length of the contiguous prefix from offset 0
    uint32_t maxend         # highest offset + 1 ever held (maxend > contig: there is a hole)
    uint32_t limit          # never hold bytes at offsets >= limit
    uint32_t dropped        # segments (or parts) refused because they lie past limit
    uint32_t _pad

ctypedef struct flow_t:
    uint8_t cip[16]         # client (initiator) address, IPv4 in [0:4]
    uint8_t sip[16]
    int64_t first_ns
    int64_t last_ns
    int64_t touch_ns        # table clock (max capture time so far) at the last packet: LRU order
    int64_t born_ns         # table clock at creation: creation-list order
    int64_t flow_id
    uint64_t pk_c2s
    uint64_t pk_s2c
    uint64_t by_c2s
    uint64_t by_s2c
    reasm_t* reasm          # lazily allocated while the name is pending
    uint8_t* name           # malloc'd name (a real one, or the tentative DNS-answer one)
    uint8_t* alpn           # malloc'd first ALPN
    int32_t lru_prev        # links in the timeout list `lst` (also the free list through lru_next)
    int32_t lru_next
    int32_t age_prev        # links in the creation-order list (active timeout, flush order)
    int32_t age_next
    uint32_t base_seq       # TCP: sequence number of the client's first stream byte
    uint16_t cport
    uint16_t sport
    uint16_t vlan
    uint16_t name_len
    uint16_t capture_idx
    uint8_t alpn_len
    uint8_t l4proto
    uint8_t ipver
    uint8_t flags           # OR of TCP flags
    uint8_t lst             # L_TCP / L_OTHER / L_CLOSED
    uint8_t in_use
    uint8_t name_done       # 1: name found or given up
    uint8_t name_source     # SRC_* of `name` (SRC_DNS_ANSWER while tentative)
    uint8_t no_name         # NN_* once given up
    uint8_t pend_reason     # NN_* to report if the flow ends while still pending
    uint8_t mode            # MODE_*: how the client's first bytes are parsed
    uint8_t base_set
    uint8_t fin_mask        # 1: client sent FIN, 2: server sent FIN
    uint8_t end_reason      # END_* decided at close (fin/rst), 0 while open
    uint8_t c2s_payload     # the client sent payload
    uint8_t snapped         # a client payload was cut by the snap length
    uint8_t ech
    uint8_t tunnel
    uint8_t quic_tries

ctypedef struct rec_t:
    int64_t flow_id
    int64_t ts_start_ns
    int64_t ts_end_ns
    int64_t emitted_ns
    double ts_start
    double ts_end
    double duration
    double rate_c2s_bps
    double rate_s2c_bps
    uint64_t packets_c2s
    uint64_t bytes_c2s
    uint64_t packets_s2c
    uint64_t bytes_s2c
    uint32_t name_off
    uint32_t name_len
    uint32_t alpn_off
    uint32_t alpn_len
    uint16_t client_port
    uint16_t server_port
    uint16_t vlan
    uint16_t capture_idx
    uint8_t client_ip[16]
    uint8_t server_ip[16]
    uint8_t ip_version
    uint8_t l4proto
    uint8_t tcp_flags
    uint8_t end_reason
    uint8_t name_source
    uint8_t no_name_reason
    uint8_t ech
    uint8_t tunnel

ctypedef struct assoc_t:
    uint8_t client[16]      # the DNS client (destination of the response)
    uint8_t server[16]      # an A/AAAA answer address
    int64_t expiry_ns
    uint8_t* name           # malloc'd question name
    uint16_t name_len
    uint8_t ipver
    uint8_t in_use

ctypedef struct index_t:
    int32_t* slots          # open addressing, linear probing; -1 = empty
    uint32_t mask

ctypedef struct counters_t:
    uint64_t packets
    uint64_t bytes
    uint64_t attributed
    uint64_t skipped_truncated
    uint64_t skipped_malformed
    uint64_t skipped_unsupported_link
    uint64_t skipped_fragment
    uint64_t skipped_not_ip
    uint64_t skipped_other
    uint64_t flows
    uint64_t flows_evicted
    uint64_t flows_active_timeout
    uint64_t flows_idle
    uint64_t names[6]
    uint64_t quic_initials
    uint64_t gquic_hellos
    uint64_t quic_failed
    uint64_t reasm_dropped
    uint64_t reasm_alloc_failed
    uint64_t dns_answers_stored
    uint64_t dns_answers_evicted
    uint64_t dns_answers_dropped
    uint64_t records


# The records a table finished in one chunk, in the table's own buffers (FlowTable.swap_records
# hands them over without a copy); kzfilter.flow._merge reads them in place.
cdef class RecordChunk:
    cdef rec_t* recs
    cdef size_t n
    cdef size_t cap
    cdef uint8_t* arena         # the records' names (name_off/name_len)
    cdef size_t arena_len
    cdef size_t arena_cap
    cdef uint8_t* alpn          # their ALPN (alpn_off/alpn_len)
    cdef size_t alpn_len
    cdef size_t alpn_cap
    cdef readonly list captures # capture_idx -> capture name
