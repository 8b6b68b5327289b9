"""The REST catalog's OAuth2 client credentials (`format.iceberg.credential_env`) against a real
authorization server: panva's certified `oidc-provider` (npm), run by
`tests/support/oauth2_server.mjs` on 127.0.0.1, in front of lakana-server (PyPI).

lakana-server takes only its own tokens, so the catalog refuses an OAuth2 access token with
HTTP 401; that proves Smelter got a token from the token endpoint and sent it. The end-to-end run
goes through the script's gateway instead, which lets a catalog request through only when its
bearer token is a live access token the authorization server issued (looked up in the
server's own token store), and forwards it to lakana-server with lakana's token.

What the authorization server did is read from its event log (`grant.success`, `grant.error`,
and the gateway's `gateway.accepted`/`gateway.refused`), not from Smelter's output.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from tds_fixture import stop
from test_iceberg_reader import (  # noqa: F401 (rest_server is a fixture)
    BIN,
    REPO,
    REST_TOKEN,
    _free_port,
    _rest_catalog,
    rest_server,
)

SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "support/oauth2_server.mjs"
CLIENT_ID = "smelter-pipelines"
CLIENT_SECRET = "oauth2-secret-Vq8pZ3kW1xN7"
WRONG_SECRET = "oauth2-wrong-Jm4tR9cY2bL6"
CREDENTIAL_VAR = "SMELTER_TEST_ICEBERG_CREDENTIAL"


def _node_modules():
    """The node_modules folder holding oidc-provider, from SMELTER_OIDC_PROVIDER_DIR (the npm
    prefix or its node_modules); fails under SMELTER_REQUIRE_E2E=1 when missing, else skips."""
    given = os.environ.get("SMELTER_OIDC_PROVIDER_DIR")
    node = shutil.which("node")
    found = None
    if given:
        for candidate in (Path(given) / "node_modules", Path(given)):
            if (candidate / "oidc-provider/package.json").is_file():
                found = candidate
                break
    if node and found:
        return found
    why = ("node is not on PATH" if not node else
           "SMELTER_OIDC_PROVIDER_DIR does not hold oidc-provider" if given else
           "SMELTER_OIDC_PROVIDER_DIR is not set")
    if os.environ.get("SMELTER_REQUIRE_E2E") == "1":
        pytest.fail(f"{why} (scripts/test.sh installs oidc-provider)")
    pytest.skip(why)


class OAuth2Server:
    """One running oauth2_server.mjs: its token endpoint, its gateway and its event log."""

    def __init__(self, proc, log, ready):
        self.proc, self.log = proc, log
        self.port = ready["port"]
        self.token_endpoint = f"http://127.0.0.1:{self.port}/token"
        self.gateway = ready["gateway_port"] and f"http://127.0.0.1:{ready['gateway_port']}"

    def events(self, since=0):
        """The events logged after the first `since` ones."""
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines[since:] if line.startswith("{")]

    def mark(self):
        """How many events are logged so far: pass it to `events` to get only later ones."""
        return len(self.events())


@pytest.fixture
def oauth2(tmp_path):
    """Starts authorization servers: `oauth2(ttl=, upstream=, first_delay=, server_scopes=)`
    (token lifetime in seconds; the catalog behind the gateway; how long the gateway holds its
    first request; the scopes the server knows, of which the client may have `catalog` only);
    all stop after the test."""
    modules = _node_modules()
    running = []

    def start(ttl=3600, upstream=None, first_delay=0, server_scopes="catalog"):
        log = tmp_path / f"oauth2-{len(running)}.log"
        env = {
            **os.environ,
            "OAUTH2_NODE_MODULES": str(modules),
            "OAUTH2_CLIENT_ID": CLIENT_ID,
            "OAUTH2_CLIENT_SECRET": CLIENT_SECRET,
            "OAUTH2_TOKEN_TTL": str(ttl),
            "OAUTH2_UPSTREAM": upstream or "",
            "OAUTH2_UPSTREAM_TOKEN": REST_TOKEN if upstream else "",
            "OAUTH2_FIRST_DELAY": str(first_delay),
            "OAUTH2_SCOPE": "catalog",
            "OAUTH2_SERVER_SCOPES": server_scopes,
        }
        with open(log, "w") as out, open(tmp_path / f"oauth2-{len(running)}.err", "w") as err:
            proc = subprocess.Popen(["node", str(SERVER_SCRIPT)], stdout=out, stderr=err,
                                    env=env)
        running.append(proc)
        for _ in range(150):  # bounded: at most about 30 s
            lines = log.read_text().splitlines()
            if lines:
                ready = json.loads(lines[0])
                assert ready["event"] == "ready", ready
                return OAuth2Server(proc, log, ready)
            if proc.poll() is not None:
                pytest.fail("oauth2_server.mjs exited: "
                            f"{(tmp_path / f'oauth2-{len(running) - 1}.err').read_text()[-2000:]}")
            time.sleep(0.2)
        pytest.fail("oauth2_server.mjs did not start within 30 s")

    try:
        yield start
    finally:
        for proc in running:
            stop(proc)


def _project(tmp, uri, extra=""):
    """The demo on the REST catalog at `uri` (prefix `dev`), authenticated with OAuth2 client
    credentials from CREDENTIAL_VAR; `extra`: more `[format.iceberg]` keys."""
    project = tmp / "oauth2"
    (project / "pipelines").mkdir(parents=True)
    toml = (REPO / "pipelines/demo.toml").read_text()
    toml = re.sub(r"scale_factor = [0-9.]+", "scale_factor = 0.002", toml)
    toml = toml.replace('table = "delta"', 'table = "iceberg"')
    (project / "pipelines/demo.toml").write_text(
        toml + f'\n[format.iceberg]\ncatalog = "rest"\nuri = "{uri}"\nprefix = "dev"\n'
        f'credential_env = "{CREDENTIAL_VAR}"\n{extra}')
    shutil.copytree(REPO / "sql/demo", project / "sql/demo")
    return project


def _env(secret=CLIENT_SECRET, credential=None):
    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    env[CREDENTIAL_VAR] = credential if credential is not None else f"{CLIENT_ID}:{secret}"
    return env


def _smelter(project, *args, env=None):
    return subprocess.run(
        [BIN, args[0], str(project / "pipelines/demo.toml"), *args[1:]],
        capture_output=True, text=True, env=env or _env(), timeout=600,
    )


def _extracted(project, run="r1"):
    """The demo's extract layer, which lands files in the lake and opens no catalog."""
    out = _smelter(project, "run", "--layer", "extract", "--logical-date", "2026-11-03",
                   "--run-id", run)
    assert out.returncode == 0, out.stderr
    return project


def _bronze(project, env=None, run="r1"):
    return _smelter(project, "run", "--layer", "bronze", "--run-id", run,
                    "--summary-json", str(project / f"{run}.json"), env=env)


def _no_secret(out, *secrets):
    for secret in secrets:
        assert secret not in out.stdout + out.stderr, "a client secret was printed"


def test_client_credentials_are_exchanged_for_a_token_the_catalog_then_judges(
        tmp_path, rest_server, oauth2):
    """With the right credentials the authorization server grants the client a token (the
    default scope, `catalog`); lakana, which takes only its own tokens, then refuses the catalog
    request with 401, and Smelter reports that refusal (exit 2, naming the setting), not a
    token endpoint failure. (The gateway tests below show the token is what it sends.)"""
    uri, _ = rest_server
    server = oauth2()
    project = _extracted(
        _project(tmp_path, uri, f'oauth2_server_uri = "{server.token_endpoint}"\n'))
    mark = server.mark()
    out = _bronze(project)
    assert out.returncode == 2, out.stderr
    assert "the REST catalog refused Smelter's credentials (HTTP 401)" in out.stderr, out.stderr
    assert "credential_env" in out.stderr, out.stderr
    assert "OAuth2 token endpoint" not in out.stderr, out.stderr
    _no_secret(out, CLIENT_SECRET)
    events = server.events(mark)
    grants = [e for e in events if e["event"] == "grant.success"]
    assert grants, events
    assert all(g["client_id"] == CLIENT_ID and g["grant_type"] == "client_credentials"
               for g in grants), grants
    assert {g["scope"] for g in grants} == {"catalog"}, grants
    assert not [e for e in events if e["event"] in ("grant.error", "server_error")], events


def _through_the_gateway(tmp, rest_uri, server, run):
    """Extract, then bronze through `server`'s gateway; the bronze run's events, after checking
    that it succeeded, printed no secret, and that every catalog request carried a live token
    of the client with the scope asked for and nothing was refused."""
    project = _extracted(_project(
        tmp, server.gateway,
        f'oauth2_server_uri = "{server.token_endpoint}"\nscope = "catalog"\n'), run=run)
    mark = server.mark()
    out = _bronze(project, run=run)
    assert out.returncode == 0, out.stderr
    _no_secret(out, CLIENT_SECRET)
    events = server.events(mark)
    assert not [e for e in events if e["event"] in
                ("gateway.refused", "grant.error", "server_error")], events
    grants = [e for e in events if e["event"] == "grant.success"]
    accepted = [e for e in events if e["event"] == "gateway.accepted"]
    assert grants and all(g["client_id"] == CLIENT_ID and g["scope"] == "catalog"
                          for g in grants), grants
    assert accepted and all(a["client_id"] == CLIENT_ID and a["scope"] == "catalog"
                            for a in accepted), accepted
    # What the run says it wrote is in the catalog, read with lakana's own token.
    summary = json.loads((project / f"{run}.json").read_text())
    catalog = _rest_catalog(rest_uri)
    steps = [s for s in summary["steps"] if s["target"].startswith("bronze.")]
    assert len(steps) == 6, summary
    for step in steps:
        rows = catalog.load_table(step["target"]).scan(
            row_filter=f"_run_id == '{run}'", selected_fields=("_run_id",)).to_arrow()
        assert rows.num_rows == step["rows_inserted"] > 0, step
    return grants, accepted


def test_a_run_through_an_oauth2_protected_catalog_commits_with_one_token(
        tmp_path, rest_server, oauth2):
    """End to end: every catalog request reaches lakana only with a live access token of the
    authorization server; the bronze tables are created and committed. A token that lives an
    hour is fetched once and sent with every request."""
    uri, _ = rest_server
    server = oauth2(ttl=3600, upstream=uri)
    grants, accepted = _through_the_gateway(tmp_path, uri, server, "one")
    assert [g["expires_in"] for g in grants] == [3600], grants
    assert {a["token_ref"] for a in accepted} == {grants[0]["token_ref"]}
    requests = {(a["method"], a["path"].split("?")[0].rsplit("/", 1)[-1]) for a in accepted}
    assert ("GET", "config") in requests and ("POST", "tables") in requests, requests
    assert sum(a["method"] == "POST" for a in accepted) >= 6, accepted  # the commits


def test_a_token_that_expires_during_a_run_is_renewed(tmp_path, rest_server, oauth2):
    """Tokens live 6 s, and the catalog holds its first answer 7 s: by then the first token is
    expired (the gateway would refuse it), so the run must get a new one before it goes on."""
    uri, _ = rest_server
    server = oauth2(ttl=6, upstream=uri, first_delay=7)
    grants, accepted = _through_the_gateway(tmp_path, uri, server, "renew")
    assert all(g["expires_in"] == 6 for g in grants), grants
    first = grants[0]
    assert accepted[0]["path"] == "/v1/config", accepted
    assert accepted[0]["token_ref"] == first["token_ref"], (grants, accepted)
    later = accepted[1:]
    # Every later request came after the first token's expiry, with another token of a grant.
    assert later and min(a["time"] for a in later) >= accepted[0]["expires_at"], accepted
    assert first["token_ref"] not in {a["token_ref"] for a in later}
    assert {a["token_ref"] for a in later} <= {g["token_ref"] for g in grants[1:]}


def test_a_refused_client_secret_exits_2_naming_the_setting_and_never_printing_it(
        tmp_path, rest_server, oauth2):
    uri, _ = rest_server
    server = oauth2()
    project = _extracted(
        _project(tmp_path, uri, f'oauth2_server_uri = "{server.token_endpoint}"\n'))
    mark = server.mark()
    out = _bronze(project, env=_env(secret=WRONG_SECRET))
    assert out.returncode == 2, out.stderr
    assert (f"the OAuth2 token endpoint {server.token_endpoint} answered HTTP 401: "
            "invalid_client") in out.stderr, out.stderr
    assert ("it refused the client credentials of `format.iceberg.credential_env`"
            in out.stderr), out.stderr
    _no_secret(out, WRONG_SECRET, CLIENT_SECRET)
    events = server.events(mark)
    refused = [e for e in events if e["event"] == "grant.error"]
    assert refused and all(e["error"] == "invalid_client" and e["client_id"] == CLIENT_ID
                           for e in refused), events
    assert not [e for e in events if e["event"] == "grant.success"], events

    # A path the authorization server does not serve (the REST spec's token path): exit 2
    # naming the key.
    wrong_path = server.token_endpoint.replace("/token", "/v1/oauth/tokens")
    project2 = _extracted(
        _project(tmp_path / "path", uri, f'oauth2_server_uri = "{wrong_path}"\n'))
    out = _bronze(project2)
    assert out.returncode == 2, out.stderr
    assert "format.iceberg.oauth2_server_uri" in out.stderr, out.stderr
    assert "HTTP 404" in out.stderr, out.stderr
    _no_secret(out, CLIENT_SECRET)

    # A credential without the `client_id:client_secret` form, and the variable unset.
    out = _bronze(project, env=_env(credential=CLIENT_SECRET))
    assert out.returncode == 2 and "client_id:client_secret" in out.stderr, out.stderr
    _no_secret(out, CLIENT_SECRET)
    env = _env()
    del env[CREDENTIAL_VAR]
    out = _bronze(project, env=env)
    assert out.returncode == 2 and CREDENTIAL_VAR in out.stderr, out.stderr
    assert not [e for e in server.events(mark) if e["event"] == "grant.success"]


def _refused_scope(tmp, uri, oauth2):
    """A bronze run asking for scope `admin`, which the server knows and the client may not
    have; the run's output and the server's events."""
    server = oauth2(server_scopes="catalog admin")
    project = _extracted(_project(
        tmp, uri, f'oauth2_server_uri = "{server.token_endpoint}"\nscope = "admin"\n'))
    mark = server.mark()
    return _bronze(project), server.events(mark)


def test_a_refused_scope_exits_2_naming_the_scope_setting(tmp_path, rest_server, oauth2):
    out, events = _refused_scope(tmp_path, rest_server[0], oauth2)
    assert out.returncode == 2, out.stderr
    assert "answered HTTP 400: invalid_scope" in out.stderr, out.stderr
    assert "the scope asked for (`format.iceberg.scope`) is not granted" in out.stderr, out.stderr
    assert "credential_env" not in out.stderr, out.stderr
    _no_secret(out, CLIENT_SECRET)
    refused = [e for e in events if e["event"] == "grant.error"]
    assert refused and {e["error"] for e in refused} == {"invalid_scope"}, events
    assert not [e for e in events if e["event"] == "grant.success"], events


def test_an_unreachable_token_endpoint_exits_75(tmp_path, rest_server):
    """Nothing listens on the token endpoint's port: a retryable failure (exit 75)."""
    uri, _ = rest_server
    dead = f"http://127.0.0.1:{_free_port()}/token"
    project = _extracted(_project(tmp_path, uri, f'oauth2_server_uri = "{dead}"\n'))
    out = _bronze(project)
    assert out.returncode == 75, (out.returncode, out.stderr)
    assert f"the OAuth2 token endpoint {dead} could not be reached" in out.stderr, out.stderr
    _no_secret(out, CLIENT_SECRET)


def test_the_default_token_endpoint_is_the_catalogs(tmp_path, rest_server):
    """Without `oauth2_server_uri` the token is asked of `<uri>/v1/oauth/tokens`, which
    lakana-server does not have: exit 2 naming the key to set."""
    uri, _ = rest_server
    out = _bronze(_extracted(_project(tmp_path, uri)))
    assert out.returncode == 2, out.stderr
    assert f"{uri}/v1/oauth/tokens" in out.stderr, out.stderr
    assert "format.iceberg.oauth2_server_uri" in out.stderr, out.stderr
    assert "HTTP 404" in out.stderr, out.stderr
    _no_secret(out, CLIENT_SECRET)
