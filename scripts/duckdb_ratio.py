#!/usr/bin/env python3
"""Profiler vs DuckDB SUMMARIZE on the same data: prints both times and their ratio.

Generates a table of 10M rows x 20 columns (integers, floats, strings from 5 to 1M distinct values,
a date, a timestamp, a boolean; about 2 % NULLs) with DuckDB, writes it once as a Delta table (the
Parquet files are the data both engines read), then times, best of --repeat runs each:

- DuckDB: `SUMMARIZE SELECT * FROM read_parquet(<the Delta table's Parquet files>)`
  (min, max, approx_unique, avg, std, q25/q50/q75, count, null %);
- Smelter: `smelter profile <pipeline> --table bronze.wide --format json` (everything SUMMARIZE
  gives plus p05/p95, string lengths, histograms, exact distinct counts and top-k for
  low-cardinality columns), the whole process including startup.

The ratio printed is smelter / duckdb (below 1.0: Smelter is faster).

Needs the `duckdb`, `deltalake` and `pyarrow` PyPI packages (`pip install duckdb deltalake pyarrow`)
and a release build of the binary (`cargo build --release`; pass its path with --smelter or set
SMELTER_BIN). Usage:

    python scripts/duckdb_ratio.py [--rows 10000000] [--repeat 3] [--workdir DIR]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from deltalake import write_deltalake

REPO = Path(__file__).resolve().parents[1]

PIPELINE = """
name = "bench"
[source]
type = "sample"
[[source.tables]]
name = "shipments"
[storage]
root = "lake"
[profile]
mode = "full"
"""

# The table is declared as a silver model so that `smelter profile --table silver.wide` knows it;
# the script writes its data directly (the model is never run).
MODEL = "-- materialized: table\nSELECT * FROM bronze.shipments\n"


def generate_sql(rows: int) -> str:
    cards = [5, 50, 1000, 20000, 1000000]
    cols = ["i AS id"]
    for c in range(6):
        cols.append(
            f"CASE WHEN hash(i * 31 + {c + 100}) % 50 = 0 THEN NULL "
            f"ELSE (hash(i * 31 + {c}) % {10 ** (c + 1)})::INTEGER END AS i{c}"
        )
    for c in range(6, 11):
        cols.append(
            f"CASE WHEN hash(i * 31 + {c + 100}) % 50 = 0 THEN NULL "
            f"ELSE (hash(i * 31 + {c}) % 1000000) / 997.0 * {c} END AS f{c - 6}"
        )
    for k, c in enumerate(range(11, 16)):
        cols.append(
            f"CASE WHEN hash(i * 31 + {c + 100}) % 50 = 0 THEN NULL "
            f"ELSE 'v' || (hash(i * 31 + {c}) % {cards[k]})::VARCHAR END AS s{k}"
        )
    cols.append(
        "CASE WHEN hash(i * 31 + 116) % 50 = 0 THEN NULL "
        "ELSE DATE '2022-01-08' + (hash(i * 31 + 16) % 1500)::INTEGER END AS d"
    )
    cols.append(
        "CASE WHEN hash(i * 31 + 117) % 50 = 0 THEN NULL "
        "ELSE make_timestamp((1700000000000000 + hash(i * 31 + 17) % 10000000000000)::BIGINT) END AS t"
    )
    cols.append(
        "CASE WHEN hash(i * 31 + 118) % 50 = 0 THEN NULL ELSE hash(i * 31 + 18) % 3 = 0 END AS b"
    )
    return f"SELECT {', '.join(cols)} FROM range({rows}) r(i)"


def best(label: str, repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    print(f"{label}: best {min(times):.2f}s of {', '.join(f'{t:.2f}' for t in times)}")
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--smelter",
        default=os.environ.get("SMELTER_BIN", str(REPO / "target/release/smelter")),
    )
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="smelter-duckdb-"))
    (work / "pipelines").mkdir(parents=True, exist_ok=True)
    (work / "pipelines/bench.toml").write_text(PIPELINE)
    (work / "sql/bench/silver").mkdir(parents=True, exist_ok=True)
    (work / "sql/bench/silver/wide.sql").write_text(MODEL)
    table = work / "lake/silver/wide"

    if not (table / "_delta_log").exists():
        print(f"generating {args.rows:,} rows x 20 columns into {table} ...", flush=True)
        con = duckdb.connect()
        reader = con.sql(generate_sql(args.rows)).to_arrow_reader(1_000_000)
        write_deltalake(str(table), reader)
        con.close()
    files = sorted(str(p) for p in table.glob("*.parquet"))
    size = sum(Path(f).stat().st_size for f in files)
    print(f"{len(files)} Parquet file(s), {size / 2**20:.0f} MiB", flush=True)

    con = duckdb.connect()
    file_list = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    rows = con.execute(f"SELECT COUNT(*) FROM read_parquet({file_list})").fetchone()[0]
    assert rows == args.rows, rows
    t_duck = best(
        "duckdb SUMMARIZE",
        args.repeat,
        lambda: con.execute(f"SUMMARIZE SELECT * FROM read_parquet({file_list})").fetchall(),
    )

    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    cmd = [
        args.smelter,
        "profile",
        str(work / "pipelines/bench.toml"),
        "--table",
        "silver.wide",
        "--format",
        "json",
        "--output",
        str(work / "profile.json"),
    ]

    def run_smelter():
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(f"smelter profile failed ({out.returncode}):\n{out.stderr}")

    t_smelter = best("smelter profile", args.repeat, run_smelter)
    print(f"ratio smelter/duckdb = {t_smelter / t_duck:.2f}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
