"""Exit code handling: fatal codes fail without spending retries, transient ones are retried,
99 skips. First on the operator alone, then through real DagRuns (``dag.test()``) with a fake binary
that exits with chosen codes, so the test does not depend on a Rust build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import smelter_dag_testing as sdt
from smelter_dag_testing import LAYERS, Project

MEDALLION = "medallion_architecture_etl"


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# --------------------------------------------------------------------------- operator alone


def _operator(layer: str, **kwargs):
    import include.smelter_dags as sd

    return sd.SmelterRunOperator(
        task_id=layer, layer=layer, pipeline="p.toml", smelter_bin=os.environ["SMELTER_BIN"], **kwargs
    )


@pytest.mark.parametrize(
    ("code", "exc_name", "fatal"),
    [
        (1, "SmelterInternalError", False),
        (2, "SmelterConfigError", True),
        (3, "SmelterDataQualityError", True),
        (4, "SmelterFatalError", True),  # not in the default retryable_exit_codes (1, 75)
        (75, "SmelterTransientError", False),
    ],
)
def test_operator_maps_exit_code(
    fake_smelter: Path, monkeypatch: pytest.MonkeyPatch, code: int, exc_name: str, fatal: bool
) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    monkeypatch.setenv("FAKE_SMELTER_EXIT_SILVER", str(code))
    with pytest.raises(AirflowException) as info:
        _operator("silver").execute(context={})
    exc = info.value
    assert type(exc).__name__ == exc_name
    assert exc.exit_code == code and exc.layer == "silver"
    assert isinstance(exc, AirflowFailException) is fatal
    assert f"exited with code {code} (layer silver)" in str(exc)


def test_operator_skips_on_99_and_succeeds_on_0(fake_smelter: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    monkeypatch.setenv("FAKE_SMELTER_EXIT_BRONZE", "99,0")
    with pytest.raises(AirflowSkipException):
        _operator("bronze").execute(context={})
    _operator("bronze").execute(context={})


def test_operator_error_before_the_command_runs_is_not_masked(fake_smelter: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _operator("gold", cwd=str(tmp_path / "missing")).execute(context={})


def test_exception_for_exit_code_table() -> None:
    import include.smelter_dags as sd
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    assert sd.exception_for_exit_code(0) is None
    assert isinstance(sd.exception_for_exit_code(99), AirflowSkipException)
    assert isinstance(sd.exception_for_exit_code(2), AirflowFailException)
    assert isinstance(sd.exception_for_exit_code(3), AirflowFailException)
    for code in (1, 75, -9):  # -9: killed by SIGKILL (the OOM killer): retried
        assert not isinstance(sd.exception_for_exit_code(code), AirflowFailException)
    assert isinstance(sd.exception_for_exit_code(137), AirflowFailException)
    # A pipeline's retryable_exit_codes decide: 1 fatal, 4 retried.
    assert isinstance(sd.exception_for_exit_code(1, retryable=[75]), AirflowFailException)
    assert not isinstance(sd.exception_for_exit_code(4, retryable=[4, 75]), AirflowFailException)
    assert isinstance(sd.exception_for_exit_code(2, retryable=[75]), sd.SmelterConfigError)


# --------------------------------------------------------------------------- real DagRuns


def test_dag_run_calls_the_binary_once_per_layer(project: Project, fake_smelter: Path) -> None:
    result = sdt.run_dag(MEDALLION)
    assert result.state == "success"
    assert result.tasks == {layer: ("success", 1) for layer in LAYERS}

    calls = _calls(fake_smelter)
    assert [c["layer"] for c in calls] == LAYERS
    for call in calls:
        layer = call["layer"]
        assert call["argv"] == [
            "run", str(project.pipeline), "--layer", layer,
            "--logical-date", call["env"]["AIRFLOW_CTX_LOGICAL_DATE"][:10],
            "--run-id", result.run_id, "--log-format", "json", "--summary-json", call["argv"][-1],
        ]  # fmt: skip
        assert call["cwd"] == str(project.root)
        assert call["env"]["AIRFLOW_CTX_DAG_ID"] == MEDALLION
        assert call["env"]["AIRFLOW_CTX_TASK_ID"] == layer
        assert call["env"]["AIRFLOW_CTX_DAG_RUN_ID"] == result.run_id
        assert call["env"]["AIRFLOW_CTX_TRY_NUMBER"] == "1"
        assert call["env"]["SMELTER_PIPELINE"] == str(project.pipeline)


def test_storage_root_override_reaches_the_binary(
    project: Project, fake_smelter: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SMELTER_STORAGE_ROOT", str(tmp_path / "lake"))
    assert sdt.run_dag(MEDALLION).state == "success"
    assert {c["env"]["SMELTER_STORAGE_ROOT"] for c in _calls(fake_smelter)} == {str(tmp_path / "lake")}


@pytest.mark.parametrize("code", [75, 1])
def test_retryable_exit_code_is_retried(
    project: Project, fake_smelter: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    monkeypatch.setenv("FAKE_SMELTER_EXIT_SILVER", f"{code},0")
    result = sdt.run_dag(MEDALLION)
    assert result.state == "success"
    assert result.tasks["silver"] == ("success", 2)  # the first try failed, the retry succeeded
    assert result.tasks["gold"] == ("success", 1)
    silver = [c for c in _calls(fake_smelter) if c["layer"] == "silver"]
    assert [c["env"]["AIRFLOW_CTX_TRY_NUMBER"] for c in silver] == ["1", "2"]


def test_retries_run_out(project: Project, fake_smelter: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMELTER_RETRIES", "1")
    monkeypatch.setenv("FAKE_SMELTER_EXIT_BRONZE", "75")
    result = sdt.run_dag(MEDALLION)
    assert result.state == "failed"
    assert result.tasks["bronze"] == ("failed", 2)
    assert result.state_of("silver") == "upstream_failed"


@pytest.mark.parametrize(("code", "exc_name"), [(2, "SmelterConfigError"), (3, "SmelterDataQualityError")])
def test_fatal_exit_code_fails_without_retry(
    project: Project,
    fake_smelter: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    code: int,
    exc_name: str,
) -> None:
    monkeypatch.setenv("FAKE_SMELTER_EXIT_SILVER", f"{code},0")  # a retry would succeed: none may happen
    result = sdt.run_dag(MEDALLION)
    assert result.state == "failed"
    assert result.tasks["extract"] == ("success", 1)
    assert result.tasks["bronze"] == ("success", 1)
    assert result.tasks["silver"] == ("failed", 1)
    assert result.state_of("gold") == "upstream_failed"
    assert [c["layer"] for c in _calls(fake_smelter)] == ["extract", "bronze", "silver"]
    assert f"{exc_name}: smelter exited with code {code} (layer silver)" in capfd.readouterr().out


def test_nothing_to_do_skips_the_layer_only(project: Project, fake_smelter: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SMELTER_EXIT_BRONZE", "99")
    result = sdt.run_dag(MEDALLION)
    assert result.state == "success"
    assert result.state_of("bronze") == "skipped"
    assert result.tasks["silver"] == ("success", 1)  # later layers still decide for themselves
    assert result.tasks["gold"] == ("success", 1)


def test_scheduled_dag_runs(project: Project, fake_smelter: Path) -> None:
    result = sdt.run_dag("smelter_demo_daily")
    assert result.state == "success"
    assert {c["env"]["AIRFLOW_CTX_DAG_ID"] for c in _calls(fake_smelter)} == {"smelter_demo_daily"}


# --------------------------------------------------------------------------- OpenLineage


def test_openlineage_parent_run_is_passed_to_smelter(project: Project, fake_smelter: Path, tmp_path: Path) -> None:
    """With the OpenLineage provider on, each smelter call gets the Airflow task's OpenLineage run
    as OPENLINEAGE_PARENT_ID (namespace/job/run id), the same run the provider reports."""
    events = tmp_path / "openlineage.jsonl"
    script = textwrap.dedent(
        f"""
        import json, os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import smelter_dag_testing as sdt   # sets up Airflow; then switch OpenLineage on
        os.environ["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "smelter-test"
        os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
            {{"type": "file", "log_file_path": {str(events)!r}, "append": True}}
        )
        result = sdt.run_dag({MEDALLION!r})
        print("RESULT=" + json.dumps({{"state": result.state, "run_id": result.run_id}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=os.environ.copy(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    [result] = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT=")]
    assert result["state"] == "success"

    task_runs, dag_runs, outputs = {}, set(), {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        assert event["job"]["namespace"] == "smelter-test"
        name = event["job"]["name"]
        if name.startswith(f"{MEDALLION}."):
            task_runs[name.split(".", 1)[1]] = event["run"]["runId"]
            if event["eventType"] == "COMPLETE":
                outputs[name.split(".", 1)[1]] = {(d["namespace"], d["name"]) for d in event.get("outputs", [])}
        elif name == MEDALLION:
            dag_runs.add(event["run"]["runId"])
    assert set(task_runs) == set(LAYERS)
    [dag_run] = dag_runs
    # the provider reports each task's outlets as its output datasets, named by the OpenLineage spec
    assert outputs["gold"] == {("file", f"{project.root}/lake/gold/{t}") for t in sdt.GOLD_TABLES}

    calls = _calls(fake_smelter)
    assert len(calls) == 4
    for call in calls:
        layer = call["layer"]
        assert call["env"]["OPENLINEAGE_PARENT_ID"] == f"smelter-test/{MEDALLION}.{layer}/{task_runs[layer]}"
        assert call["env"]["OPENLINEAGE_ROOT_PARENT_ID"] == f"smelter-test/{MEDALLION}/{dag_run}"
