"""``SmelterProfileOperator`` against the real ``smelter`` binary, and XComs kept in the lake by
Airflow's object-storage XCom backend (``apache-airflow-providers-common-io``) in a real DagRun.

The project is the small one of ``test_smelter_change_and_policy`` (sample source, scale 0.001,
own SQL models) with profiling and a drift rule; row counts are checked against the Delta tables
read by ``deltalake``, not by Smelter. Exit codes 1 and 75, which a real run cannot be made to
give, come from the fake binary.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import smelter_dag_testing as sdt
from test_smelter_change_and_policy import PIPELINE, _project, _smelter
from test_smelter_dag_e2e import smelter_bin  # noqa: F401  (fixture)

PROFILED = (
    PIPELINE
    + """
[profile]
mode = "full"
[profile.drift]
row_count_change_pct = { max = 20.0, action = "warn" }
"""
)
TABLES = ["bronze.customers", "silver.active_customers", "silver.codes", "gold.customers_per_country"]
SUMMARY_KEYS = {"table", "version", "row_count", "column_count", "size_bytes", "files", "sampled_rows", "drift"}


class _TaskInstance:
    """Collects what an operator pushes with ``ti.xcom_push`` (outside a DagRun)."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _delta_rows(project: sdt.Project, table: str) -> int:
    from deltalake import DeltaTable

    layer, name = table.split(".")
    return DeltaTable(str(project.root / "lake" / layer / name)).to_pyarrow_table().num_rows


def _profile(project: sdt.Project, bin_path: str, context: dict | None = None, **kwargs: Any) -> list[dict]:
    from include.smelter_operators import SmelterProfileOperator

    op = SmelterProfileOperator(
        task_id="profile", pipeline=str(project.pipeline), smelter_bin=bin_path, cwd=str(project.root), **kwargs
    )
    return op.execute(context=context if context is not None else {})


@pytest.fixture
def profiled(tmp_path: Path) -> sdt.Project:
    return _project(tmp_path / "crm", PROFILED)


def _run(bin_path: str, project: sdt.Project, *args: str) -> None:
    proc = _smelter(bin_path, project, "run", str(project.pipeline), "--logical-date", "2026-11-03", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]


# --------------------------------------------------------------------------- SmelterProfileOperator


def test_profile_operator_returns_one_entry_per_table_with_drift(profiled: sdt.Project, smelter_bin: str) -> None:  # noqa: F811
    from airflow.sdk.exceptions import AirflowSkipException

    # 99: nothing written yet.
    with pytest.raises(AirflowSkipException):
        _profile(profiled, smelter_bin)

    _run(smelter_bin, profiled, "--run-id", "first")
    summaries = _profile(profiled, smelter_bin)
    assert [s["table"] for s in summaries] == TABLES
    for s in summaries:
        assert set(s) == SUMMARY_KEYS, s
        assert s["version"] == 0 and s["drift"] == [], s
        assert s["row_count"] == _delta_rows(profiled, s["table"]) > 0, s
    assert next(s for s in summaries if s["table"] == "bronze.customers")["column_count"] > 2

    # A layer; named tables (a templated comma-separated string), one call each, in order.
    assert [s["table"] for s in _profile(profiled, smelter_bin, layer="gold")] == ["gold.customers_per_country"]
    named = _profile(profiled, smelter_bin, tables=" gold.customers_per_country, active_customers ")
    assert [s["table"] for s in named] == ["gold.customers_per_country", "silver.active_customers"]

    # Rebuild silver with fewer rows and without storing a profile: the on-demand profile reports the
    # breach of the row-count drift rule against the profile stored by the first run.
    model = profiled.root / "sql" / "crm" / "silver" / "active_customers.sql"
    model.write_text(model.read_text().replace("FROM bronze.customers", "FROM bronze.customers WHERE customer_id < 100"))
    profiled.pipeline.write_text(profiled.pipeline.read_text().replace('mode = "full"', 'mode = "off"'))
    _run(smelter_bin, profiled, "--run-id", "second", "--layer", "silver", "--models", "silver.active_customers", "--full-refresh")
    ti = _TaskInstance()
    [after] = _profile(profiled, smelter_bin, context={"ti": ti}, tables=["silver.active_customers"], push_profiles=True)
    assert after["version"] == 1
    assert after["row_count"] == _delta_rows(profiled, "silver.active_customers")
    assert 0 < after["row_count"] < summaries[1]["row_count"]
    [breach] = [d for d in after["drift"] if d["metric"] == "row_count_change_pct"]
    assert breach["max"] == 20.0 and breach["value"] > 20.0 and breach["action"] == "warn", breach

    # push_profiles: the full documents, with the per-column statistics, under the key `profiles`.
    [full] = ti.pushed["profiles"]
    assert full["table"] == "silver.active_customers" and full["row_count"] == after["row_count"]
    assert [c["name"] for c in full["columns"]] == ["customer_id", "country"]


def test_profile_operator_fails_without_retry_on_an_unknown_table(profiled: sdt.Project, smelter_bin: str) -> None:  # noqa: F811
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    from include.smelter_operators import SmelterConfigError

    _run(smelter_bin, profiled, "--run-id", "first")
    with pytest.raises(SmelterConfigError) as info:
        _profile(profiled, smelter_bin, tables=["silver.active_customers", "silver.nope"])
    assert isinstance(info.value, AirflowFailException) and info.value.exit_code == 2
    # extract has no tables: a usage error too.
    with pytest.raises(SmelterConfigError):
        _profile(profiled, smelter_bin, layer="extract")
    # An empty selection (a template that rendered empty) is skipped, never "all tables".
    with pytest.raises(AirflowSkipException):
        _profile(profiled, "/nonexistent/smelter", tables=" , ")


def test_profile_operator_renders_templated_tables_into_one_call_each() -> None:
    from include.smelter_operators import SmelterProfileOperator

    op = SmelterProfileOperator(
        task_id="profile",
        pipeline="{{ params.pipeline }}",
        tables="{{ params.tables | join(',') }}",
        layer="{{ params.layer }}",
        smelter_bin="smelter",
    )
    op.render_template_fields({"params": {"pipeline": "p.toml", "tables": ["gold.a", "b"], "layer": "gold"}})
    assert op.commands("/out") == [
        ["smelter", "profile", "p.toml", "--layer", "gold", "--table", table, "--format", "json",
         "--output", f"/out/profile-{i}.json", "--log-format", "json"]
        for i, table in enumerate(["gold.a", "b"])
    ]


@pytest.mark.parametrize(
    ("code", "retryable", "exc_name"),
    [
        (1, (1, 75), "SmelterInternalError"),
        (75, (1, 75), "SmelterTransientError"),
        (1, (75,), "SmelterFatalError"),
    ],
)
def test_profile_operator_retryable_codes(
    project: sdt.Project,
    fake_smelter: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    retryable: tuple[int, ...],
    exc_name: str,
) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    monkeypatch.setenv("FAKE_SMELTER_EXIT_SILVER", str(code))
    with pytest.raises(AirflowException) as info:
        _profile(project, os.environ["SMELTER_BIN"], layer="silver", retryable_exit_codes=retryable)
    assert type(info.value).__name__ == exc_name
    assert isinstance(info.value, AirflowFailException) == (code not in retryable)
    [call] = [json.loads(line) for line in fake_smelter.read_text().splitlines()]
    argv = call["argv"]
    assert argv[:2] == ["profile", str(project.pipeline)]
    assert argv[argv.index("--format") + 1] == "json" and "--output" in argv


# --------------------------------------------------------------------------- XComs in the lake

XCOM_DAG = "smelter_xcom_in_the_lake"


def test_xcoms_go_to_the_lake_with_the_object_storage_backend(
    profiled: sdt.Project,
    smelter_bin: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With ``[core] xcom_backend`` = common-io's ``XComObjectStorageBackend``, ``[common.io]
    xcom_objectstorage_path`` under the lake and threshold 0, a real DagRun's Smelter XComs (the run
    summaries, the profile entries and the full profiles) are objects under that path; the metadata
    DB holds only their paths, and a downstream task pulls them back unchanged."""
    xcom_dir = profiled.root / "lake" / "_airflow" / "xcom"
    pulled = tmp_path / "pulled.json"
    # dag.test() runs DAGs of the DAG bundle: this one gets a DAG folder of its own.
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "smelter_xcom_in_the_lake.py").write_text(
        textwrap.dedent(
            f"""
            import json, sys
            from datetime import datetime, timezone
            from pathlib import Path
            sys.path.append({str(sdt.ASTRO_DIR)!r})
            from airflow.providers.standard.operators.python import PythonOperator
            from airflow.sdk import DAG
            from include.smelter_operators import SmelterProfileOperator, SmelterRunOperator

            common = dict(pipeline={str(profiled.pipeline)!r}, smelter_bin={smelter_bin!r}, cwd={str(profiled.root)!r})

            def read_back(ti):
                got = {{t: ti.xcom_pull(task_ids=t) for t in ("extract", "bronze", "profile")}}
                got["profiles"] = ti.xcom_pull(task_ids="profile", key="profiles")
                Path({str(pulled)!r}).write_text(json.dumps(got))

            with DAG({XCOM_DAG!r}, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
                extract = SmelterRunOperator(task_id="extract", layer="extract", **common)
                bronze = SmelterRunOperator(task_id="bronze", layer="bronze", **common)
                profile = SmelterProfileOperator(task_id="profile", layer="bronze", push_profiles=True, **common)
                extract >> bronze >> profile >> PythonOperator(task_id="read_back", python_callable=read_back)
            """
        )
    )
    script = textwrap.dedent(
        f"""
        import json, os, sys
        from datetime import datetime, timezone
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import smelter_dag_testing as sdt  # sets up Airflow first; then this DAG folder
        os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = {str(dags)!r}
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(dags)!r})
        assert not bag.import_errors, bag.import_errors
        dr = bag.get_dag({XCOM_DAG!r}).test(logical_date=datetime(2026, 11, 3, tzinfo=timezone.utc))
        print("RESULT=" + json.dumps({{"state": str(dr.state), "run_id": dr.run_id}}))
        """
    )
    env = {
        **os.environ,
        "AIRFLOW__CORE__XCOM_BACKEND": "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend",
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": f"file://{xcom_dir}",
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": "0",
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION": "gzip",
    }
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    [result] = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT=")]
    assert result["state"] == "success", proc.stdout[-5000:]

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(XComModel.task_id, XComModel.key, XComModel.value).where(
                XComModel.dag_id == XCOM_DAG, XComModel.run_id == result["run_id"]
            )
        ).all()
    stored = {(task_id, key): v for task_id, key, v in rows}
    wanted = {("extract", "return_value"), ("bronze", "return_value"), ("profile", "return_value"), ("profile", "profiles")}
    assert wanted <= set(stored), stored

    # The metadata DB holds only a path: <xcom dir>/<dag>/<run>/<task>/<uuid>.gz; the object is the value.
    objects = {}
    for coordinate in wanted:
        ref = stored[coordinate]
        assert isinstance(ref, str) and ref.startswith("file://") and ref.endswith(".gz"), (coordinate, ref)
        path = Path(ref[len("file://") :])
        assert path.parent == xcom_dir / XCOM_DAG / result["run_id"] / coordinate[0], ref
        assert path.is_file(), path
        with gzip.open(path, "rt") as fh:
            objects[coordinate] = json.load(fh)

    bronze = objects[("bronze", "return_value")]
    assert bronze["status"] == "success" and bronze["run_id"] == result["run_id"], bronze
    assert [s["target"] for s in bronze["steps"]] == ["bronze.customers"]
    assert bronze["steps"][0]["rows_inserted"] == _delta_rows(profiled, "bronze.customers") > 0
    [entry] = objects[("profile", "return_value")]
    assert entry["table"] == "bronze.customers" and entry["row_count"] == bronze["steps"][0]["rows_inserted"]
    assert objects[("profile", "profiles")][0]["columns"], "the full profile has its columns"

    # A downstream task pulls the same values back through the backend.
    got = json.loads(pulled.read_text())
    assert got["extract"] == objects[("extract", "return_value")]
    assert got["bronze"] == bronze
    assert got["profile"] == objects[("profile", "return_value")]
    assert got["profiles"] == objects[("profile", "profiles")]
