#!/usr/bin/env bash
# The test command: installs what the tests need (Python venv with independent readers and
# Airflow, Chromium for the report screenshots), builds the release binary, and runs the Rust and Python test suites.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${SMELTER_VENV:-$ROOT/.venv}"
TOOLS="${SMELTER_TOOLS:-$ROOT/.tools}"

echo "==> Python venv ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv
"$VENV/bin/python" -m uv pip install --quiet --python "$VENV/bin/python" -r tests/python/requirements.txt

echo "==> DataHub CLI venv ($VENV-datahub)"
DH_VENV="$VENV-datahub"
if [ ! -x "$DH_VENV/bin/python" ]; then
  python3 -m venv "$DH_VENV"
fi
"$DH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv
"$DH_VENV/bin/python" -m uv pip install --quiet --python "$DH_VENV/bin/python" -r tests/python/requirements-datahub.txt
export DATAHUB_CLI="$DH_VENV/bin/datahub"

echo "==> Chromium (renders the HTML profile report in tests/python/test_profile_report.py)"
command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

echo "==> Storage emulators (Azurite, s3s-fs) in $TOOLS"
if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
  CARGO_TARGET_DIR="$TOOLS/build" cargo install --quiet --locked s3s-fs@0.14.1 --features binary --root "$TOOLS"
fi
if [ ! -x "$TOOLS/npm/node_modules/.bin/azurite-blob" ]; then
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" azurite@3.35.0
fi
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
