"""Integrity of the Smelter DAGs, parsed by a real Airflow 3 DagBag."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import pendulum
import pytest
import smelter_dag_testing as sdt
from smelter_dag_testing import LAYERS, Project

MEDALLION = "medallion_architecture_etl"


def _bag_without_errors():
    bag = sdt.dagbag()
    assert bag.import_errors == {}, bag.import_errors
    return bag


def _render(task, run_id: str = "scheduled__2024-05-01T02:00:00+00:00", ds: str = "2024-05-01"):
    """Render a task's templated fields the way the task runner does (same Jinja env and filters)."""
    from airflow.sdk.execution_time import macros

    task = copy.deepcopy(task)
    context = {"ds": ds, "run_id": run_id, "task_instance": None, "ti": None, "macros": macros}
    task.render_template_fields(context, jinja_env=task.dag.get_template_env())
    return task


def test_no_import_errors_and_expected_dags(project: Project) -> None:
    bag = _bag_without_errors()
    # medallion DAG + the full refresh on change + the two enabled [[schedule]] entries; the
    # disabled one makes no DAG
    assert set(bag.dag_ids) == {MEDALLION, "smelter_full_refresh_on_change", "smelter_demo_daily", "smelter_demo_2"}


def test_medallion_dag_shape(project: Project) -> None:
    from include.smelter_dags import SmelterRunOperator

    dag = _bag_without_errors().get_dag(MEDALLION)
    assert dag.schedule == "0 2 * * *"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"smelter", "pipeline:demo"} <= set(dag.tags)
    assert [t.task_id for t in dag.topological_sort()] == LAYERS
    for upstream, downstream in zip(LAYERS, LAYERS[1:]):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    assert dag.get_task("extract").upstream_task_ids == set()
    assert dag.get_task("gold").downstream_task_ids == set()

    for layer in LAYERS:
        task = dag.get_task(layer)
        assert isinstance(task, SmelterRunOperator)
        assert task.layer == layer
        assert task.retries == 3
        assert task.retry_exponential_backoff == 2.0
        assert task.retry_delay == timedelta(minutes=5)
        assert task.max_retry_delay == timedelta(hours=1)
        assert isinstance(task.execution_timeout, timedelta) and task.execution_timeout > timedelta(0)
        assert task.cwd == str(project.root)  # the project dir: relative paths resolve like the CLI's
        assert task.pool == "default_pool"
    assert dag.get_task("extract").execution_timeout == timedelta(hours=2)
    assert dag.get_task("gold").execution_timeout == timedelta(hours=1)


def test_rendered_commands(project: Project) -> None:
    dag = _bag_without_errors().get_dag(MEDALLION)
    for layer in LAYERS:
        task = _render(dag.get_task(layer))
        argv = task.command("SUMMARY")
        assert argv == [
            "smelter",
            "run",
            str(project.pipeline),
            "--layer",
            layer,
            "--logical-date",
            "2024-05-01",
            "--run-id",
            "scheduled__2024-05-01T02:00:00+00:00",
            "--log-format",
            "json",
            "--summary-json",
            "SUMMARY",
        ]
        assert task.env["SMELTER_PIPELINE"] == str(project.pipeline)
        # no OpenLineage provider active in this process: the parent ids render empty
        assert task.env["OPENLINEAGE_PARENT_ID"] == ""


def test_run_id_is_one_argument(project: Project) -> None:
    dag = _bag_without_errors().get_dag(MEDALLION)
    nasty = "manual__it's; rm -rf / $(x)"
    argv = _render(dag.get_task("silver"), run_id=nasty).command("S")
    assert argv[argv.index("--run-id") + 1] == nasty


def test_binary_path_with_spaces_is_quoted(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMELTER_BIN", "/opt/smelter tools/smelter")
    dag = _bag_without_errors().get_dag(MEDALLION)
    argv = _render(dag.get_task("bronze")).command("S")
    assert argv[0] == "/opt/smelter tools/smelter"


def test_outlets_follow_lake_layout(project: Project) -> None:
    dag = _bag_without_errors().get_dag(MEDALLION)
    lake = f"file://{project.root}/lake"

    def uris(layer: str) -> list[str]:
        return [asset.uri for asset in dag.get_task(layer).outlets]

    assert uris("extract") == [f"{lake}/landing/shipments", f"{lake}/landing/customers"]
    assert uris("bronze") == [f"{lake}/bronze/shipments", f"{lake}/bronze/customers"]
    assert uris("silver") == [f"{lake}/silver/{t}" for t in sdt.SILVER_TABLES]
    assert uris("gold") == [f"{lake}/gold/{t}" for t in sdt.GOLD_TABLES]
    asset = dag.get_task("gold").outlets[0]
    assert asset.extra == {"smelter_pipeline": "demo", "smelter_layer": "gold", "smelter_table": "daily_summary"}


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("s3://bucket/lake/", "s3://bucket/lake"),
        ("abfss://lake@account.dfs.core.windows.net/smelter", "abfss://lake@account.dfs.core.windows.net/smelter"),
        ("/data/lake", "file:///data/lake"),
        ("file:///data/lake", "file:///data/lake"),
        ("file://lake2", "file://{project}/lake2"),
        ("lake2", "file://{project}/lake2"),
    ],
)
def test_storage_root_override(project: Project, monkeypatch: pytest.MonkeyPatch, root: str, expected: str) -> None:
    monkeypatch.setenv("SMELTER_STORAGE_ROOT", root)
    dag = _bag_without_errors().get_dag(MEDALLION)
    expected = expected.format(project=project.root)
    assert [a.uri for a in dag.get_task("gold").outlets] == [f"{expected}/gold/daily_summary"]


def test_relative_storage_root_in_file_uri_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = sdt.write_project(tmp_path / "p", toml=sdt.PIPELINE_TOML.replace('root = "lake"', 'root = "file://data/lake"'))
    monkeypatch.setenv("SMELTER_PIPELINE", str(proj.pipeline))
    monkeypatch.setenv("SMELTER_PIPELINES_DIR", str(tmp_path / "none"))
    dag = _bag_without_errors().get_dag(MEDALLION)
    assert dag.get_task("bronze").outlets[0].uri == f"file://{proj.root}/data/lake/bronze/shipments"


def test_models_dir_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = sdt.write_project(tmp_path / "p", toml='models_dir = "models/logistics"\n' + sdt.PIPELINE_TOML)
    (proj.root / "models" / "logistics" / "gold").mkdir(parents=True)
    (proj.root / "models" / "logistics" / "gold" / "kpis.sql").write_text("SELECT 1\n")
    monkeypatch.setenv("SMELTER_PIPELINE", str(proj.pipeline))
    monkeypatch.setenv("SMELTER_PIPELINES_DIR", str(tmp_path / "none"))
    dag = _bag_without_errors().get_dag(MEDALLION)
    assert [a.uri for a in dag.get_task("gold").outlets] == [f"file://{proj.root}/lake/gold/kpis"]
    assert dag.get_task("silver").outlets == []


def test_queue_pool_and_binary_from_airflow_variables(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow Variables given through the AIRFLOW_VAR_* secrets backend
    monkeypatch.setenv("AIRFLOW_VAR_SMELTER_QUEUE", "edge_lake")
    monkeypatch.setenv("AIRFLOW_VAR_SMELTER_POOL", "smelter")
    monkeypatch.setenv("AIRFLOW_VAR_SMELTER_BIN", "/opt/smelter/bin/smelter")
    dag = _bag_without_errors().get_dag(MEDALLION)
    for layer in LAYERS:
        task = dag.get_task(layer)
        assert task.queue == "edge_lake"
        assert task.pool == "smelter"
        assert task.smelter_bin == "/opt/smelter/bin/smelter"

    # an environment variable wins over the Airflow Variable
    monkeypatch.setenv("SMELTER_QUEUE", "edge_other")
    dag = _bag_without_errors().get_dag(MEDALLION)
    assert dag.get_task("silver").queue == "edge_other"


def test_workdir_and_timeout_settings(project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMELTER_WORKDIR", str(tmp_path))
    monkeypatch.setenv("SMELTER_TASK_TIMEOUT_MINUTES", "15")
    dag = _bag_without_errors().get_dag(MEDALLION)
    for layer in LAYERS:
        assert dag.get_task(layer).cwd == str(tmp_path)
        assert dag.get_task(layer).execution_timeout == timedelta(minutes=15)


def test_missing_pipeline_is_an_import_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMELTER_PIPELINE", str(tmp_path / "nope.toml"))
    monkeypatch.setenv("SMELTER_PIPELINES_DIR", str(tmp_path))
    errors = sdt.dagbag().import_errors
    # both DAG files of the SMELTER_PIPELINE pipeline report it
    assert sorted(Path(p).name for p in errors) == ["medallion_architecture_etl.py", "smelter_full_refresh_on_change.py"]
    for message in errors.values():
        assert "nope.toml not found" in message and "SMELTER_PIPELINE" in message


# --------------------------------------------------------------------------- [[schedule]] factory


def test_schedule_dags(project: Project) -> None:
    bag = _bag_without_errors()
    daily = bag.get_dag("smelter_demo_daily")
    assert daily.schedule == "0 2 * * *"
    assert set(daily.tags) == {"smelter", "pipeline:demo", "logistics", "source:sample"}
    assert daily.max_active_runs == 1
    assert daily.catchup is False
    assert daily.start_date.tzinfo.name == "UTC"

    hourly = bag.get_dag("smelter_demo_2")  # no name: the entry's position, from 1
    assert hourly.schedule == timedelta(hours=1)
    assert hourly.max_active_runs == 2
    assert hourly.start_date == pendulum.datetime(2024, 1, 1, tz="Europe/Paris")
    assert set(hourly.tags) == {"smelter", "pipeline:demo", "source:sample"}

    for dag in (daily, hourly):
        assert [t.task_id for t in dag.topological_sort()] == LAYERS
        for task in dag.tasks:
            assert task.retries == 3 and task.retry_exponential_backoff == 2.0
            assert task.execution_timeout is not None
            assert task.outlets
            assert task.layer == task.task_id


def test_schedule_dags_for_several_pipelines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = sdt.write_project(tmp_path / "p")
    sdt.write_project(
        tmp_path / "p",
        name="finance",
        toml="""\
        name = "finance"
        [source]
        type = "sample"
        [[schedule]]
        name = "nightly"
        cron = "30 1 * * *"
        timezone = "America/New_York"
        """,
    )
    monkeypatch.setenv("SMELTER_PIPELINE", str(first.pipeline))
    monkeypatch.setenv("SMELTER_PIPELINES_DIR", str(first.pipelines_dir))
    bag = _bag_without_errors()
    assert {"smelter_finance_nightly", "smelter_demo_daily", "smelter_demo_2"} <= set(bag.dag_ids)
    nightly = bag.get_dag("smelter_finance_nightly")
    assert nightly.schedule == "30 1 * * *"
    assert str(nightly.timezone.name) == "America/New_York"
    # a pipeline without [storage] writes under <project>/lake
    assert nightly.get_task("gold").outlets[0].uri == f"file://{first.root}/lake/gold/daily_summary"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('name = "both"\ncron = "0 2 * * *"\ninterval_seconds = 60', "#1 ('both'): set exactly one of cron or interval_seconds"),
        ('name = "neither"\ntags = ["x"]', "#1 ('neither'): set exactly one of cron or interval_seconds"),
        ("interval_seconds = -5", "#1: interval_seconds must be a positive integer"),
        ('cron = "0 2 * * *"\ntimezone = "Mars/Olympus"', "#1: unknown timezone 'Mars/Olympus'"),
        ('cron = "0 2 * * *"\ncolour = "red"', "#1: unknown key(s) colour; valid keys:"),
        ('name = "typo"\ncron = "0 2 * *"', "#1 ('typo'): AirflowTimetableInvalid: Exactly 5, 6 or 7 columns"),
    ],
)
def test_invalid_schedule_is_an_import_error(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, message: str
) -> None:
    bad_dir = tmp_path / "bad" / "pipelines"
    bad_dir.mkdir(parents=True)
    bad = bad_dir / "broken.toml"
    bad.write_text(f'name = "broken"\n[source]\ntype = "sample"\n\n[[schedule]]\n{entry}\n')
    monkeypatch.setenv("SMELTER_PIPELINES_DIR", str(bad_dir))

    bag = sdt.dagbag()
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("smelter_schedules.py")
    assert f"{bad}: [[schedule]] {message}" in error
    assert MEDALLION in bag.dag_ids  # the other DAG file still loads
