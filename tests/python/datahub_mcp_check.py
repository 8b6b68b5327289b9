"""Checks DataHub MCP files with the DataHub SDK's own classes (run with the DataHub venv's Python).

Usage: python datahub_mcp_check.py FILE.json...

Every MCP must build a `MetadataChangeProposalWrapper` (which validates the aspect against its
PDL-generated class), and every URN in it (the entity, and any string value starting with
`urn:li:`) must parse with `Urn.from_string` and print back unchanged. Prints one JSON summary
line (aspect counts, schemaField URNs seen) and exits 1 naming the first problems found.
"""

import copy
import json
import sys
from collections import Counter

from datahub.emitter.mcp import MetadataChangeProposalWrapper
from datahub.utilities.urns.urn import Urn


def urns(value):
    if isinstance(value, str):
        if value.startswith("urn:li:"):
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from urns(v)
    elif isinstance(value, list):
        for v in value:
            yield from urns(v)


def main(paths):
    problems = []
    aspects = Counter()
    fields = set()
    for path in paths:
        with open(path) as f:
            mcps = json.load(f)
        for i, obj in enumerate(mcps):
            where = f"{path}[{i}] {obj.get('aspectName')} {obj.get('entityUrn')}"
            try:
                mcpw = MetadataChangeProposalWrapper.from_obj(copy.deepcopy(obj))
                if not mcpw.validate():
                    problems.append(f"{where}: invalid")
            except Exception as e:  # noqa: BLE001 - reported, not swallowed
                problems.append(f"{where}: {e}")
                continue
            aspects[obj["aspectName"]] += 1
            for u in urns(obj):
                try:
                    parsed = Urn.from_string(u)
                    if str(parsed) != u:
                        problems.append(f"{where}: {u} prints back as {parsed}")
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{where}: {u}: {e}")
                if u.startswith("urn:li:schemaField:"):
                    fields.add(u)
    print(json.dumps({"aspects": aspects, "schema_fields": sorted(fields), "problems": problems[:20]}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
