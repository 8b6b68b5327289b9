"""Airflow as services for the scheduler and Edge tests: ``airflow api-server``, ``scheduler``,
``dag-processor`` (and an ``edge worker``) started as processes on loopback, with a temporary
AIRFLOW_HOME and a SQLite metadata DB. The medallion DAG runs in the per-model shape on a project
of its own (``test_smelter_change_and_policy._project``), and ``run_per_model`` checks what the
run left: the DagRun, every task, the XCom summaries, the Asset events and the gold table.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import smelter_dag_testing as sdt

MEDALLION = "medallion_architecture_etl"
MODELS = ["silver.active_customers", "silver.codes", "gold.customers_per_country"]
TASKS = ["extract", "bronze", *MODELS]
# Bounds of the waits.
PARSE_TIMEOUT = 120
RUN_TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(home: Path, port: int, project: sdt.Project, smelter_bin: str) -> dict[str, str]:
    """The environment shared by the Airflow processes of one test (LocalExecutor by default)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_VAR_", "SMELTER_", "FAKE_SMELTER_", "OPENLINEAGE"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(sdt.DAGS_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            # One secret for every process: the scheduler signs the task tokens the API server checks.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "SMELTER_BIN": smelter_bin,
            "SMELTER_PIPELINE": str(project.pipeline),
            "SMELTER_PIPELINES_DIR": str(project.pipelines_dir),
            "SMELTER_DAG_SHAPE": "model",
            "SMELTER_RETRIES": "0",
        }
    )
    return env


class Airflow:
    """The Airflow processes of one test, with their environment and logs."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def migrate(self) -> None:
        migrated = self.cli("db", "migrate", timeout=300)
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = (self.home / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.env if env is None else env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its workers too
        )
        self.procs.append((name, proc))

    def start_services(self) -> None:
        port = self.env["AIRFLOW__API__PORT"]
        self.start("api-server", "api-server", "--port", port, "--host", "127.0.0.1")
        self.start("scheduler", "scheduler")
        self.start("dag-processor", "dag-processor")

    def stop(self) -> None:
        # Descendants that may have left the group (the Edge worker starts each task in a session
        # of its own); they are killed below if still there once the groups are stopped.
        strays: list[psutil.Process] = []
        for _, proc in self.procs:
            if proc.poll() is None:
                with suppress(psutil.Error):
                    strays += psutil.Process(proc.pid).children(recursive=True)
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for stray in strays:  # psutil checks it is still the same process before killing it
            with suppress(psutil.Error):
                stray.kill()

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {name}.log (tail)\n" + self.log(name)[-3000:] for name, _ in self.procs)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.home / "airflow.db", timeout=30)

    def wait(self, what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                assert proc.poll() is None, f"airflow {name} exited with {proc.returncode}\n{self.logs()}"
            if check():
                return
            time.sleep(2)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")


@dataclass
class PerModelRun:
    run_id: str
    gold_event: dict  # the Asset event extra of the gold table


def run_per_model(airflow: Airflow, run_id: str) -> PerModelRun:
    """Trigger the medallion DAG (per-model shape) once, wait for it and check the DagRun, every
    task, the XCom summaries and the Asset events. The services must be running."""

    def parsed() -> bool:
        with airflow.db() as db:
            return db.execute("SELECT 1 FROM dag WHERE dag_id = ?", (MEDALLION,)).fetchone() is not None

    airflow.wait("the DAG processor to parse the medallion DAG", parsed, PARSE_TIMEOUT)
    # Trigger first, then unpause: unpausing also creates the latest scheduled run (catchup is
    # off), which queues behind this one (its logical date is later) and is stopped with the rest.
    trigger = ("dags", "trigger", MEDALLION, "--run-id", run_id, "--logical-date", "2026-11-03T00:00:00+00:00")
    for args in (trigger, ("dags", "unpause", MEDALLION)):
        done = airflow.cli(*args)
        assert done.returncode == 0, done.stdout + done.stderr

    def finished() -> bool:
        with airflow.db() as db:
            row = db.execute("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (MEDALLION, run_id)).fetchone()
        return row is not None and row[0] in ("success", "failed")

    airflow.wait("the DagRun to finish", finished, RUN_TIMEOUT)
    with airflow.db() as db:
        [(state,)] = db.execute("SELECT state FROM dag_run WHERE run_id = ?", (run_id,)).fetchall()
        tasks = dict(db.execute("SELECT task_id, state FROM task_instance WHERE run_id = ?", (run_id,)).fetchall())
        xcoms = {
            t: json.loads(v)
            for t, v in db.execute(
                "SELECT task_id, value FROM xcom WHERE run_id = ? AND key = 'return_value'", (run_id,)
            ).fetchall()
        }
        events = [
            (uri, json.loads(extra))
            for uri, extra in db.execute(
                "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE e.source_run_id = ?",
                (run_id,),
            ).fetchall()
        ]
    assert state == "success", (tasks, airflow.logs())
    assert tasks == {t: "success" for t in TASKS}, tasks
    for model in MODELS:
        summary = xcoms[model]
        assert summary["exit_code"] == 0 and summary["run_id"] == run_id, summary
        assert [s["target"] for s in summary["steps"]] == [model], summary
    gold = next(e for uri, e in events if uri.endswith("/gold/customers_per_country"))
    assert gold["rows_inserted"] > 0 and gold["run_id"] == run_id and gold["status"] == "success", gold
    return PerModelRun(run_id=run_id, gold_event=gold)


def check_gold_table(project: sdt.Project, run: PerModelRun) -> None:
    """The gold table, read back by an independent reader: the version the Asset event names is the
    commit of this run. (The scheduled run that unpausing creates may have written it too.)"""
    from deltalake import DeltaTable

    table = DeltaTable(str(project.root / "lake" / "gold" / "customers_per_country"))
    commits = {c["version"]: c for c in table.history()}
    assert commits[run.gold_event["version"]].get("smelter.run_id") == run.run_id, commits
    rows = table.to_pyarrow_table()
    assert rows.num_rows > 0 and sum(rows.column("customers").to_pylist()) > 0
