"""The report in headless Chromium, in windows 1,280 and 1,920 px wide: every figure loads and shows something, no
element reaches past the window's right edge (so there is no horizontal scrolling), and a screenshot of each is taken.

The page measures itself: a copy of the report gets a script that writes what it found into the DOM, which Chromium
dumps. Debian's `chromium` package; without it, these tests skip and say so.
"""

import html
import json
import re
import shutil
import struct
import subprocess

import pytest
from typer.testing import CliRunner

from analysis.cli import app
from tests.fixtures_analysis import write_demo, write_quick

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "chrome"))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")

# Elements whose right edge passes the window, and figures with (almost) no ink: read from the page after it loads.
MEASURE = """<script>
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const wide = Array.from(document.querySelectorAll("body *"))
    .filter(e => e.getBoundingClientRect().right > width + 0.5)
    .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : ""));
  const blank = Array.from(document.images).filter(img => {
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
    if (!canvas.width || !canvas.height) return true;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    const px = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let ink = 0;
    for (let i = 0; i < px.length; i += 4) if (Math.min(px[i], px[i + 1], px[i + 2]) < 230) ink++;
    return ink < 0.02 * canvas.width * canvas.height;
  }).map(img => img.alt);
  document.body.dataset.measured = JSON.stringify({
    width, scrollWidth: document.documentElement.scrollWidth, wide: wide.slice(0, 5), blank,
    figures: document.images.length,
  });
});
</script>"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two reports: a 5-step sweep of 6 seeds and 15-20 epochs, and a quick sweep of 7 steps (1 epoch, 2 seeds)."""
    made = {}
    for name, write, figures in (("demo", write_demo, 7), ("quick", write_quick, 5)):
        out = tmp_path_factory.mktemp(name)
        write(out)
        result = CliRunner().invoke(app, ["report", "--out", str(out)])
        assert result.exit_code == 0, result.output
        made[name] = (out / "report.html", figures)
    return made


def chromium(page, width: int, tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={width},1200",
            "--virtual-time-budget=10000",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )


@pytest.mark.parametrize("width", [1280, 1920])
@pytest.mark.parametrize("name", ["demo", "quick"])
def test_the_report_fits_the_window_and_every_figure_shows_something(reports, name, width, tmp_path):
    page, figures = reports[name]
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = chromium(measured, width, tmp_path, "--dump-dom").stdout.decode()
    assert f'data-figures-loaded="{figures}/{figures}"' in dom  # set by the report's own script
    found = json.loads(html.unescape(re.search(r'data-measured="([^"]*)"', dom).group(1)))
    assert found["width"] == width and found["figures"] == figures, found
    assert found["scrollWidth"] <= width and found["wide"] == [], found
    assert found["blank"] == [], found

    shot = tmp_path / f"{name}-{width}.png"
    chromium(page, width, tmp_path, f"--screenshot={shot}")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (width, 1200)
