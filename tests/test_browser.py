"""Pages in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

The map page written by :func:`rsia_geo.results.write_map` must work offline and shared as one
file: every hit drawn, each hit's image chip in its popup, zoom and pan, and no console error
except the basemap's tile requests (which need the internet, and are the only thing that does).
"""

from __future__ import annotations

import shutil
import time

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
    return search(wave, root / "idx", tiny_checkpoint, sample_rate=16000, k=6, group=False)


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
    assert [d.get_attribute("data-tile") for d in drawn] == list(hits.tile_id)
    drawn[0].click()
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
    before = [float(v) for v in browser.find_element("id", "map").get_dom_attribute("viewBox").split()]
    browser.execute_script(
        "document.getElementById('map').dispatchEvent(new WheelEvent('wheel', "
        "{deltaY: -100, clientX: 500, clientY: 350, bubbles: true, cancelable: true}))"
    )
    after = [float(v) for v in browser.find_element("id", "map").get_dom_attribute("viewBox").split()]
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
    browser.find_elements("css selector", "path.hit")[0].click()
    assert browser.execute_script("return window.pwned === undefined")
    assert "</script><img" in browser.find_element("id", "popup").text
