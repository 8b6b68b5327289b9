"""SmelterRunOperator, SmelterValidateOperator and the per-model DAG shape, against the real
``smelter`` binary (SMELTER_BIN) on the demo project, through real DagRuns (``dag.test()``).
Exit codes the real binary cannot be made to give on demand (1, 75) use the fake binary."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import smelter_dag_testing as sdt
from test_smelter_dag_e2e import demo, smelter_bin  # noqa: F401  (fixtures)

MEDALLION = "medallion_architecture_etl"
RUN_DATE = datetime(2026, 11, 3, tzinfo=timezone.utc)


def _run_op(demo_project: sdt.Project, bin_path: str, layer: str, run_id: str, **kwargs):
    from include.smelter_operators import SmelterRunOperator

    op = SmelterRunOperator(
        task_id=f"t_{layer}",
        layer=layer,
        pipeline=str(demo_project.pipeline),
        smelter_bin=bin_path,
        logical_date="2026-11-03",
        run_id=run_id,
        cwd=str(demo_project.root),
        **kwargs,
    )
    return op.execute(context={})


def test_run_operator_returns_the_summary_and_maps_exit_codes(demo: sdt.Project, smelter_bin: str) -> None:  # noqa: F811
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    from include.smelter_operators import SmelterConfigError, SmelterDataQualityError

    # 99: bronze before anything was extracted for the run id.
    with pytest.raises(AirflowSkipException):
        _run_op(demo, smelter_bin, "bronze", "op1")

    summary = _run_op(demo, smelter_bin, "extract", "op1")
    assert summary["exit_code"] == 0 and summary["status"] == "success"
    assert summary["run_id"] == "op1" and summary["layers"] == ["extract"]
    assert {s["target"] for s in summary["steps"]} >= {"landing.shipments", "landing.customers"}
    summary = _run_op(demo, smelter_bin, "bronze", "op1")
    assert all(s["version"] == 0 for s in summary["steps"]), summary

    # Only the named models run.
    summary = _run_op(demo, smelter_bin, "silver", "op1", models=["silver.customers"])
    assert [s["target"] for s in summary["steps"]] == ["silver.customers"]
    assert summary["steps"][0]["rows_inserted"] > 0

    # 3: a `fail` expectation that does not hold; no retry (AirflowFailException).
    carriers = demo.root / "sql" / "demo" / "silver" / "carriers.sql"
    carriers.write_text(carriers.read_text().replace("row_count >= 1 fail", "row_count >= 100000000 fail"))
    with pytest.raises(SmelterDataQualityError) as info:
        _run_op(demo, smelter_bin, "silver", "op1", models=["silver.carriers"])
    assert isinstance(info.value, AirflowFailException) and info.value.exit_code == 3

    # 2: a pipeline file that does not load.
    demo.pipeline.write_text(demo.pipeline.read_text() + "\n[nonsense]\nx = 1\n")
    with pytest.raises(SmelterConfigError):
        _run_op(demo, smelter_bin, "extract", "op2")


@pytest.mark.parametrize(("code", "exc_name"), [(1, "SmelterInternalError"), (75, "SmelterTransientError")])
def test_run_operator_retryable_codes(
    project: sdt.Project, fake_smelter: Path, monkeypatch: pytest.MonkeyPatch, code: int, exc_name: str
) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from include.smelter_operators import SmelterRunOperator

    monkeypatch.setenv("FAKE_SMELTER_EXIT_GOLD", str(code))
    import os

    op = SmelterRunOperator(
        task_id="gold", layer="gold", pipeline=str(project.pipeline), smelter_bin=os.environ["SMELTER_BIN"]
    )
    with pytest.raises(AirflowException) as info:
        op.execute(context={})
    assert type(info.value).__name__ == exc_name
    assert not isinstance(info.value, AirflowFailException)
    [call] = [json.loads(line) for line in fake_smelter.read_text().splitlines()]
    assert "--summary-json" in call["argv"]


def test_validate_operator(demo: sdt.Project, smelter_bin: str) -> None:  # noqa: F811
    from airflow.sdk.exceptions import AirflowFailException
    from include.smelter_operators import SmelterValidateOperator

    op = SmelterValidateOperator(
        task_id="validate", pipeline=str(demo.pipeline), smelter_bin=smelter_bin, cwd=str(demo.root)
    )
    op.execute(context={})
    (demo.root / "sql" / "demo" / "gold" / "on_time_delivery.sql").write_text("SELECT nope FROM silver.shipments\n")
    with pytest.raises(AirflowFailException):
        op.execute(context={})


def test_model_shaped_dag_runs_one_task_per_model_in_dependency_order(
    demo: sdt.Project,  # noqa: F811
    smelter_bin: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMELTER_DAG_SHAPE", "model")
    dag = sdt.dagbag().get_dag(MEDALLION)
    plan = json.loads(
        __import__("subprocess").run(
            [smelter_bin, "plan", str(demo.pipeline), "--format", "json"], capture_output=True, text=True, check=True
        ).stdout
    )
    models = [m["name"] for m in plan["models"]]
    assert set(dag.task_ids) == {"extract", "bronze", *models}
    for m in plan["models"]:
        upstream = dag.get_task(m["name"]).upstream_task_ids
        wanted = {d for d in m["depends_on"] if d in models} or {"bronze"}
        assert upstream == wanted, (m["name"], upstream)

    result = sdt.run_dag(MEDALLION, RUN_DATE)
    assert result.state == "success", result.tasks
    assert all(state == "success" and tries == 1 for state, tries in result.tasks.values()), result.tasks

    # Each task's XCom is its summary; its Asset event carries the rows and the version written.
    summaries = sdt.return_values(MEDALLION, result.run_id)
    by_uri = sdt.asset_event_extras(MEDALLION, result.run_id)
    assert set(summaries) == {"extract", "bronze", *models}
    enriched = summaries["silver.shipments_enriched"]
    assert [s["target"] for s in enriched["steps"]] == ["silver.shipments_enriched"]
    assert enriched["exit_code"] == 0
    gold = next(e for uri, e in by_uri.items() if uri.endswith("/gold/revenue_by_customer"))
    assert gold["rows_inserted"] > 0 and gold["version"] == 0, gold
    assert gold["run_id"] == result.run_id
    bronze = next(e for uri, e in by_uri.items() if uri.endswith("/bronze/shipments"))
    assert bronze["rows_inserted"] > 0 and bronze["version"] == 0, bronze


def test_unknown_dag_shape_is_an_import_error(project: sdt.Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMELTER_DAG_SHAPE", "per-table")
    errors = sdt.dagbag().import_errors
    assert any("SMELTER_DAG_SHAPE" in str(e) and "per-table" in str(e) for e in errors.values()), errors
