"""A real scheduler run, not ``dag.test()``: ``airflow api-server``, ``scheduler`` and
``dag-processor`` on loopback with a temporary AIRFLOW_HOME and a SQLite metadata DB, the
``LocalExecutor`` (what ``airflow standalone`` uses with SQLite in Airflow 3: the executor is
forced to a local one, and Airflow 3 has no SequentialExecutor any more). The medallion DAG runs in
the per-model shape on a project of its own; the test checks the DagRun, every task, the gold table,
the XCom summaries and the Asset events. Every process is stopped whatever happens.
The processes and the checks are shared with the Edge executor test (``airflow_services.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import airflow_services as svc
import pytest
import smelter_dag_testing as sdt
from test_smelter_change_and_policy import _project
from test_smelter_dag_e2e import smelter_bin  # noqa: F401  (fixture)


def test_scheduler_runs_the_per_model_dag(tmp_path: Path, smelter_bin: str) -> None:  # noqa: F811
    if os.environ.get("SMELTER_SCHEDULER_TEST") != "1" and not sdt.REQUIRE_E2E:
        pytest.skip("starts a real Airflow scheduler (about two minutes); set SMELTER_SCHEDULER_TEST=1")
    project = _project(tmp_path / "crm")
    home = tmp_path / "airflow-home"
    home.mkdir()
    airflow = svc.Airflow(home, svc.service_env(home, svc.free_port(), project, smelter_bin))
    airflow.migrate()
    try:
        airflow.start_services()
        run = svc.run_per_model(airflow, "sched1")
    finally:
        airflow.stop()
    svc.check_gold_table(project, run)
