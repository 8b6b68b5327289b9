"""Build the Airflow DAGs that run Smelter: one task per medallion layer, or (``SMELTER_DAG_SHAPE=model``)
extract and bronze then one task per silver/gold model.

Each task is one call of the ``smelter`` binary by a ``SmelterRunOperator`` (``smelter_operators``)::

    smelter run <pipeline.toml> --layer <layer> --logical-date {{ ds }} --run-id {{ run_id }} --log-format json

Airflow only orchestrates: the binary does the work and tells Airflow what happened through its
exit code (see ``DESIGN.md``):

====  ==========================  ==============================================
code  meaning                     what the task does
====  ==========================  ==============================================
0     ok                          success
1     internal bug                fails; retried like any failure
2     config / SQL error          fails at once (``AirflowFailException``), no retry
3     data-quality failure        fails at once (``AirflowFailException``), no retry
75    transient (network, busy)   fails; retried with exponential backoff
99    nothing to do               skipped
====  ==========================  ==============================================

The DAG files in ``dags/`` stay thin; everything they need lives here.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import pendulum
from airflow.sdk import DAG, Asset

# The operators and the exit-code mapping live in smelter_operators; re-exported here.
from include.smelter_operators import (  # noqa: F401
    DEFAULT_RETRYABLE_EXIT_CODES,
    EXIT_CONFIG,
    EXIT_DATA_QUALITY,
    EXIT_INTERNAL,
    EXIT_NOTHING_TO_DO,
    EXIT_OK,
    EXIT_TRANSIENT,
    SmelterConfigError,
    SmelterDataQualityError,
    SmelterExit,
    SmelterFatalError,
    SmelterInternalError,
    SmelterPlanChangeSensor,
    SmelterProfileOperator,
    SmelterRunOperator,
    SmelterTransientError,
    SmelterValidateOperator,
    exception_for_exit_code,
    model_task_groups,
    smelter_plan,
)

LAYERS: tuple[str, ...] = ("extract", "bronze", "silver", "gold")
# DAG shapes (SMELTER_DAG_SHAPE): one task per layer, or one task per silver/gold model.
SHAPES: tuple[str, ...] = ("layer", "model")

# Astro project root (``/usr/local/airflow`` in the image): the parent of ``include/``.
ASTRO_HOME = Path(__file__).resolve().parent.parent

# Per-layer execution timeouts; SMELTER_TASK_TIMEOUT_MINUTES overrides all four.
DEFAULT_TIMEOUTS = {
    "extract": timedelta(hours=2),
    "bronze": timedelta(hours=1),
    "silver": timedelta(hours=2),
    "gold": timedelta(hours=1),
}
DEFAULT_START_DATE = pendulum.datetime(2024, 1, 1, tz="UTC")
SCHEDULE_KEYS = {"name", "cron", "interval_seconds", "enabled", "timezone", "max_active_runs", "tags"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# --------------------------------------------------------------------------- settings


def _variable(key: str) -> str | None:
    """An Airflow Variable, or ``None`` when unset or when no metadata backend is reachable."""
    try:
        from airflow.sdk import Variable

        value = Variable.get(key, default=None)
    except Exception:  # parsing outside a configured Airflow: fall back to defaults
        return None
    return str(value) if value not in (None, "") else None


def setting(env: str, variable: str, default: str | None = None) -> str | None:
    """Environment variable first, then the Airflow Variable, then the default."""
    value = os.environ.get(env)
    if value:
        return value
    value = _variable(variable)
    return value if value is not None else default


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0]


def default_pipelines_dir() -> Path:
    # In the image the project is synced into include/smelter; in a checkout it is the repo root.
    return _first_existing(ASTRO_HOME / "include" / "smelter" / "pipelines", ASTRO_HOME.parent / "pipelines")


@dataclass(frozen=True)
class SmelterSettings:
    """Deployment settings, read when the DAG file is parsed."""

    bin: str = "smelter"
    workdir: str | None = None
    queue: str | None = None
    pool: str | None = None
    retries: int = 3
    retry_delay: timedelta = timedelta(minutes=5)
    max_retry_delay: timedelta = timedelta(hours=1)
    retry_exponential_backoff: float = 2.0
    timeouts: tuple[tuple[str, timedelta], ...] = tuple(DEFAULT_TIMEOUTS.items())
    shape: str = "layer"

    @classmethod
    def load(cls) -> SmelterSettings:
        timeouts = dict(DEFAULT_TIMEOUTS)
        if minutes := setting("SMELTER_TASK_TIMEOUT_MINUTES", "smelter_task_timeout_minutes"):
            timeouts = {layer: timedelta(minutes=float(minutes)) for layer in LAYERS}
        return cls(
            bin=setting("SMELTER_BIN", "smelter_bin", "smelter") or "smelter",
            workdir=setting("SMELTER_WORKDIR", "smelter_workdir"),
            queue=setting("SMELTER_QUEUE", "smelter_queue"),
            pool=setting("SMELTER_POOL", "smelter_pool"),
            retries=int(setting("SMELTER_RETRIES", "smelter_retries", "3") or 3),
            retry_delay=timedelta(
                seconds=float(setting("SMELTER_RETRY_DELAY_SECONDS", "smelter_retry_delay_seconds", "300") or 300)
            ),
            timeouts=tuple(timeouts.items()),
            shape=_shape(setting("SMELTER_DAG_SHAPE", "smelter_dag_shape", "layer") or "layer"),
        )

    def timeout(self, layer: str) -> timedelta:
        return dict(self.timeouts)[layer]


def _shape(value: str) -> str:
    shape = value.strip().lower()
    if shape not in SHAPES:
        raise SmelterPipelineError(f"SMELTER_DAG_SHAPE / smelter_dag_shape: {value!r}; valid: {', '.join(SHAPES)}")
    return shape


def default_pipeline_path() -> Path:
    configured = setting("SMELTER_PIPELINE", "smelter_pipeline")
    if configured:
        return Path(configured)
    return default_pipelines_dir() / "demo.toml"


def pipelines_dir() -> Path:
    configured = setting("SMELTER_PIPELINES_DIR", "smelter_pipelines_dir")
    return Path(configured) if configured else default_pipelines_dir()


# --------------------------------------------------------------------------- pipeline file


class SmelterPipelineError(ValueError):
    """A pipeline file the DAG factory cannot use; shown by Airflow as a DAG import error."""


@dataclass(frozen=True)
class Pipeline:
    """What the DAGs need from a pipeline file: its name, its tables per layer, where they live."""

    path: Path
    name: str
    config: dict[str, Any]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Pipeline:
        path = Path(path).resolve()
        if not path.is_file():
            raise SmelterPipelineError(
                f"Smelter pipeline file {path} not found "
                "(set SMELTER_PIPELINE or the Airflow Variable smelter_pipeline)"
            )
        try:
            with path.open("rb") as fh:
                config = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise SmelterPipelineError(f"{path}: not valid TOML: {exc}") from exc
        name = config.get("name", path.stem)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise SmelterPipelineError(f"{path}: name must be letters, digits, '_', '-' or '.', got {name!r}")
        return cls(path=path, name=name, config=config)

    @property
    def project_dir(self) -> Path:
        """The parent of the directory holding the pipeline file (holds ``pipelines/`` and ``sql/``)."""
        return self.path.parent.parent

    def storage_root(self) -> str:
        """Lake root as an absolute URI: ``file:///...`` for local paths, unchanged for object stores."""
        root = os.environ.get("SMELTER_STORAGE_ROOT") or self.config.get("storage", {}).get("root") or "lake"
        return resolve_storage_root(str(root), self.project_dir)

    def tables(self, layer: str) -> list[str]:
        if layer in ("extract", "bronze"):
            source = self.config.get("source", {})
            return [t["name"] for t in source.get("tables", []) if isinstance(t, dict) and "name" in t]
        return sorted(p.stem for p in (self.models_dir / layer).glob("*.sql"))

    @property
    def models_dir(self) -> Path:
        """SQL models: ``models_dir`` from the file (relative to the project) or ``sql/<name>``."""
        return self.project_dir / self.config.get("models_dir", f"sql/{self.name}")

    def outlets(self, layer: str) -> list[Asset]:
        """Assets a layer writes: landing folders for extract, Delta/Iceberg tables for the others."""
        return [self.outlet(layer, table) for table in self.tables(layer)]

    def outlet(self, layer: str, table: str) -> Asset:
        """The Asset of one table a layer writes (a landing folder for extract)."""
        folder = "landing" if layer == "extract" else layer
        return Asset(
            uri=f"{self.storage_root()}/{folder}/{table}",
            extra={"smelter_pipeline": self.name, "smelter_layer": folder, "smelter_table": table},
        )


def resolve_storage_root(root: str, project_dir: Path) -> str:
    root = root.strip()
    parts = urlsplit(root)
    if len(parts.scheme) > 1 and parts.scheme != "file":  # s3://, az://, abfss://, ... (not C:\)
        return root.rstrip("/")
    if parts.scheme == "file":
        local = root[len("file://") :] if root.startswith("file://") else root[len("file:") :]
    else:
        local = root
    path = Path(local)
    if not path.is_absolute():
        path = project_dir / path
    return "file://" + os.path.normpath(path)


# --------------------------------------------------------------------------- DAGs

# The OpenLineage provider (installed in Astro Runtime) exposes the run id it gives each task as a
# macro. Passing it to smelter as OPENLINEAGE_PARENT_ID lets smelter's own run events name the
# Airflow task run as their parent. Renders to "" when the provider is absent or disabled.
_OL = "macros.OpenLineageProviderPlugin"
_OL_TEMPLATE = (
    "{%% if %(ol)s is defined and %(ol)s.%(fn)s is defined %%}{{ %(ol)s.%(fn)s(task_instance) }}{%% endif %%}"
)
OPENLINEAGE_ENV = {
    "OPENLINEAGE_PARENT_ID": _OL_TEMPLATE % {"ol": _OL, "fn": "lineage_parent_id"},
    "OPENLINEAGE_ROOT_PARENT_ID": _OL_TEMPLATE % {"ol": _OL, "fn": "lineage_root_parent_id"},
}


def build_smelter_dag(
    *,
    dag_id: str,
    pipeline: Pipeline,
    schedule: Any,
    settings: SmelterSettings | None = None,
    start_date: pendulum.DateTime = DEFAULT_START_DATE,
    max_active_runs: int = 1,
    tags: list[str] | None = None,
    description: str | None = None,
) -> DAG:
    """One DAG: ``extract >> bronze >> silver >> gold``, each task one ``smelter run`` call; with
    ``settings.shape == "model"``, one task per silver/gold model (see :func:`model_task_groups`)."""
    settings = settings or SmelterSettings.load()
    setup = DagSetup.of(pipeline, settings, tags or [], needs_plan=settings.shape == "model")
    workdir, plan = setup.workdir, setup.plan

    with DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=start_date,
        catchup=False,
        max_active_runs=max_active_runs,
        tags=setup.tags,
        default_args=setup.default_args,
        description=description or f"Smelter pipeline {pipeline.name}: extract >> bronze >> silver >> gold",
        doc_md=__doc__,
    ) as dag:
        env = {"SMELTER_PIPELINE": str(pipeline.path), **OPENLINEAGE_ENV}
        common: dict[str, Any] = {
            "pipeline": str(pipeline.path),
            "smelter_bin": settings.bin,
            "env": env,
            "cwd": workdir,
            "retryable_exit_codes": setup.retryable_exit_codes,
        }
        layers = ("extract", "bronze") if settings.shape == "model" else LAYERS
        previous = None
        for layer in layers:
            task = SmelterRunOperator(
                task_id=layer,
                layer=layer,
                execution_timeout=settings.timeout(layer),
                outlets=pipeline.outlets(layer),
                # A skipped layer (exit 99) does not hide work from the next one: each layer
                # decides for itself whether it has anything to do.
                trigger_rule="all_success" if previous is None else "none_failed",
                **common,
            )
            if previous is not None:
                previous >> task
            previous = task
        if plan is not None and settings.shape == "model":
            _model_tasks(pipeline, plan, settings, common, upstream=previous)
    return dag


@dataclass(frozen=True)
class DagSetup:
    """What every Smelter DAG of a pipeline shares: the working directory, the plan (when read), the
    ``[airflow]`` policy, the tags and the tasks' default arguments."""

    workdir: str
    plan: dict[str, Any] | None
    policy: dict[str, Any]
    tags: list[str]
    default_args: dict[str, Any]

    @classmethod
    def of(cls, pipeline: Pipeline, settings: SmelterSettings, tags: list[str], needs_plan: bool = False) -> DagSetup:
        workdir = settings.workdir or str(pipeline.project_dir)
        plan = pipeline_plan(pipeline, settings, workdir, needed=needs_plan)
        policy = (plan or {}).get("airflow") or {}
        all_tags: list[str] = []
        for tag in ["smelter", f"pipeline:{pipeline.name}", *tags, *policy_tags(pipeline, plan)]:
            if tag not in all_tags:
                all_tags.append(tag)
        default_args: dict[str, Any] = {"owner": "smelter", **policy_task_args(policy, settings)}
        if settings.queue:
            default_args["queue"] = settings.queue
        return cls(workdir=workdir, plan=plan, policy=policy, tags=all_tags, default_args=default_args)

    @property
    def retryable_exit_codes(self) -> tuple[int, ...]:
        """The pipeline's ``retryable_exit_codes`` (default 1 and 75), for the operators."""
        return tuple(self.policy.get("retryable_exit_codes") or DEFAULT_RETRYABLE_EXIT_CODES)


def pipeline_plan(pipeline: Pipeline, settings: SmelterSettings, workdir: str, needed: bool = False) -> dict[str, Any] | None:
    """``smelter plan --format json`` of the pipeline when ``needed`` or when the file has an
    ``[airflow]`` section (whose validated policy the plan carries); else ``None``, so a DAG without
    either parses without calling the binary."""
    if needed or "airflow" in pipeline.config:
        return smelter_plan(settings.bin, pipeline.path, cwd=workdir)
    return None


def policy_tags(pipeline: Pipeline, plan: Mapping[str, Any] | None) -> list[str]:
    """``tenant:<id>`` (from the ``[airflow]`` policy) and ``source:<type>``."""
    policy = (plan or {}).get("airflow") or {}
    source_type = (plan or {}).get("source", {}).get("type") or pipeline.config.get("source", {}).get("type")
    tags = [f"tenant:{policy['tenant']}"] if policy.get("tenant") else []
    return tags + ([f"source:{source_type}"] if source_type else [])


def policy_task_args(policy: Mapping[str, Any], settings: SmelterSettings) -> dict[str, Any]:
    """Task arguments from a pipeline's ``[airflow]`` policy (the ``airflow`` object of ``smelter plan
    --format json``): a key the pipeline sets wins over the deployment setting.

    ``max_retries`` -> ``retries``; ``initial_delay_seconds`` -> ``retry_delay``; ``backoff_multiplier``
    -> ``retry_exponential_backoff`` (a multiplier in Airflow 3.3, capped by ``max_retry_delay``);
    ``pool`` (``smelter_tenant_<tenant>``) -> ``pool``. ``retryable_exit_codes`` goes to the operators.
    """

    def pick(key: str, default: Any) -> Any:
        value = policy.get(key)
        return default if value is None else value

    args: dict[str, Any] = {
        "retries": int(pick("max_retries", settings.retries)),
        "retry_delay": timedelta(seconds=float(pick("initial_delay_seconds", settings.retry_delay.total_seconds()))),
        "retry_exponential_backoff": float(pick("backoff_multiplier", settings.retry_exponential_backoff)),
        "max_retry_delay": settings.max_retry_delay,
    }
    pool = policy.get("pool") or settings.pool
    if pool:
        args["pool"] = pool
    return args


def _model_tasks(
    pipeline: Pipeline, plan: dict[str, Any], settings: SmelterSettings, common: dict[str, Any], upstream: Any
) -> None:
    """One task per silver/gold model (from ``smelter plan``) after ``upstream`` (bronze), in the DAG
    being defined."""
    model_task_groups(
        plan,
        upstream=upstream,
        outlets=lambda layer, table: [pipeline.outlet(layer, table)],
        timeouts=dict(settings.timeouts),
        trigger_rule="none_failed",
        **common,
    )


def build_full_refresh_on_change_dag(
    dag_id: str = "smelter_full_refresh_on_change",
    schedule: Any = "@hourly",
    poke_interval: float = 300,
    settings: SmelterSettings | None = None,
) -> DAG:
    """``wait_for_changes >> full_refresh_silver >> full_refresh_gold`` for the pipeline of
    ``SMELTER_PIPELINE``: a :class:`SmelterPlanChangeSensor` (reschedule mode) waits until models
    changed since their last successful build, then ``smelter run --full-refresh --models <changed>``
    rebuilds exactly those, silver first. A run that sees no change within the schedule interval
    ends skipped (``soft_fail``)."""
    settings = settings or SmelterSettings.load()
    pipeline = Pipeline.load(default_pipeline_path())
    setup = DagSetup.of(pipeline, settings, ["full-refresh"])
    workdir = setup.workdir
    with DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=DEFAULT_START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=setup.tags,
        default_args=setup.default_args,
        description=f"Full refresh of the models of {pipeline.name} whose SQL, header, upstream or contract changed",
    ) as dag:
        common: dict[str, Any] = {
            "pipeline": str(pipeline.path),
            "smelter_bin": settings.bin,
            "env": {"SMELTER_PIPELINE": str(pipeline.path), **OPENLINEAGE_ENV},
            "cwd": workdir,
        }
        wait = SmelterPlanChangeSensor(
            task_id="wait_for_changes",
            poke_interval=poke_interval,
            timeout=_schedule_seconds(schedule, default=3600) - poke_interval / 2,
            soft_fail=True,
            retries=0,
            **common,
        )
        # The sensor's XCom: the changed models, in run order. Each layer's task runs those of its
        # layer (a layer with none exits 99: skipped); an empty selection never runs everything.
        changed = "{{ (ti.xcom_pull(task_ids='wait_for_changes') or []) | join(',') }}"
        refresh = {
            layer: SmelterRunOperator(
                task_id=f"full_refresh_{layer}",
                layer=layer,
                models=changed,
                full_refresh=True,
                retryable_exit_codes=setup.retryable_exit_codes,
                execution_timeout=settings.timeout(layer),
                # Gold runs after silver, whether silver refreshed models or had none to refresh.
                trigger_rule="all_success" if layer == "silver" else "none_failed_min_one_success",
                **common,
            )
            for layer in ("silver", "gold")
        }
        wait >> refresh["silver"]
        [wait, refresh["silver"]] >> refresh["gold"]
    return dag


def _schedule_seconds(schedule: Any, default: float) -> float:
    """The interval of a preset or timedelta schedule, in seconds; ``default`` for anything else."""
    presets = {"@hourly": 3600, "@daily": 86400, "@weekly": 7 * 86400}
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    return float(presets.get(schedule, default))


def build_medallion_dag(dag_id: str = "medallion_architecture_etl", schedule: str = "0 2 * * *") -> DAG:
    pipeline = Pipeline.load(default_pipeline_path())
    return build_smelter_dag(dag_id=dag_id, pipeline=pipeline, schedule=schedule)


# --------------------------------------------------------------------------- [[schedule]] factory


def _schedule_error(path: Path, label: str, message: str) -> SmelterPipelineError:
    return SmelterPipelineError(f"{path}: [[schedule]] {label}: {message}")


def scheduled_dags(directory: str | os.PathLike[str] | None = None) -> list[DAG]:
    """One DAG per enabled ``[[schedule]]`` entry of every ``*.toml`` pipeline in ``directory``.

    Raises :class:`SmelterPipelineError` naming the file and the entry when an entry is invalid, so
    Airflow shows it as an import error of the DAG file that calls this.
    """
    directory = Path(directory) if directory else pipelines_dir()
    if not directory.is_dir():
        return []
    settings = SmelterSettings.load()
    dags: dict[str, DAG] = {}
    for path in sorted(directory.glob("*.toml")):
        pipeline = Pipeline.load(path)
        entries = pipeline.config.get("schedule", [])
        if not isinstance(entries, list):
            raise SmelterPipelineError(f"{path}: 'schedule' must be an array of tables ([[schedule]])")
        for index, entry in enumerate(entries, start=1):
            label = f"#{index}" + (f" ({entry.get('name')!r})" if isinstance(entry, dict) and "name" in entry else "")
            dag = _dag_for_entry(pipeline, index, entry, label, settings)
            if dag is None:
                continue
            if dag.dag_id in dags:
                raise _schedule_error(path, label, f"DAG id {dag.dag_id} is already used by another schedule")
            dags[dag.dag_id] = dag
    return list(dags.values())


def _dag_for_entry(
    pipeline: Pipeline, index: int, entry: Any, label: str, settings: SmelterSettings
) -> DAG | None:
    path = pipeline.path
    if not isinstance(entry, dict):
        raise _schedule_error(path, label, "must be a table")
    unknown = sorted(set(entry) - SCHEDULE_KEYS)
    if unknown:
        raise _schedule_error(
            path, label, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(SCHEDULE_KEYS))}"
        )
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _schedule_error(path, label, f"enabled must be true or false, got {enabled!r}")

    cron, interval = entry.get("cron"), entry.get("interval_seconds")
    if (cron is None) == (interval is None):
        raise _schedule_error(path, label, "set exactly one of cron or interval_seconds")
    if cron is not None:
        if not isinstance(cron, str) or not cron.strip():
            raise _schedule_error(path, label, f"cron must be a non-empty string, got {cron!r}")
        schedule: Any = cron.strip()
    else:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
            raise _schedule_error(path, label, f"interval_seconds must be a positive integer, got {interval!r}")
        schedule = timedelta(seconds=interval)

    name = entry.get("name", str(index))
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _schedule_error(path, label, f"name must be letters, digits, '_', '-' or '.', got {name!r}")
    tz_name = entry.get("timezone", "UTC")
    try:
        tz = pendulum.timezone(tz_name)
    except Exception as exc:
        raise _schedule_error(path, label, f"unknown timezone {tz_name!r}") from exc
    max_active_runs = entry.get("max_active_runs", 1)
    if isinstance(max_active_runs, bool) or not isinstance(max_active_runs, int) or max_active_runs < 1:
        raise _schedule_error(path, label, f"max_active_runs must be a positive integer, got {max_active_runs!r}")
    tags = entry.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _schedule_error(path, label, f"tags must be an array of strings, got {tags!r}")
    if not enabled:
        return None

    start = pendulum.datetime(
        DEFAULT_START_DATE.year, DEFAULT_START_DATE.month, DEFAULT_START_DATE.day, tz=tz
    )
    try:
        dag = build_smelter_dag(
            dag_id=f"smelter_{pipeline.name}_{name}",
            pipeline=pipeline,
            schedule=schedule,
            settings=settings,
            start_date=start,
            max_active_runs=max_active_runs,
            tags=tags,
            description=f"Smelter pipeline {pipeline.name}, schedule {name} ({cron or f'every {interval}s'})",
        )
        dag.timetable.validate()  # Airflow checks cron syntax only when bagging: check it here
        return dag
    except Exception as exc:  # e.g. a cron expression Airflow rejects
        raise _schedule_error(path, label, f"{type(exc).__name__}: {exc}") from exc
