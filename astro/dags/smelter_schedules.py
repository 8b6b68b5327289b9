"""Airflow DAGs generated from the ``[[schedule]]`` entries of Smelter pipeline files.

For every ``pipelines/*.toml`` (directory: env SMELTER_PIPELINES_DIR or the Airflow Variable
``smelter_pipelines_dir``) and every enabled ``[[schedule]]`` entry, one DAG
``smelter_<pipeline>_<name or index>`` with the tasks extract >> bronze >> silver >> gold.
An invalid entry raises here, so Airflow lists it as an import error naming file and entry.
"""

import sys
from pathlib import Path

_ASTRO_HOME = str(Path(__file__).resolve().parent.parent)
if _ASTRO_HOME not in sys.path:  # make ``include`` importable outside the Astro image too
    sys.path.append(_ASTRO_HOME)

from include.smelter_dags import scheduled_dags  # noqa: E402

for _dag in scheduled_dags():
    globals()[_dag.dag_id] = _dag
