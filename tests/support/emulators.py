"""Start and stop the storage emulators the tests use, on 127.0.0.1 only.

    python3 tests/support/emulators.py start STATE_DIR   # prints `export ...` lines
    python3 tests/support/emulators.py stop STATE_DIR

- Azurite (npm `azurite`): blob service with the well-known development account. A container
  `lake` is created with a Shared Key signed request (object_store does not create containers).
- s3s-fs (crates.io): an S3 server over a directory that checks SigV4 signatures. A bucket `lake`
  is created with a SigV4 signed `PUT /lake`.

Only the Python standard library is used, so this runs before any venv exists. Every wait is
bounded; a server that does not come up is an error naming its log file.
"""

import base64
import datetime
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

AZURITE_ACCOUNT = "devstoreaccount1"
# The public, documented Azurite development key (not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
S3_ACCESS_KEY = "smelter-test-access"
S3_SECRET_KEY = "smelter-test-secret-6f1d2c"
S3_REGION = "us-east-1"
CONTAINER = "lake"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, log: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit(f"emulator on port {port} did not start within {seconds:.0f}s; see {log}")


def azure_create_container(port: int) -> None:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    version = "2021-08-06"
    canon_headers = f"x-ms-date:{date}\nx-ms-version:{version}\n"
    canon_resource = f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{CONTAINER}\nrestype:container"
    # VERB, then 11 standard headers (Content-Length empty for 0), then canonical parts.
    to_sign = "PUT\n" + "\n" * 11 + canon_headers + canon_resource
    sig = base64.b64encode(
        hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}/{CONTAINER}?restype=container",
        method="PUT",
        data=None,
        headers={
            "x-ms-date": date,
            "x-ms-version": version,
            "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{sig}",
        },
    )
    urllib.request.urlopen(req, timeout=10).read()


def s3_create_bucket(port: int) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    host = f"127.0.0.1:{port}"
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["PUT", f"/{CONTAINER}", ""]
        + [f"{k}:{headers[k]}" for k in sorted(headers)]
        + ["", signed, payload]
    )
    scope = f"{day}/{S3_REGION}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + S3_SECRET_KEY).encode()
    for part in (day, S3_REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        f"http://{host}/{CONTAINER}",
        method="PUT",
        data=b"",
        headers={
            "x-amz-content-sha256": payload,
            "x-amz-date": amz_date,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={S3_ACCESS_KEY}/{scope}, "
            f"SignedHeaders={signed}, Signature={sig}",
        },
    )
    urllib.request.urlopen(req, timeout=10).read()


def start(state: str) -> None:
    tools = os.environ.get("SMELTER_TOOLS", os.path.join(os.getcwd(), ".tools"))
    os.makedirs(state, exist_ok=True)
    az_port, s3_port = free_port(), free_port()
    az_log, s3_log = os.path.join(state, "azurite.log"), os.path.join(state, "s3s.log")
    os.makedirs(os.path.join(state, "azurite"), exist_ok=True)
    os.makedirs(os.path.join(state, "s3"), exist_ok=True)
    az = subprocess.Popen(
        [
            os.path.join(tools, "npm/node_modules/.bin/azurite-blob"),
            "--blobHost", "127.0.0.1", "--blobPort", str(az_port),
            "--location", os.path.join(state, "azurite"),
            "--loose", "--skipApiVersionCheck", "--disableTelemetry", "--silent",
            *(["--debug", os.path.join(state, "azurite-debug.log")] if os.environ.get("SMELTER_AZURITE_DEBUG") else []),
        ],
        stdout=open(az_log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    s3 = subprocess.Popen(
        [
            os.path.join(tools, "bin/s3s-fs"),
            "--host", "127.0.0.1", "--port", str(s3_port),
            "--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY,
            os.path.join(state, "s3"),
        ],
        stdout=open(s3_log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    with open(os.path.join(state, "pids"), "w") as f:
        f.write(f"{az.pid}\n{s3.pid}\n")
    wait_port(az_port, az_log)
    wait_port(s3_port, s3_log)
    azure_create_container(az_port)
    s3_create_bucket(s3_port)
    print(f"export SMELTER_TEST_AZURITE=http://127.0.0.1:{az_port}/{AZURITE_ACCOUNT}")
    print(f"export SMELTER_TEST_AZURITE_KEY={AZURITE_KEY}")
    print(f"export SMELTER_TEST_S3=http://127.0.0.1:{s3_port}")
    print(f"export SMELTER_TEST_S3_ACCESS_KEY={S3_ACCESS_KEY}")
    print(f"export SMELTER_TEST_S3_SECRET_KEY={S3_SECRET_KEY}")
    print(f"export SMELTER_TEST_S3_DIR={os.path.join(state, 's3')}")


def stop(state: str) -> None:
    try:
        pids = open(os.path.join(state, "pids")).read().split()
    except FileNotFoundError:
        return
    for pid in pids:
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    os.remove(os.path.join(state, "pids"))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    (start if sys.argv[1] == "start" else stop)(sys.argv[2])
