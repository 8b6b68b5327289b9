#!/usr/bin/env python3
"""Smelter against DuckDB and Polars on the demo pipeline's silver and gold layers.

Steps (see README.md next to this file):

1. build bronze once: a copy of `pipelines/demo.toml` and `sql/demo` in a temporary project, the
   sample source at `--sf`, `smelter run --layer extract` then `--layer bronze`;
2. time silver + gold, each repetition on a fresh copy of that bronze lake, per engine:
   - `smelter`: profiles, HTML report and lineage files off;
   - `smelter-profiled`: the demo's defaults (full profiles, report, DataHub and OpenLineage files);
   - `duckdb`, `polars`: the same SQL files, the same `-- expect:` rules and merge-key checks,
     an `scd2` model's history emulated (`valid_from`, `valid_to` by LEAD, `is_current`, `_scd_id`),
     bronze read from the Delta tables with `deltalake`, every model written as zstd Parquet;
3. verify that every silver and gold table (and the quarantine table) has the same rows in every
   engine (row count plus order-independent checksums), exit 1 on a mismatch;
4. optionally (`--extract-scale F`), extraction of the TDS fixture server's `dbo.shipments` by
   Smelter against ConnectorX.

Usage: python benches/peers/run.py --sf 1 [--repeat 3] [--engines smelter,smelter-profiled,duckdb,polars]
       [--smelter PATH] [--workdir DIR] [--extract-scale 1]
Exit code 1 when an output differs between engines.
"""

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
RUN_ID = "bench"
LOGICAL_DATE = "2026-11-01"  # the sample's start_date: the whole history in one run
ENGINES = ["smelter", "smelter-profiled", "duckdb", "polars"]
TABLE_REF = re.compile(r"\b(bronze|silver|gold)\.([A-Za-z_][A-Za-z0-9_]*)\b", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Models: header, expectations and templated values, as Smelter reads them (src/plan, src/quality)
# ---------------------------------------------------------------------------------------------


@dataclass
class Rule:
    """One `-- expect:` rule: its text (the rule's name in Smelter), kind, arguments, action."""

    name: str
    kind: str  # not_null | unique | accepted_values | range | relationships | row_count | predicate
    args: dict
    action: str  # warn | drop | quarantine | fail


@dataclass
class Model:
    """A SQL model: `<layer>.<name>`, its SQL with templated values substituted, its header."""

    layer: str
    name: str
    sql: str
    materialized: str = "table"
    unique_key: list = field(default_factory=list)
    sequence_by: list = field(default_factory=list)
    scd_columns: list = field(default_factory=lambda: ["valid_from", "valid_to", "is_current"])
    rules: list = field(default_factory=list)
    depends_on: set = field(default_factory=set)


def parse_rule(text: str) -> Rule:
    """Parses one rule the way `smelter::quality::parse` does (the rule kinds the models use)."""
    body, action = text.rsplit(None, 1)
    body = body.strip()
    words = body.split()
    low = body.lower()
    if words[-1].lower() == "not_null":
        return Rule(body, "not_null", {"column": words[0].lower()}, action)
    if words[-1].lower() == "unique":
        cols = [c.strip().lower() for c in body[: -len("unique")].split(",")]
        return Rule(body, "unique", {"columns": cols}, action)
    if low.startswith("row_count"):
        rest = low[len("row_count"):].strip()
        if rest.startswith("between"):
            lo, hi = rest[len("between"):].split(" and ")
            bounds = (int(lo), int(hi))
        elif rest.startswith(">="):
            bounds = (int(rest[2:]), None)
        else:
            bounds = (None, int(rest[2:]))
        return Rule(body, "row_count", {"min": bounds[0], "max": bounds[1]}, action)
    for kw in ("accepted_values", "range", "relationships"):
        m = re.match(rf"^(\S+)\s+{kw}\s+(.*)$", body, re.IGNORECASE)
        if m:
            column, rest = m.group(1).lower(), m.group(2).strip()
            if kw == "accepted_values":
                return Rule(body, kw, {"column": column, "values": rest}, action)
            if kw == "range":
                lo, hi = rest.split()
                return Rule(body, kw, {"column": column, "min": lo, "max": hi}, action)
            layer, table, to = rest.lower().split(".")
            return Rule(body, kw, {"column": column, "table": (layer, table), "to": to}, action)
    return Rule(body, "predicate", {"sql": body}, action)


def rule_predicate(rule: Rule) -> str | None:
    """The SQL predicate a row must satisfy (NULL passes), as in `Check::predicate_sql`."""
    a = rule.args
    if rule.kind == "predicate":
        return a["sql"]
    if rule.kind == "not_null":
        return f'"{a["column"]}" IS NOT NULL'
    if rule.kind == "accepted_values":
        return f'"{a["column"]}" IN {a["values"]}'
    if rule.kind == "range":
        parts = [f'"{a["column"]}" >= {a["min"]}'] if a["min"] != "*" else []
        parts += [f'"{a["column"]}" <= {a["max"]}'] if a["max"] != "*" else []
        return " AND ".join(parts) or "TRUE"
    return None


def render(text: str, vars_: dict) -> str:
    """Substitutes `{{ run_id }}`, `{{ logical_date }}` and `{{ var.x }}` with SQL literals.

    Smelter binds them as query parameters (`$run_id` a Utf8, `$logical_date` a Date32, vars with
    their TOML type); a literal of the same type is what DuckDB and Polars get instead.
    """

    def literal(m: re.Match) -> str:
        name = m.group(1)
        if name == "run_id":
            return f"'{RUN_ID}'"
        if name == "logical_date":
            return f"DATE '{LOGICAL_DATE}'"
        value = vars_[name.removeprefix("var.")]
        return f"'{value}'" if isinstance(value, str) else str(value)

    # A catch-up window of the single benchmark run is that run's bronze rows.
    text = re.sub(
        r"\{\{\s*unprocessed\(\s*'bronze\.([A-Za-z_][A-Za-z0-9_]*)'\s*\)\s*\}\}",
        lambda m: f"(SELECT * FROM bronze.{m.group(1)} WHERE _run_id = '{RUN_ID}')",
        text,
    )
    return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}", literal, text)


def newest_per_key(sql: str, keys: list, sequence_by: list) -> str:
    """`sql` reduced to the newest row per key by `sequence_by`, as Smelter's versioned merge
    does before its checks (src/layers/model.rs, `newest_per_key`)."""
    part = ", ".join(f'"{k}"' for k in keys)
    order = ", ".join(f'"{c}" DESC' for c in sequence_by)
    return (
        f"SELECT * EXCLUDE (__seq_rn) FROM (SELECT *, ROW_NUMBER() OVER "
        f"(PARTITION BY {part} ORDER BY {order}) AS __seq_rn FROM ({sql}) __seq) __v "
        f"WHERE __seq_rn = 1"
    )


SCD_ID = "_scd_id"


def duckdb_text(column: str, dtype: str) -> str:
    """`CAST(column AS VARCHAR)` as DataFusion renders it (the text `_scd_id` hashes): timestamps
    as `2026-11-01T08:00:00` with 3 or 6 fraction digits when not zero, dates as `2026-11-01`."""
    c = f'"{column}"'
    t = dtype.upper()
    if t.startswith("TIMESTAMP WITH"):
        sys.exit(f"scd2 emulation: time zone-aware `{column}` is not supported")
    if t.startswith("TIMESTAMP"):
        us = f"(epoch_us({c}) % 1000000)"
        return (f"(strftime({c}, '%Y-%m-%dT%H:%M:%S') || CASE WHEN {us} = 0 THEN '' "
                f"WHEN {us} % 1000 = 0 THEN '.' || lpad(({us} // 1000)::VARCHAR, 3, '0') "
                f"ELSE '.' || lpad({us}::VARCHAR, 6, '0') END)")
    if t == "DATE":
        return f"strftime({c}, '%Y-%m-%d')"
    return f"CAST({c} AS VARCHAR)"


def duckdb_scd2(source: str, m: Model, types: dict) -> str:
    """The first-run history of an `scd2` model (timestamp strategy) over `source`, as
    `smelter::layers::scd2::history` computes it: one version per key and `sequence_by` value
    (the greatest row by the other columns, descending, NULLs last), valid from that value
    until the key's next one (`LEAD`), current when there is none, `_scd_id` the MD5 of the key
    values and `valid_from` as `<length>:<text>` joined by `|`."""
    seq = m.sequence_by[0]
    cols = list(types)
    keys = ", ".join(f'"{k}"' for k in m.unique_key)
    others = ", ".join(f'"{c}" DESC NULLS LAST' for c in cols if c not in m.unique_key)
    frm, to, cur = m.scd_columns
    parts = " || '|' || ".join(
        f"length({t}) || ':' || {t}"
        for t in [duckdb_text(k, types[k]) for k in m.unique_key] + [duckdb_text(seq, types[seq])]
    )
    lead = f'LEAD("{seq}") OVER (PARTITION BY {keys} ORDER BY "{seq}")'
    listed = ", ".join(f'"{c}"' for c in cols)
    return (
        f'SELECT {listed}, "{seq}" AS "{frm}", {lead} AS "{to}", {lead} IS NULL AS "{cur}", '
        f'md5({parts}) AS "{SCD_ID}" FROM (SELECT * FROM (SELECT *, ROW_NUMBER() OVER '
        f'(PARTITION BY {keys}, "{seq}" ORDER BY {others}) AS __scd_rn FROM {source}) '
        f"WHERE __scd_rn = 1)"
    )


def polars_text(column: str, dtype) -> pl.Expr:
    """Polars' version of [`duckdb_text`]."""
    c = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            sys.exit(f"scd2 emulation: time zone-aware `{column}` is not supported")
        us = c.dt.microsecond()
        frac = (pl.when(us == 0).then(pl.lit(""))
                .when(us % 1000 == 0).then(pl.lit(".") + (us // 1000).cast(pl.Utf8).str.zfill(3))
                .otherwise(pl.lit(".") + us.cast(pl.Utf8).str.zfill(6)))
        return c.dt.strftime("%Y-%m-%dT%H:%M:%S") + frac
    if isinstance(dtype, pl.Date):
        return c.dt.strftime("%Y-%m-%d")
    return c.cast(pl.Utf8)


def polars_scd2(df: pl.DataFrame, m: Model) -> pl.DataFrame:
    """Polars' version of [`duckdb_scd2`]."""
    import hashlib

    seq = m.sequence_by[0]
    cols = df.columns
    frm, to, cur = m.scd_columns
    others = [c for c in cols if c not in m.unique_key]
    df = (df.sort(m.unique_key + [seq] + others,
                  descending=[False] * (len(m.unique_key) + 1) + [True] * len(others),
                  nulls_last=True)
          .unique(subset=m.unique_key + [seq], keep="first", maintain_order=True))
    texts = [polars_text(k, df.schema[k]) for k in m.unique_key + [seq]]
    joined = pl.concat_str(
        [pl.concat_str([t.str.len_chars().cast(pl.Utf8), pl.lit(":"), t]) for t in texts],
        separator="|",
    )
    out = (df.sort(m.unique_key + [seq])
           .with_columns(pl.col(seq).alias(frm),
                         pl.col(seq).shift(-1).over(m.unique_key).alias(to),
                         joined.alias(SCD_ID))
           .with_columns(pl.col(to).is_null().alias(cur)))
    ids = [hashlib.md5(t.encode()).hexdigest() for t in out.get_column(SCD_ID).to_list()]
    return out.with_columns(pl.Series(SCD_ID, ids)).select(cols + [frm, to, cur, SCD_ID])


def load_models(project: Path) -> list[Model]:
    """Every silver and gold model of the project, in dependency order (silver before gold)."""
    pipeline = tomllib.loads((project / "pipelines/demo.toml").read_text())
    vars_ = pipeline.get("vars", {})
    models = []
    for layer in ("silver", "gold"):
        for file in sorted((project / "sql/demo" / layer).glob("*.sql")):
            text = file.read_text()
            model = Model(layer, file.stem.lower(), render(text, vars_))
            for line in text.splitlines():
                m = re.match(r"^--\s*([a-z_]+):\s*(.*)$", line)
                if not m:
                    break
                key, value = m.groups()
                if key == "materialized":
                    model.materialized = value.strip()
                elif key == "unique_key":
                    model.unique_key = [k.strip().lower() for k in value.split(",")]
                elif key == "sequence_by":
                    model.sequence_by = [k.strip().lower() for k in value.split(",")]
                elif key == "scd_columns":
                    model.scd_columns = [k.strip().lower() for k in value.split(",")]
                elif key == "check_cols":
                    sys.exit(f"{file}: the check strategy of scd2 starts versions at the run's "
                             "start time, which the peers cannot reproduce")
                elif key == "expect":
                    model.rules += [parse_rule(r.strip()) for r in value.split(";") if r.strip()]
            if model.sequence_by and model.materialized == "merge":
                model.sql = newest_per_key(model.sql, model.unique_key, model.sequence_by)
            model.depends_on = {
                (la.lower(), t.lower()) for la, t in TABLE_REF.findall(model.sql)
            } | {r.args["table"] for r in model.rules if r.kind == "relationships"}
            models.append(model)
    ordered, done = [], {("bronze", m) for m in bronze_tables(project)}
    while len(ordered) < len(models):
        ready = [m for m in models if m not in ordered and m.depends_on <= done]
        if not ready:
            sys.exit("cycle in model dependencies")
        ordered.append(ready[0])
        done.add((ready[0].layer, ready[0].name))
    return ordered


def bronze_tables(project: Path) -> list[str]:
    """The demo pipeline's bronze tables, one per source table."""
    pipeline = tomllib.loads((project / "pipelines/demo.toml").read_text())
    return [t["name"] for t in pipeline["source"]["tables"]]


def output_tables(models: list[Model]) -> list[tuple[str, str]]:
    """Every table a silver/gold run writes: each model's, plus quarantine tables."""
    out = []
    for m in models:
        out.append((m.layer, m.name))
        if any(r.action == "quarantine" for r in m.rules):
            out.append((m.layer, f"_quarantine_{m.name}"))
    return out


# ---------------------------------------------------------------------------------------------
# Step 1: the project and its bronze lake
# ---------------------------------------------------------------------------------------------


def pipeline_text(sf: float, profiled: bool) -> str:
    """The demo pipeline at scale factor `sf`; unless `profiled`, with profiles, report and
    lineage files off (`[profile] mode = "off"`, `report = false`, no `[lineage]` table)."""
    text = (REPO / "pipelines/demo.toml").read_text()
    text = re.sub(r"(?m)^scale_factor = \S+", f"scale_factor = {sf}", text)
    if not profiled:
        text = re.sub(r'(?m)^mode = "full"', 'mode = "off"', text)
        text = re.sub(r"(?m)^report = true", "report = false", text)
        text = re.sub(r"(?ms)^\[lineage\].*?(?=^\[|\Z)", "", text)
    return text


def make_project(root: Path, sf: float, profiled: bool) -> Path:
    """A project directory with the demo pipeline and its SQL models; the lake is `lake/`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipelines").mkdir(exist_ok=True)
    (root / "pipelines/demo.toml").write_text(pipeline_text(sf, profiled))
    shutil.copytree(REPO / "sql/demo", root / "sql/demo", dirs_exist_ok=True)
    return root


def smelter(binary: str, project: Path, layer: str) -> None:
    """`smelter run <project>/pipelines/demo.toml --layer <layer>` with the bench run id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMELTER_")}
    out = subprocess.run(
        [binary, "run", str(project / "pipelines/demo.toml"), "--layer", layer,
         "--run-id", RUN_ID, "--logical-date", LOGICAL_DATE],
        capture_output=True, text=True, env=env,
    )
    if out.returncode != 0:
        sys.exit(f"smelter --layer {layer} failed ({out.returncode}):\n{out.stderr[-4000:]}")


def build_bronze(binary: str, work: Path, sf: float) -> Path:
    """Extracts and loads bronze once; returns the bronze lake directory (with `_smelter/`)."""
    project = make_project(work / "bronze-project", sf, profiled=False)
    if not (project / "lake/bronze").exists():
        t = time.perf_counter()
        smelter(binary, project, "extract")
        smelter(binary, project, "bronze")
        shutil.rmtree(project / "lake/landing")
        print(f"bronze built at SF {sf} in {time.perf_counter() - t:.1f} s", flush=True)
    return project / "lake"


def fresh_lake(bronze_lake: Path, project: Path) -> None:
    """Replaces the project's lake with a copy of the bronze lake (no silver, no gold)."""
    shutil.rmtree(project / "lake", ignore_errors=True)
    shutil.rmtree(project / "lineage", ignore_errors=True)
    shutil.copytree(bronze_lake, project / "lake")
    for layer in ("silver", "gold"):
        shutil.rmtree(project / "lake" / layer, ignore_errors=True)


def read_bronze(lake: Path, tables: list[str]) -> dict[str, pa.Table]:
    """Bronze Delta tables as Arrow (DuckDB cannot load its delta extension here: PyPI only)."""
    return {t: DeltaTable(str(lake / "bronze" / t)).to_pyarrow_table() for t in tables}


# ---------------------------------------------------------------------------------------------
# Step 2: the engines
# ---------------------------------------------------------------------------------------------


class QualityFailure(Exception):
    """A `fail` rule or a merge-key check failed (Smelter exits 3)."""


def run_smelter(binary: str, project: Path) -> None:
    """Silver then gold, as two `smelter run` processes (Airflow runs one task per layer)."""
    smelter(binary, project, "silver")
    smelter(binary, project, "gold")


def run_duckdb(bronze_lake: Path, models: list[Model], out: Path, tables: list[str]) -> None:
    """Every model in DuckDB: result materialized once, rules and merge keys checked on it, good
    rows kept as `<layer>.<name>` for later models and written as zstd Parquet."""
    con = duckdb.connect()
    for layer in ("bronze", "silver", "gold"):
        con.execute(f"CREATE SCHEMA {layer}")
    bronze = read_bronze(bronze_lake, tables)
    for name, table in bronze.items():
        con.register(f"__arrow_{name}", table)
        con.execute(f"CREATE VIEW bronze.{name} AS SELECT * FROM __arrow_{name}")
    for m in models:
        (out / m.layer).mkdir(parents=True, exist_ok=True)
        con.execute(f"CREATE TEMP TABLE __result AS {m.sql}")
        columns = [r[0] for r in con.execute("DESCRIBE __result").fetchall()]
        cols = ", ".join(f'"{c}"' for c in columns)
        source = "__result"
        if m.rules:
            flags, joins = [], []
            for i, r in enumerate(m.rules):
                a = r.args
                if r.kind == "relationships":
                    layer, table = a["table"]
                    joins.append(
                        f'LEFT JOIN (SELECT DISTINCT "{a["to"]}" AS __ref_{i} FROM {layer}.{table}) '
                        f'__r{i} ON __m."{a["column"]}" = __r{i}.__ref_{i}'
                    )
                    flags.append(f'(__m."{a["column"]}" IS NOT NULL AND __ref_{i} IS NULL)')
                elif r.kind == "unique":
                    part = ", ".join(f'__m."{c}"' for c in a["columns"])
                    nn = " AND ".join(f'__m."{c}" IS NOT NULL' for c in a["columns"])
                    flags.append(f"(COUNT(*) OVER (PARTITION BY {part}) > 1 AND {nn})")
                elif r.kind == "row_count":
                    flags.append("FALSE")
                else:
                    flags.append(f"NOT COALESCE(({rule_predicate(r)}), TRUE)")
            flag_cols = ", ".join(f"{f} AS __rule_{i}" for i, f in enumerate(flags))
            con.execute(
                f"CREATE TEMP TABLE __flagged AS SELECT __m.*, {flag_cols} "
                f"FROM __result __m {' '.join(joins)}"
            )
            sums = ", ".join(f"SUM(__rule_{i}::BIGINT)" for i in range(len(flags)))
            counts = con.execute(f"SELECT COUNT(*), {sums} FROM __flagged").fetchone()
            check_rules(m, counts[0], [c or 0 for c in counts[1:]])
            bad = [f"__rule_{i}" for i, r in enumerate(m.rules) if r.action in ("drop", "quarantine")]
            quarantine = [(i, r) for i, r in enumerate(m.rules) if r.action == "quarantine"]
            if quarantine:
                names = ", ".join(f"CASE WHEN __rule_{i} THEN '{r.name}' END" for i, r in quarantine)
                q_rows = " OR ".join(f"__rule_{i}" for i, _ in quarantine)
                if con.execute(f"SELECT COUNT(*) FROM __flagged WHERE {q_rows}").fetchone()[0]:
                    con.execute(
                        f"COPY (SELECT {cols}, concat_ws(',', {names}) AS _failed_rules, "
                        f"'{RUN_ID}' AS _run_id FROM __flagged WHERE {q_rows}) "
                        f"TO '{out / m.layer / f'_quarantine_{m.name}.parquet'}' "
                        "(FORMAT parquet, COMPRESSION zstd)"
                    )
            where = f"WHERE NOT ({' OR '.join(bad)})" if bad else ""
            con.execute(f"CREATE TEMP TABLE __good AS SELECT {cols} FROM __flagged {where}")
            con.execute("DROP TABLE __flagged")
            source = "__good"
        if m.materialized == "merge":
            keys = ", ".join(f'"{k}"' for k in m.unique_key)
            nulls = " OR ".join(f'"{k}" IS NULL' for k in m.unique_key)
            n_null = con.execute(f"SELECT COUNT(*) FROM {source} WHERE {nulls}").fetchone()[0]
            n_dup = con.execute(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM {source} GROUP BY {keys} HAVING COUNT(*) > 1)"
            ).fetchone()[0]
            check_merge_keys(m, n_null, n_dup)
        if m.materialized == "scd2":
            nulls = " OR ".join(f'"{k}" IS NULL' for k in m.unique_key + m.sequence_by[:1])
            check_merge_keys(m, con.execute(f"SELECT COUNT(*) FROM {source} WHERE {nulls}").fetchone()[0], 0)
            types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {source})").fetchall())
            con.execute(f"CREATE TEMP TABLE __history AS {duckdb_scd2(source, m, types)}")
            source = "__history"
        # A first run creates every table: table and append models write, a merge inserts all,
        # an scd2 model inserts the history of the batch.
        con.execute(f"CREATE TABLE {m.layer}.{m.name} AS SELECT * FROM {source}")
        con.execute(
            f"COPY {m.layer}.{m.name} TO '{out / m.layer / f'{m.name}.parquet'}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        con.execute("DROP TABLE IF EXISTS __good")
        con.execute("DROP TABLE IF EXISTS __history")
        con.execute("DROP TABLE __result")
    con.close()


def run_polars(bronze_lake: Path, models: list[Model], out: Path, tables: list[str]) -> None:
    """Every model in Polars' SQLContext, collected once; rules and merge keys checked with
    Polars expressions; good rows registered for later models and written as zstd Parquet."""
    ctx = pl.SQLContext()
    for name, table in read_bronze(bronze_lake, tables).items():
        ctx.register(f"bronze.{name}", pl.from_arrow(table).lazy())
    frames: dict[tuple[str, str], pl.DataFrame] = {}
    for m in models:
        (out / m.layer).mkdir(parents=True, exist_ok=True)
        df = ctx.execute(m.sql).collect()
        columns = df.columns
        if m.rules:
            flags = []
            for i, r in enumerate(m.rules):
                a = r.args
                if r.kind == "relationships":
                    ref = frames[a["table"]].get_column(a["to"]).drop_nulls().unique()
                    flag = pl.col(a["column"]).is_not_null() & ~pl.col(a["column"]).is_in(ref.implode())
                elif r.kind == "unique":
                    flag = pl.len().over(a["columns"]) > 1
                    for c in a["columns"]:
                        flag = flag & pl.col(c).is_not_null()
                elif r.kind == "row_count":
                    flag = pl.lit(False)
                else:
                    flag = ~pl.sql_expr(rule_predicate(r)).fill_null(True)
                flags.append(flag.alias(f"__rule_{i}"))
            flagged = df.with_columns(flags)
            sums = flagged.select(
                [pl.len()] + [pl.col(f"__rule_{i}").sum() for i in range(len(flags))]
            ).row(0)
            check_rules(m, sums[0], list(sums[1:]))
            bad = [f"__rule_{i}" for i, r in enumerate(m.rules) if r.action in ("drop", "quarantine")]
            quarantine = [(i, r) for i, r in enumerate(m.rules) if r.action == "quarantine"]
            if quarantine:
                q_rows = pl.any_horizontal([pl.col(f"__rule_{i}") for i, _ in quarantine])
                q = flagged.filter(q_rows)
                if q.height:
                    q.select(
                        columns
                        + [
                            pl.concat_str(
                                [pl.when(pl.col(f"__rule_{i}")).then(pl.lit(r.name)) for i, r in quarantine],
                                separator=",", ignore_nulls=True,
                            ).alias("_failed_rules"),
                            pl.lit(RUN_ID).alias("_run_id"),
                        ]
                    ).write_parquet(out / m.layer / f"_quarantine_{m.name}.parquet", compression="zstd")
            if bad:
                flagged = flagged.filter(~pl.any_horizontal([pl.col(b) for b in bad]))
            df = flagged.select(columns)
        if m.materialized == "merge":
            n_null = df.filter(pl.any_horizontal([pl.col(k).is_null() for k in m.unique_key])).height
            n_dup = df.group_by(m.unique_key).len().filter(pl.col("len") > 1).height
            check_merge_keys(m, n_null, n_dup)
        if m.materialized == "scd2":
            check_merge_keys(m, df.filter(pl.any_horizontal(
                [pl.col(k).is_null() for k in m.unique_key + m.sequence_by[:1]])).height, 0)
            df = polars_scd2(df, m)
        frames[(m.layer, m.name)] = df
        ctx.register(f"{m.layer}.{m.name}", df.lazy())
        df.write_parquet(out / m.layer / f"{m.name}.parquet", compression="zstd")


def check_rules(m: Model, rows: int, failed: list[int]) -> None:
    """Row-count rules and `fail` actions, as `smelter::quality::apply` applies them."""
    for r, n in zip(m.rules, failed):
        if r.kind == "row_count":
            lo, hi = r.args["min"], r.args["max"]
            failed_rows = int((lo is not None and rows < lo) or (hi is not None and rows > hi))
        else:
            failed_rows = n
        if failed_rows and r.action == "fail":
            raise QualityFailure(f"{m.layer}.{m.name}: `{r.name}` failed for {failed_rows} row(s)")


def check_merge_keys(m: Model, nulls: int, duplicates: int) -> None:
    """A merge key must be non-NULL and unique in the model result (an scd2 model's key and
    `sequence_by` must be non-NULL)."""
    if nulls or duplicates:
        raise QualityFailure(
            f"{m.layer}.{m.name}: {nulls} NULL and {duplicates} duplicated merge key(s)"
        )


@dataclass
class Timing:
    """Wall and CPU seconds of one engine over the repetitions."""

    wall: list = field(default_factory=list)
    cpu: list = field(default_factory=list)


def time_engines(args, binary: str, work: Path, bronze_lake: Path, models: list[Model]) -> dict:
    """Runs every engine `--repeat` times, rotating the order each repetition."""
    tables = bronze_tables(work / "bronze-project")
    projects = {
        "smelter": make_project(work / "smelter", args.sf, profiled=False),
        "smelter-profiled": make_project(work / "smelter-profiled", args.sf, profiled=True),
    }
    timings = {e: Timing() for e in args.engines}
    for rep in range(args.repeat):
        order = args.engines[rep % len(args.engines):] + args.engines[: rep % len(args.engines)]
        for engine in order:
            if engine in projects:
                fresh_lake(bronze_lake, projects[engine])
                run = lambda e=engine: run_smelter(binary, projects[e])  # noqa: E731
            else:
                out = work / engine
                shutil.rmtree(out, ignore_errors=True)
                fn = run_duckdb if engine == "duckdb" else run_polars
                run = lambda fn=fn, out=out: fn(bronze_lake, models, out, tables)  # noqa: E731
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            run()
            wall = time.perf_counter() - wall0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = time.process_time() - cpu0 + (after.ru_utime - children.ru_utime) + (
                after.ru_stime - children.ru_stime
            )
            timings[engine].wall.append(wall)
            timings[engine].cpu.append(cpu)
            print(f"  rep {rep + 1} {engine:<17} wall {wall:7.2f} s  cpu {cpu:7.2f} s", flush=True)
    return timings


def print_table(args, timings: dict) -> None:
    """Median wall and CPU per engine, and the ratio to DuckDB's median wall time."""
    base = statistics.median(timings["duckdb"].wall) if "duckdb" in timings else None
    print(f"\nSF {args.sf}, silver + gold, median of {args.repeat} (wall and CPU seconds):")
    print(f"| engine | wall s | CPU s | wall / DuckDB |\n|---|---:|---:|---:|")
    for engine, t in timings.items():
        wall, cpu = statistics.median(t.wall), statistics.median(t.cpu)
        ratio = f"{wall / base:.2f}" if base else "-"
        print(f"| {engine} | {wall:.2f} | {cpu:.2f} | {ratio} |")


# ---------------------------------------------------------------------------------------------
# Step 3: outputs must agree
# ---------------------------------------------------------------------------------------------


def canonical(expr: str, dtype: str) -> str:
    """A DuckDB expression rendering one value the same way whatever type an engine chose: every
    number as a double to 15 significant digits (DuckDB types `SUM(CASE ... THEN 1 ELSE 0 END)`
    DOUBLE in `gold.on_time_delivery`, DataFusion BIGINT; decimals stay exact to 15 digits),
    timestamps without a time zone, NULL as `∅`."""
    t = dtype.upper()
    if t.startswith("DECIMAL") or t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                                        "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
                                        "DOUBLE", "FLOAT", "REAL"):
        value = f"printf('%.15g', CAST({expr} AS DOUBLE))"
    elif t.startswith("TIMESTAMP"):
        value = f"CAST({expr} AS TIMESTAMP)::VARCHAR"
    else:
        value = f"{expr}::VARCHAR"
    return f"COALESCE({value}, '∅')"


def checksums(table: pa.Table) -> dict:
    """Row count, an order-independent checksum of all rows (sum of the rows' hashes) and one
    per column, over the canonical values."""
    con = duckdb.connect()
    con.register("t", table)
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE t)").fetchall())
    names = sorted(types)
    canon = [canonical(f'"{c}"', types[c]) for c in names]
    row = f"SUM(hash(concat_ws('|', {', '.join(canon)}))::HUGEINT)"
    cols = ", ".join(f"SUM(hash({e})::HUGEINT)" for e in canon)
    values = con.execute(f"SELECT COUNT(*), {row}, {cols} FROM t").fetchone()
    con.close()
    return {"rows": values[0], "row_hash": values[1], "columns": dict(zip(names, values[2:])),
            "types": types}


def read_output(engine: str, work: Path, layer: str, name: str) -> pa.Table | None:
    """One output table of an engine, or None when the engine did not write it."""
    if engine.startswith("smelter"):
        path = work / engine / "lake" / layer / name
        return DeltaTable(str(path)).to_pyarrow_table() if path.exists() else None
    path = work / engine / layer / f"{name}.parquet"
    return pq.read_table(path) if path.exists() else None


def verify(work: Path, engines: list[str], models: list[Model]) -> list[str]:
    """Compares every output table of every engine with the first engine's; returns mismatches."""
    reference, problems, notes = engines[0], [], []
    for layer, name in output_tables(models):
        ref_table = read_output(reference, work, layer, name)
        ref = checksums(ref_table) if ref_table is not None else None
        line = [f"{layer}.{name}: {ref['rows'] if ref else 'absent'} rows in {reference}"]
        for engine in engines[1:]:
            table = read_output(engine, work, layer, name)
            got = checksums(table) if table is not None else None
            if ref is None or got is None:
                if (ref is None) != (got is None):
                    problems.append(f"{layer}.{name}: written by only one of {reference}, {engine}")
                continue
            if got["rows"] != ref["rows"] or got["row_hash"] != ref["row_hash"]:
                cols = sorted(set(ref["columns"]) ^ set(got["columns"]))
                cols += [c for c, v in ref["columns"].items() if got["columns"].get(c, v) != v]
                problems.append(
                    f"{layer}.{name}: {engine} has {got['rows']} rows vs {ref['rows']}; "
                    f"columns differing: {', '.join(cols) or 'none (row combination)'}"
                )
            else:
                line.append(f"{engine} equal")
            retyped = [f"{c} {t}/{got['types'][c]}" for c, t in ref["types"].items()
                       if got["types"].get(c, t) != t]
            if retyped:
                notes.append(f"{layer}.{name}: types {reference}/{engine}: {', '.join(retyped)}")
        print("  " + "; ".join(line), flush=True)
    for note in notes:
        print(f"  note: {note}")
    return problems


# ---------------------------------------------------------------------------------------------
# Step 4: extraction from the TDS fixture server, Smelter against ConnectorX
# ---------------------------------------------------------------------------------------------


def start_server(scale: float) -> tuple[subprocess.Popen, int]:
    """The TDS fixture server serving LogisticsDB at `scale`; returns the process and its port."""
    server = os.environ.get("SMELTER_TDS_SERVER", str(TARGET / "release/examples/tds_server"))
    proc = subprocess.Popen([server, "--port", "0", "--scale", str(scale)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = proc.stdout.readline().strip()
    if not port.isdigit():
        proc.kill()
        sys.exit(f"fixture server failed: {proc.stderr.read()}")
    return proc, int(port)


EXTRACT_PIPELINE = """
name = "x"
[source]
type = "mssql"
host = "127.0.0.1"
port = {port}
database = "LogisticsDB"
user = "reader"
password_env = "BENCH_MSSQL_PASSWORD"
encrypt = false
[[source.tables]]
name = "shipments"
object = "dbo.shipments"
key = ["shipment_id"]
partitions = {partitions}
[storage]
root = "lake"
[profile]
mode = "off"
report = false
"""


def extract_smelter(binary: str, work: Path, port: int, partitions: int) -> int:
    """`smelter run --layer extract` of `dbo.shipments` to landing Parquet; returns the rows."""
    project = work / f"extract-{partitions}"
    shutil.rmtree(project, ignore_errors=True)
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines/x.toml").write_text(EXTRACT_PIPELINE.format(port=port, partitions=partitions))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMELTER_")}
    env["BENCH_MSSQL_PASSWORD"] = "bench"
    out = subprocess.run(
        [binary, "run", str(project / "pipelines/x.toml"), "--layer", "extract",
         "--run-id", RUN_ID, "--logical-date", LOGICAL_DATE],
        capture_output=True, text=True, env=env,
    )
    if out.returncode != 0:
        sys.exit(f"smelter extract failed ({out.returncode}):\n{out.stderr[-4000:]}")
    files = list((project / "lake/landing").rglob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def extract_connectorx(port: int, partitions: int, columns: list[str]) -> int:
    """ConnectorX reading `dbo.shipments` into Arrow, then writing zstd Parquet as Smelter's
    landing does; returns the rows.

    The URL has no `encrypt` parameter: ConnectorX then asks tiberius for no encryption at all
    (`EncryptionLevel::NotSupported`), as Smelter's `encrypt = false` does. `encrypt=false` would
    mean `EncryptionLevel::Off` (the login packet still encrypted), which the fixture server
    without `--tls` cannot do: the connection fails with a TLS error.
    """
    import connectorx as cx

    url = f"mssql://reader:bench@127.0.0.1:{port}/LogisticsDB"
    query = f"SELECT {', '.join(columns)} FROM dbo.shipments"
    kwargs = {"partition_on": "shipment_id", "partition_num": partitions} if partitions > 1 else {}
    table = cx.read_sql(url, query, return_type="arrow", **kwargs)
    with tempfile.TemporaryDirectory() as d:
        pq.write_table(table, Path(d) / "shipments.parquet", compression="zstd")
    return table.num_rows


def run_extract(args, binary: str, work: Path) -> None:
    """Times both extractors on one server, with one connection and with two key-range
    partitions each; prints the median wall and CPU time of `--repeat` runs."""
    proc, port = start_server(args.extract_scale)
    columns = ["shipment_id", "customer_id", "carrier_id", "origin_warehouse_id",
               "destination_country", "status", "weight_kg", "declared_value", "ship_date",
               "promised_date", "delivered_at", "created_at", "modified_at"]
    rows_seen = {}
    try:
        print(f"\nExtraction of dbo.shipments (fixture --scale {args.extract_scale}), "
              f"median of {args.repeat}:")
        print("| extractor | partitions | rows | wall s | CPU s (client) |\n|---|---:|---:|---:|---:|")
        for partitions in (1, 2):
            for name in ("smelter", "connectorx"):
                t = Timing()
                for _ in range(args.repeat):
                    children = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    if name == "smelter":
                        rows = extract_smelter(binary, work, port, partitions)
                    else:
                        rows = extract_connectorx(port, partitions, columns)
                    t.wall.append(time.perf_counter() - wall0)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    t.cpu.append(time.process_time() - cpu0 + (after.ru_utime - children.ru_utime)
                                 + (after.ru_stime - children.ru_stime))
                rows_seen[(name, partitions)] = rows
                print(f"| {name} | {partitions} | {rows} | {statistics.median(t.wall):.2f} | "
                      f"{statistics.median(t.cpu):.2f} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if len(set(rows_seen.values())) != 1:
        print(f"MISMATCH extracted rows: {rows_seen}")


# ---------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sf", type=float, default=1.0, help="sample scale factor (1.0: about 1M shipments)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--smelter", default=os.environ.get("SMELTER_BIN", str(TARGET / "release/smelter")))
    p.add_argument("--workdir", help="keep the bronze lake and outputs here (default: a temp dir)")
    p.add_argument("--extract-scale", type=float, default=0.0,
                   help="also compare extraction at this fixture scale (1: 1M shipments; 0: skip)")
    args = p.parse_args()
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(args.engines) - set(ENGINES)
    if unknown:
        p.error(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="smelter-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {work}", flush=True)

    bronze_lake = build_bronze(args.smelter, work, args.sf)
    models = load_models(work / "bronze-project")
    timings = time_engines(args, args.smelter, work, bronze_lake, models)
    print_table(args, timings)
    print("\nVerifying outputs:", flush=True)
    problems = verify(work, args.engines, models)
    for problem in problems:
        print(f"MISMATCH {problem}")
    if args.extract_scale > 0:
        run_extract(args, args.smelter, work)
    if not args.workdir:
        shutil.rmtree(work)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
