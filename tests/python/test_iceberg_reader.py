"""An independent Iceberg reader: pyiceberg's SqlCatalog on the SQLite file Smelter's embedded
catalog writes, reading every gold table of the demo run with `[format] table = "iceberg"`.

Row counts and an order-independent checksum of every gold table are compared with what Smelter
itself reports (`smelter show` is not involved: the run summary's row counts and the same demo on
Delta, read with `deltalake`).
"""

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
