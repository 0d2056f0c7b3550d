"""The QGIS plugin in real QGIS (headless), against a real service on loopback.

Run with ``make test-qgis`` (Debian's python3-qgis in a venv with system site packages). The
service runs in the main environment (``RSIA_MAIN_PYTHON``, default ``.venv/bin/python``),
since the plugin itself imports neither torch nor rsia_geo.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("qgis.core")

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins"))
MAIN_PY = os.environ.get("RSIA_MAIN_PYTHON", str(REPO / ".venv" / "bin" / "python"))
QUERY = REPO / "rsia_geo" / "sample_data" / "queries" / "an_airplane_parked_at_the_airport.wav"

pytestmark = pytest.mark.qgis

SETUP = """
import datetime as dt, sys, torch
from rsia_geo import TileSpec, build_catalog
from rsia_geo.models import build_model, get_config, save_checkpoint
from rsia_geo.pipeline import build_index
from rsia_geo.sample_data import sample_data_dir
root = sys.argv[1]
torch.manual_seed(0)
ck = save_checkpoint(build_model(get_config("alac-tiny"), pretrained=False), root + "/ck")
import shutil, pathlib
rasters = pathlib.Path(root) / "rasters"
rasters.mkdir()
for day in ("20190601", "20210601"):  # the same place on two dates
    shutil.copy(sample_data_dir() / "aerial" / "cogeo.tif", rasters / f"aerial_{day}.tif")
cat = build_catalog([rasters], root + "/cat", platform="aerial-survey")
build_index(cat, root + "/idx", ck, spec=TileSpec(size=256), progress=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    if not Path(MAIN_PY).exists():
        pytest.skip(f"main environment {MAIN_PY} not found (set RSIA_MAIN_PYTHON)")
    root = tmp_path_factory.mktemp("svc")
    subprocess.run([MAIN_PY, "-c", SETUP, str(root)], check=True)
    port = _free_port()
    proc = subprocess.Popen(
        [
            MAIN_PY,
            "-m",
            "rsia_geo",
            "serve",
            "--location",
            str(root / "idx"),
            "--checkpoint",
            str(root / "ck"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the service did not start: " + proc.stdout.read().decode()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture()
def plugin(qgis_iface):
    import qgis_rsia

    p = qgis_rsia.classFactory(qgis_iface)
    p.initGui()
    yield p
    p.unload()


def _wait(task, timeout=60.0):
    t0 = time.time()
    while task.status() not in (task.Complete, task.Terminated) and time.time() - t0 < timeout:
        QgsApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let finished() run on the main thread
        QgsApplication.processEvents()
        time.sleep(0.01)


def test_plugin_loads_and_unloads(qgis_iface):
    import qgis_rsia

    p = qgis_rsia.classFactory(qgis_iface)
    p.initGui()
    assert p.dock is not None and p.action is not None
    assert p.dock.url.text().startswith("http://")
    p.unload()
    assert p.dock is None


def test_search_map_extent_in_a_projected_crs(plugin, service, qgis_iface):
    dock = plugin.dock
    canvas = qgis_iface.mapCanvas()
    crs = QgsCoordinateReferenceSystem("EPSG:3857")
    canvas.setDestinationCrs(crs)
    QgsProject.instance().setCrs(crs)
    # a part of the aerial COG (EPSG:3857) around its centre
    extent = QgsRectangle(14322000.0, 4532500.0, 14322400.0, 4532900.0)
    canvas.setExtent(extent)
    dock.url.setText(service)
    dock.audio.setFilePath(str(QUERY))
    dock.region.setCurrentIndex(0)
    dock.k.setValue(5)
    before = set(QgsProject.instance().mapLayers())
    dock.search()
    _wait(dock.task)
    added = [
        QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers()) - before
    ]
    assert len(added) == 1, "one result layer"
    layer = added[0]
    assert layer.crs().authid() == "EPSG:4326"
    assert 1 <= layer.featureCount() <= 5
    names = [f.name() for f in layer.fields()]
    assert {"rank", "score", "tile_id", "item_id", "level", "group_size"} <= set(names)
    assert dock.group.isChecked()  # one hit per place by default
    assert dock.distinct.isChecked() and dock.distinct.isEnabled()  # distinct places
    dock.group.setChecked(False)  # distinct places only mean something when grouping
    assert not dock.distinct.isEnabled()
    dock.group.setChecked(True)
    ct = QgsCoordinateTransform(crs, layer.crs(), QgsProject.instance())
    region = QgsGeometry.fromRect(ct.transformBoundingBox(canvas.extent()))
    ranks = []
    for f in layer.getFeatures():
        assert f.geometry().intersects(region)
        ranks.append(f["rank"])
    assert sorted(ranks) == list(range(1, len(ranks) + 1))
    assert layer.renderer().type() == "graduatedSymbol"
    # the service says what it heard (Whisper tiny.en), and the dock shows it
    query = json.loads(layer.customProperty("rsia/query"))
    heard, sure = query.get("heard"), query.get("heard_confidence")
    assert heard and 0 < sure <= 1
    others = [t for t, _ in query.get("heard_alternatives") or () if t != heard]
    maybe = f'; or "{others[0]}"' if others else ""  # an unsure query: what else it heard
    assert dock.heard.text() == f'Heard: "{heard}" (confidence {sure:.2f}{maybe})'
    # selecting a hit fetches its chip
    layer.selectByIds([next(layer.getFeatures()).id()])
    assert dock.chip.pixmap() is not None and not dock.chip.pixmap().isNull()


def test_search_in_a_selected_polygon(plugin, service):
    dock = plugin.dock
    poly = QgsVectorLayer("Polygon?crs=EPSG:3857", "aoi", "memory")
    f = QgsFeature()
    f.setGeometry(QgsGeometry.fromRect(QgsRectangle(14322000.0, 4532500.0, 14322200.0, 4532700.0)))
    poly.dataProvider().addFeatures([f])
    QgsProject.instance().addMapLayer(poly)
    poly.selectAll()
    dock.url.setText(service)
    dock.audio.setFilePath(str(QUERY))
    dock.region.setCurrentIndex(1)
    dock.layer.setLayer(poly)
    dock.search()
    _wait(dock.task)
    assert dock.result_layer is not None and dock.result_layer.featureCount() >= 1
    ct = QgsCoordinateTransform(poly.crs(), dock.result_layer.crs(), QgsProject.instance())
    aoi = QgsGeometry(f.geometry())
    aoi.transform(ct)
    for hit in dock.result_layer.getFeatures():
        assert hit.geometry().intersects(aoi)


def test_service_down_and_bad_file_show_messages(plugin, qgis_iface):
    dock = plugin.dock
    bar = qgis_iface.messageBar()
    dock.url.setText(f"http://127.0.0.1:{_free_port()}")
    dock.audio.setFilePath(str(QUERY))
    dock.region.setCurrentIndex(0)
    dock.search()
    _wait(dock.task)
    texts = json.dumps([w.text() for w in bar.items()]) if hasattr(bar, "items") else ""
    assert dock.go.isEnabled()
    assert "cannot reach" in texts or "cannot reach" in (dock.task.error or "")
    dock.audio.setFilePath("/nonexistent/query.wav")
    dock.search()  # must not raise
    assert dock.go.isEnabled()


def test_distinct_places_reach_the_service(plugin, service, qgis_iface):
    from qgis_rsia import client

    dock = plugin.dock
    qgis_iface.mapCanvas().setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    qgis_iface.mapCanvas().setExtent(QgsRectangle(14321500.0, 4532000.0, 14323000.0, 4533400.0))
    dock.url.setText(service)
    dock.audio.setFilePath(str(QUERY))
    dock.region.setCurrentIndex(0)
    dock.distinct.setChecked(False)  # diagonal neighbours as places of their own (0.5)
    dock.k.setValue(4)
    dock.search()
    _wait(dock.task)
    assert dock.task.error is None, dock.task.error
    assert dock.result_layer.featureCount() == 4
    # the client sends the field: a value the service refuses comes back refused
    with pytest.raises(client.ServiceError, match=r"group_overlap=0.0 must be in \(0, 1\]"):
        client.search(service, str(QUERY), k=2, group_overlap=0)


def _search_layer(dock, service):
    dock.url.setText(service)
    dock.audio.setFilePath(str(QUERY))
    dock.text.setText("")
    dock.region.setCurrentIndex(0)
    dock.group.setChecked(False)
    dock.k.setValue(6)
    dock.search()
    _wait(dock.task)
    assert dock.task.error is None, dock.task.error
    return dock.result_layer


def test_more_like_marks_refine_and_same_place(plugin, service, qgis_iface):
    dock = plugin.dock
    canvas = qgis_iface.mapCanvas()
    crs = QgsCoordinateReferenceSystem("EPSG:3857")
    canvas.setDestinationCrs(crs)
    canvas.setExtent(QgsRectangle(14321500.0, 4532000.0, 14323000.0, 4533400.0))
    first = _search_layer(dock, service)
    feats = list(first.getFeatures())
    assert len(feats) == 6 and {f["platform"] for f in feats} == {"aerial-survey"}
    # nothing selected: a message, no request
    dock.more_like()
    assert dock.task.args.get("like") is None
    picked = feats[0]
    first.selectByIds([picked.id()])
    dock.more_like()
    _wait(dock.task)
    like = dock.result_layer
    assert like is not first and like.featureCount() == 6
    assert json.loads(like.customProperty("rsia/query"))["tile_id"] == picked["tile_id"]
    ids = [f["tile_id"] for f in like.getFeatures()]
    assert picked["tile_id"] not in ids
    # the example's own place on the other date is left out too (identical pixels)
    twin_fc = json.loads(
        urllib.request.urlopen(f"{service}/tiles/{picked['tile_id']}/same-place").read()
    )
    twin = twin_fc["features"][0]["properties"]["tile_id"]
    assert twin not in ids
    # marks: the first two relevant, the third not; refine re-runs the example query
    by_id = {f["tile_id"]: f.id() for f in like.getFeatures()}
    like.selectByIds([by_id[ids[0]], by_id[ids[1]]])
    dock.mark(True)
    like.selectByIds([by_id[ids[2]]])
    dock.mark(False)
    assert sorted(dock.relevant) == sorted(ids[:2]) and dock.not_relevant == [ids[2]]
    assert "2 relevant, 1 not relevant" in dock.marks.text()
    dock.refine()
    _wait(dock.task)
    refined = dock.result_layer
    q = json.loads(refined.customProperty("rsia/query"))
    assert (q["kind"], q["relevant"], q["not_relevant"]) == ("example", 2, 1)
    assert ids[2] not in [f["tile_id"] for f in refined.getFeatures()]
    # same place, other dates: a layer with the twin tile and its similarity
    refined.selectByIds([next(refined.getFeatures()).id()])
    sel = refined.selectedFeatures()[0]["tile_id"]
    sel_date = refined.selectedFeatures()[0]["datetime"]
    dock.same_place()
    _wait(dock.task)
    hist = dock.history_layer
    assert hist is not None and hist.featureCount() == 1
    row = next(hist.getFeatures())
    assert row["tile_id"] != sel and row["similarity"] > 0.9999
    assert row["platform"] == "aerial-survey"
    assert {row["datetime"][:4], sel_date[:4]} == {"2019", "2021"}
    # a platform filter that matches nothing: an empty layer, no error
    dock.platform.setText("landsat-8")
    dock.search()
    _wait(dock.task)
    assert dock.task.error is None and dock.result_layer.featureCount() == 0
    dock.platform.setText("")


def test_extent_across_the_antimeridian(plugin, service, qgis_iface):
    from qgis_rsia.core import extent_bbox

    # a Pacific view in PDC Mercator (centred on 150 E), from 170 E to 170 W
    crs = QgsCoordinateReferenceSystem("EPSG:3832")
    to_map = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:4326"), crs, QgsProject.instance()
    )
    from qgis.core import QgsPointXY

    a = to_map.transform(QgsPointXY(170.0, -20.0))
    b = to_map.transform(QgsPointXY(-170.0, -10.0))
    minx, miny, maxx, maxy = extent_bbox(QgsRectangle(a, b), crs)
    assert minx > maxx  # crosses 180: not a box around the whole world
    assert abs(minx - 170.0) < 0.5 and abs(maxx + 170.0) < 0.5
    assert -20.5 < miny < maxy < -9.5
    # the dock sends it as is; the service answers (nothing indexed there) without an error
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(crs)
    canvas.setExtent(QgsRectangle(a, b))
    dock = plugin.dock
    dock.url.setText(service)
    dock.audio.setFilePath(str(QUERY))
    dock.text.setText("")
    dock.region.setCurrentIndex(0)
    dock.search()
    _wait(dock.task)
    assert dock.task.error is None and dock.result_layer.featureCount() == 0
    assert dock.task.args["bbox"][0] > dock.task.args["bbox"][2]
    # the service says why, and the dock passes it on (the index's extent is in California)
    from qgis_rsia.core import empty_message

    why = dock.task.result_fc["empty"]
    assert why.startswith("no indexed tile lies in the region (the index's ")
    from qgis.core import Qgis

    # pytest-qgis's message bar records what the dock pushed: the reason, as the analyst reads it
    told = qgis_iface.messageBar().get_messages(Qgis.Info)
    assert f"rsia_geo:{empty_message(dock.task.result_fc)}" in told
    assert empty_message({"empty": "no indexed tile is from platform x"}) == (
        "No hits: no indexed tile is from platform x."
    )
    assert empty_message({}) == empty_message(None) == "No tile in this region matches the query."


def test_zoom_to_the_indexed_imagery(plugin, service, qgis_iface):
    """The dock asks the service where its index has tiles and zooms the map there."""
    from qgis.core import Qgis, QgsPointXY
    from qgis_rsia.core import index_summary

    canvas = qgis_iface.mapCanvas()
    crs = QgsCoordinateReferenceSystem("EPSG:3857")
    canvas.setDestinationCrs(crs)
    canvas.setExtent(QgsRectangle(0, 0, 1000, 1000))  # off the coast of Africa
    dock = plugin.dock
    dock.url.setText(service)
    qgis_iface.messageBar().clear_messages()
    dock.zoom_to_index()
    _wait(dock.task)
    assert dock.task.error is None, dock.task.error
    assert dock.to_index.isEnabled()
    bbox, text = index_summary(dock.task.result_fc)
    assert bbox is not None and text.startswith("The index holds ") and "acquired 20" in text
    to_ll = QgsCoordinateTransform(
        crs, QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
    )
    shown = to_ll.transformBoundingBox(canvas.extent())
    minx, miny, maxx, maxy = bbox
    for x, y in ((minx, miny), (maxx, maxy)):  # the whole imagery is in view, snugly
        assert shown.contains(QgsPointXY(x, y))
    # the canvas keeps its own aspect ratio: the tighter side fits the imagery and its margin
    assert min(shown.width() / (maxx - minx), shown.height() / (maxy - miny)) < 1.3
    assert f"rsia_geo:{text}" in qgis_iface.messageBar().get_messages(Qgis.Info)
    # an empty index, and a service that is not there, are said plainly
    assert index_summary({"collections": [{"tiles": 0, "extent": None}]})[0] is None
    named = {
        "tiles": 3,
        "extent": {
            "bbox": [0, 0, 1, 1],
            "platforms": ["naip", "landsat-8"],
            "interval": ["2019-05-01T00:00:00Z", "2021-06-01T00:00:00Z"],
        },
    }
    assert index_summary({"collections": [named]}) == (
        (0.0, 0.0, 1.0, 1.0),
        "The index holds 3 tiles (naip, landsat-8), acquired 2019-05-01 to 2021-06-01.",
    )
    dock.url.setText(f"http://127.0.0.1:{_free_port()}")
    dock.zoom_to_index()
    _wait(dock.task)
    assert "cannot reach" in dock.task.error and dock.to_index.isEnabled()


@pytest.fixture(scope="module")
def spare_index(tmp_path_factory):
    if not Path(MAIN_PY).exists():
        pytest.skip(f"main environment {MAIN_PY} not found (set RSIA_MAIN_PYTHON)")
    root = tmp_path_factory.mktemp("spare")
    subprocess.run([MAIN_PY, "-c", SETUP, str(root)], check=True)
    return root


def _until(predicate, timeout=90.0):
    t0 = time.time()
    while not predicate() and time.time() - t0 < timeout:
        QgsApplication.processEvents()
        time.sleep(0.05)
    return predicate()


def test_plugin_starts_and_stops_its_own_service(plugin, spare_index, qgis_iface):
    dock = plugin.dock
    exe = str(Path(MAIN_PY).parent / "rsia-geo")
    port = _free_port()
    # a wrong program: a clear message, nothing started
    dock.exe.setFilePath("/nonexistent/rsia-geo")
    dock.index_dir.setFilePath(str(spare_index / "idx"))
    dock.toggle_service()
    assert not dock.service.is_running() and "not found" in dock.service_status.text()
    dock.exe.setFilePath(exe)
    dock.checkpoint.setFilePath(str(spare_index / "ck"))  # the index's own model
    dock.port.setValue(port)
    dock.toggle_service()
    assert dock.service.is_running() and dock.url.text() == f"http://127.0.0.1:{port}"
    assert _until(lambda: "running on" in dock.service_status.text()), dock.service.log_text
    # settings are remembered for the next QGIS session
    from qgis.core import QgsSettings

    assert QgsSettings().value("rsia_geo/exe") == exe
    assert QgsSettings().value("rsia_geo/index") == str(spare_index / "idx")
    # a search through the service the plugin started
    dock.audio.setFilePath(str(QUERY))
    dock.text.setText("")
    dock.region.setCurrentIndex(0)
    canvas = qgis_iface.mapCanvas()
    crs = QgsCoordinateReferenceSystem("EPSG:3857")
    canvas.setDestinationCrs(crs)
    canvas.setExtent(QgsRectangle(14321500.0, 4532000.0, 14323000.0, 4533400.0))
    dock.search()
    _wait(dock.task)
    assert dock.task.error is None and dock.result_layer.featureCount() >= 1
    # its log is reachable: the command line and the server's own lines
    assert "serve --location" in dock.service.log_text
    dock.service.poll()  # reads the output so far
    assert "/search" in dock.service.log_text or "Uvicorn running" in dock.service.log_text
    assert f"index {spare_index / 'idx'}: 32 tiles, lon 128.6" in dock.service.log_text
    dock._show_log()
    assert dock.log_dialog.isVisible()
    assert Path(dock.service.log_path).read_text(encoding="utf-8")
    dock.toggle_service()  # stop
    assert not dock.service.is_running() and "stopped" in dock.service_status.text()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_the_dock_names_what_else_an_unsure_recogniser_heard():
    from qgis_rsia.core import heard_label

    unsure = {
        "kind": "spoken", "heard": "a piece of family", "heard_confidence": 0.38,
        "heard_alternatives": [["a piece of family", 0.38], ["a piece of farmland", 0.31]],
    }  # fmt: skip
    assert (
        heard_label(unsure)
        == 'Heard: "a piece of family" (confidence 0.38; or "a piece of farmland")'
    )
    sure = {"kind": "spoken", "heard": "a harbour", "heard_confidence": 0.9}
    assert heard_label(sure) == 'Heard: "a harbour" (confidence 0.90)'
    typed = {"kind": "typed", "text": "a harbour", "voiced_by": "espeak-ng:en-us"}
    assert heard_label(typed) == 'Typed: "a harbour" (spoken by espeak-ng:en-us)'
    assert heard_label({"kind": "example", "tile_id": "t1"}) == "More like tile t1"
    assert heard_label(None) == heard_label({"kind": "relevant"}) == ""
