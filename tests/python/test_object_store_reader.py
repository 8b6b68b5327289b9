"""Independent reader on object storage: Smelter runs the demo with its lake on the S3 emulator
(s3s-fs, SigV4 checked) and on Azurite, then the Python `deltalake` package reads a gold table
straight from each store with its own storage options, and reconciles it with silver.

The emulators are started by the test command (`tests/support/emulators.py`).
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

REPO = Path(os.environ.get("SMELTER_REPO", Path(__file__).resolve().parents[2]))
BIN = os.environ.get("SMELTER_BIN", str(REPO / "target/release/smelter"))
REQUIRED = bool(os.environ.get("SMELTER_REQUIRE_E2E"))


def backend(name):
    if name == "s3":
        endpoint = os.environ.get("SMELTER_TEST_S3")
        if not endpoint:
            return None
        access = os.environ["SMELTER_TEST_S3_ACCESS_KEY"]
        secret = os.environ["SMELTER_TEST_S3_SECRET_KEY"]
        return {
            "root": "s3://lake",
            "options": {"endpoint": endpoint, "region": "us-east-1", "allow_http": "true",
                        "path_style": "true"},
            "env": {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret},
            "reader": {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
                       "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": access,
                       "AWS_SECRET_ACCESS_KEY": secret,
                       "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false"},
        }
    account_url = os.environ.get("SMELTER_TEST_AZURITE")
    if not account_url:
        return None
    endpoint = account_url.removesuffix("/devstoreaccount1")
    key = os.environ["SMELTER_TEST_AZURITE_KEY"]
    return {
        "root": "az://lake",
        "options": {"use_emulator": "true"},
        "env": {"AZURITE_BLOB_STORAGE_URL": endpoint, "AZURE_STORAGE_ACCOUNT_KEY": key},
        "reader": {"azure_storage_use_emulator": "true", "azure_storage_account_key": key},
        "reader_env": {"AZURITE_BLOB_STORAGE_URL": endpoint},
    }


@pytest.mark.parametrize("name", ["s3", "azure"])
def test_python_deltalake_reads_gold_from_the_object_store(name, tmp_path, monkeypatch):
    b = backend(name)
    if b is None:
        if REQUIRED:
            pytest.fail(f"{name} emulator not running (tests/support/emulators.py)")
        pytest.skip(f"{name} emulator not running")
    root = f"{b['root']}/py-{int(time.time() * 1e6)}"
    (tmp_path / "pipelines").mkdir()
    toml = (REPO / "pipelines/demo.toml").read_text()
    toml = re.sub(r"scale_factor = [0-9.]+", "scale_factor = 0.005", toml)
    options = "\n".join(f'{k} = "{v}"' for k, v in b["options"].items())
    toml = re.sub(r'\[storage\]\nroot = [^\n]*\n',
                  f'[storage]\nroot = "{root}"\n[storage.options]\n{options}\n', toml)
    assert root in toml
    (tmp_path / "pipelines/demo.toml").write_text(toml)
    shutil.copytree(REPO / "sql/demo", tmp_path / "sql/demo")
    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    env.update(b["env"])
    out = subprocess.run(
        [BIN, "run", str(tmp_path / "pipelines/demo.toml"), "--logical-date", "2026-11-03",
         "--run-id", "py-store"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    for secret in b["env"].values():
        if len(secret) > 20:
            assert secret not in out.stdout + out.stderr

    for k, v in b.get("reader_env", {}).items():
        monkeypatch.setenv(k, v)
    gold = DeltaTable(f"{root}/gold/daily_shipments_by_carrier",
                      storage_options=b["reader"]).to_pyarrow_table()
    silver = DeltaTable(f"{root}/silver/shipments", storage_options=b["reader"]).to_pyarrow_table()
    assert gold.num_rows > 0
    assert pc.sum(gold["shipments"]).as_py() == silver.num_rows
