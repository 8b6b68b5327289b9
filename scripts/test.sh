#!/usr/bin/env bash
# The test command: installs what the tests need (Python venvs with independent readers, Airflow,
# the DataHub CLI and an Iceberg REST catalog server; Chromium for the report screenshots; PostgreSQL), builds the release binary, and runs the Rust and Python test suites.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${SMELTER_VENV:-$ROOT/.venv}"
TOOLS="${SMELTER_TOOLS:-$ROOT/.tools}"

# A venv at $1 with the requirements file $2 installed (uv, quietly).
venv_with() {
  if [ ! -x "$1/bin/python" ]; then
    python3 -m venv "$1"
  fi
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check uv
  "$1/bin/python" -m uv pip install --quiet --python "$1/bin/python" -r "$2"
}

echo "==> Python venv ($VENV)"
venv_with "$VENV" tests/python/requirements.txt

echo "==> DataHub CLI venv ($VENV-datahub)"
venv_with "$VENV-datahub" tests/python/requirements-datahub.txt
export DATAHUB_CLI="$VENV-datahub/bin/datahub"

echo "==> Iceberg REST catalog server venv ($VENV-lakana)"
venv_with "$VENV-lakana" tests/python/requirements-lakana.txt
export LAKANA_SERVER="$VENV-lakana/bin/lakana-server"

echo "==> Chromium (renders the HTML profile report in tests/python/test_profile_report.py)"
command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

echo "==> PostgreSQL (an Iceberg SQL catalog database in tests/python/test_iceberg_postgres.py)"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
  || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql)

echo "==> Storage emulators (Azurite, s3s-fs) in $TOOLS"
if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
  CARGO_TARGET_DIR="$TOOLS/build" cargo install --quiet --locked s3s-fs@0.14.1 --features binary --root "$TOOLS"
fi
if [ ! -x "$TOOLS/npm/node_modules/.bin/azurite-blob" ]; then
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" azurite@3.35.0
fi
echo "==> OAuth2 authorization server (oidc-provider) in $TOOLS"
if ! grep -qs '"version": "8.8.1"' "$TOOLS/npm/node_modules/oidc-provider/package.json"; then
  npm install --silent --no-audit --no-fund --save-exact --prefix "$TOOLS/npm" oidc-provider@8.8.1
fi
# The REST catalog's OAuth2 tests (tests/python/test_iceberg_oauth2.py) run it from here.
export SMELTER_OIDC_PROVIDER_DIR="$TOOLS/npm"
EMULATORS="$(mktemp -d)"
trap 'python3 tests/support/emulators.py stop "$EMULATORS"; rm -rf "$EMULATORS"' EXIT
eval "$(SMELTER_TOOLS="$TOOLS" python3 tests/support/emulators.py start "$EMULATORS")"

echo "==> cargo build --release"
cargo build --release --bins --examples
export SMELTER_BIN="$CARGO_TARGET_DIR/release/smelter"
# The TDS 7.4 fixture server (examples/tds_server.rs), for the independent SQL Server clients.
export SMELTER_TDS_SERVER="$CARGO_TARGET_DIR/release/examples/tds_server"
export SMELTER_REPO="$ROOT"
export SMELTER_REQUIRE_E2E=1

echo "==> cargo test --release"
cargo test --release

echo "==> pytest"
"$VENV/bin/python" -m pytest -q tests/python $( [ -d astro/tests ] && echo astro/tests )
