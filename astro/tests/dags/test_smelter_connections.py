"""Airflow connections reach Smelter through Airflow's own ``AIRFLOW_CONN_<ID>`` variables, and their
secrets reach neither the task log nor the XCom summary, in a real DagRun (``dag.test()``) of the
medallion DAG with the real binary (the connection parsing itself is tested in the crate: ``src/config/connection.rs``,
``tests/it/mssql.rs``, ``tests/it/storage.rs``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import smelter_dag_testing as sdt
from test_smelter_dag_e2e import smelter_bin  # noqa: F401  (fixture)

MEDALLION = "medallion_architecture_etl"
PIPELINE = """\
name = "sales"
[source]
type = "mssql"
connection = "sql_server_default"
[[source.tables]]
name = "customers"
key = ["customer_id"]
[storage]
root = "lake"
"""
PASSWORD = "S3cr@t:pw/%x"
ENCODED = "S3cr%40t%3Apw%2F%25x"  # as Airflow's Connection.get_uri() writes it

CONNECTIONS = {
    # Parsed; the connection is refused (nothing listens on port 1): exit 75.
    "uri-refused": (f"mssql://etl:{ENCODED}@127.0.0.1:1/Sales?encrypt=false", "cannot connect"),
    # A JSON connection of the wrong type: exit 2 naming the connection, not its value.
    "json-wrong-type": (
        json.dumps({"conn_type": "wasb", "login": "etl", "password": PASSWORD}),
        "has conn type `wasb`",
    ),
    # A URI that does not parse (the password not percent-encoded): exit 2, the value never echoed.
    "uri-malformed": (f"mssql://etl:{PASSWORD}@127.0.0.1:notaport/Sales", "AIRFLOW_CONN_SQL_SERVER_DEFAULT"),
}


@pytest.mark.parametrize("case", sorted(CONNECTIONS))
def test_connection_secrets_stay_out_of_the_task_log_and_xcom(
    case: str,
    tmp_path: Path,
    smelter_bin: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    value, expected = CONNECTIONS[case]
    project = sdt.write_project(tmp_path / "project", PIPELINE, name="sales")
    monkeypatch.setenv("SMELTER_BIN", smelter_bin)
    monkeypatch.setenv("SMELTER_PIPELINE", str(project.pipeline))
    monkeypatch.setenv("SMELTER_PIPELINES_DIR", str(project.pipelines_dir))
    monkeypatch.setenv("SMELTER_RETRIES", "0")
    # What Airflow exports for a connection defined as an environment variable; the DAG passes nothing.
    monkeypatch.setenv("AIRFLOW_CONN_SQL_SERVER_DEFAULT", value)

    capfd.readouterr()
    result = sdt.run_dag(MEDALLION)
    # dag.test() runs the task in this process and writes its log (the operator's lines, smelter's
    # streamed output, Airflow's own records) to this process's stdout/stderr.
    log = "\n".join(capfd.readouterr())
    assert result.state == "failed", result.tasks
    assert result.tasks["extract"] == ("failed", 1), result.tasks

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        [summary] = session.scalars(
            select(XComModel.value).where(
                XComModel.dag_id == MEDALLION,
                XComModel.run_id == result.run_id,
                XComModel.task_id == "extract",
                XComModel.key == "summary",
            )
        ).all()
    summary = json.loads(summary) if isinstance(summary, str) else summary
    assert summary["status"] == "failed" and expected in summary["error"]["message"], summary
    assert expected in log, log[-3000:]  # smelter's error reached the task log ...
    for text in (json.dumps(summary), log):  # ... and the password did not, in any form
        for secret in (PASSWORD, ENCODED, "S3cr"):
            assert secret not in text
