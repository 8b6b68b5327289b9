"""DuckDB checks Smelter's TPC-H gold marts on the same generated data.

The TDS fixture server binary (`examples/tds_server`) generates TPC-H with `tpchgen` at a small
scale factor, serves it as SQL Server tables `tpch.*` and writes the same rows as Parquet files
(`--tpch-dump`). Smelter runs `pipelines/tpch.toml` (extract, bronze, silver, gold) against the
server; DuckDB runs the textbook TPC-H queries Q1, Q3, Q5 and Q10 (validation parameters, original
column names) over the Parquet files. Every mart must equal DuckDB's answer: same rows, decimals
exactly equal, averages within one unit of the last digit Smelter stores (DuckDB averages decimals
as DOUBLE, so its average is recomputed exactly from its own SUM and COUNT).
"""

import os
import shutil
import subprocess
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
from tds_fixture import run_server

REPO = Path(os.environ.get("SMELTER_REPO", Path(__file__).resolve().parents[2]))
BIN = os.environ.get("SMELTER_BIN", str(REPO / "target/release/smelter"))
SERVER = os.environ.get("SMELTER_TDS_SERVER")
REQUIRED = bool(os.environ.get("SMELTER_REQUIRE_E2E"))
PASSWORD = "py-tpch-pw"
SCALE = "0.01"

if not SERVER:
    if REQUIRED:
        raise RuntimeError("SMELTER_TDS_SERVER is not set but SMELTER_REQUIRE_E2E is")
    pytest.skip("SMELTER_TDS_SERVER not set", allow_module_level=True)

duckdb = pytest.importorskip("duckdb") if not REQUIRED else __import__("duckdb")
deltalake = pytest.importorskip("deltalake") if not REQUIRED else __import__("deltalake")

TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]

# mart → (DuckDB query with the mart's column names, key columns that order the rows).
QUERIES = {
    "q1_pricing_summary": (
        """
        SELECT l_returnflag AS return_flag, l_linestatus AS line_status,
               SUM(l_quantity) AS sum_qty, SUM(l_extendedprice) AS sum_base_price,
               SUM(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
               SUM(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
               SUM(l_quantity) AS avg_qty, SUM(l_extendedprice) AS avg_price,
               SUM(l_discount) AS avg_disc, COUNT(*) AS count_order
        FROM lineitem
        WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL 90 DAY
        GROUP BY l_returnflag, l_linestatus
        """,
        ["return_flag", "line_status"],
    ),
    "q3_shipping_priority": (
        """
        SELECT l_orderkey AS order_key, SUM(l_extendedprice * (1 - l_discount)) AS revenue,
               o_orderdate AS order_date, o_shippriority AS ship_priority
        FROM customer, orders, lineitem
        WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
          AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
        GROUP BY l_orderkey, o_orderdate, o_shippriority
        ORDER BY revenue DESC, o_orderdate
        LIMIT 10
        """,
        ["order_key"],
    ),
    "q5_local_supplier_volume": (
        """
        SELECT n_name AS nation_name, SUM(l_extendedprice * (1 - l_discount)) AS revenue
        FROM customer, orders, lineitem, supplier, nation, region
        WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND l_suppkey = s_suppkey
          AND c_nationkey = s_nationkey AND s_nationkey = n_nationkey
          AND n_regionkey = r_regionkey AND r_name = 'ASIA'
          AND o_orderdate >= DATE '1994-01-01' AND o_orderdate < DATE '1994-01-01' + INTERVAL 1 YEAR
        GROUP BY n_name
        """,
        ["nation_name"],
    ),
    "q10_returned_items": (
        """
        SELECT c_custkey AS cust_key, c_name AS customer_name,
               SUM(l_extendedprice * (1 - l_discount)) AS revenue, c_acctbal AS account_balance,
               n_name AS nation_name, c_address AS address, c_phone AS phone, c_comment AS comment
        FROM customer, orders, lineitem, nation
        WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey
          AND o_orderdate >= DATE '1993-10-01' AND o_orderdate < DATE '1993-10-01' + INTERVAL 3 MONTH
          AND l_returnflag = 'R' AND c_nationkey = n_nationkey
        GROUP BY c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
        ORDER BY revenue DESC
        LIMIT 20
        """,
        ["cust_key"],
    ),
}

# Q1's averages: DuckDB's query above returns the SUM in their place; the exact average is that
# sum divided by count_order.
AVERAGES = {"avg_qty", "avg_price", "avg_disc"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Starts the server with a Parquet dump, runs the pipeline; yields (project dir, dump dir)."""
    root = tmp_path_factory.mktemp("tpch")
    dump = root / "dump"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMELTER_MSSQL")}
    env.pop("SMELTER_STORAGE_ROOT", None)
    env["SMELTER_MSSQL_PASSWORD"] = PASSWORD
    server = run_server(
        SERVER, "--tpch-scale", SCALE, "--tpch-dump", str(dump),
        "--password-env", "SMELTER_MSSQL_PASSWORD", env=env, timeout=120,
    )
    port = str(next(server))
    try:
        project = root / "project"
        (project / "pipelines").mkdir(parents=True)
        shutil.copy(REPO / "pipelines/tpch.toml", project / "pipelines/tpch.toml")
        shutil.copytree(REPO / "sql/tpch", project / "sql/tpch")
        env.update(SMELTER_MSSQL_PORT=port, SMELTER_MSSQL_ENCRYPT="false")
        out = subprocess.run(
            [BIN, "run", str(project / "pipelines/tpch.toml"), "--logical-date", "1998-12-01",
             "--run-id", "py-tpch"],
            capture_output=True, text=True, env=env, timeout=600,
        )
        assert out.returncode == 0, out.stderr
        yield project, dump
    finally:
        server.close()


@pytest.fixture(scope="module")
def duck(run):
    _, dump = run
    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{dump / (t + '.parquet')}')")
    yield con
    con.close()


def rows_of(columns, values, keys):
    rows = [dict(zip(columns, r)) for r in values]
    return sorted(rows, key=lambda r: tuple(r[k] for k in keys))


def gold(project, mart):
    table = deltalake.DeltaTable(str(project / "lake-tpch" / "gold" / mart)).to_pyarrow_table()
    return table.column_names, [tuple(r.values()) for r in table.to_pylist()]


def test_dump_matches_what_bronze_landed(run, duck):
    """The Parquet dump and the served tables are the same data: equal row counts per table."""
    project, _ = run
    for t in TABLES:
        bronze = deltalake.DeltaTable(str(project / "lake-tpch" / "bronze" / t)).to_pyarrow_table()
        (n,) = duck.execute(f"SELECT COUNT(*) FROM {t}").fetchone()
        assert n > 0, t
        assert bronze.num_rows == n, t


@pytest.mark.parametrize("mart", sorted(QUERIES))
def test_gold_mart_equals_duckdb(run, duck, mart):
    project, _ = run
    sql, keys = QUERIES[mart]
    got_cols, got_vals = gold(project, mart)
    cur = duck.execute(sql)
    want_cols = [d[0] for d in cur.description]
    assert got_cols == want_cols, mart
    got = rows_of(got_cols, got_vals, keys)
    want = rows_of(want_cols, cur.fetchall(), keys)
    assert want, f"{mart}: DuckDB returns no rows; the scale factor is too small"
    assert len(got) == len(want), mart
    for g, w in zip(got, want):
        for col in want_cols:
            if col in AVERAGES:
                assert isinstance(g[col], Decimal), (mart, col, g[col])
                with localcontext() as ctx:
                    ctx.prec = 60
                    exact = Decimal(w[col]) / Decimal(w["count_order"])
                ulp = Decimal(1).scaleb(g[col].as_tuple().exponent)
                assert abs(g[col] - exact) <= ulp, (mart, col, g[col], exact)
            else:
                if isinstance(w[col], Decimal):
                    assert isinstance(g[col], Decimal), (mart, col, g[col])
                assert g[col] == w[col], (mart, col, g, w)
