"""Airflow DAG ``smelter_full_refresh_on_change``: full refresh of exactly the changed models.

Every hour, a ``SmelterPlanChangeSensor`` (reschedule mode) waits for models of the pipeline whose
SQL, header, upstream tables or source contracts changed since their last successful build
(``smelter plan --changed``); then ``smelter run --full-refresh --models <changed>`` rebuilds
those, silver then gold. Which binary and pipeline: as for ``medallion_architecture_etl``
(see astro/README.md).
"""

import sys
from pathlib import Path

_ASTRO_HOME = str(Path(__file__).resolve().parent.parent)
if _ASTRO_HOME not in sys.path:  # make ``include`` importable outside the Astro image too
    sys.path.append(_ASTRO_HOME)

from include.smelter_dags import build_full_refresh_on_change_dag  # noqa: E402

dag = build_full_refresh_on_change_dag(dag_id="smelter_full_refresh_on_change", schedule="@hourly")
