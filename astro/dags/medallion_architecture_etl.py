"""Airflow DAG ``medallion_architecture_etl``: runs one Smelter pipeline daily at 02:00 UTC.

extract >> bronze >> silver >> gold, each task one ``smelter run ... --layer <layer>`` call.
Which binary and pipeline: env SMELTER_BIN / SMELTER_PIPELINE or the Airflow Variables
``smelter_bin`` / ``smelter_pipeline`` (see astro/README.md).
"""

import sys
from pathlib import Path

_ASTRO_HOME = str(Path(__file__).resolve().parent.parent)
if _ASTRO_HOME not in sys.path:  # make ``include`` importable outside the Astro image too
    sys.path.append(_ASTRO_HOME)

from include.smelter_dags import build_medallion_dag  # noqa: E402

dag = build_medallion_dag(dag_id="medallion_architecture_etl", schedule="0 2 * * *")
