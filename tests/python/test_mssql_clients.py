"""Independent SQL Server clients check the TDS fixture server and Smelter's type mapping.

`pymssql` (FreeTDS) and `python-tds` (pure Python) read `dbo.AllTypes` from the fixture server
binary; Smelter (tiberius) extracts the same table to landing Parquet, read here with pyarrow.
Every value must agree, per type, at the precision a Python client can hold (microseconds;
`datetime` is compared to the millisecond, as SQL Server itself rounds 1/300 s ticks).
"""

import datetime as dt
import os
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tds_fixture import run_server

REPO = Path(os.environ.get("SMELTER_REPO", Path(__file__).resolve().parents[2]))
BIN = os.environ.get("SMELTER_BIN", str(REPO / "target/release/smelter"))
SERVER = os.environ.get("SMELTER_TDS_SERVER")
REQUIRED = bool(os.environ.get("SMELTER_REQUIRE_E2E"))
PASSWORD = "py-fixture-pw"

if not SERVER:
    if REQUIRED:
        raise RuntimeError("SMELTER_TDS_SERVER is not set but SMELTER_REQUIRE_E2E is")
    pytest.skip("SMELTER_TDS_SERVER not set", allow_module_level=True)

pymssql = pytest.importorskip("pymssql") if not REQUIRED else __import__("pymssql")
pytds = pytest.importorskip("pytds") if not REQUIRED else __import__("pytds")

QUERY = "SELECT * FROM [dbo].[AllTypes] ORDER BY [id]"


@pytest.fixture(scope="module")
def server():
    yield from run_server(SERVER)


@pytest.fixture(scope="module")
def tls_server():
    """The same server encrypting every connection with the test certificate."""
    yield from run_server(SERVER, "--tls")


@pytest.fixture(scope="module")
def landed(server, tmp_path_factory):
    """`dbo.AllTypes` as Smelter landed it, as {column: [python values]} plus raw arrow columns."""
    project = tmp_path_factory.mktemp("mssql")
    (project / "pipelines").mkdir()
    (project / "pipelines/t.toml").write_text(
        f"""
name = "t"
[source]
type = "mssql"
host = "127.0.0.1"
port = {server}
user = "reader"
password_env = "T_MSSQL_PASSWORD"
encrypt = false
[[source.tables]]
name = "alltypes"
object = "dbo.AllTypes"
key = ["id"]
[storage]
root = "lake"
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMELTER_MSSQL")}
    env.pop("SMELTER_STORAGE_ROOT", None)
    env["T_MSSQL_PASSWORD"] = PASSWORD
    out = subprocess.run(
        [BIN, "run", str(project / "pipelines/t.toml"), "--layer", "extract",
         "--logical-date", "2026-11-01", "--run-id", "py"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    table = pq.read_table(project / "lake/landing/alltypes/run=py/part-0000.parquet")
    return table.sort_by("id")


def pymssql_rows(port, **tls):
    conn = pymssql.connect(server="127.0.0.1", port=port, user="reader", password=PASSWORD,
                           database="LogisticsDB", login_timeout=10, timeout=30, **tls)
    try:
        cur = conn.cursor()
        cur.execute(QUERY)
        names = [d[0] for d in cur.description]
        return names, cur.fetchall()
    finally:
        conn.close()


def pytds_rows(port, **tls):
    with pytds.connect(dsn="127.0.0.1", port=port, user="reader", password=PASSWORD,
                       database="LogisticsDB", autocommit=True, login_timeout=10, timeout=30,
                       **tls) as conn:
        with conn.cursor() as cur:
            cur.execute(QUERY)
            names = [d[0] for d in cur.description]
            return names, cur.fetchall()


def ints(table, name):
    """A temporal column as integers in its own unit, and that unit's ticks per microsecond."""
    col = table[name].combine_chunks()
    unit = getattr(col.type, "unit", "ns")
    per_us = {"s": None, "ms": None, "us": 1, "ns": 1000}[unit]
    return col.cast(pa.int64()).to_pylist(), per_us


EPOCH = dt.datetime(1970, 1, 1)


def to_us(value):
    """Microseconds since the epoch of a naive or aware datetime (aware: its UTC instant)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def check(names, rows, table, client):
    assert [r[0] for r in rows] == table["id"].to_pylist(), client
    for i, name in enumerate(names):
        got = [r[i] for r in rows]
        if name.startswith("c_dto"):
            want_us, per_us = ints(table, name)
            offsets = table[f"{name}_offset_minutes"].to_pylist()
            for g, w, off in zip(got, want_us, offsets):
                if w is None:
                    assert g is None, (client, name)
                    continue
                assert to_us(g) == w // per_us, (client, name, g, w)
                assert int(g.utcoffset().total_seconds() // 60) == off, (client, name, g, off)
        elif name.startswith(("c_dt2", "c_smalldatetime", "c_datetime")):
            want, per_us = ints(table, name)
            for g, w in zip(got, want):
                if w is None:
                    assert g is None, (client, name)
                    continue
                w_us = w // per_us
                if name == "c_datetime":
                    # 1/300 s ticks: clients round to the millisecond, Smelter to the microsecond.
                    assert abs(to_us(g) - w_us) < 1000, (client, name, g, w)
                else:
                    assert to_us(g) == w_us, (client, name, g, w)
        elif name.startswith("c_time"):
            want = table[name].combine_chunks().cast(pa.int64()).to_pylist()
            for g, w in zip(got, want):
                if w is None:
                    assert g is None, (client, name)
                    continue
                g_us = ((g.hour * 60 + g.minute) * 60 + g.second) * 1_000_000 + g.microsecond
                assert g_us == w // 1000, (client, name, g, w)
        elif name == "c_guid":
            want = table[name].to_pylist()
            assert [None if g is None else str(uuid.UUID(str(g))) for g in got] == want, client
        elif name.startswith(("c_dec", "c_num", "c_money", "c_smallmoney")):
            want = table[name].to_pylist()
            for g, w in zip(got, want):
                assert (g is None and w is None) or Decimal(g) == w, (client, name, g, w)
        elif name in ("c_real",):
            want = table[name].to_pylist()
            for g, w in zip(got, want):
                assert (g is None and w is None) or abs(g - w) <= abs(w) * 1e-7, (client, name, g, w)
        elif name.startswith(("c_binary", "c_varbinary")):
            assert [None if g is None else bytes(g) for g in got] == table[name].to_pylist(), (client, name)
        else:
            assert got == table[name].to_pylist(), (client, name)


def test_pymssql_reads_what_smelter_landed(server, landed):
    names, rows = pymssql_rows(server)
    assert len(rows) == 4
    check(names, rows, landed, "pymssql")


def test_python_tds_reads_what_smelter_landed(server, landed):
    names, rows = pytds_rows(server)
    assert len(rows) == 4
    check(names, rows, landed, "python-tds")


def test_both_clients_read_the_same_values_over_tls(tls_server, landed):
    """The server's TLS (framed in PRELOGIN packets) is checked by two independent TLS stacks:
    FreeTDS with encryption required, and python-tds (pyOpenSSL) verifying the test CA."""
    names, rows = pymssql_rows(tls_server, encryption="require")
    check(names, rows, landed, "pymssql over TLS")
    ca = str(REPO / "tests/support/tds/tls/ca.pem")
    names, rows = pytds_rows(tls_server, cafile=ca, validate_host=False, enc_login_only=False)
    check(names, rows, landed, "python-tds over TLS")
    # A client that refuses encryption gets no data from this server.
    with pytest.raises(pytds.tds_base.Error, match="encryption"):
        pytds_rows(tls_server)


def test_both_clients_agree_on_a_parameterised_query(server):
    """python-tds sends parameters through RPC sp_executesql; pymssql substitutes them itself."""
    sql = "SELECT [id], [c_nvarchar40] FROM [dbo].[AllTypes] WHERE [id] > %s ORDER BY [id]"
    with pytds.connect(dsn="127.0.0.1", port=server, user="reader", password=PASSWORD,
                       autocommit=True, login_timeout=10, timeout=30) as conn:
        with conn.cursor() as cur:
            cur.execute(sql, (2,))
            a = cur.fetchall()
    conn = pymssql.connect(server="127.0.0.1", port=server, user="reader", password=PASSWORD,
                           login_timeout=10, timeout=30)
    try:
        cur = conn.cursor()
        cur.execute(sql, (2,))
        b = cur.fetchall()
    finally:
        conn.close()
    assert [tuple(r) for r in a] == [tuple(r) for r in b] == [(3, None), (4, "Grüße 😀 日本")]
