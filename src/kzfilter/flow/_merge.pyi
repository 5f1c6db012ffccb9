"""Stubs for the compiled record merge (``_merge.pyx``)."""
import numpy as np

from kzfilter.flow._table import RecordChunk
from kzfilter.flow.buffers import BufferPool

def merge_records(arrays: list[np.ndarray], names: list[bytes], alpns: list[bytes],
                  remaps: list[np.ndarray], pool: BufferPool | None = None
                  ) -> tuple[np.ndarray, bytes, bytes, np.ndarray]:
    """Merge raw record arrays each sorted on (emitted_ns, flow_id); equal keys keep the
    batches' order; ``pool`` supplies the merged record array.  Returns (record bytes, names, alpn, order into the concatenation)."""
    ...

def merge_chunks(chunks: list[RecordChunk], remaps: list[np.ndarray], pool: BufferPool | None = None
                 ) -> tuple[np.ndarray, bytes, bytes]:
    """merge_records on the RecordChunks of N shards, each read in place in its sort order."""
    ...
