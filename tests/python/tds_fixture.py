"""Starts and stops the TDS fixture server binary (`examples/tds_server`) for Python tests, and
stops other servers the tests start."""

import select
import subprocess


def run_server(server, *args, env=None, timeout=60):
    """Runs `server --port 0 *args` and yields the port it prints when ready; stops it after.

    `timeout` bounds the wait for the port line in seconds (generating TPC-H data takes longer
    than serving the fixed tables). A server that exits instead fails with its stderr.
    """
    proc = subprocess.Popen(
        [server, "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        assert ready, f"fixture server did not print its port within {timeout} s"
        port = proc.stdout.readline().strip()
        assert port.isdigit(), (
            f"fixture server failed: {port!r} "
            f"{proc.stderr.read() if proc.poll() is not None else ''}"
        )
        yield int(port)
    finally:
        stop(proc)


def stop(proc, timeout=10):
    """Stops a server process: SIGTERM, then SIGKILL if it has not exited after `timeout` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
