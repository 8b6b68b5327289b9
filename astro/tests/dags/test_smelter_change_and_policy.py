"""The plan-change sensor, the full-refresh-on-change DAG and the ``[airflow]`` policy of a pipeline
(retries, exit-code-aware retry, tenant tags and pools), against the real ``smelter`` binary on a
project of their own (sample source, own SQL models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import smelter_dag_testing as sdt
from test_smelter_dag_e2e import smelter_bin  # noqa: F401  (fixture)

FULL_REFRESH = "smelter_full_refresh_on_change"
MEDALLION = "medallion_architecture_etl"

PIPELINE = """\
name = "crm"
[source]
type = "sample"
scale_factor = 0.001
[[source.tables]]
name = "customers"
key = ["customer_id"]
[storage]
root = "lake"
"""
MODELS = {
    "silver/active_customers.sql": "-- materialized: table\nSELECT customer_id, country FROM bronze.customers\n",
    "silver/codes.sql": "-- materialized: table\nSELECT 1 AS code\n",
    "gold/customers_per_country.sql": (
        "-- materialized: table\nSELECT country, COUNT(*) AS customers FROM silver.active_customers GROUP BY country\n"
    ),
}
POLICY = """
[airflow]
max_retries = 2
initial_delay_seconds = 1
backoff_multiplier = 3.0
retryable_exit_codes = [75]
tenant = "acme"
concurrency_per_tenant = 2
"""


def _project(root: Path, toml: str = PIPELINE) -> sdt.Project:
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    pipeline = root / "pipelines" / "crm.toml"
    pipeline.write_text(toml)
    for rel, sql in MODELS.items():
        path = root / "sql" / "crm" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
    return sdt.Project(root=root, pipeline=pipeline)


def _use(project: sdt.Project, bin_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMELTER_BIN", bin_path)
    monkeypatch.setenv("SMELTER_PIPELINE", str(project.pipeline))
    monkeypatch.setenv("SMELTER_PIPELINES_DIR", str(project.pipelines_dir))


def _smelter(bin_path: str, project: sdt.Project, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_path, *args], capture_output=True, text=True, cwd=project.root)


@pytest.fixture
def crm(tmp_path: Path, smelter_bin: str, monkeypatch: pytest.MonkeyPatch) -> sdt.Project:  # noqa: F811
    """The project, with every layer run once (run id ``first``)."""
    project = _project(tmp_path / "crm")
    _use(project, smelter_bin, monkeypatch)
    proc = _smelter(smelter_bin, project, "run", str(project.pipeline), "--logical-date", "2026-11-03", "--run-id", "first")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return project


# --------------------------------------------------------------------------- the sensor


def test_sensor_fires_after_a_model_file_changes_and_not_before(crm: sdt.Project, smelter_bin: str) -> None:  # noqa: F811
    from airflow.sdk.exceptions import AirflowFailException
    from include.smelter_operators import SmelterPlanChangeSensor

    sensor = SmelterPlanChangeSensor(task_id="wait", pipeline=str(crm.pipeline), smelter_bin=smelter_bin, cwd=str(crm.root))
    assert sensor.mode == "reschedule"
    assert sensor.command()[-1] == "--since-last-success"

    # Nothing changed since the run: the sensor keeps waiting, however often it pokes.
    for _ in range(2):
        result = sensor.poke({})
        assert result.is_done is False and result.xcom_value is None

    model = crm.root / "sql" / "crm" / "silver" / "active_customers.sql"
    model.write_text(model.read_text().replace("FROM bronze.customers", "FROM bronze.customers WHERE country <> 'XX'"))
    result = sensor.poke({})
    assert result.is_done is True
    # The model and its downstream, in run order; not the unrelated silver.codes.
    assert result.xcom_value == ["silver.active_customers", "gold.customers_per_country"]

    # Since the first run, by name.
    assert SmelterPlanChangeSensor(
        task_id="since", pipeline=str(crm.pipeline), smelter_bin=smelter_bin, cwd=str(crm.root), since_run="first"
    ).poke({}).xcom_value == ["silver.active_customers", "gold.customers_per_country"]
    # An unknown run id is a usage error: the sensor fails without retry.
    with pytest.raises(AirflowFailException):
        SmelterPlanChangeSensor(
            task_id="bad", pipeline=str(crm.pipeline), smelter_bin=smelter_bin, cwd=str(crm.root), since_run="nope"
        ).poke({})


def test_full_refresh_dag_rebuilds_exactly_the_changed_models(crm: sdt.Project, smelter_bin: str) -> None:  # noqa: F811
    from include.smelter_operators import SmelterPlanChangeSensor

    dag = sdt.dagbag().get_dag(FULL_REFRESH)
    assert isinstance(dag.get_task("wait_for_changes"), SmelterPlanChangeSensor)
    assert dag.get_task("full_refresh_gold").upstream_task_ids == {"wait_for_changes", "full_refresh_silver"}

    gold = crm.root / "sql" / "crm" / "gold" / "customers_per_country.sql"
    gold.write_text(gold.read_text().replace("COUNT(*) AS customers", "COUNT(*) AS customers, MIN(customer_id) AS first_id"))
    result = sdt.run_dag(FULL_REFRESH)
    assert result.state == "success", result.tasks
    values = sdt.return_values(FULL_REFRESH, result.run_id)
    assert values["wait_for_changes"] == ["gold.customers_per_country"]
    # Silver had nothing to refresh (exit 99: skipped); gold refreshed the one model.
    assert result.state_of("full_refresh_silver") == "skipped"
    assert result.state_of("full_refresh_gold") == "success"
    steps = values["full_refresh_gold"]["steps"]
    assert [s["target"] for s in steps] == ["gold.customers_per_country"]
    assert steps[0]["status"] == "success" and steps[0]["rows_inserted"] > 0

    # Refreshed: nothing left to wait for.
    proc = _smelter(smelter_bin, crm, "plan", str(crm.pipeline), "--changed")
    assert proc.returncode == 99, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- [airflow] policy


def _split_smelter(directory: Path, real: str) -> Path:
    """A ``smelter`` whose ``plan`` is the real binary and whose ``run`` is the fake one, so a DAG
    gets its policy from the real plan and runs with chosen exit codes."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "smelter"
    wrapper.write_text(
        f'#!/bin/sh\nif [ "$1" = plan ]; then exec "{real}" "$@"; fi\nexec "{sys.executable}" "{sdt.FAKE_SMELTER}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def tenant_project(tmp_path: Path, smelter_bin: str, monkeypatch: pytest.MonkeyPatch) -> sdt.Project:  # noqa: F811
    project = _project(tmp_path / "tenant", PIPELINE + POLICY)
    _use(project, str(_split_smelter(tmp_path / "bin", smelter_bin)), monkeypatch)
    monkeypatch.setenv("FAKE_SMELTER_LOG", str(tmp_path / "calls.jsonl"))
    return project


@pytest.mark.parametrize("shape", ["layer", "model"])
def test_factory_maps_the_policy_to_retries_tags_and_pool(
    tenant_project: sdt.Project, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    monkeypatch.setenv("SMELTER_DAG_SHAPE", shape)
    monkeypatch.setenv("SMELTER_RETRIES", "7")  # the pipeline's max_retries wins over the deployment
    bag = sdt.dagbag()
    assert bag.import_errors == {}, bag.import_errors
    for dag_id in (MEDALLION, FULL_REFRESH):
        dag = bag.get_dag(dag_id)
        assert {"tenant:acme", "source:sample"} <= set(dag.tags), dag.tags
        for task in dag.tasks:
            assert task.pool == "smelter_tenant_acme", task.task_id
            assert task.retry_exponential_backoff == 3.0
            assert task.retry_delay == timedelta(seconds=1)
            if task.task_id != "wait_for_changes":
                assert task.retries == 2
                assert task.retryable_exit_codes == (75,)
    if shape == "model":
        assert "silver.active_customers" in bag.get_dag(MEDALLION).task_ids


@pytest.mark.parametrize(("codes", "tries", "state"), [("1,0", 1, "failed"), ("75,0", 2, "success")])
def test_only_retryable_exit_codes_are_retried(
    tenant_project: sdt.Project, monkeypatch: pytest.MonkeyPatch, codes: str, tries: int, state: str
) -> None:
    # retryable_exit_codes = [75]: an internal error (1) fails at once, a transient one (75) retries.
    monkeypatch.setenv("FAKE_SMELTER_EXIT_SILVER", codes)
    result = sdt.run_dag(MEDALLION)
    assert result.tasks["silver"] == (state, tries), result.tasks
    assert result.state == state


def test_a_bad_policy_is_an_import_error(tmp_path: Path, smelter_bin: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    project = _project(tmp_path / "bad", PIPELINE + POLICY.replace("backoff_multiplier = 3.0", "backoff_multiplier = 0.5"))
    _use(project, smelter_bin, monkeypatch)
    errors = sdt.dagbag().import_errors
    assert errors, "a bad [airflow] value must not load"
    assert all("airflow.backoff_multiplier" in e for e in errors.values()), errors


def test_pools_file_imports_into_airflow_idempotently(tenant_project: sdt.Project, smelter_bin: str, tmp_path: Path) -> None:  # noqa: F811
    other = _project(tmp_path / "other", PIPELINE.replace('name = "crm"', 'name = "billing"') + POLICY)
    other_pipeline = other.pipeline.rename(other.pipeline.with_name("billing.toml"))
    proc = _smelter(smelter_bin, tenant_project, "airflow", "pools", str(tenant_project.pipeline), str(other_pipeline))
    assert proc.returncode == 0, proc.stderr
    pools = json.loads(proc.stdout)
    assert pools == {
        "smelter_tenant_acme": {
            "slots": 2,
            "description": "Smelter tenant acme: pipelines billing, crm",
            "include_deferred": False,
        }
    }
    path = tmp_path / "pools.json"
    path.write_text(proc.stdout)
    airflow = [sys.executable, "-m", "airflow"]
    for _ in range(2):  # importing twice leaves one pool
        done = subprocess.run([*airflow, "pools", "import", str(path)], capture_output=True, text=True, env=os.environ.copy())
        assert done.returncode == 0, done.stdout + done.stderr
    listed = subprocess.run([*airflow, "pools", "list", "-o", "json"], capture_output=True, text=True, env=os.environ.copy())
    assert listed.returncode == 0, listed.stderr
    rows = [p for p in json.loads(listed.stdout) if p["pool"] == "smelter_tenant_acme"]
    assert len(rows) == 1 and int(rows[0]["slots"]) == 2, rows


def test_policy_defaults_without_an_airflow_section() -> None:
    from include.smelter_dags import SmelterSettings, policy_task_args

    settings = SmelterSettings()
    assert policy_task_args({}, settings) == {
        "retries": 3,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(hours=1),
    }
    args = policy_task_args({"max_retries": 0, "backoff_multiplier": 1.0, "pool": "smelter_tenant_x"}, settings)
    assert args["retries"] == 0 and args["retry_exponential_backoff"] == 1.0 and args["pool"] == "smelter_tenant_x"
