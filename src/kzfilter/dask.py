"""Classification on a Dask cluster: a ``dask.dataframe`` of flow records, or a Parquet dataset.

::

    from dask.distributed import Client
    import kzfilter, kzfilter.dask

    client = Client("tcp://scheduler:8786")          # or LocalCluster() on one machine
    clf = kzfilter.load_rules("blocklist.csv").compile()
    df = kzfilter.dask.classify(["/data/a.pcap", "/data/b.pcap"], clf)
    df[df.action == "block"].groupby("category").size().compute()
    kzfilter.dask.to_parquet(paths, clf, "/shared/flows", partition_by=("capture", "date"))

One partition per capture file (``shards=k``: k partitions per file, each holding the flows whose
symmetric flow hash falls to it, for captures too large for one task).  The records are the same as
``clf.classify(paths)`` gives (within a partition in its order; across shards of one file, sort on
``emitted_ns, flow_id`` to get that order back).  Capture paths and the output path must be
readable / writable by every Dask worker (a shared file system).

The compiled rule set travels once: its ``.kzr`` bytes are scattered to every worker with
``client.scatter(..., broadcast=True)`` when a distributed client is active (else they are one
node of the graph that every task depends on), and each worker process decodes them once (cached
by digest), not once per task.
"""
from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Sequence

from .flow.records import RecordBatch

__all__ = ["classify", "to_parquet", "record_meta"]

_CACHE: dict[bytes, Any] = {}
_CACHE_LOCK = threading.Lock()


def record_meta() -> Any:
    """An empty pandas DataFrame with the record schema's columns and dtypes (Dask ``meta``)."""
    return RecordBatch().to_pandas()


def _rules_bytes(classifier: Any) -> bytes:
    """``.kzr`` bytes of a Classifier, or of a ``.kzr`` path."""
    if isinstance(classifier, (str, os.PathLike)):
        with open(classifier, "rb") as fh:
            return fh.read()
    if isinstance(classifier, (bytes, bytearray, memoryview)):
        return bytes(classifier)
    return classifier.to_bytes()


def _classifier(kzr: bytes) -> Any:
    """The Classifier of ``kzr`` bytes, decoded once per worker process."""
    from .match.classifier import Classifier

    key = hashlib.blake2b(kzr, digest_size=16).digest()
    with _CACHE_LOCK:
        clf = _CACHE.get(key)
        if clf is None:
            if len(_CACHE) >= 4:
                _CACHE.clear()
            clf = _CACHE[key] = Classifier.from_bytes(kzr)
    return clf


def _shared_rules(kzr: bytes, client: Any) -> Any:
    """What the tasks receive for the rules: a broadcast future, or a delayed node."""
    if client is False:                  # explicitly local: a graph node, no scatter
        client = None
    elif client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if client is not None:
        return client.scatter(kzr, broadcast=True, hash=False)
    import dask

    return dask.delayed(kzr, name="kzfilter-rules-" + hashlib.blake2b(kzr, digest_size=8).hexdigest(),
                        pure=True)


def _jobs(paths: Any, shards: int) -> list[tuple[int, str, int]]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("classify needs at least one capture")
    if shards < 1:
        raise ValueError("shards must be >= 1")
    return [(i, p, k) for i, p in enumerate(paths) for k in range(shards)]


def _records(kzr: bytes, path: str, shards: int, shard: int, match_client_ip: bool,
             flow_options: dict[str, Any]) -> RecordBatch:
    from .parallel import shard_batches

    clf = _classifier(kzr)
    batches = [b for b in shard_batches(clf, path, shards, shard, match_client_ip=match_client_ip,
                                        flow_options=flow_options) if b is not None]
    return RecordBatch.concat(batches)


def _partition(kzr: bytes, path: str, shards: int, shard: int, match_client_ip: bool,
               flow_options: dict[str, Any]) -> Any:
    df = _records(kzr, path, shards, shard, match_client_ip, flow_options).to_pandas()
    return df


def classify(paths: Any, classifier: Any, *, shards: int = 1, match_client_ip: bool = False,
             client: Any = None, **flow_options: Any) -> Any:
    """A lazy ``dask.dataframe.DataFrame`` of the flow records of ``paths`` with verdicts.

    ``classifier``: a compiled Classifier (or a ``.kzr`` path / bytes).  One partition per capture
    (times ``shards``); columns and dtypes of :func:`record_meta`.  ``client``: the
    ``dask.distributed.Client`` to broadcast the rules with (default: the active one, if any;
    False: none, the rules are a node of the graph, for the local schedulers).
    ``flow_options`` go to the flow table (timeouts, max_flows: per task, see kzfilter.parallel).
    """
    import dask
    import dask.dataframe as dd

    jobs = _jobs(paths, shards)
    rules = _shared_rules(_rules_bytes(classifier), client)
    part = dask.delayed(_partition, pure=True)
    parts = [part(rules, p, shards, k, match_client_ip, dict(flow_options),
                  dask_key_name=f"kzfilter-classify-{i}-{k}-{hashlib.blake2b(p.encode(), digest_size=6).hexdigest()}")
             for i, p, k in jobs]
    return dd.from_delayed(parts, meta=record_meta(), verify_meta=False)


def _write(kzr: bytes, path: str, shards: int, shard: int, match_client_ip: bool,
           flow_options: dict[str, Any], out: str, partition_by: tuple[str, ...] | None,
           part_name: str) -> int:
    from .output import open_writer
    from .parallel import shard_batches

    clf = _classifier(kzr)
    target = out if partition_by else os.path.join(out, part_name)
    writer = open_writer("parquet", None, target, partition_by=partition_by, part_name=part_name)
    n = 0
    try:
        for batch in shard_batches(clf, path, shards, shard, match_client_ip=match_client_ip,
                                   flow_options=flow_options):
            if batch is not None:
                writer.write(batch)
                n += len(batch)
    finally:
        writer.close()
    return n


def to_parquet(paths: Any, classifier: Any, path: str | os.PathLike[str], *,
               partition_by: Sequence[str] | None = None, shards: int = 1,
               match_client_ip: bool = False, client: Any = None, **flow_options: Any) -> int:
    """Classify ``paths`` on the cluster and write a Parquet dataset at directory ``path``.

    Each task streams its records into its own files (``part-<file>-<shard>.parquet``), row group
    by row group, so no worker holds a whole capture's records.  ``partition_by``: ("capture",),
    ("date",) or both: the Hive layout of :mod:`kzfilter.output`.  Returns the number of records.
    """
    import dask

    out = os.fspath(path)
    keys = tuple(partition_by) if partition_by else None
    if keys:
        from .output import PARTITION_KEYS

        bad = [k for k in keys if k not in PARTITION_KEYS] or ([] if len(set(keys)) == len(keys) else ["duplicate"])
        if bad:
            raise ValueError(f"partition_by: expected keys among {PARTITION_KEYS}, got {keys}")
    os.makedirs(out, exist_ok=True)
    jobs = _jobs(paths, shards)
    rules = _shared_rules(_rules_bytes(classifier), client)
    write = dask.delayed(_write, pure=False)
    tasks = [write(rules, p, shards, k, match_client_ip, dict(flow_options), out, keys,
                   f"part-{i:05d}-{k:03d}.parquet") for i, p, k in jobs]
    (counts,) = dask.compute(tasks)
    return int(sum(counts))
