"""kzfilter.dask on a real dask.distributed LocalCluster (2 worker processes): same records as the
one-process pipeline, rules broadcast once, Parquet datasets read back by pyarrow."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import kzfilter.dask as kd
from kzfilter.flow.records import FIELD_NAMES
from tests.conftest import DEMO, DEMO_RULES, shared_path, write_synthetic_capture

distributed = pytest.importorskip("distributed")

RULES = DEMO_RULES


@pytest.fixture(scope="module")
def clf(demo_clf):
    return demo_clf


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[str]:
    syn = write_synthetic_capture(tmp_path_factory.mktemp("syn"), 8000, concurrent=200)
    ndpi = shared_path("pcaps", "ndpi")
    picks = ["chrome.pcap", "dns-tunnel-iodine.pcap", "quic-33.pcapng", "6in4tunnel.pcap"]
    return [str(DEMO), str(syn)] + [str(ndpi / p) for p in picks if (ndpi / p).exists()]


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as c:
        yield c


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Dask may turn text columns into pyarrow strings: back to objects with None, fresh index."""
    out = df.reset_index(drop=True).copy()
    for col in out.columns:
        if out[col].dtype == object or isinstance(out[col].dtype, pd.StringDtype):
            out[col] = [None if (v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)))
                        else (list(v) if isinstance(v, (list, np.ndarray)) else v)
                        for v in out[col].astype(object)]
    return out


def _by_flow(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["capture", "flow_id"], kind="stable").reset_index(drop=True)


def test_classify_same_records_on_a_cluster(clf, paths, client):
    ref = clf.classify(paths).to_pandas()
    ddf = kd.classify(paths, clf)
    assert ddf.npartitions == len(paths)
    assert list(ddf.columns) == list(FIELD_NAMES)
    got = ddf.compute()
    pd.testing.assert_frame_equal(_plain(got), _plain(ref), check_dtype=False)
    assert (got["action"] == "block").any() and len(got) > 300


def test_shards_per_file_same_records(clf, paths, client):
    ref = clf.classify(paths[:2]).to_pandas()
    ddf = kd.classify(paths[:2], clf, shards=2)
    assert ddf.npartitions == 4
    got = ddf.compute()
    pd.testing.assert_frame_equal(_by_flow(_plain(got)), _by_flow(_plain(ref)), check_dtype=False)


def test_rules_broadcast_to_every_worker(clf, client):
    fut = kd._shared_rules(clf.to_bytes(), client)
    holders = client.who_has([fut])[fut.key]
    assert len(holders) == 2
    # Each worker decodes the rule set once, however many tasks it ran.
    kd.classify([str(DEMO)] * 6, clf).compute()
    cached = client.run(lambda: len(kd._CACHE))
    assert all(n <= 1 for n in cached.values()) and sum(cached.values()) >= 1


def test_to_parquet_partitioned(clf, paths, client, tmp_path):
    n = kd.to_parquet(paths, clf, tmp_path / "flows", partition_by=("capture", "date"))
    ref = clf.classify(paths).to_arrow()
    assert n == ref.num_rows
    got = ds.dataset(tmp_path / "flows", format="parquet", partitioning="hive").to_table()
    got = got.drop_columns(["date"])
    got = got.set_column(got.column_names.index("capture"), "capture", got.column("capture").cast(pa.string()))
    got = got.select(list(FIELD_NAMES))
    key = [("capture", "ascending"), ("flow_id", "ascending")]
    assert got.sort_by(key).equals(ref.sort_by(key), check_metadata=False)


def test_without_a_cluster_and_bad_arguments(clf, tmp_path):
    # client=False: no scatter (the module's cluster may be the active client), local scheduler.
    got = kd.classify([str(DEMO)], clf, client=False).compute(scheduler="synchronous")
    assert len(got) == len(clf.classify(DEMO).to_record_batch())
    kzr = tmp_path / "r.kzr"
    clf.save(kzr)
    assert len(kd.classify([str(DEMO)], str(kzr), client=False).compute(scheduler="synchronous")) == len(got)
    with pytest.raises(ValueError):
        kd.classify([], clf)
    with pytest.raises(ValueError):
        kd.to_parquet([str(DEMO)], clf, tmp_path / "x", partition_by=("hour",))
