"""Iceberg tables through a SQL catalog in a real PostgreSQL server (`[format.iceberg] catalog =
"sql"` with `uri_env` holding a `postgres://` URI), read back by pyiceberg's `SqlCatalog` on the
same database (SQLAlchemy + psycopg2), with concurrent writers and the database's refusals.

The server is the Debian `postgresql` package's (scripts/test.sh installs it), started on
127.0.0.1 on a free port with password authentication (SCRAM-SHA-256), one database per test.
"""

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from pyiceberg.catalog.sql import SqlCatalog
from tds_fixture import stop
from test_iceberg_reader import (  # noqa: F401 (projects is a fixture)
    BIN,
    REPO,
    concurrent_bronze_runs_keep_every_row_once,
    demo_reads_like_the_delta_run,
    projects,
)

USER = "smelter_catalog"
PASSWORD = "pg-Secret-4711"


def _postgres_bin():
    """The directory of `initdb` and `postgres`: on PATH, or the newest Debian install."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 (password authentication only), stopped afterwards.
    Yields `(port, create_database, execute)`: `create_database()` makes a fresh empty database
    and returns its name; `execute(sql)` runs a statement as the server's superuser."""
    import psycopg2

    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("SMELTER_REQUIRE_E2E") == "1":
            pytest.fail("PostgreSQL is not installed (scripts/test.sh installs `postgresql`)")
        pytest.skip("PostgreSQL is not installed")
    root = Path(tempfile.mkdtemp(prefix="smelter-pg-"))
    # The server refuses to run as root: run it as the package's `postgres` user then.
    as_user = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    data = root / "data"
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", USER, "-E", "UTF8",
         "--auth=scram-sha-256", f"--pwfile={pwfile}"],
        check=True, capture_output=True, timeout=120,
    )
    port = _free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [*as_user, str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
         "-p", str(port), "-k", str(root)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    admin = None
    try:
        for _ in range(300):  # bounded: at most about 60 s
            if server.poll() is not None:
                pytest.fail(f"postgres exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                admin = psycopg2.connect(host="127.0.0.1", port=port, user=USER,
                                         password=PASSWORD, dbname="postgres", connect_timeout=2)
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        else:
            pytest.fail("postgres did not accept connections within 60 s")
        admin.autocommit = True
        made = []

        def create_database():
            name = f"lake{len(made)}"
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
            made.append(name)
            return name

        def execute(statement):
            with admin.cursor() as cur:
                cur.execute(statement)

        yield port, create_database, execute
    finally:
        if admin is not None:
            admin.close()
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for clients to disconnect).
        server.send_signal(2)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop(server)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _uri(port, db, password=PASSWORD):
    return f"postgres://{USER}:{password}@127.0.0.1:{port}/{db}"


def _env(uri):
    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    env["SMELTER_TEST_CATALOG_URI"] = uri
    return env


def _project(tmp, scale="0.004"):
    project = tmp / "pg"
    (project / "pipelines").mkdir(parents=True)
    toml = (REPO / "pipelines/demo.toml").read_text()
    toml = re.sub(r"scale_factor = [0-9.]+", f"scale_factor = {scale}", toml)
    toml = toml.replace('table = "delta"', 'table = "iceberg"')
    toml += '\n[format.iceberg]\ncatalog = "sql"\nuri_env = "SMELTER_TEST_CATALOG_URI"\n'
    (project / "pipelines/demo.toml").write_text(toml)
    shutil.copytree(REPO / "sql/demo", project / "sql/demo")
    return project


def _run(project, uri, *args, timeout=900):
    return subprocess.run(
        [BIN, args[0], str(project / "pipelines/demo.toml"), *args[1:]],
        capture_output=True, text=True, env=_env(uri), timeout=timeout,
    )


def _reader(port, db, project):
    return SqlCatalog(
        "smelter",
        uri=f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}",
        warehouse=f"file://{project / 'lake'}",
    )


def test_the_demo_on_a_postgres_catalog_reads_like_the_delta_run(tmp_path, postgres, projects):
    port, create_database, _ = postgres
    db = create_database()
    project = _project(tmp_path)
    for day, run in [("2026-11-03", "pg1"), ("2026-11-04", "pg2")]:
        out = _run(project, _uri(port, db), "run", "--logical-date", day, "--run-id", run)
        assert out.returncode == 0, out.stderr
        assert PASSWORD not in out.stderr + out.stdout
    # The catalog is the database, not an embedded SQLite file.
    assert not (project / "lake/_iceberg/catalog.db").exists()
    catalog = _reader(port, db, project)
    assert {"bronze", "silver", "gold"} <= {ns[0] for ns in catalog.list_namespaces()}
    demo_reads_like_the_delta_run(
        catalog, projects[1],
        lambda: _run(project, _uri(port, db), "run", "--logical-date", "2026-11-04",
                     "--run-id", "pg2"))


def test_concurrent_appends_through_a_postgres_catalog_keep_every_row_once(tmp_path, postgres):
    """Four bronze runs append to the same tables at once: the catalog's conditional UPDATE of
    the metadata location decides who commits first; the losers commit again on the winner's
    snapshot (or exit 75 and are retried, as Airflow would)."""
    port, create_database, _ = postgres
    uri = _uri(port, create_database())
    project = _project(tmp_path, scale="0.002")
    ids = ["a", "b", "c", "d"]
    for run in ids:
        out = _run(project, uri, "run", "--layer", "extract", "--logical-date", "2026-11-03",
                   "--run-id", run)
        assert out.returncode == 0, out.stderr

    concurrent_bronze_runs_keep_every_row_once(
        project, ids, _env(uri), lambda: _reader(port, uri.rsplit("/", 1)[1], project))


def test_the_catalog_database_refusing_exits_2_and_an_unreachable_one_75(tmp_path, postgres):
    port, create_database, execute = postgres
    db = create_database()
    project = _project(tmp_path, scale="0.002")
    wrong = "not-the-Password-99"
    # A user that may connect but not create tables (PostgreSQL 15 grants CREATE on `public`
    # to the database owner only): the catalog creates its tables on every connection.
    execute(f"CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'")
    reader = f"postgres://reader:{PASSWORD}@127.0.0.1:{port}/{db}"
    cases = [
        # (URI, exit code, what the message says)
        (_uri(port, db, password=wrong), 2, "28P01"),
        (_uri(port, "no_such_lake"), 2, "3D000"),
        (reader, 2, "may not create tables in schema `public`"),
        (_uri(_free_port(), db), 75, "Connection refused"),
    ]
    for i, (uri, code, says) in enumerate(cases):
        # Extract writes no table; bronze is where the catalog is first used.
        out = _run(project, uri, "run", "--logical-date", "2026-11-03", "--run-id", f"e{i}",
                   timeout=300)
        assert out.returncode == code, (uri, out.stderr[-3000:])
        assert says in out.stderr, (uri, out.stderr[-3000:])
        assert "format.iceberg.uri_env" in out.stderr, out.stderr[-3000:]
        for secret in (PASSWORD, wrong):
            assert secret not in out.stderr + out.stdout
