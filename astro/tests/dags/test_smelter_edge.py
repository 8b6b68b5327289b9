"""The Edge executor (provider ``apache-airflow-providers-edge3``) for real: ``airflow api-server``
(serving the Edge worker API), ``scheduler`` with the ``EdgeExecutor`` and ``dag-processor`` on
loopback with a SQLite metadata DB, and one ``airflow edge worker --queues smelter`` that, like a
worker on a remote machine, has no database setting and an AIRFLOW_HOME of its own: it reaches
Airflow only over HTTP. The DAG's tasks get the queue ``smelter`` (SMELTER_QUEUE). The medallion
DAG runs in the per-model shape on a project of its own, with the checks of the scheduler test,
and the test checks that the worker ran every task: the Edge job table names the worker for each
task, and the worker's log shows it received and completed each one. No other executor is
configured, so without the worker the tasks would stay queued and the run would time out.
Every process is stopped whatever happens.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import airflow_services as svc
import pytest
import smelter_dag_testing as sdt
from test_smelter_change_and_policy import _project
from test_smelter_dag_e2e import smelter_bin  # noqa: F401  (fixture)

QUEUE = "smelter"
RUN_ID = "edge1"


def test_edge_worker_runs_the_per_model_dag(tmp_path: Path, smelter_bin: str) -> None:  # noqa: F811
    if os.environ.get("SMELTER_EDGE_TEST") != "1" and not sdt.REQUIRE_E2E:
        pytest.skip("starts Airflow with the Edge executor and an Edge worker (a few minutes); set SMELTER_EDGE_TEST=1")
    pytest.importorskip("airflow.providers.edge3", reason="apache-airflow-providers-edge3 is not installed")
    project = _project(tmp_path / "crm")
    home = tmp_path / "airflow-home"
    home.mkdir()
    port = svc.free_port()
    env = svc.service_env(home, port, project, smelter_bin)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "airflow.providers.edge3.executors.EdgeExecutor",
            # The API server serves the Edge worker API; the worker signs its calls with the JWT secret.
            "AIRFLOW__EDGE__API_ENABLED": "True",
            "AIRFLOW__EDGE__API_URL": f"http://127.0.0.1:{port}/edge_worker/v1/rpcapi",
            "AIRFLOW__EDGE__JOB_POLL_INTERVAL": "1",
            "AIRFLOW__EDGE__HEARTBEAT_INTERVAL": "5",
            # Keep the finished Edge jobs in the table until the test has read them.
            "AIRFLOW__EDGE__JOB_SUCCESS_PURGE": "600",
            "AIRFLOW__EDGE__JOB_FAIL_PURGE": "600",
            "SMELTER_QUEUE": QUEUE,
        }
    )
    airflow = svc.Airflow(home, env)
    airflow.migrate()  # creates the edge_job / edge_worker tables too (the provider's DB manager)

    # The worker: no metadata DB setting, its own AIRFLOW_HOME (task logs, pid file).
    worker_home = tmp_path / "edge-worker-home"
    worker_home.mkdir()
    worker_env = {k: v for k, v in env.items() if k != "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"}
    worker_env["AIRFLOW_HOME"] = str(worker_home)
    worker = f"smelter-edge-{secrets.token_hex(4)}"
    try:
        airflow.start_services()
        airflow.start(
            "edge-worker", "edge", "worker", "--queues", QUEUE, "--edge-hostname", worker, "--concurrency", "2",
            env=worker_env,
        )  # fmt: skip

        def registered() -> bool:
            with airflow.db() as db:
                return db.execute("SELECT 1 FROM edge_worker WHERE worker_name = ?", (worker,)).fetchone() is not None

        airflow.wait("the Edge worker to register", registered, svc.PARSE_TIMEOUT)
        run = svc.run_per_model(airflow, RUN_ID)

        def edge_jobs() -> dict[str, tuple[str, str, str]]:
            with airflow.db() as db:
                return {
                    task: (state, queue, edge_worker)
                    for task, state, queue, edge_worker in db.execute(
                        "SELECT task_id, state, queue, edge_worker FROM edge_job WHERE dag_id = ? AND run_id = ?",
                        (svc.MEDALLION, RUN_ID),
                    ).fetchall()
                }

        # The task instance is done when the task says so through the Execution API; the worker
        # reports its job done a moment later.
        airflow.wait(
            "the Edge worker to report its jobs done",
            lambda: all(state in ("success", "failed") for state, _, _ in edge_jobs().values()),
            svc.PARSE_TIMEOUT,
        )
        jobs = edge_jobs()
        with airflow.db() as db:
            queues = dict(db.execute("SELECT task_id, queue FROM task_instance WHERE run_id = ?", (RUN_ID,)).fetchall())
            [(worker_queues,)] = db.execute("SELECT queues FROM edge_worker WHERE worker_name = ?", (worker,)).fetchall()
    finally:
        airflow.stop()

    # Every task went to the queue `smelter` and was run by this worker, as the Edge job table says.
    assert queues == {t: QUEUE for t in svc.TASKS}, queues
    assert jobs == {t: ("success", QUEUE, worker) for t in svc.TASKS}, jobs
    assert QUEUE in worker_queues, worker_queues
    # ... and as the worker says: it received and completed each of them.
    log = airflow.log("edge-worker")
    for task in svc.TASKS:
        for event in ("Received job", "Job completed"):
            assert f"{event}: dag_id={svc.MEDALLION} task_id={task} run_id={RUN_ID} " in log, (event, task, log[-3000:])
    svc.check_gold_table(project, run)
