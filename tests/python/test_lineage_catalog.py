"""Lineage a catalog can trust: what Smelter emits is checked with the catalogs' own libraries.

Two real runs through the release binary: the `library` golden-test pipeline (`tests/lineage`,
CSV files, column names with `(`, `)` and `,`, unaliased aggregates) and the demo (a SQL Server
shaped sample source with declared types). Then:

- every DataHub MCP builds a `MetadataChangeProposalWrapper` and every URN in it parses with
  `Urn.from_string` (acryl-datahub, run in its own venv by `datahub_mcp_check.py`);
- every OpenLineage event rebuilds with openlineage-python's classes, the column-lineage facet
  1-2-0 with its `dataset` list and INDIRECT transformations included;
- source datasets carry `schemaMetadata` and `datasetProperties`, runs carry their
  inputs and outputs, and no aspect carries a null field.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_independent_reader import _structure_openlineage, _without_meta, lake  # noqa: F401

REPO = Path(os.environ.get("SMELTER_REPO", Path(__file__).resolve().parents[2]))
BIN = os.environ.get("SMELTER_BIN", str(REPO / "target/release/smelter"))
CHECK = Path(__file__).with_name("datahub_mcp_check.py")


def _run(project, pipeline, run_id):
    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    out = subprocess.run(
        [BIN, "run", str(project / f"pipelines/{pipeline}.toml"), "--logical-date", "2026-11-03",
         "--run-id", run_id],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    project = tmp_path_factory.mktemp("library")
    for sub in ["pipelines", "sql", "schemas", "data"]:
        shutil.copytree(REPO / "tests/lineage" / sub, project / sub)
    _run(project, "library", "py1")
    return project


@pytest.fixture(scope="module")
def demo(lake):
    """The demo project run by test_independent_reader.py's fixture (run id `py1`)."""
    return lake.parent


def _mcp_files(project):
    """The DataHub MCP files of run `py1` (the library pipeline writes them under `datahub/`)."""
    sub = "lineage/datahub/py1" if (project / "lineage/datahub").is_dir() else "lineage/py1"
    return sorted((project / sub).glob("*.json"))


def _mcps(project, layer):
    return next(json.loads(f.read_text()) for f in _mcp_files(project) if f.stem == layer)


def _datahub_python():
    cli = os.environ.get("DATAHUB_CLI")
    if not cli:
        if os.environ.get("SMELTER_REQUIRE_E2E") == "1":
            pytest.fail("DATAHUB_CLI is not set")
        pytest.skip("DATAHUB_CLI is not set")
    return str(Path(cli).parent / "python")


@pytest.mark.parametrize("which", ["library", "demo"])
def test_every_mcp_parses_with_the_datahub_sdk(which, request):
    project = request.getfixturevalue(which)
    files = _mcp_files(project)
    assert [f.stem for f in files] == ["bronze", "extract", "gold", "silver"]
    out = subprocess.run([_datahub_python(), str(CHECK), *map(str, files)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["problems"] == []
    for aspect in ["schemaMetadata", "upstreamLineage", "dataProcessInstanceInput",
                   "dataProcessInstanceOutput"]:
        assert summary["aspects"].get(aspect), aspect
    if which == "library":
        fields = summary["schema_fields"]
        # Unaliased aggregates and quoted names are percent-encoded, as the SDK's UrnEncoder does.
        for encoded in ["count%28l.loan_id%29", "label %28title%2C genre%29", "Phone%2C mobile"]:
            assert any(f.endswith(f",{encoded})") for f in fields), encoded


def test_no_aspect_carries_a_null_field(library, demo):
    def nulls(v, path=""):
        if v is None:
            yield path
        elif isinstance(v, dict):
            for k, x in v.items():
                yield from nulls(x, f"{path}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                yield from nulls(x, f"{path}[{i}]")

    for project in (library, demo):
        for f in _mcp_files(project):
            for m in json.loads(f.read_text()):
                assert not list(nulls(m)), (f.name, m["aspectName"], list(nulls(m)))


def test_source_tables_have_schema_with_declared_types_and_properties(demo):
    bronze = _mcps(demo, "bronze")
    mssql = "urn:li:dataset:(urn:li:dataPlatform:mssql,LogisticsDB.dbo.carriers,PROD)"
    aspects = {m["aspectName"]: m["aspect"]["json"] for m in bronze if m["entityUrn"] == mssql}
    assert aspects["datasetProperties"]["name"] == "LogisticsDB.dbo.carriers"
    assert aspects["datasetProperties"]["customProperties"]["bronze_table"] == "bronze.carriers"
    fields = {f["fieldPath"]: f for f in aspects["schemaMetadata"]["fields"]}
    assert aspects["schemaMetadata"]["platform"] == "urn:li:dataPlatform:mssql"
    assert "_run_id" not in fields
    # The native type is the one the source declares (the sample declares LogisticsDB's SQL
    # Server types), not the Arrow type bronze lands.
    code = fields["carrier_code"]
    assert code["nativeDataType"] == "nvarchar(100)", code
    assert code["type"]["type"] == {"com.linkedin.schema.StringType": {}}
    # Every source a bronze table reads is described.
    upstreams = {u["dataset"] for m in bronze if m["aspectName"] == "upstreamLineage"
                 for u in m["aspect"]["json"]["upstreams"]}
    described = {m["entityUrn"] for m in bronze if m["aspectName"] == "schemaMetadata"}
    assert upstreams and upstreams <= described, upstreams - described


def test_string_columns_are_strings_in_every_layer(demo):
    for layer in ["bronze", "silver", "gold"]:
        for m in _mcps(demo, layer):
            if m["aspectName"] != "schemaMetadata":
                continue
            for f in m["aspect"]["json"]["fields"]:
                assert "View" not in f["nativeDataType"], (layer, f)
                if f["nativeDataType"] == "Utf8" or f["nativeDataType"].startswith("nvarchar"):
                    assert f["type"]["type"] == {"com.linkedin.schema.StringType": {}}, f


def test_runs_are_linked_to_what_they_read_and_wrote(library):
    gold = _mcps(library, "gold")
    by_aspect = {m["aspectName"]: m for m in gold}
    inputs = by_aspect["dataProcessInstanceInput"]["aspect"]["json"]["inputs"]
    outputs = by_aspect["dataProcessInstanceOutput"]["aspect"]["json"]["outputs"]
    run = by_aspect["dataProcessInstanceRunEvent"]["entityUrn"]
    assert by_aspect["dataProcessInstanceInput"]["entityUrn"] == run
    assert any(u.endswith("silver/loans,PROD)") for u in inputs), inputs
    assert any(u.endswith("gold/loans_per_city,PROD)") for u in outputs), outputs


def test_fine_grained_lineage_is_per_edge_with_indirect_subtypes(library):
    gold = _mcps(library, "gold")
    up = next(m["aspect"]["json"] for m in gold if m["aspectName"] == "upstreamLineage"
              and m["entityUrn"].endswith("gold/dues,PROD)"))
    due = [f for f in up["fineGrainedLineages"]
           if f["downstreams"] == [f["downstreams"][0]] and f["downstreams"][0].endswith(",due)")]
    ops = {f["transformOperation"]: [u.rsplit(",", 1)[1] for u in f["upstreams"]] for f in due}
    assert ops == {"TRANSFORM": ["fee)"], "CONDITIONAL": ["returned_on)"]}, ops
    up = next(m["aspect"]["json"] for m in gold if m["aspectName"] == "upstreamLineage"
              and m["entityUrn"].endswith("gold/loans_per_city,PROD)"))
    model_wide = [f for f in up["fineGrainedLineages"] if f["downstreamType"] == "FIELD_SET"]
    assert {f["transformOperation"] for f in model_wide} == {"JOIN", "GROUP_BY"}
    assert all(len(f["downstreams"]) == 3 for f in model_wide)


def test_openlineage_events_rebuild_with_openlineage_python(library):
    """The demo's events are checked the same way in test_independent_reader.py."""
    files = sorted((library / "lineage/openlineage/py1").glob("*.jsonl"))
    assert [f.stem for f in files] == ["bronze", "extract", "gold", "silver"]
    from openlineage.client.serde import Serde

    for f in files:
        for line in f.read_text().splitlines():
            e = json.loads(line)
            for o in e["outputs"]:
                if "columnLineage" in o["facets"]:
                    assert o["facets"]["columnLineage"]["_schemaURL"].startswith(
                        "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json")
            assert _without_meta(Serde.to_dict(_structure_openlineage(e))) == _without_meta(e), f.name


def test_openlineage_carries_indirect_lineage(library):
    gold = [json.loads(x) for x in (library / "lineage/openlineage/py1/gold.jsonl").read_text().splitlines()]
    out = next(o for o in gold[1]["outputs"] if o["name"].endswith("gold/first_book"))
    lineage = out["facets"]["columnLineage"]
    first = {(i["field"], t["type"], t["subtype"]) for i in lineage["fields"]["first_book"]["inputFields"]
             for t in i["transformations"]}
    assert first == {("book_id", "DIRECT", "IDENTITY"), ("loaned_on", "INDIRECT", "SORT")}
    assert {(i["field"], t["subtype"]) for i in lineage["dataset"] for t in i["transformations"]} == {
        ("member_id", "GROUP_BY")}


def test_datahub_lite_imports_a_demo_run_and_returns_lineage_and_schema(demo, tmp_path):
    """DataHub Lite (acryl-datahub's embedded catalog, extra `datahub-lite`) imports the demo's MCP
    files and answers for a gold table: its upstream datasets, column edges and schema fields."""
    python = _datahub_python()
    dh = str(Path(python).parent / "datahub")
    home = tmp_path / "home"
    home.mkdir()
    # Lite keeps its catalog under $HOME/.datahub/lite; the CLI wants a client config to exist.
    (home / ".datahubenv").write_text("gms:\n  server: http://127.0.0.1:1\n")
    env = {**os.environ, "HOME": str(home), "DATAHUB_TELEMETRY_ENABLED": "false"}

    def lite(*args):
        out = subprocess.run([dh, "lite", *args], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    for f in _mcp_files(demo):
        lite("import", "--file", str(f))
    gold = next(m["entityUrn"] for m in _mcps(demo, "gold")
                if m["aspectName"] == "upstreamLineage" and "gold/revenue_by_customer" in m["entityUrn"])
    got = json.loads(lite("get", "--urn", gold, "--aspect", "upstreamLineage"))["upstreamLineage"]
    assert any(u["dataset"].endswith("silver/invoices,PROD)") for u in got["upstreams"]), got
    amount = [f for f in got["fineGrainedLineages"]
              if f["downstreams"][0].endswith(",invoiced_amount)") and f["downstreamType"] == "FIELD"]
    assert [(f["transformOperation"], [u.rsplit(",", 1)[1] for u in f["upstreams"]]) for f in amount] == [
        ("AGGREGATE", ["amount)"])], amount
    schema = json.loads(lite("get", "--urn", gold, "--aspect", "schemaMetadata"))["schemaMetadata"]
    assert "invoiced_amount" in [f["fieldPath"] for f in schema["fields"]]
    # The source end of the path is in the catalog too, with its schema.
    source = "urn:li:dataset:(urn:li:dataPlatform:mssql,LogisticsDB.dbo.invoices,PROD)"
    fields = json.loads(lite("get", "--urn", source, "--aspect", "schemaMetadata"))["schemaMetadata"]["fields"]
    assert "amount" in [f["fieldPath"] for f in fields]
