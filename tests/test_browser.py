"""Pages in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

The map page written by :func:`rsia_geo.results.write_map` must work offline and shared as one
file: every hit drawn, each hit's image chip in its popup, zoom and pan, and no console error
except the basemap's tile requests (which need the internet, and are the only thing that does).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
webdriver = pytest.importorskip("selenium.webdriver")

from rsia_geo import TileSpec, build_catalog  # noqa: E402
from rsia_geo.pipeline import build_index, read_chip, search  # noqa: E402
from rsia_geo.results import write_map  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.requires_programs("chromium", "chromedriver")]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,700"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def hits(tmp_path_factory, samples, tiny_checkpoint):
    import datetime as dt

    root = tmp_path_factory.mktemp("browser")
    cat = build_catalog(
        [samples / "aerial"], root / "cat", default_datetime=dt.datetime(2020, 1, 1)
    )
    build_index(cat, root / "idx", tiny_checkpoint, spec=TileSpec(size=256), progress=False)
    wave = np.sin(np.linspace(0, 300, 32000)).astype(np.float32)
    found = search(wave, root / "idx", tiny_checkpoint, sample_rate=16000, k=6, group=False)
    found.attrs["index"] = str(root / "idx")
    return found


def _errors(driver, allowed: str | None = None) -> list[str]:
    logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [e["message"] for e in logs if not (allowed and allowed in e["message"])]


def test_map_page_offline_with_chips(browser, hits, tmp_path):
    page = write_map(hits, tmp_path / "map.html", basemap=None)
    browser.get(page.as_uri())
    time.sleep(0.5)
    assert _errors(browser) == []
    drawn = browser.find_elements("css selector", "path.hit")
    assert len(drawn) == len(hits)
    # drawn worst first, so the best hit lies on top of any it overlaps
    assert [d.get_attribute("data-tile") for d in drawn] == list(hits.tile_id)[::-1]
    drawn[-1].click()
    time.sleep(0.2)
    popup = browser.find_element("id", "popup")
    assert popup.is_displayed() and f"#{hits.iloc[0]['rank']}" in popup.text
    # the chip is the hit's own pixels, decoded by the browser from the embedded PNG
    size, rgb = browser.execute_script(
        """const img = document.querySelector('#popup img');
        const c = document.createElement('canvas'); c.width = img.naturalWidth;
        c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, 1, 1).data; return [img.naturalWidth, [d[0], d[1], d[2]]];"""
    )
    chip = read_chip(hits.iloc[0], out_size=128)
    assert size == 128
    np.testing.assert_allclose(rgb, np.round(chip[:3, 0, 0] * 255), atol=1)
    # the wheel zooms in (a smaller view box), dragging pans
    before = [
        float(v) for v in browser.find_element("id", "map").get_dom_attribute("viewBox").split()
    ]
    browser.execute_script(
        "document.getElementById('map').dispatchEvent(new WheelEvent('wheel', "
        "{deltaY: -100, clientX: 500, clientY: 350, bubbles: true, cancelable: true}))"
    )
    after = [
        float(v) for v in browser.find_element("id", "map").get_dom_attribute("viewBox").split()
    ]
    assert after[2] < before[2] and after[3] < before[3]
    assert _errors(browser) == []
    browser.save_screenshot(str(tmp_path / "map.png"))
    assert (tmp_path / "map.png").stat().st_size > 10_000


def test_map_page_only_the_basemap_needs_the_internet(browser, hits, tmp_path):
    page = write_map(hits, tmp_path / "map.html")  # default basemap: OpenStreetMap tiles
    browser.get(page.as_uri())
    time.sleep(0.8)
    assert len(browser.find_elements("css selector", "path.hit")) == len(hits)
    # offline here: tile requests fail (and their images are removed); nothing else does
    assert _errors(browser, allowed="tile.openstreetmap.org") == []
    hrefs = browser.execute_script(
        "return [...document.querySelectorAll('#base image')].map(i => i.getAttribute('href'))"
    )
    # failed tiles are removed (no broken-image marks); any left were loaded from the basemap
    assert all(h.startswith("https://tile.openstreetmap.org/") for h in hrefs)
    # hostile text from a catalog stays text
    hostile = hits.copy()
    hostile["item_id"] = "</script><img src=x onerror=window.pwned=1>"
    page = write_map(hostile, tmp_path / "h.html", basemap=None, chips=False)
    browser.get(page.as_uri())
    time.sleep(0.3)
    browser.find_elements("css selector", "path.hit")[-1].click()
    assert browser.execute_script("return window.pwned === undefined")
    assert "</script><img" in browser.find_element("id", "popup").text


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PANEL_NB = """import os
from rsia_geo.jupyter import SearchPanel
panel = SearchPanel(os.environ["RSIA_TEST_INDEX"], os.environ["RSIA_TEST_CKPT"])
panel.k.value = 3
panel"""


@pytest.fixture()
def voila_panel(tmp_path, hits, tiny_checkpoint):
    """The search panel served by Voila on loopback (a real kernel behind a real page)."""
    import os
    import subprocess
    import sys
    import urllib.request

    import nbformat

    pytest.importorskip("voila")
    pytest.importorskip("anywidget")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PANEL_NB)]
    nbformat.write(nb, tmp_path / "panel.ipynb")
    index = Path(hits.attrs["index"]) if "index" in hits.attrs else None
    assert index is not None
    port = _free_port()
    env = {**os.environ, "RSIA_TEST_INDEX": str(index), "RSIA_TEST_CKPT": str(tiny_checkpoint)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", "panel.ipynb", "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/voila/static/"
    for _ in range(120):  # the server is up (a page load would start a kernel: not yet)
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.25)
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _fake_mic(path: Path) -> Path:
    """A 48 kHz 16-bit WAV of the bundled harbour query, then silence (Chromium loops it)."""
    import soundfile as sf

    from rsia_geo.audio import load_audio
    from rsia_geo.sample_data import sample_data_dir

    clip = load_audio(sample_data_dir() / "queries" / "boats_docked_at_a_harbour.wav")
    x = np.interp(np.arange(len(clip.samples) * 3) / 3, np.arange(len(clip.samples)), clip.samples)
    sf.write(path, np.concatenate([x, np.zeros(48000)]).astype(np.float32), 48000, "PCM_16")
    return path


def _wait_for(driver, css: str, timeout: float = 90.0) -> list:
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = driver.find_elements("css selector", css)
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{css!r} did not appear in {timeout} s")


def _hits_table(driver, timeout: float = 120.0) -> tuple[int, int]:
    """Rows and chip thumbnails of the panel's hits table, read again when the page redraws it
    between finding it and reading it (a stale element)."""
    from selenium.common.exceptions import StaleElementReferenceException

    t0 = time.time()
    while True:
        table = _wait_for(driver, "table.rsia-hits", timeout)[0]
        try:
            rows = table.find_elements("css selector", "tbody tr")
            return len(rows), len(table.find_elements("css selector", "img"))
        except StaleElementReferenceException:
            if time.time() - t0 > timeout:
                raise
            time.sleep(0.25)


def test_speak_into_the_panel_in_a_browser(voila_panel, tmp_path):
    import os

    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,1500",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={_fake_mic(tmp_path / 'mic.wav')}",
    ):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        driver.get(voila_panel)
        record = _wait_for(driver, "button.rsia-record")[0]
        record.click()  # the browser asks the (fake) microphone
        time.sleep(3.0)
        assert "Stop" in record.text
        record.click()
        time.sleep(1.0)
        status = driver.find_element("css selector", ".rsia-record-status").text
        assert status.startswith("recorded ") and float(status.split()[1]) >= 2.5
        # Python received the WAV: the panel says so and the player holds it
        texts = [e.text for e in driver.find_elements("css selector", ".widget-html-content")]
        assert any("recorded from the microphone" in t for t in texts), texts
        next(
            b for b in driver.find_elements("css selector", "button") if b.text == "Search"
        ).click()
        rows, thumbnails = _hits_table(driver)
        assert rows == 3
        assert thumbnails == 3  # chip thumbnails
        assert len(driver.find_elements("css selector", ".leaflet-container path")) >= 3
        texts = [e.text for e in driver.find_elements("css selector", ".widget-html-content")]
        assert any(t.startswith('heard "') and "3 hits" in t for t in texts), texts
        shots = os.environ.get("RSIA_SCREENSHOT_DIR")
        driver.save_screenshot(str(Path(shots or tmp_path) / "panel.png"))
    finally:
        driver.quit()
