"""Record writers: Parquet / Arrow files and partitioned datasets read back by pyarrow, the CLI flags.

Reference: the records of ``clf.classify(...)`` as a pyarrow table (``to_arrow``); the files are
read back with pyarrow's own readers (parquet, IPC, Hive dataset discovery).
"""
from __future__ import annotations

import datetime as dt
import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from kzfilter import classify as classify_mod
from kzfilter.cli import main
from kzfilter.flow.records import FIELD_NAMES, RecordBatch
from kzfilter.output import RECORD_SCHEMA_VERSION, open_writer

from tests.conftest import DEMO, DEMO_RULES, write_synthetic_capture

RULES = DEMO_RULES


@pytest.fixture(scope="module")
def clf(demo_clf):
    return demo_clf


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic_capture(tmp_path_factory.mktemp("syn"), 6000, concurrent=200)


def _write(fmt, path, batches, partition_by=None):
    w = open_writer(fmt, None, str(path), partition_by=partition_by)
    for b in batches:
        w.write(b)
    w.close()


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("capture", "ascending"), ("flow_id", "ascending")])


def test_parquet_row_groups_as_flows_finish(clf, synthetic, tmp_path, monkeypatch):
    monkeypatch.setattr(classify_mod, "CHUNK_FRAMES", 1000)
    fast = dict(idle_timeout=0.01, udp_idle_timeout=0.01, close_grace=0.002, sweep_interval=0.001)
    batches = list(clf.classify([synthetic, DEMO], **fast).batches())
    assert len(batches) > 3
    _write("parquet", tmp_path / "r.parquet", batches)
    f = pq.ParquetFile(tmp_path / "r.parquet")
    assert f.metadata.num_row_groups == len(batches)
    assert f.schema_arrow.metadata[b"kzfilter.schema_version"] == RECORD_SCHEMA_VERSION.encode()
    got = f.read()
    assert got.column_names == list(FIELD_NAMES)
    assert got.equals(RecordBatch.concat(batches).to_arrow(), check_metadata=False)


def test_arrow_ipc_file(clf, tmp_path):
    batches = list(clf.classify(DEMO).batches())
    _write("arrow", tmp_path / "r.arrow", batches)
    got = feather.read_table(tmp_path / "r.arrow")
    assert got.schema.metadata[b"kzfilter.schema_version"] == RECORD_SCHEMA_VERSION.encode()
    ref = clf.classify(DEMO).to_arrow()
    assert got.equals(ref, check_metadata=False)
    assert "block" in got.column("action").to_pylist()
    with pa.ipc.open_file(tmp_path / "r.arrow") as reader:
        assert reader.num_record_batches == len(batches)


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_empty_result_is_a_valid_file(tmp_path, fmt):
    _write(fmt, tmp_path / "e", [RecordBatch()])
    got = pq.read_table(tmp_path / "e") if fmt == "parquet" else feather.read_table(tmp_path / "e")
    assert got.num_rows == 0 and got.column_names == list(FIELD_NAMES)


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_partitioned_by_capture_and_date(clf, synthetic, tmp_path, fmt):
    paths = [synthetic, DEMO]
    ref = clf.classify(paths).to_arrow()
    _write(fmt, tmp_path / "ds", clf.classify(paths).batches(), partition_by=("capture", "date"))
    files = sorted(p for p in (tmp_path / "ds").rglob(f"*.{fmt}"))
    assert len(files) >= 2
    for f in files:
        cap, day = f.parent.parent.name, f.parent.name
        assert cap.startswith("capture=") and day.startswith("date=")
    dataset = ds.dataset(tmp_path / "ds", format="parquet" if fmt == "parquet" else "ipc",
                         partitioning="hive")
    got = dataset.to_table()
    # The date key is the UTC day of ts_start, computed here independently.
    days = [dt.datetime.fromtimestamp(t, dt.timezone.utc).date().isoformat()
            for t in got.column("ts_start").to_pylist()]
    assert got.column("date").cast(pa.string()).to_pylist() == days
    got = got.drop_columns(["date"])
    got = got.set_column(got.column_names.index("capture"), "capture", got.column("capture").cast(pa.string()))
    got = got.select(list(FIELD_NAMES))
    assert set(got.column("capture").to_pylist()) == {str(p) for p in paths}
    assert _sorted(got).equals(_sorted(ref), check_metadata=False)


def test_partition_keys_checked(tmp_path):
    with pytest.raises(ValueError):
        open_writer("parquet", None, str(tmp_path / "x"), partition_by=("hour",))
    with pytest.raises(ValueError):
        open_writer("jsonl", io.StringIO(), None, partition_by=("date",))
    with pytest.raises(ValueError):
        open_writer("arrow", None, None)


# -- command line ----------------------------------------------------------------------------------

def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    old = sys.stdout
    sys.stdout = out
    try:
        code = main(list(args))
    finally:
        sys.stdout = old
    return code, out.getvalue()


def test_cli_workers_jsonl_same_output(synthetic):
    one = _cli("classify", str(synthetic), str(DEMO), "-r", *RULES, "-f", "jsonl", "-q")
    two = _cli("classify", str(synthetic), str(DEMO), "-r", *RULES, "-f", "jsonl", "-q", "--workers", "2")
    three = _cli("classify", str(synthetic), "-r", *RULES, "-f", "jsonl", "-q", "-j", "3")
    assert one[0] == two[0] == three[0] == 0
    assert one[1] == two[1] and one[1].count("\n") > 100
    first = [json.loads(line) for line in one[1].splitlines() if json.loads(line)["capture"] == str(synthetic)]
    assert [json.loads(line) for line in three[1].splitlines()] == first


def test_cli_arrow_and_partitioned_parquet(clf, tmp_path):
    code, _ = _cli("classify", str(DEMO), "-r", *RULES, "-f", "arrow", "-o", str(tmp_path / "a.arrow"), "-q")
    assert code == 0
    assert feather.read_table(tmp_path / "a.arrow").equals(clf.classify(DEMO).to_arrow(), check_metadata=False)
    code, _ = _cli("classify", str(DEMO), "-r", *RULES, "-f", "parquet", "-o", str(tmp_path / "p"),
                   "--partition-by", "date", "-q", "-j", "2")
    assert code == 0
    got = ds.dataset(tmp_path / "p", format="parquet", partitioning="hive").to_table()
    assert got.num_rows == len(clf.classify(DEMO).to_record_batch())
    assert pc.unique(got.column("date")).to_pylist() == ["2026-01-15"]


def test_cli_bad_usage(tmp_path, capsys):
    assert _cli("classify", str(DEMO), "-r", *RULES, "-f", "parquet", "-q")[0] == 2
    assert _cli("classify", str(DEMO), "-r", *RULES, "-f", "jsonl", "-o", str(tmp_path / "j"),
                "--partition-by", "date", "-q")[0] == 2
    for bad in (["--partition-by", "hour"], ["--workers", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["classify", str(DEMO), "-r", *RULES, *bad])
        assert e.value.code == 2
