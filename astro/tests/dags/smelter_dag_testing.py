"""Helpers for the Smelter DAG tests: test projects, the fake binary and running a DAG for real.

Importing this module sets up Airflow (a throwaway AIRFLOW_HOME, examples off, the Astro dags
folder) and must therefore happen before anything imports Airflow; ``conftest.py`` imports it first.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import stat
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ASTRO_DIR = Path(__file__).resolve().parents[2]
DAGS_DIR = ASTRO_DIR / "dags"
# Where the demo project (pipelines/demo.toml, sql/demo/) comes from: SMELTER_REPO, else the
# repository holding astro/, else the synced copy in include/smelter (inside the Astro image).
REPO_DIR = Path(
    os.environ.get("SMELTER_REPO")
    or next(
        (d for d in (ASTRO_DIR.parent, ASTRO_DIR / "include" / "smelter") if (d / "pipelines" / "demo.toml").is_file()),
        ASTRO_DIR.parent,
    )
).resolve()
FAKE_SMELTER = Path(__file__).resolve().parent / "fake_smelter.py"

# What the end-to-end tests run; read before the per-test cleanup of SMELTER_* variables.
REAL_SMELTER_BIN = os.environ.get("SMELTER_BIN")
REQUIRE_E2E = os.environ.get("SMELTER_REQUIRE_E2E") == "1"

AIRFLOW_HOME = os.environ.get("SMELTER_TEST_AIRFLOW_HOME")
if not AIRFLOW_HOME:
    AIRFLOW_HOME = tempfile.mkdtemp(prefix="smelter-airflow-home-")
    os.environ["SMELTER_TEST_AIRFLOW_HOME"] = AIRFLOW_HOME  # subprocesses reuse it
    atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": AIRFLOW_HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
    }
)
# OpenLineage stays off except in the test that checks it (in its own process).
for _key in [k for k in os.environ if k.startswith(("AIRFLOW__OPENLINEAGE__", "OPENLINEAGE_"))]:
    del os.environ[_key]
if str(ASTRO_DIR) not in sys.path:
    sys.path.append(str(ASTRO_DIR))

# Settings the DAG files read; every test starts without them.
SMELTER_ENV = (
    "SMELTER_BIN",
    "SMELTER_PIPELINE",
    "SMELTER_PIPELINES_DIR",
    "SMELTER_STORAGE_ROOT",
    "SMELTER_WORKDIR",
    "SMELTER_QUEUE",
    "SMELTER_POOL",
    "SMELTER_RETRIES",
    "SMELTER_RETRY_DELAY_SECONDS",
    "SMELTER_TASK_TIMEOUT_MINUTES",
)
SMELTER_ENV_PREFIXES = ("AIRFLOW_VAR_SMELTER_", "FAKE_SMELTER_")

LAYERS = ["extract", "bronze", "silver", "gold"]

PIPELINE_TOML = """\
name = "demo"

[storage]
root = "lake"

[source]
type = "sample"

[[source.tables]]
name = "shipments"

[[source.tables]]
name = "customers"

[[schedule]]
name = "daily"
cron = "0 2 * * *"
tags = ["logistics"]

[[schedule]]
interval_seconds = 3600
timezone = "Europe/Paris"
max_active_runs = 2

[[schedule]]
name = "off"
cron = "0 3 * * *"
enabled = false
"""
SILVER_TABLES = ["customers_clean", "shipments_clean"]
GOLD_TABLES = ["daily_summary"]


@dataclass
class Project:
    """A Smelter project on disk: ``pipelines/<name>.toml`` and ``sql/<name>/{silver,gold}/*.sql``."""

    root: Path
    pipeline: Path

    @property
    def pipelines_dir(self) -> Path:
        return self.pipeline.parent


def write_project(root: Path, toml: str = PIPELINE_TOML, name: str = "demo") -> Project:
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    pipeline = root / "pipelines" / f"{name}.toml"
    pipeline.write_text(textwrap.dedent(toml))
    for layer, tables in {"silver": SILVER_TABLES, "gold": GOLD_TABLES}.items():
        sql_dir = root / "sql" / name / layer
        sql_dir.mkdir(parents=True, exist_ok=True)
        for table in tables:
            (sql_dir / f"{table}.sql").write_text("SELECT 1 AS one\n")
    return Project(root=root, pipeline=pipeline)


def write_fake_smelter(directory: Path) -> Path:
    """An executable ``smelter`` that runs ``fake_smelter.py`` with this interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "smelter"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SMELTER}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


_dates = itertools.count()


def next_logical_date() -> datetime:
    """A logical date no other test of this session uses (one DagRun per DAG and date)."""
    return datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(days=next(_dates))


@dataclass
class RunResult:
    state: str
    run_id: str
    tasks: dict[str, tuple[str | None, int]]  # task_id -> (state, try_number)

    def state_of(self, task_id: str) -> str | None:
        return self.tasks[task_id][0]

    def tries_of(self, task_id: str) -> int:
        return self.tasks[task_id][1]


def run_dag(dag_id: str, logical_date: datetime | None = None) -> RunResult:
    """One DagRun through ``dag.test()``: the real scheduling loop, task runner and retries."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    bag = dagbag()
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"no DAG {dag_id}; have {sorted(bag.dag_ids)}"
    dr = dag.test(logical_date=logical_date or next_logical_date())
    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == dr.run_id)
        ).all()
        tasks = {ti.task_id: (None if ti.state is None else str(ti.state), ti.try_number) for ti in tis}
    return RunResult(state=str(dr.state), run_id=dr.run_id, tasks=tasks)


def return_values(dag_id: str, run_id: str) -> dict:
    """Task id -> XCom return value of one DagRun (the run summaries of Smelter tasks)."""
    import json

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(XComModel.task_id, XComModel.value).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == "return_value"
            )
        ).all()
    return {task_id: (json.loads(v) if isinstance(v, str) else v) for task_id, v in rows}


def asset_event_extras(dag_id: str, run_id: str) -> dict:
    """Asset URI -> ``extra`` of the Asset events one DagRun emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
        ).all()
    return dict(rows)
