"""The HTML profile report renders in a real browser.

Runs the demo through the real binary at a small scale factor, then takes screenshots of the
silver layer's report (`lake/_smelter/reports/<run_id>/silver.html`) and of an on-demand
`smelter profile --format html` page with headless Chromium, and checks that each PNG is a real
picture: decoded here in pure Python (no PIL), large, and made of many colours, including the bar
colour of the inline SVG histograms.
"""

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

REPO = Path(os.environ.get("SMELTER_REPO", Path(__file__).resolve().parents[2]))
BIN = os.environ.get("SMELTER_BIN", str(REPO / "target/release/smelter"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("SMELTER_REQUIRE_E2E") != "1",
    reason="chromium is not installed (scripts/test.sh installs it)",
)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = tmp_path_factory.mktemp("profile-project")
    (project / "pipelines").mkdir()
    toml = (REPO / "pipelines/demo.toml").read_text()
    toml = re.sub(r"scale_factor = [0-9.]+", "scale_factor = 0.003", toml)
    (project / "pipelines/demo.toml").write_text(toml)
    shutil.copytree(REPO / "sql/demo", project / "sql/demo")
    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    out = subprocess.run(
        [BIN, "run", str(project / "pipelines/demo.toml"), "--logical-date", "2026-11-03", "--run-id", "rep1"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return project


def decode_png(data: bytes):
    """Returns (width, height, rows of (r, g, b) tuples) for 8-bit RGB or RGBA PNGs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append([tuple(line[x * channels:x * channels + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def screenshot(html: Path, png: Path) -> None:
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1200,1600", f"--screenshot={png}", html.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert png.exists(), out.stderr


def assert_rendered(png: Path) -> None:
    assert png.stat().st_size > 20_000, png.stat().st_size
    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (1200, 1600)
    colours = {px for row in rows[::4] for px in row[::4]}
    assert len(colours) > 50, f"only {len(colours)} colours: blank page?"
    # The histogram bars (#3b82c4) are drawn.
    bars = sum(1 for row in rows for px in row if px == (0x3B, 0x82, 0xC4))
    assert bars > 500, bars


def test_layer_report_renders(project, tmp_path):
    html = project / "lake/_smelter/reports/rep1/silver.html"
    text = html.read_text()
    assert "silver.shipments" in text and "<svg" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text
    png = tmp_path / "silver.png"
    screenshot(html, png)
    assert_rendered(png)


def test_on_demand_html_renders(project, tmp_path):
    html = tmp_path / "gold.html"
    env = {k: v for k, v in os.environ.items() if k != "SMELTER_STORAGE_ROOT"}
    out = subprocess.run(
        [BIN, "profile", str(project / "pipelines/demo.toml"), "--layer", "gold",
         "--format", "html", "--output", str(html)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "gold.revenue_by_customer" in html.read_text()
    png = tmp_path / "gold.png"
    screenshot(html, png)
    assert_rendered(png)
