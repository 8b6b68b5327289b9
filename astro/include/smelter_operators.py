"""Airflow operators that call the ``smelter`` binary, and a task-group factory for per-model DAGs.

- :class:`SmelterRunOperator` runs ``smelter run`` for one layer or some models, maps the exit code
  to Airflow's outcome, returns the run summary (``--summary-json``) as its XCom value and puts
  each written table's rows and version in the ``extra`` of its Asset event.
- :class:`SmelterValidateOperator` runs ``smelter validate`` (exit 2 fails without retry).
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

from airflow.sdk import Asset, BaseOperator, TaskGroup
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


def exception_for_exit_code(exit_code: int, layer: str | None = None) -> BaseException | None:
    """The exception a task raises for a smelter exit code (``None`` for success)."""
    if exit_code == EXIT_OK:
        return None
    if exit_code == EXIT_NOTHING_TO_DO:
        where = f" (layer {layer})" if layer else ""
        return AirflowSkipException(f"smelter exited with code 99{where}: nothing to do")
    if exit_code == EXIT_CONFIG:
        return SmelterConfigError(exit_code, layer, "configuration or SQL error")
    if exit_code == EXIT_DATA_QUALITY:
        return SmelterDataQualityError(exit_code, layer, "data-quality check failed")
    if exit_code == EXIT_TRANSIENT:
        return SmelterTransientError(exit_code, layer, "transient error")
    if exit_code == EXIT_INTERNAL:
        return SmelterInternalError(exit_code, layer, "internal error")
    return SmelterExit(exit_code, layer, "unexpected exit code")


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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = str(pipeline)
        self.smelter_bin = smelter_bin
        self.env = env or {}
        self.cwd = cwd
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
    step's ``rows_inserted``, ``rows_updated``, ``version``, ``status`` and the ``run_id``.
    """

    template_fields: Sequence[str] = (*_SmelterBinaryOperator.template_fields, "logical_date", "run_id")

    def __init__(
        self,
        *,
        layer: str,
        models: Sequence[str] | None = None,
        logical_date: str = "{{ ds }}",
        run_id: str = "{{ run_id }}",
        full_refresh: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.layer = layer
        self.models = list(models) if models else None
        self.logical_date = logical_date
        self.run_id = run_id
        self.full_refresh = full_refresh

    def command(self, summary_path: str) -> list[str]:
        """The argument list of the call."""
        argv = [self.smelter_bin, "run", self.pipeline, "--layer", self.layer]
        if self.models:
            argv += ["--models", ",".join(self.models)]
        argv += ["--logical-date", self.logical_date, "--run-id", self.run_id, "--log-format", "json"]
        if self.full_refresh:
            argv.append("--full-refresh")
        return argv + ["--summary-json", summary_path]

    def execute(self, context: Any) -> Any:
        with tempfile.TemporaryDirectory(prefix="smelter-summary-") as tmp:
            path = Path(tmp) / "summary.json"
            code = self._run(self.command(str(path)), context)
            summary = json.loads(path.read_text()) if path.is_file() else None
        if summary is not None:
            self._annotate_assets(context, summary)
        error = exception_for_exit_code(code, self.layer)
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
        error = exception_for_exit_code(code)
        if error is not None:
            raise error


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
