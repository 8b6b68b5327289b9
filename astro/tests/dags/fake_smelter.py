"""A stand-in for the smelter binary, for DAG tests that must not depend on a Rust build.

Appends one JSON line per call to $FAKE_SMELTER_LOG (argv, cwd, the env vars the DAG passes) and
exits with the code listed for the layer in $FAKE_SMELTER_EXIT_<LAYER>: a comma-separated list,
one code per call ("75,0": transient on the first try, ok on the second; the last code repeats).
"""

import json
import os
import sys
from pathlib import Path

ENV_KEYS = (
    "SMELTER_PIPELINE",
    "SMELTER_STORAGE_ROOT",
    "OPENLINEAGE_PARENT_ID",
    "OPENLINEAGE_ROOT_PARENT_ID",
    "AIRFLOW_CTX_DAG_ID",
    "AIRFLOW_CTX_TASK_ID",
    "AIRFLOW_CTX_DAG_RUN_ID",
    "AIRFLOW_CTX_TRY_NUMBER",
    "AIRFLOW_CTX_LOGICAL_DATE",
)


def main(argv: list[str]) -> int:
    layer = argv[argv.index("--layer") + 1] if "--layer" in argv else "all"
    log = Path(os.environ["FAKE_SMELTER_LOG"])
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    n = sum(1 for c in calls if c["layer"] == layer)
    codes = [int(c) for c in os.environ.get(f"FAKE_SMELTER_EXIT_{layer.upper()}", "0").split(",")]
    code = codes[min(n, len(codes) - 1)]
    record = {
        "layer": layer,
        "argv": argv,
        "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in ENV_KEYS},
        "exit": code,
    }
    with log.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    print(json.dumps({"level": "INFO", "message": "fake smelter", "layer": layer, "exit_code": code}))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
