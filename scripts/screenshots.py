"""Pictures for the docs, taken in headless Chromium from the real pages.

Runs the main job's index (``rsia-geo demo``'s workdir), writes a map page of a spoken query's
hits and opens it, then serves the notebook search panel with Voila, speaks into it through a
fake microphone (the bundled query clip), searches, and takes a picture of each.

Usage (about 2 minutes; needs chromium, chromium-driver, voila, anywidget):
    python scripts/screenshots.py --workdir out/demo --out docs/img
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np


def _driver(*extra: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", *extra):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def _wait(driver, css: str, timeout: float = 120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = driver.find_elements("css selector", css)
        if found:
            return found
        time.sleep(0.25)
    raise SystemExit(f"{css!r} did not appear in {timeout} s")


def _fake_mic(path: Path, clip_path: Path) -> Path:
    import soundfile as sf

    from rsia_geo.audio import load_audio

    clip = load_audio(clip_path)
    x = np.interp(np.arange(len(clip.samples) * 3) / 3, np.arange(len(clip.samples)), clip.samples)
    sf.write(path, np.concatenate([x, np.zeros(48000)]).astype(np.float32), 48000, "PCM_16")
    return path


def map_picture(index: Path, clip: Path, out: Path) -> None:
    """The HTML map of a spoken query's hits, the best hit's popup open (its chip inside)."""
    import geopandas as gpd

    from rsia_geo import search
    from rsia_geo.results import write_map
    from rsia_geo.sample_data import sample_data_dir

    cells = gpd.read_file(sample_data_dir() / "mosaic" / "cells.geojson")
    hits = search(clip, index, k=8, transcribe=True, bbox=tuple(cells.total_bounds))
    with tempfile.TemporaryDirectory() as tmp:
        page = write_map(hits, Path(tmp) / "map.html", basemap=None)
        driver = _driver("--window-size=1000,640")
        try:
            driver.get(page.as_uri())
            _wait(driver, "path.hit")[-1].click()  # the best hit (drawn on top)
            time.sleep(0.3)
            driver.save_screenshot(str(out / "map.png"))
        finally:
            driver.quit()


def panel_picture(index: Path, clip: Path, out: Path) -> None:
    """The notebook panel in Voila after speaking into the (fake) microphone and searching."""
    import nbformat

    with tempfile.TemporaryDirectory() as tmp:
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_code_cell(
                "import os\nfrom rsia_geo.jupyter import SearchPanel\n"
                "panel = SearchPanel(os.environ['RSIA_SHOT_INDEX'])\npanel.k.value = 4\npanel"
            )
        ]
        nbformat.write(nb, Path(tmp) / "panel.ipynb")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "RSIA_SHOT_INDEX": str(index.resolve())}
        proc = subprocess.Popen(
            [sys.executable, "-m", "voila", "panel.ipynb", "--no-browser", f"--port={port}",
             "--Voila.ip=127.0.0.1"],
            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/static/", timeout=1)
                    break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    time.sleep(0.25)
            mic = _fake_mic(Path(tmp) / "mic.wav", clip)
            driver = _driver(
                "--window-size=1100,1300",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
            )
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                record = _wait(driver, "button.rsia-record")[0]
                record.click()
                time.sleep(3.0)
                record.click()
                time.sleep(1.0)
                buttons = driver.find_elements("css selector", "button")
                next(b for b in buttons if b.text == "Search").click()
                _wait(driver, "table.rsia-hits")
                time.sleep(1.0)
                driver.save_screenshot(str(out / "panel.png"))
            finally:
                driver.quit()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="out/demo", help="the demo's workdir (run it first)")
    p.add_argument("--out", default="docs/img")
    a = p.parse_args()
    work, out = Path(a.workdir), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from rsia_geo.demo import index_folder
    from rsia_geo.pipeline import load_model

    index = index_folder(work, load_model(None))
    if not (index / "rsia_index.json").exists():
        subprocess.run(
            [sys.executable, "-m", "rsia_geo", "demo", "--workdir", str(work)], check=True
        )
    clip = work / "query_2.wav"
    map_picture(index, clip, out)
    panel_picture(index, clip, out)
    print(f"wrote {out / 'map.png'} and {out / 'panel.png'}")


if __name__ == "__main__":
    main()
