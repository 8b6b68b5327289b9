"""An independent Iceberg reader: pyiceberg's SqlCatalog on the SQLite file Smelter's embedded
catalog writes, reading every gold table of the demo run with `[format] table = "iceberg"`.

Row counts and an order-independent checksum of every gold table are compared with what Smelter
itself reports (`smelter show` is not involved: the run summary's row counts and the same demo on
Delta, read with `deltalake`).
"""

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyiceberg.catalog.sql import SqlCatalog

REPO = Path(os.environ.get("SMELTER_REPO", Path(__file__).resolve().parents[2]))
BIN = os.environ.get("SMELTER_BIN", str(REPO / "target/release/smelter"))
GOLD = ["daily_shipments_by_carrier", "on_time_delivery", "revenue_by_customer"]


def _project(tmp, table_format):
    project = tmp / table_format
    (project / "pipelines").mkdir(parents=True)
    toml = (REPO / "pipelines/demo.toml").read_text()
    toml = re.sub(r"scale_factor = [0-9.]+", "scale_factor = 0.004", toml)
    toml = toml.replace('table = "delta"', f'table = "{table_format}"')
    (project / "pipelines/demo.toml").write_text(toml)
    shutil.copytree(REPO / "sql/demo", project / "sql/demo")
    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    for day, run in [("2026-11-03", "py1"), ("2026-11-04", "py2")]:
        out = subprocess.run(
            [BIN, "run", str(project / "pipelines/demo.toml"), "--logical-date", day,
             "--run-id", run, "--summary-json", str(project / f"{run}.json")],
            capture_output=True, text=True, env=env, timeout=900,
        )
        assert out.returncode == 0, out.stderr
    return project


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iceberg")
    return _project(tmp, "iceberg"), _project(tmp, "delta")


@pytest.fixture(scope="module")
def catalog(projects):
    lake = projects[0] / "lake"
    return SqlCatalog(
        "smelter",
        uri=f"sqlite:///{lake / '_iceberg/catalog.db'}",
        warehouse=f"file://{lake}",
    )


def _checksum(table):
    """Order-independent checksum: the sorted SHA-256 of every row's JSON."""
    rows = sorted(
        hashlib.sha256(json.dumps(r, sort_keys=True, default=str).encode()).hexdigest()
        for r in table.to_pylist()
    )
    return hashlib.sha256("".join(rows).encode()).hexdigest()


def test_every_gold_table_reads_the_same_as_the_delta_run(projects, catalog):
    iceberg_project, delta_project = projects
    assert {"bronze", "silver", "gold"} <= {ns[0] for ns in catalog.list_namespaces()}
    for name in GOLD:
        got = catalog.load_table(f"gold.{name}").scan().to_arrow()
        want = DeltaTable(str(delta_project / "lake/gold" / name)).to_pyarrow_table()
        assert got.num_rows > 0, name
        assert got.num_rows == want.num_rows, name
        assert sorted(got.column_names) == sorted(want.column_names), name
        assert _checksum(got.select(sorted(got.column_names))) == _checksum(
            want.select(sorted(want.column_names))
        ), name


def test_gold_row_counts_and_versions_match_the_run_summary(projects, catalog):
    summary = json.loads((projects[0] / "py2.json").read_text())
    steps = {s["target"]: s for s in summary["steps"]}
    for name in GOLD:
        table = catalog.load_table(f"gold.{name}")
        step = steps[f"gold.{name}"]
        assert step["materialized"] == "table", step
        # A table model's write is a replace: the table holds exactly the rows it inserted.
        assert table.scan().to_arrow().num_rows == step["rows_inserted"], (name, step)
        assert table.metadata.last_sequence_number == step["version"], (name, step)


def test_a_merge_table_has_a_snapshot_history(catalog):
    table = catalog.load_table("silver.shipments")
    # The spec does not order the metadata's snapshot list (iceberg-rust writes it from a map):
    # order the history by sequence number, as a reader must.
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.sequence_number)
    assert len(snapshots) >= 2, snapshots
    ops = [s.summary.operation.value for s in snapshots]
    assert ops[0] == "append", ops
    assert "overwrite" in ops[1:], ops
    # Every key once: the copy-on-write merge left no duplicate.
    ids = table.scan(selected_fields=("shipment_id",)).to_arrow()["shipment_id"].to_pylist()
    assert len(ids) == len(set(ids))
    props = table.metadata.properties
    txns = json.loads(props["smelter.txns"])
    assert any("py1" in t["id"] for t in txns) and any("py2" in t["id"] for t in txns), txns


# --- Partition transforms, on a schema of its own (not the demo's) ------------------------------

PARTS_TOML = """name = "parts"
[source]
type = "files"
root = "incoming"
[[source.tables]]
name = "orders"
path = "orders/*.csv"
key = ["order_id"]
[storage]
root = "lake"
[profile]
mode = "off"
[format]
table = "iceberg"
"""

PARTS_SQL = """-- materialized: table
-- partition_by: {partition_by}
SELECT CAST(order_id AS BIGINT) AS order_id, customer, CAST(ordered_on AS DATE) AS ordered_on,
       CAST(ordered_at AS TIMESTAMP) AS ordered_at, CAST(amount AS DOUBLE) AS amount
FROM bronze.orders
"""


def _parts_project(tmp):
    project = tmp / "parts"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines/parts.toml").write_text(PARTS_TOML)
    (project / "sql/parts/silver").mkdir(parents=True)
    (project / "incoming/orders").mkdir(parents=True)
    lines = ["order_id,customer,ordered_on,ordered_at,amount"]
    for i in range(1, 401):
        # Negative ids exercise truncate's floor (-185 is in [-200, -100)).
        oid = i if i % 5 else -i * 37
        day = datetime.date(2026, 1, 1) + datetime.timedelta(days=(i * 7) % 90)
        lines.append(
            f"{oid},cust-{(i * 13) % 47:02d},{day.isoformat()},"
            f"{day.isoformat()}T{i % 24:02d}:15:00,{i * 1.25}"
        )
    (project / "incoming/orders/a.csv").write_text("\n".join(lines) + "\n")
    return project


def _smelter(project, *args):
    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    return subprocess.run(
        [BIN, *[a.replace("{p}", str(project / "pipelines/parts.toml")) for a in args]],
        capture_output=True, text=True, env=env, timeout=600,
    )


def _parts_catalog(project):
    lake = project / "lake"
    return SqlCatalog("smelter", uri=f"sqlite:///{lake / '_iceberg/catalog.db'}",
                      warehouse=f"file://{lake}")


def _assert_files_match_their_partitions(table):
    """Every row of every data file maps, by pyiceberg's own transforms, to its file's partition."""
    import pyarrow.parquet as pq

    spec = table.spec()
    schema = table.schema()
    files = table.inspect.files().to_pylist()
    assert files
    for f in files:
        rows = pq.read_table(f["file_path"].removeprefix("file://")).to_pylist()
        assert rows, f["file_path"]
        for field in spec.fields:
            source = schema.find_field(field.source_id)
            fn = field.transform.transform(source.field_type)
            want = f["partition"][field.name]
            if isinstance(want, datetime.date):  # pyiceberg shows a `day` partition as a date
                want = (want - datetime.date(1970, 1, 1)).days
            for r in rows:
                value = r[source.name]
                # pyiceberg's transforms take the physical value (days, micros).
                if isinstance(value, datetime.datetime):
                    value = (value - datetime.datetime(1970, 1, 1)) // datetime.timedelta(
                        microseconds=1)
                elif isinstance(value, datetime.date):
                    value = (value - datetime.date(1970, 1, 1)).days
                assert fn(value) == want, (field, r, want, f["file_path"])


def test_partition_transforms_follow_the_iceberg_spec_and_prune_exactly(tmp_path):
    from pyiceberg.expressions import EqualTo
    from pyiceberg.transforms import HourTransform, TruncateTransform, YearTransform

    project = _parts_project(tmp_path)
    model = project / "sql/parts/silver/orders.sql"
    model.write_text(PARTS_SQL.format(
        partition_by="year(ordered_on), truncate(100, order_id), hour(ordered_at)"))
    out = _smelter(project, "run", "{p}", "--run-id", "t1")
    assert out.returncode == 0, out.stderr
    table = _parts_catalog(project).load_table("silver.orders")
    spec = {f.name: f.transform for f in table.spec().fields}
    assert spec == {
        "ordered_on_year": YearTransform(),
        "order_id_trunc": TruncateTransform(100),
        "ordered_at_hour": HourTransform(),
    }, spec
    _assert_files_match_their_partitions(table)
    everything = table.scan().to_arrow().to_pylist()
    assert len(everything) == 400
    assert len({r["order_id"] for r in everything}) == 400
    # A reader that prunes by the partition values and the column bounds gets exactly the
    # matching rows (string bounds, which the pinned writer gets wrong, are left out).
    for customer in ["cust-00", "cust-07", "cust-31", "cust-46"]:
        got = table.scan(row_filter=EqualTo("customer", customer)).to_arrow().to_pylist()
        want = [r for r in everything if r["customer"] == customer]
        assert want and len(got) == len(want), customer
    for oid in [-185, -3700, 7, 399]:
        got = table.scan(row_filter=EqualTo("order_id", oid)).to_arrow().to_pylist()
        assert len(got) == 1 and got[0]["order_id"] == oid, oid
    for at in sorted({r["ordered_at"] for r in everything})[::37]:
        got = table.scan(row_filter=EqualTo("ordered_at", at.isoformat())).to_arrow().to_pylist()
        assert len(got) == sum(r["ordered_at"] == at for r in everything) > 0, at

    # A changed `partition_by` of a table model: the next run writes the new spec, every row once.
    model.write_text(PARTS_SQL.format(partition_by="day(ordered_at), identity(order_id)"))
    out = _smelter(project, "run", "{p}", "--layer", "silver", "--run-id", "t2")
    assert out.returncode == 0, out.stderr
    table = _parts_catalog(project).load_table("silver.orders")
    assert [f.name for f in table.spec().fields] == ["ordered_at_day", "order_id"]
    assert table.spec().spec_id != 0
    _assert_files_match_their_partitions(table)
    again = table.scan().to_arrow().to_pylist()
    assert sorted(r["order_id"] for r in again) == sorted(r["order_id"] for r in everything)
