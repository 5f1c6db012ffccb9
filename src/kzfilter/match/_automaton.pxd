# Declarations of the compiled host-name matcher (implementation in _automaton.pyx).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef enum:
    # Names are mapped to 39 symbols before matching; the order of the codes is the ASCII order of
    # the characters, so sorting symbol strings sorts the trie children by label.
    SYM_DASH = 0        # '-'
    SYM_DOT = 1         # '.'
    SYM_DIGIT0 = 2      # '0'..'9' -> 2..11
    SYM_UNDERSCORE = 12 # '_'
    SYM_A = 13          # 'a'..'z' (and 'A'..'Z') -> 13..38
    ALPHABET = 39
    SYM_BAD = 255       # any other byte: not part of a host name
    NODE_WORDS = 3      # a trie node: first child id; child bitmap bits 0-31; bits 32-38 | term << 7
    HI_MASK = 0x7F      # low 7 bits of word 2: child bitmap bits 32..38
    TERM_SHIFT = 7      # word 2 >> 7: terminal index + 1 (0: not a terminal), so < 2**25 terminals
    MAX_NAME_LENGTH = 253   # RFC 1035 section 2.3.4 (text form)
    MAX_LABEL_LENGTH = 63   # RFC 1035 section 2.3.4

cdef enum:
    ST_OK = 0
    ST_INVALID = 1
    ST_NON_ASCII = 2


cdef struct Tables:
    # Borrowed pointers into the numpy arrays that a NameAutomaton owns.
    const uint32_t* nodes      # NODE_WORDS per node, BFS order: children are first + rank(label)
    const int32_t* term_best   # 2 per terminal: best rule for the apex, best rule for a subdomain
    const uint64_t* prio       # per rule
    const int32_t* kdelta      # keyword automaton, ALPHABET entries per state (complete DFA)
    const int32_t* kbest       # per keyword state: best keyword rule ending here (via suffix links)
    uint32_t n_nodes
    int32_t n_kstates


cdef int normalize_reversed(const uint8_t* s, Py_ssize_t n, uint8_t* out,
                            Py_ssize_t* out_len) noexcept nogil
cdef int32_t scan_raw(const Tables* t, const uint8_t* s, Py_ssize_t n, int* status) noexcept nogil


cdef class NameAutomaton:
    cdef Tables t
    cdef dict _arrays          # name -> numpy array; owns every buffer that `t` points into
    cdef Py_ssize_t _n_rules
    cdef object _data          # the bytes an automaton was loaded from (kept alive for zero-copy views)
    cdef void _bind(self) except *
