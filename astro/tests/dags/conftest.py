"""Fixtures for the Smelter DAG tests (Airflow 3, real metadata DB in a temporary AIRFLOW_HOME).

Run from the repository root:  pytest astro/tests
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# First: configures Airflow through env vars before any test module imports it.
import smelter_dag_testing as sdt


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> None:
    """``airflow db migrate`` once per session, into the temporary AIRFLOW_HOME."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=os.environ.copy(), capture_output=True, text=True
    )
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(autouse=True)
def clean_smelter_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in sdt.SMELTER_ENV:
        monkeypatch.delenv(key, raising=False)
    for key in [k for k in os.environ if k.startswith(sdt.SMELTER_ENV_PREFIXES)]:
        monkeypatch.delenv(key)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sdt.Project:
    """A small test project, selected through SMELTER_PIPELINE and SMELTER_PIPELINES_DIR."""
    proj = sdt.write_project(tmp_path / "project")
    monkeypatch.setenv("SMELTER_PIPELINE", str(proj.pipeline))
    monkeypatch.setenv("SMELTER_PIPELINES_DIR", str(proj.pipelines_dir))
    return proj


@pytest.fixture
def fake_smelter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SMELTER_BIN -> the fake binary; returns the JSON-lines file where it records its calls."""
    log = tmp_path / "smelter-calls.jsonl"
    monkeypatch.setenv("SMELTER_BIN", str(sdt.write_fake_smelter(tmp_path / "bin")))
    monkeypatch.setenv("FAKE_SMELTER_LOG", str(log))
    monkeypatch.setenv("SMELTER_RETRY_DELAY_SECONDS", "1")  # real retries, short waits
    return log
