# Contract of the compiled IP prefix matcher: flattened disjoint intervals for exact attribution,
# a pyroaring bitmap in front of them for fast negatives.  Per-address lookups are C leaves that
# other Cython modules may call without the GIL (cimport kzfilter.match._prefixes).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flag)
    void *dlsym(void *handle, const char *symbol)
    char *dlerror()
    int RTLD_NOW
    int RTLD_LOCAL
    int RTLD_NOLOAD

cdef enum:
    V4_KEY_SHIFT = 16       # the IPv4 pre-filter bitmap holds the covered /16 blocks (addr >> 16)
    V6_KEY_SHIFT = 40       # the IPv6 one holds the covered /24 slices (hi >> 40)
    LOOKUP_BLOCK = 64       # addresses per block of the batched, prefetching lookup loop

cdef extern from *:
    """
    #include <stdbool.h>
    #include <stdint.h>
    /* CRoaring signatures (roaring.h) as exported by pyroaring's own extension module. The C
       return type is bool: calling it through an int-returning pointer would read junk in the
       upper bits of eax on x86-64, so the pointer types say bool. */
    typedef bool (*kz_roaring_contains_fn)(const void *bitmap, uint32_t value);
    typedef void (*kz_roaring_add_range_closed_fn)(void *bitmap, uint32_t min, uint32_t max);
    typedef unsigned __int128 kz_u128;
    """
    ctypedef bint (*kz_roaring_contains_fn)(const void *bitmap, uint32_t value) noexcept nogil
    ctypedef void (*kz_roaring_add_range_closed_fn)(void *bitmap, uint32_t lo, uint32_t hi) noexcept nogil
    # GCC/Clang 128-bit integer: used only inside C arithmetic, never converted to Python.
    ctypedef unsigned long long kz_u128
    # GCC/Clang builtin: start loading a cache line we will read soon (read, keep in all levels).
    void kz_prefetch "__builtin_prefetch"(const void *addr) noexcept nogil


cdef class PrefixSet:
    # IPv4: interval i covers [v4_starts[i], v4_starts[i+1]); v4_starts[0] == 0; bitmap holds addr >> V4_KEY_SHIFT.
    cdef object _v4_starts_arr, _v4_rule_arr, _v4_pfx_arr, _v4_parent_arr, _v4_off_arr, _v4_rules_arr
    cdef object _v4_dir_arr
    cdef const uint32_t[::1] _v4_starts
    cdef const int32_t[::1] _v4_rule
    cdef const uint32_t[::1] _v4_dir
    cdef object _v4_bitmap          # pyroaring.BitMap: owner of the roaring_bitmap_t behind _v4_bm
    cdef const void *_v4_bm
    # IPv6: 128-bit interval starts as (hi, lo) pairs; the optional pre-filter bitmap holds hi >> V6_KEY_SHIFT.
    cdef object _v6_hi_arr, _v6_lo_arr, _v6_rule_arr, _v6_pfx_arr, _v6_parent_arr, _v6_off_arr, _v6_rules_arr
    cdef object _v6_dir_arr
    cdef const uint64_t[::1] _v6_hi
    cdef const uint64_t[::1] _v6_lo
    cdef const int32_t[::1] _v6_rule
    cdef const uint32_t[::1] _v6_dir
    cdef object _v6_bitmap
    cdef const void *_v6_bm
    cdef readonly Py_ssize_t n_v4
    cdef readonly Py_ssize_t n_v6
    cdef Py_ssize_t _bitmap_bytes

    cdef int32_t lookup_one_v4(self, uint32_t addr) noexcept nogil
    cdef int32_t lookup_one_v6(self, uint64_t hi, uint64_t lo) noexcept nogil
