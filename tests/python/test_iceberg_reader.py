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
from tds_fixture import stop

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
    first_ids = {f.name: f.field_id for f in table.spec().fields}
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
    second_ids = {f.field_id for f in table.spec().fields}
    assert not second_ids & set(first_ids.values()), (second_ids, first_ids)

    # Back to the first partitioning: its fields keep their ids (spec: "Partition Evolution").
    model.write_text(PARTS_SQL.format(
        partition_by="year(ordered_on), truncate(100, order_id), hour(ordered_at)"))
    out = _smelter(project, "run", "{p}", "--layer", "silver", "--run-id", "t3")
    assert out.returncode == 0, out.stderr
    table = _parts_catalog(project).load_table("silver.orders")
    assert {f.name: f.field_id for f in table.spec().fields} == first_ids
    assert table.spec().spec_id == 0 and len(table.specs()) == 2, table.specs()
    _assert_files_match_their_partitions(table)
    assert table.scan().to_arrow().num_rows == len(everything)


# --- A REST catalog server (lakana-server, PyPI), read back through pyiceberg's RestCatalog -----

LAKANA = os.environ.get("LAKANA_SERVER")
REST_KEY, REST_SECRET = "smeltertest01", "s3cr3t0123456789abcdefghijklmnop"
REST_TOKEN = f"lakana_pat_{REST_KEY}_{REST_SECRET}"


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rest_server(tmp_path_factory):
    """A lakana-server on 127.0.0.1 with one environment `dev` whose warehouse is a local folder
    outside every Smelter lake: the server assigns each table's location there."""
    import urllib.request

    if not LAKANA:
        if os.environ.get("SMELTER_REQUIRE_E2E") == "1":
            pytest.fail("LAKANA_SERVER is not set (scripts/test.sh installs lakana-server)")
        pytest.skip("LAKANA_SERVER is not set")
    tmp = tmp_path_factory.mktemp("lakana")
    port = _free_port()
    env = {
        **os.environ,
        "LAKANA_DATABASE__URL": f"sqlite:///{tmp / 'lakana.db'}",
        "LAKANA_HOST": "127.0.0.1",
        "LAKANA_PORT": str(port),
        "LAKANA_BOOTSTRAP_PAT_KEY_ID": REST_KEY,
        "LAKANA_BOOTSTRAP_PAT_SECRET": REST_SECRET,
    }
    subprocess.run([LAKANA, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen([LAKANA], env=env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # bounded: at most about 60 s
            if server.poll() is not None:
                pytest.fail(f"lakana-server exited: {(tmp / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{uri}/v1/config", timeout=2)
                break
            except OSError:
                import time

                time.sleep(0.2)
        else:
            pytest.fail("lakana-server did not answer within 60 s")
        warehouse = tmp / "warehouse"
        warehouse.mkdir()
        request = urllib.request.Request(
            f"{uri}/api/v1/environments",
            data=json.dumps(
                {"name": "dev", "storage": {"scheme": "file", "root": f"file://{warehouse}/"}}
            ).encode(),
            headers={"Authorization": f"Bearer {REST_TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        assert urllib.request.urlopen(request, timeout=30).status == 201
        yield uri, warehouse
    finally:
        stop(server, timeout=30)
        log.close()


def _rest_toml(uri, extra=""):
    return (
        f'\n[format.iceberg]\ncatalog = "rest"\nuri = "{uri}"\nprefix = "dev"\n'
        f'token_env = "SMELTER_TEST_REST_TOKEN"\n{extra}'
    )


def _rest_env():
    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    env["SMELTER_TEST_REST_TOKEN"] = REST_TOKEN
    return env


def _rest_catalog(uri):
    from pyiceberg.catalog.rest import RestCatalog

    return RestCatalog("lakana", uri=uri, token=REST_TOKEN, prefix="dev")


def _run(project, toml, *args, env=None):
    return subprocess.run(
        [BIN, *[a.replace("{p}", str(project / "pipelines" / toml)) for a in args]],
        capture_output=True, text=True, env=env or _rest_env(), timeout=900,
    )


def test_the_demo_on_a_rest_catalog_reads_like_the_delta_run(tmp_path, rest_server, projects):
    uri, warehouse = rest_server
    project = _rest_demo(tmp_path, uri)
    for day, run in [("2026-11-03", "py1"), ("2026-11-04", "py2")]:
        out = _run(project, "demo.toml", "run", "{p}", "--logical-date", day, "--run-id", run)
        assert out.returncode == 0, out.stderr
        assert REST_SECRET not in out.stderr + out.stdout
    catalog = _rest_catalog(uri)
    for name in GOLD:
        # The server chose the location, in its warehouse; the lake holds no Iceberg table.
        location = catalog.load_table(f"gold.{name}").location()
        assert location.startswith(f"file://{warehouse}/"), location
    assert not list((project / "lake").glob("*/*/metadata"))
    demo_reads_like_the_delta_run(
        catalog, projects[1],
        lambda: _run(project, "demo.toml", "run", "{p}", "--logical-date", "2026-11-04",
                     "--run-id", "py2"))

    # `smelter show` reads through the same catalog.
    out = _run(project, "demo.toml", "show", "{p}", "gold.revenue_by_customer", "--limit", "3")
    assert out.returncode == 0, out.stderr


def demo_reads_like_the_delta_run(catalog, delta_project, retry):
    """Checks the demo's Iceberg tables in `catalog` after two runs: every gold table equal to
    the Delta run's in `delta_project` (rows and checksum), `silver.shipments` appended then
    overwritten with every key once; then `retry()` (the second run id again) commits nothing
    twice."""
    for name in GOLD:
        got = catalog.load_table(f"gold.{name}").scan().to_arrow()
        want = DeltaTable(str(delta_project / "lake/gold" / name)).to_pyarrow_table()
        assert got.num_rows > 0 and got.num_rows == want.num_rows, name
        assert _checksum(got.select(sorted(got.column_names))) == _checksum(
            want.select(sorted(want.column_names))
        ), name
    shipments = catalog.load_table("silver.shipments")
    ops = [s.summary.operation.value
           for s in sorted(shipments.metadata.snapshots, key=lambda s: s.sequence_number)]
    assert ops[0] == "append" and "overwrite" in ops[1:], ops
    ids = shipments.scan(selected_fields=("shipment_id",)).to_arrow()["shipment_id"].to_pylist()
    assert len(ids) == len(set(ids))
    before = {n: catalog.load_table(f"silver.{n}").scan().to_arrow().num_rows
              for n in ["shipments", "shipment_events"]}
    out = retry()
    assert out.returncode in (0, 99), out.stderr
    after = {n: catalog.load_table(f"silver.{n}").scan().to_arrow().num_rows
             for n in ["shipments", "shipment_events"]}
    assert before == after


def _rest_demo(tmp, uri, scale="0.004"):
    project = tmp / "rest"
    (project / "pipelines").mkdir(parents=True)
    toml = (REPO / "pipelines/demo.toml").read_text()
    toml = re.sub(r"scale_factor = [0-9.]+", f"scale_factor = {scale}", toml)
    toml = toml.replace('table = "delta"', 'table = "iceberg"')
    (project / "pipelines/demo.toml").write_text(toml + _rest_toml(uri))
    shutil.copytree(REPO / "sql/demo", project / "sql/demo")
    return project


def test_concurrent_appends_through_a_rest_catalog_keep_every_row_once(tmp_path, rest_server):
    """Four bronze runs append to the same tables at once; the server's 409 decides who commits
    first and the losers commit again on the winner's snapshot (or exit 75 and are retried)."""
    uri, _ = rest_server
    project = _rest_demo(tmp_path, uri, scale="0.002")
    ids = ["a", "b", "c", "d"]
    for run in ids:
        out = _run(project, "demo.toml", "run", "{p}", "--layer", "extract",
                   "--logical-date", "2026-11-03", "--run-id", run)
        assert out.returncode == 0, out.stderr

    concurrent_bronze_runs_keep_every_row_once(project, ids, _rest_env(),
                                                lambda: _rest_catalog(uri))


def concurrent_bronze_runs_keep_every_row_once(project, ids, env, catalog):
    """Runs the bronze layer of `project` once per run id in `ids`, all at once (a run that
    exits 75, a lost race not retried in-process, is retried as Airflow would), then checks
    through `catalog()` that every run's rows of the two appended tables are there exactly once,
    as many as its run summary says."""

    def bronze(run):
        return [BIN, "run", str(project / "pipelines/demo.toml"), "--layer", "bronze",
                "--run-id", run, "--summary-json", str(project / f"{run}.json")]

    procs = [subprocess.Popen(bronze(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for run in ids]
    for run, proc in zip(ids, procs):
        _, err = proc.communicate(timeout=600)
        if proc.returncode == 75:
            out = subprocess.run(bronze(run), capture_output=True, text=True, env=env,
                                 timeout=600)
            assert out.returncode == 0, out.stderr
        else:
            assert proc.returncode == 0, err
    reader = catalog()
    for name, key in [("shipment_events", "event_id"), ("shipments", "shipment_id")]:
        rows = reader.load_table(f"bronze.{name}").scan(
            selected_fields=("_run_id", key)).to_arrow().to_pylist()
        for run in ids:
            summary = json.loads((project / f"{run}.json").read_text())
            step = next(s for s in summary["steps"] if s["target"] == f"bronze.{name}")
            mine = [r[key] for r in rows if r["_run_id"] == run]
            assert len(mine) == step["rows_inserted"] > 0, (name, run, len(mine), step)
            if name == "shipment_events":  # event ids are unique per run
                assert len(set(mine)) == len(mine), (name, run)


def test_a_partitioned_merge_of_its_own_schema_through_a_rest_catalog(tmp_path, rest_server):
    """Not the demo's schema: a merge model partitioned by a transform, two runs, read back with
    pyiceberg's RestCatalog: every key once, with its latest values, in the right partition."""
    uri, _ = rest_server
    project = _parts_project(tmp_path)
    toml = project / "pipelines/parts.toml"
    toml.write_text(toml.read_text() + _rest_toml(uri))
    (project / "sql/parts/silver/orders.sql").write_text(
        "-- materialized: merge\n-- unique_key: order_id\n"
        "-- partition_by: truncate(100, order_id), day(ordered_at)\n"
        "SELECT CAST(order_id AS BIGINT) AS order_id, customer,\n"
        "       CAST(ordered_at AS TIMESTAMP) AS ordered_at, CAST(amount AS DOUBLE) AS amount\n"
        "FROM {{ unprocessed('bronze.orders') }} AS o\n"
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY _run_id DESC) = 1\n")
    out = _run(project, "parts.toml", "run", "{p}", "--run-id", "m1")
    assert out.returncode == 0, out.stderr
    first = {r["order_id"]: r for r in
             _rest_catalog(uri).load_table("silver.orders").scan().to_arrow().to_pylist()}
    assert len(first) == 400
    # A second file updates 30 orders and adds 5.
    changed = sorted(first)[::14][:30]
    lines = ["order_id,customer,ordered_on,ordered_at,amount"]
    for oid in changed:
        lines.append(f"{oid},cust-new,2026-02-01,2026-02-01T05:00:00,{oid * 1000.5}")
    for oid in range(10001, 10006):
        lines.append(f"{oid},cust-add,2026-03-01,2026-03-01T06:00:00,1.5")
    (project / "incoming/orders/b.csv").write_text("\n".join(lines) + "\n")
    out = _run(project, "parts.toml", "run", "{p}", "--run-id", "m2")
    assert out.returncode == 0, out.stderr
    table = _rest_catalog(uri).load_table("silver.orders")
    assert [f.name for f in table.spec().fields] == ["order_id_trunc", "ordered_at_day"]
    _assert_files_match_their_partitions(table)
    rows = table.scan().to_arrow().to_pylist()
    got = {r["order_id"]: r for r in rows}
    assert len(rows) == len(got) == 405
    for oid in changed:
        assert got[oid]["customer"] == "cust-new" and got[oid]["amount"] == oid * 1000.5, oid
    for oid, r in first.items():
        if oid not in changed:
            assert got[oid] == r, oid
    ops = [s.summary.operation.value
           for s in sorted(table.metadata.snapshots, key=lambda s: s.sequence_number)]
    assert ops[-1] == "overwrite", ops

    # A run with nothing new does not rewrite the partitioned table.
    out = _run(project, "parts.toml", "run", "{p}", "--run-id", "m3")
    assert out.returncode in (0, 99), out.stderr
    again = _rest_catalog(uri).load_table("silver.orders")
    assert again.metadata.current_snapshot_id == table.metadata.current_snapshot_id

    # A merge that adds a column: a new schema id on the server, older rows read NULL in it.
    model = project / "sql/parts/silver/orders.sql"
    model.write_text(model.read_text().replace(
        "AS amount\n", "AS amount, upper(customer) AS customer_uc\n"))
    (project / "incoming/orders/c.csv").write_text(
        "order_id,customer,ordered_on,ordered_at,amount\n20001,cust-c,2026-04-01,"
        "2026-04-01T01:00:00,2.5\n")
    out = _run(project, "parts.toml", "run", "{p}", "--run-id", "m4")
    assert out.returncode == 0, out.stderr
    table = _rest_catalog(uri).load_table("silver.orders")
    assert table.schema().schema_id > 0
    assert table.metadata.current_snapshot().schema_id == table.schema().schema_id
    rows = {r["order_id"]: r for r in table.scan().to_arrow().to_pylist()}
    assert len(rows) == 406 and rows[20001]["customer_uc"] == "CUST-C"
    assert sum(r["customer_uc"] is None for r in rows.values()) == 405
    # Smelter reads the new column too.
    out = _run(project, "parts.toml", "show", "{p}", "silver.orders", "--limit", "1000")
    assert out.returncode == 0 and "CUST-C" in out.stdout, out.stderr

    # A full refresh fills it for every row.
    out = _run(project, "parts.toml", "run", "{p}", "--run-id", "m5", "--layer", "silver",
               "--full-refresh")
    assert out.returncode == 0, out.stderr
    table = _rest_catalog(uri).load_table("silver.orders")
    rows = table.scan().to_arrow().to_pylist()
    assert len(rows) == len({r["order_id"] for r in rows}) == 406
    assert all(r["customer_uc"] == r["customer"].upper() for r in rows)

    # Another pipeline on the same catalog does not overwrite this pipeline's tables.
    toml.write_text(toml.read_text().replace('name = "parts"', 'name = "other"'))
    shutil.copytree(project / "sql/parts", project / "sql/other")
    out = _run(project, "parts.toml", "run", "{p}", "--run-id", "o1", "--layer", "silver",
               "--full-refresh")
    assert out.returncode == 2 and "written by pipeline `parts`" in out.stderr, out.stderr
    # Nor does its maintenance: the table keeps its snapshot and its owner.
    out = _run(project, "parts.toml", "maintain", "{p}", "--table", "silver.orders")
    assert out.returncode == 2 and "written by pipeline `parts`" in out.stderr, out.stderr
    after = _rest_catalog(uri).load_table("silver.orders")
    assert after.metadata.current_snapshot_id == table.metadata.current_snapshot_id
    assert after.metadata.properties["smelter.pipeline"] == "parts"
    assert len(after.scan().to_arrow()) == 406


def test_rest_catalog_mistakes_exit_2_or_75_naming_the_cause(tmp_path, rest_server):
    uri, _ = rest_server
    project = _parts_project(tmp_path)
    toml = project / "pipelines/parts.toml"
    base = toml.read_text()
    (project / "sql/parts/silver/orders.sql").write_text(
        "-- materialized: table\nSELECT order_id FROM bronze.orders\n")
    assert _run(project, "parts.toml", "run", "{p}", "--layer", "extract",
                "--run-id", "x").returncode == 0

    # A token the server refuses: exit 2, naming the setting, never printing the token.
    env = _rest_env()
    env["SMELTER_TEST_REST_TOKEN"] = f"lakana_pat_{REST_KEY}_wrongwrongwrongwrongwrong0000000"
    toml.write_text(base + _rest_toml(uri))
    out = _run(project, "parts.toml", "run", "{p}", "--layer", "bronze", "--run-id", "x",
               env=env)
    assert out.returncode == 2, out.stderr
    assert "token_env" in out.stderr and "wrongwrong" not in out.stderr, out.stderr

    # The token variable unset: exit 2 naming the variable.
    env = _rest_env()
    del env["SMELTER_TEST_REST_TOKEN"]
    out = _run(project, "parts.toml", "run", "{p}", "--layer", "bronze", "--run-id", "x",
               env=env)
    assert out.returncode == 2 and "SMELTER_TEST_REST_TOKEN" in out.stderr, out.stderr

    # A prefix the server does not have: exit 2 naming the setting (not "run bronze first").
    toml.write_text(base + _rest_toml(uri).replace('prefix = "dev"', 'prefix = "nope"'))
    out = _run(project, "parts.toml", "run", "{p}", "--layer", "bronze", "--run-id", "x")
    assert out.returncode == 2 and "format.iceberg.prefix" in out.stderr, out.stderr

    # A server that does not answer: exit 75, naming the catalog URI.
    dead = f"http://127.0.0.1:{_free_port()}"
    toml.write_text(base + _rest_toml(dead))
    out = _run(project, "parts.toml", "run", "{p}", "--layer", "bronze", "--run-id", "x")
    assert out.returncode == 75 and dead in out.stderr, out.stderr

    # Settings of the other catalog kind: exit 2 naming the key.
    toml.write_text(base + _rest_toml(uri, 'path = "catalog.db"\n'))
    out = _run(project, "parts.toml", "validate", "{p}")
    assert out.returncode == 2 and "format.iceberg.path" in out.stderr, out.stderr
    toml.write_text(base + '\n[format.iceberg]\nwarehouse = "dev"\n')
    out = _run(project, "parts.toml", "validate", "{p}")
    assert out.returncode == 2 and "format.iceberg.warehouse" in out.stderr, out.stderr
    toml.write_text(base + '\n[format.iceberg]\ncatalog = "rest"\n')
    out = _run(project, "parts.toml", "validate", "{p}")
    assert out.returncode == 2 and "format.iceberg.uri" in out.stderr, out.stderr
