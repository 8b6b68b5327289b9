"""Airflow operators that call the ``smelter`` binary, and a task-group factory for per-model DAGs.

- :class:`SmelterRunOperator` runs ``smelter run`` for one layer or some models, maps the exit code
  to Airflow's outcome, returns the run summary (``--summary-json``) as its XCom value and puts
  each written table's rows and version in the ``extra`` of its Asset event.
- :class:`SmelterValidateOperator` runs ``smelter validate`` (exit 2 fails without retry).
- :class:`SmelterProfileOperator` runs ``smelter profile --format json`` and returns one small
  entry per table (rows, version, drift breaches) as its XCom value.
- :class:`SmelterPlanChangeSensor` waits until ``smelter plan --changed`` lists changed models and
  pushes their names to XCom.
- :func:`smelter_plan` reads ``smelter plan <pipeline> --format json``; :func:`model_task_groups`
  builds one task per silver/gold model from it, wired in dependency order.

Exit codes (``DESIGN.md``): 0 success; 99 nothing to do (skipped); 75 transient and 1 internal bug
(failed, retried); 2 configuration/SQL and 3 data quality (failed at once, retries not spent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping, Sequence

from airflow.sdk import Asset, BaseOperator, BaseSensorOperator, PokeReturnValue, TaskGroup
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_DATA_QUALITY = 3
EXIT_TRANSIENT = 75
EXIT_NOTHING_TO_DO = 99


# --------------------------------------------------------------------------- exit codes


def _exit_message(exit_code: int, layer: str | None, meaning: str) -> str:
    where = f" (layer {layer})" if layer else ""
    return f"smelter exited with code {exit_code}{where}: {meaning}"


class SmelterExit(AirflowException):
    """The smelter binary exited with a non-zero code that Airflow may retry."""

    def __init__(self, exit_code: int, layer: str | None = None, meaning: str = "failed") -> None:
        self.exit_code = exit_code
        self.layer = layer
        super().__init__(_exit_message(exit_code, layer, meaning))


class SmelterInternalError(SmelterExit):
    """Exit 1: a bug in Smelter. Retried: the next try may not hit it."""


class SmelterTransientError(SmelterExit):
    """Exit 75: network, storage or SQL Server busy. Retried with backoff."""


class SmelterFatalError(AirflowFailException):
    """A failure that another try cannot fix: the task fails at once, retries are not spent."""

    def __init__(self, exit_code: int, layer: str | None = None, meaning: str = "fatal") -> None:
        self.exit_code = exit_code
        self.layer = layer
        super().__init__(_exit_message(exit_code, layer, meaning) + "; not retrying")


class SmelterConfigError(SmelterFatalError):
    """Exit 2: usage, pipeline file or SQL error."""


class SmelterDataQualityError(SmelterFatalError):
    """Exit 3: an expectation with action ``fail`` did not hold."""


DEFAULT_RETRYABLE_EXIT_CODES: tuple[int, ...] = (EXIT_INTERNAL, EXIT_TRANSIENT)


def exception_for_exit_code(
    exit_code: int, layer: str | None = None, retryable: Sequence[int] = DEFAULT_RETRYABLE_EXIT_CODES
) -> BaseException | None:
    """The exception a task raises for a smelter exit code (``None`` for success).

    ``retryable`` (the pipeline's ``[airflow] retryable_exit_codes``, default 1 and 75) are the codes
    Airflow may retry; every other failing code raises an ``AirflowFailException``, which Airflow
    never retries. A process killed by a signal (negative code: the OOM killer, SIGKILL) is retried.
    """
    if exit_code == EXIT_OK:
        return None
    if exit_code == EXIT_NOTHING_TO_DO:
        where = f" (layer {layer})" if layer else ""
        return AirflowSkipException(f"smelter exited with code 99{where}: nothing to do")
    if exit_code < 0 or exit_code in retryable:
        if exit_code == EXIT_TRANSIENT:
            return SmelterTransientError(exit_code, layer, "transient error")
        if exit_code == EXIT_INTERNAL:
            return SmelterInternalError(exit_code, layer, "internal error")
        if exit_code < 0:
            return SmelterExit(exit_code, layer, f"killed by signal {-exit_code}")
        return SmelterExit(exit_code, layer, "failed (retryable by the pipeline's retryable_exit_codes)")
    if exit_code == EXIT_CONFIG:
        return SmelterConfigError(exit_code, layer, "configuration or SQL error")
    if exit_code == EXIT_DATA_QUALITY:
        return SmelterDataQualityError(exit_code, layer, "data-quality check failed")
    meaning = {EXIT_TRANSIENT: "transient error", EXIT_INTERNAL: "internal error"}.get(exit_code, "failed")
    return SmelterFatalError(exit_code, layer, f"{meaning}; exit code not in retryable_exit_codes {sorted(retryable)}")


# --------------------------------------------------------------------------- operators


class _SmelterBinaryOperator(BaseOperator):
    """Runs the smelter binary with an argument list (no shell), streams its output into the task
    log and stops it with SIGTERM when Airflow kills the task (smelter then records the attempt
    and exits 75)."""

    template_fields: Sequence[str] = ("pipeline", "env", "cwd")
    ui_color = "#f3d9b1"

    def __init__(
        self,
        *,
        pipeline: str | os.PathLike[str],
        smelter_bin: str = "smelter",
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        retryable_exit_codes: Sequence[int] = DEFAULT_RETRYABLE_EXIT_CODES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = str(pipeline)
        self.smelter_bin = smelter_bin
        self.env = env or {}
        self.cwd = cwd
        self.retryable_exit_codes = tuple(retryable_exit_codes)
        self._proc: subprocess.Popen[str] | None = None

    def _run(self, argv: list[str], context: Any) -> int:
        """Runs ``argv`` with the worker's environment, the task's Airflow context variables
        (``AIRFLOW_CTX_DAG_ID``, ``…_TASK_ID``, ``…_DAG_RUN_ID``, ``…_TRY_NUMBER``, which Smelter puts in
        its lineage) and ``env``; returns the exit code."""
        from airflow.sdk.execution_time.context import context_to_airflow_vars

        airflow_vars = context_to_airflow_vars(context, in_env_var_format=True) if context else {}
        self.log.info("Running %s", " ".join(argv))
        self._proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **airflow_vars, **{k: str(v) for k, v in self.env.items()}},
            cwd=self.cwd,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.log.info("%s", line.rstrip())
        return self._proc.wait()

    def on_kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)


class SmelterRunOperator(_SmelterBinaryOperator):
    """``smelter run <pipeline> --layer <layer> [--models a,b]`` for the task's logical date and run id.

    Returns the run summary (the ``--summary-json`` document: steps with rows, versions, quality
    results and drift, the error of a failed run) as the XCom return value; a failed or skipped run
    pushes it under the key ``summary``. For every outlet Asset of a written table (``uri`` ending
    in ``/<layer>/<table>``; extract writes ``/landing/<table>``) the Asset event's ``extra`` gets the
    step's ``rows_inserted``, ``rows_updated``, ``rows_deleted``, ``version``, ``status`` and the ``run_id``.
    """

    template_fields: Sequence[str] = (*_SmelterBinaryOperator.template_fields, "logical_date", "run_id", "models")

    def __init__(
        self,
        *,
        layer: str,
        models: Sequence[str] | str | None = None,
        logical_date: str = "{{ ds }}",
        run_id: str = "{{ run_id }}",
        full_refresh: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.layer = layer
        # A string is a comma-separated list, typically templated from XCom
        # (``"{{ ti.xcom_pull(task_ids='changes') | join(',') }}"``); it may render empty (skip).
        self.models = models if isinstance(models, str) or models is None else list(models)
        self.logical_date = logical_date
        self.run_id = run_id
        self.full_refresh = full_refresh

    def command(self, summary_path: str) -> list[str]:
        """The argument list of the call."""
        argv = [self.smelter_bin, "run", self.pipeline, "--layer", self.layer]
        models = self.model_names()
        if models:
            argv += ["--models", ",".join(models)]
        argv += ["--logical-date", self.logical_date, "--run-id", self.run_id, "--log-format", "json"]
        if self.full_refresh:
            argv.append("--full-refresh")
        return argv + ["--summary-json", summary_path]

    def model_names(self) -> list[str] | None:
        """The models to run, ``None`` for all of the layer."""
        if self.models is None:
            return None
        names = self.models.split(",") if isinstance(self.models, str) else self.models
        return [n.strip() for n in names if n and n.strip()]

    def execute(self, context: Any) -> Any:
        if self.models is not None and not self.model_names():
            # Never let an empty selection fall back to every model of the layer.
            raise AirflowSkipException(f"no models selected for layer {self.layer}")
        with tempfile.TemporaryDirectory(prefix="smelter-summary-") as tmp:
            path = Path(tmp) / "summary.json"
            code = self._run(self.command(str(path)), context)
            summary = json.loads(path.read_text()) if path.is_file() else None
        if summary is not None:
            self._annotate_assets(context, summary)
        error = exception_for_exit_code(code, self.layer, self.retryable_exit_codes)
        if error is None:
            return summary
        if summary is not None and context.get("ti") is not None:
            context["ti"].xcom_push(key="summary", value=summary)
            if summary.get("error"):
                self.log.error("smelter: %s", summary["error"].get("message"))
        raise error

    def _annotate_assets(self, context: Any, summary: dict[str, Any]) -> None:
        events = context.get("outlet_events") if hasattr(context, "get") else None
        if events is None:
            return
        for step in summary.get("steps", []):
            if step.get("status") not in ("success", "already_committed"):
                continue
            layer, _, table = step["target"].partition(".")
            for asset in self.outlets:
                if isinstance(asset, Asset) and asset.uri.rstrip("/").endswith(f"/{layer}/{table}"):
                    events[asset].extra.update(
                        {
                            "rows_inserted": step.get("rows_inserted"),
                            "rows_updated": step.get("rows_updated"),
                            "rows_deleted": step.get("rows_deleted"),
                            "version": step.get("version"),
                            "status": step.get("status"),
                            "run_id": summary.get("run_id"),
                        }
                    )


class SmelterValidateOperator(_SmelterBinaryOperator):
    """``smelter validate <pipeline>``: parses the pipeline and plans every model. Exit 2 (any
    problem) fails the task without retry; the problems are in the task log."""

    def execute(self, context: Any) -> None:
        code = self._run([self.smelter_bin, "validate", self.pipeline, "--log-format", "json"], context)
        error = exception_for_exit_code(code, retryable=self.retryable_exit_codes)
        if error is not None:
            raise error


class SmelterProfileOperator(_SmelterBinaryOperator):
    """``smelter profile <pipeline> [--layer <layer>] [--table <t>] --format json``: profiles the
    current version of lake tables, with drift against each table's latest stored profile.

    ``tables`` (a list, or a comma-separated string that may be templated) profiles those tables,
    one call per table (the command takes one ``--table``); ``None`` profiles every written table
    (of ``layer``, if given) in one call; with both, a named table must be of ``layer``. An unknown
    or never-written named table exits 2 and fails the task without retry; no written table at all
    exits 99 (skipped); an empty templated selection is skipped, never run as "all tables".

    The XCom return value is one small entry per table -- ``table``, ``version``, ``row_count``,
    ``column_count``, ``size_bytes``, ``files``, ``sampled_rows`` and ``drift`` (the breached drift
    rules: metric, column, value, max, action) -- so downstream tasks can branch on drift. With
    ``push_profiles=True`` the full profiles (per-column statistics, quantiles, top values,
    histograms: kilobytes per column) go to the XCom key ``profiles`` too; keep those out of the
    metadata database with the object-storage XCom backend (``astro/README.md``).
    """

    template_fields: Sequence[str] = (*_SmelterBinaryOperator.template_fields, "tables", "layer")

    SUMMARY_KEYS: tuple[str, ...] = (
        "table",
        "version",
        "row_count",
        "column_count",
        "size_bytes",
        "files",
        "sampled_rows",
        "drift",
    )

    def __init__(
        self,
        *,
        tables: Sequence[str] | str | None = None,
        layer: str | None = None,
        push_profiles: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tables = tables if isinstance(tables, str) or tables is None else list(tables)
        self.layer = layer
        self.push_profiles = push_profiles

    def table_names(self) -> list[str] | None:
        """The tables to profile, ``None`` for every written table (of ``layer``)."""
        if self.tables is None:
            return None
        names = self.tables.split(",") if isinstance(self.tables, str) else self.tables
        return [n.strip() for n in names if n and n.strip()]

    def commands(self, output_dir: str) -> list[list[str]]:
        """The argument lists of the calls: one per named table, else one."""
        base = [self.smelter_bin, "profile", self.pipeline]
        if self.layer:
            base += ["--layer", self.layer]
        tables = self.table_names()
        selections: list[list[str]] = [["--table", t] for t in tables] if tables is not None else [[]]
        return [
            [*base, *sel, "--format", "json", "--output", str(Path(output_dir) / f"profile-{i}.json"), "--log-format", "json"]
            for i, sel in enumerate(selections)
        ]

    def execute(self, context: Any) -> list[dict[str, Any]]:
        if self.tables is not None and not self.table_names():
            raise AirflowSkipException("no tables selected to profile")
        profiles: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="smelter-profile-") as tmp:
            for argv in self.commands(tmp):
                code = self._run(argv, context)
                error = exception_for_exit_code(code, self.layer, self.retryable_exit_codes)
                if error is not None:
                    raise error
                profiles.extend(json.loads(Path(argv[argv.index("--output") + 1]).read_text()))
        summaries = [{k: p.get(k) for k in self.SUMMARY_KEYS} for p in profiles]
        for s in summaries:
            self.log.info(
                "Profiled %s (version %s): %s rows, %s columns; %d drift breach(es)%s",
                s["table"],
                s["version"],
                s["row_count"],
                s["column_count"],
                len(s["drift"] or []),
                "".join(
                    f"\n  {d.get('metric')} {d.get('column') or ''} = {d.get('value')} > {d.get('max')} ({d.get('action')})"
                    for d in s["drift"] or []
                ),
            )
        if self.push_profiles and context.get("ti") is not None:
            context["ti"].xcom_push(key="profiles", value=profiles)
        return summaries


class SmelterPlanChangeSensor(BaseSensorOperator):
    """Waits until models of a pipeline changed: ``smelter plan <pipeline> --changed --format json``
    lists the models whose SQL, header, upstream tables or source contracts differ from their last
    successful build (``--since-last-success``, or ``--since-run <since_run>``).

    Exit 99 (nothing changed) pokes again later; exit 0 finishes the sensor with the changed model
    names (``["silver.a", "gold.b"]``, in run order) as its XCom return value, and the full entries
    (model, reasons, last_run) under the key ``changes``. Exit 75 (the lake is unreachable) is
    logged and poked again; 2 (a bad pipeline file) fails the task without retry.

    Runs in ``reschedule`` mode by default: between pokes the worker slot is free. It is not
    deferrable: a trigger runs in the triggerer, which would need the binary, the project files and
    the lake's credentials there too; a reschedule poke is one short offline-plus-run-log read.
    """

    template_fields: Sequence[str] = ("pipeline", "since_run", "env", "cwd")
    ui_color = "#f3e3b1"

    def __init__(
        self,
        *,
        pipeline: str | os.PathLike[str],
        smelter_bin: str = "smelter",
        since_run: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        mode: str = "reschedule",
        poke_interval: timedelta | float = 300,
        plan_timeout: float = 300,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, **kwargs)
        self.pipeline = str(pipeline)
        self.smelter_bin = smelter_bin
        self.since_run = since_run
        self.env = env or {}
        self.cwd = cwd
        self.plan_timeout = plan_timeout

    def command(self) -> list[str]:
        """The argument list of one poke."""
        argv = [self.smelter_bin, "plan", self.pipeline, "--changed", "--format", "json"]
        return argv + (["--since-run", self.since_run] if self.since_run else ["--since-last-success"])

    def poke(self, context: Any) -> PokeReturnValue:
        argv = self.command()
        self.log.info("Running %s", " ".join(argv))
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env={**os.environ, **{k: str(v) for k, v in self.env.items()}},
            timeout=self.plan_timeout,
        )
        for line in proc.stderr.splitlines():
            self.log.info("%s", line)
        if proc.returncode == EXIT_NOTHING_TO_DO:
            self.log.info("No model changed since the last successful build.")
            return PokeReturnValue(is_done=False)
        if proc.returncode == EXIT_TRANSIENT:
            self.log.warning("smelter plan exited with 75 (transient); poking again later.")
            return PokeReturnValue(is_done=False)
        error = exception_for_exit_code(proc.returncode)
        if error is not None:
            raise error
        changes = json.loads(proc.stdout)["changed"]
        models = [c["model"] for c in changes]
        for c in changes:
            self.log.info("Changed: %s (%s)", c["model"], ", ".join(c["reasons"]))
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is not None:
            ti.xcom_push(key="changes", value=changes)
        return PokeReturnValue(is_done=True, xcom_value=models)


# --------------------------------------------------------------------------- per-model task groups


class SmelterPlanError(ValueError):
    """``smelter plan`` failed; shown by Airflow as an import error of the DAG file."""


def smelter_plan(smelter_bin: str, pipeline: str | os.PathLike[str], cwd: str | None = None) -> dict[str, Any]:
    """The pipeline's plan: ``smelter plan <pipeline> --format json`` (offline: no source, no lake)."""
    proc = subprocess.run(
        [smelter_bin, "plan", str(pipeline), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    if proc.returncode != 0:
        raise SmelterPlanError(f"smelter plan {pipeline} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def model_task_groups(
    plan: dict[str, Any],
    *,
    layers: Sequence[str] = ("silver", "gold"),
    upstream: BaseOperator | None = None,
    outlets: Any = None,
    timeouts: Mapping[str, timedelta] | None = None,
    **operator_kwargs: Any,
) -> dict[str, TaskGroup]:
    """One TaskGroup per layer (``silver``, ``gold``) with one :class:`SmelterRunOperator` per model
    (task id ``<layer>.<table>``, the model's name), each running ``--models <name>``.

    A model waits for the models it reads (``depends_on`` in the plan, across layers too); a model
    that reads no model waits for ``upstream`` (the bronze task). ``outlets`` maps ``(layer, table)``
    to the task's outlet Assets; ``timeouts`` gives an ``execution_timeout`` per layer. Must be
    called inside a DAG context.
    """
    groups: dict[str, TaskGroup] = {}
    tasks: dict[str, SmelterRunOperator] = {}
    models = [m for m in plan["models"] if m["layer"] in layers]
    for layer in layers:
        with TaskGroup(group_id=layer) as group:
            for model in (m for m in models if m["layer"] == layer):
                tasks[model["name"]] = SmelterRunOperator(
                    task_id=model["table"],
                    layer=layer,
                    models=[model["name"]],
                    outlets=outlets(layer, model["table"]) if outlets else [],
                    **({"execution_timeout": timeouts[layer]} if timeouts and layer in timeouts else {}),
                    **operator_kwargs,
                )
        groups[layer] = group
    for model in models:
        task = tasks[model["name"]]
        parents = [tasks[d] for d in model["depends_on"] if d in tasks]
        for parent in parents:
            parent >> task
        if not parents and upstream is not None:
            upstream >> task
    return groups
