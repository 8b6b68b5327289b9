"""End to end: the medallion DAG runs the real ``smelter`` binary on the demo pipeline.

The binary comes from SMELTER_BIN and the demo project (``pipelines/demo.toml``, ``sql/demo/``) from
SMELTER_REPO (default: the repository holding ``astro/``). Without them these tests are skipped,
unless SMELTER_REQUIRE_E2E=1 (set by the project's test command): then they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import pytest
import smelter_dag_testing as sdt
from smelter_dag_testing import LAYERS, REPO_DIR

MEDALLION = "medallion_architecture_etl"
# After the demo source's start_date (2026-11-01): those days bring new rows to extract.
GOOD_RUN_DATE = datetime(2026, 11, 3, tzinfo=timezone.utc)
BROKEN_RUN_DATE = datetime(2026, 11, 4, tzinfo=timezone.utc)
SYNTAX_ERROR_RUN_DATE = datetime(2026, 11, 5, tzinfo=timezone.utc)


def _unavailable(reason: str) -> None:
    if sdt.REQUIRE_E2E:
        pytest.fail(f"SMELTER_REQUIRE_E2E=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def smelter_bin() -> str:
    path = sdt.REAL_SMELTER_BIN
    if not path:
        _unavailable("SMELTER_BIN is not set")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        _unavailable(f"SMELTER_BIN={path} is not an executable file")
    return path


def _scale_down(pipeline: Path, scale: float = 0.01) -> None:
    """Set ``[source] scale_factor`` in a copied pipeline file (keeping the rest as written)."""
    text = pipeline.read_text()
    source = re.search(r"(?ms)^\[source\][^\n]*\n(.*?)(?=^\[)", text)
    assert source, f"{pipeline}: no [source] table"
    body = source.group(1)
    if re.search(r"(?m)^scale_factor\s*=", body):
        body = re.sub(r"(?m)^scale_factor\s*=.*$", f"scale_factor = {scale}", body, count=1)
    else:
        body = f"scale_factor = {scale}\n" + body
    pipeline.write_text(text[: source.start(1)] + body + text[source.end(1) :])
    assert tomllib.loads(pipeline.read_text())["source"]["scale_factor"] == scale


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smelter_bin: str) -> sdt.Project:
    """A copy of the repository's demo project, scaled down, writing to a temporary lake."""
    src_pipeline = REPO_DIR / "pipelines" / "demo.toml"
    src_sql = REPO_DIR / "sql" / "demo"
    if not (src_pipeline.is_file() and src_sql.is_dir()):
        _unavailable(f"the demo project is missing under {REPO_DIR} (pipelines/demo.toml, sql/demo/)")
    root = tmp_path / "project"
    (root / "pipelines").mkdir(parents=True)
    shutil.copy(src_pipeline, root / "pipelines" / "demo.toml")
    shutil.copytree(src_sql, root / "sql" / "demo")
    project = sdt.Project(root=root, pipeline=root / "pipelines" / "demo.toml")
    _scale_down(project.pipeline)

    monkeypatch.setenv("SMELTER_BIN", smelter_bin)
    monkeypatch.setenv("SMELTER_PIPELINE", str(project.pipeline))
    monkeypatch.setenv("SMELTER_PIPELINES_DIR", str(project.pipelines_dir))
    monkeypatch.setenv("SMELTER_STORAGE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("SMELTER_RETRY_DELAY_SECONDS", "1")
    return project


def _tables(project: sdt.Project, layer: str) -> list[str]:
    return sorted(p.stem for p in (project.root / "sql" / "demo" / layer).glob("*.sql"))


def _delta_commits(table_dir: Path) -> list[Path]:
    return sorted((table_dir / "_delta_log").glob("*.json"))


def test_demo_pipeline_runs_through_airflow(demo: sdt.Project, tmp_path: Path) -> None:
    result = sdt.run_dag(MEDALLION, GOOD_RUN_DATE)
    assert result.state == "success", result.tasks
    assert result.tasks == {layer: ("success", 1) for layer in LAYERS}

    lake = tmp_path / "lake"
    gold = _tables(demo, "gold")
    assert gold, "the demo has no gold models"
    for table in gold:
        assert _delta_commits(lake / "gold" / table), f"no Delta commit for gold table {table} under {lake}"
    for table in _tables(demo, "silver"):
        assert _delta_commits(lake / "silver" / table), f"no Delta commit for silver table {table}"

    # Every task returns its run summary; every table's Asset event says what was written.
    summaries = sdt.return_values(MEDALLION, result.run_id)
    assert set(summaries) == set(LAYERS)
    assert {s["target"] for s in summaries["gold"]["steps"]} == {f"gold.{t}" for t in gold}
    assert all(s["exit_code"] == 0 and s["run_id"] == result.run_id for s in summaries.values())
    extras = sdt.asset_event_extras(MEDALLION, result.run_id)
    for table in gold:
        extra = extras[f"file://{lake}/gold/{table}"]
        assert extra["version"] == 0 and extra["rows_inserted"] > 0, extra


def _no_retry_anywhere(result: sdt.RunResult) -> None:
    assert all(tries <= 1 for _, tries in result.tasks.values()), result.tasks
    assert "up_for_retry" not in {state for state, _ in result.tasks.values()}, result.tasks


def test_silver_sql_error_fails_without_retry(
    demo: sdt.Project, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A silver model that parses but cannot be planned (unknown column): exit 2 from the silver
    task, which fails on its first try although retries=3; gold never runs."""
    source_tables = [t["name"] for t in tomllib.loads(demo.pipeline.read_text())["source"]["tables"]]
    silver = _tables(demo, "silver")
    target = next((t for t in silver if t in source_tables), silver[0])
    (demo.root / "sql" / "demo" / "silver" / f"{target}.sql").write_text(
        f"SELECT no_such_column FROM bronze.{source_tables[0]}\n"
    )

    result = sdt.run_dag(MEDALLION, BROKEN_RUN_DATE)
    assert result.state == "failed", result.tasks
    assert result.tasks["extract"] == ("success", 1)
    assert result.tasks["bronze"] == ("success", 1)
    assert result.tasks["silver"] == ("failed", 1)
    assert result.state_of("gold") == "upstream_failed"
    _no_retry_anywhere(result)
    assert "SmelterConfigError: smelter exited with code 2 (layer silver)" in capfd.readouterr().out
    assert not (tmp_path / "lake" / "gold").exists() or not any((tmp_path / "lake" / "gold").iterdir())


def test_silver_sql_syntax_error_fails_fast(demo: sdt.Project, capfd: pytest.CaptureFixture[str]) -> None:
    """``SELEC broken FROM`` in a silver model. Smelter parses every model when it loads the plan,
    so the first layer already exits 2: the run fails at once, nothing is retried, gold never runs."""
    broken = demo.root / "sql" / "demo" / "silver" / f"{_tables(demo, 'silver')[0]}.sql"
    broken.write_text("SELEC broken FROM\n")

    result = sdt.run_dag(MEDALLION, SYNTAX_ERROR_RUN_DATE)
    assert result.state == "failed", result.tasks
    _no_retry_anywhere(result)
    failed = [layer for layer in LAYERS if result.state_of(layer) == "failed"]
    assert len(failed) == 1 and failed[0] in ("extract", "silver"), result.tasks
    first = LAYERS.index(failed[0])
    assert all(result.state_of(layer) == "success" for layer in LAYERS[:first]), result.tasks
    assert all(result.state_of(layer) == "upstream_failed" for layer in LAYERS[first + 1 :]), result.tasks
    assert f"SmelterConfigError: smelter exited with code 2 (layer {failed[0]})" in capfd.readouterr().out
