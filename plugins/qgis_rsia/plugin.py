"""The plugin: a dock widget to speak/pick a query, choose the region, and show the hits."""

import os
import tempfile

from qgis.core import Qgis, QgsApplication, QgsMapLayerProxyModel, QgsProject, QgsSettings
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QAction,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import client
from .core import (
    IndexInfoTask,
    LocalService,
    SamePlaceTask,
    SearchTask,
    empty_message,
    extent_bbox,
    features_geometry,
    heard_label,
    history_layer,
    hits_layer,
    index_summary,
)

SETTINGS = "rsia_geo"
DISTINCT_PLACES = 0.25
"""group_overlap of "distinct places" (rsia_geo.pipeline.DISTINCT_PLACES; the plugin imports
only the standard library and QGIS, not rsia_geo)."""


class RsiaDock(QDockWidget):
    """Dock widget: service, audio, region, k, rerank, search, chip preview.

    After a search: select a hit in the result layer and ask for more like it, mark the
    selected hits relevant or not and refine the last query with the marks (kept until the
    next new query), or load the hit's place on other dates as a layer.
    """

    def __init__(self, iface, parent=None):
        super().__init__("rsia_geo spoken search", parent)
        self.iface = iface
        self.setObjectName("RsiaSearchDock")
        s = QgsSettings()
        body = QWidget()
        form = QFormLayout()
        self.url = QLineEdit(s.value(f"{SETTINGS}/url", client.DEFAULT_URL))
        # a local service the plugin starts itself (or connect to a running/remote one above)
        self.service = LocalService()
        self.exe = QgsFileWidget()
        self.exe.setFilePath(s.value(f"{SETTINGS}/exe", ""))
        self.index_dir = QgsFileWidget()
        self.index_dir.setStorageMode(QgsFileWidget.GetDirectory)
        self.index_dir.setFilePath(s.value(f"{SETTINGS}/index", ""))
        self.checkpoint = QgsFileWidget()
        self.checkpoint.setStorageMode(QgsFileWidget.GetDirectory)
        self.checkpoint.setFilePath(s.value(f"{SETTINGS}/checkpoint", ""))
        self.checkpoint.setToolTip("the index's model folder; empty for the shipped starter")
        self.port = QSpinBox()
        self.port.setRange(1024, 65535)
        self.port.setValue(int(s.value(f"{SETTINGS}/port", 8765)))
        self.start_stop = QPushButton("Start local service")
        self.start_stop.clicked.connect(self.toggle_service)
        self.show_log = QPushButton("Service log")
        self.show_log.clicked.connect(self._show_log)
        self.service_status = QLabel("Local service: stopped")
        self.service_status.setWordWrap(True)
        from qgis.PyQt.QtCore import QTimer

        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._poll_service)
        self.key = QLineEdit(s.value(f"{SETTINGS}/key", ""))
        self.key.setEchoMode(QLineEdit.Password)
        self.audio = QgsFileWidget()
        self.audio.setFilter("Audio (*.wav *.flac *.ogg *.mp3)")
        self.record = QPushButton("Record")
        self.record.setCheckable(True)
        self.recorder = _make_recorder()
        if self.recorder is None:
            self.record.setEnabled(False)
            self.record.setToolTip("QtMultimedia is not available: pick a recorded file")
        else:
            self.record.toggled.connect(self._toggle_record)
        self.region = QComboBox()
        self.region.addItems(["Current map extent", "Selected polygons of a layer"])
        self.layer = QgsMapLayerComboBox()
        self.layer.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.k = QSpinBox()
        self.k.setRange(1, 500)
        self.k.setValue(20)
        self.rerank = QCheckBox("mutual-rank rerank (BSWFR)")
        self.text = QLineEdit()
        self.text.setPlaceholderText("or type it: boats docked at a harbour")
        self.group = QCheckBox("one hit per place (group overlapping tiles)")
        self.group.setChecked(True)
        self.distinct = QCheckBox("distinct places (tiles sharing a quarter are one place too)")
        self.distinct.setChecked(True)
        self.distinct.setToolTip(
            "on (the default), no two hits show much of the same ground; off, a tile's diagonal "
            "neighbours (a quarter shared) stay places of their own"
        )
        self.group.toggled.connect(self.distinct.setEnabled)
        self.platform = QLineEdit()
        self.platform.setPlaceholderText("any; or e.g. naip,landsat-8")
        self.dates = QLineEdit()
        self.dates.setPlaceholderText("any; or e.g. 2019/2021, 2020-05, 2020-01-01/2021-06-30")
        self.go = QPushButton("Search")
        self.go.clicked.connect(self.search)
        self.like = QPushButton("More like selected")
        self.like.clicked.connect(self.more_like)
        self.yes = QPushButton("Relevant")
        self.yes.clicked.connect(lambda: self.mark(True))
        self.no = QPushButton("Not relevant")
        self.no.clicked.connect(lambda: self.mark(False))
        self.refine_button = QPushButton("Refine")
        self.refine_button.clicked.connect(self.refine)
        self.reset = QPushButton("Reset marks")
        self.reset.clicked.connect(self.reset_marks)
        self.history = QPushButton("Same place, other dates")
        self.history.clicked.connect(self.same_place)
        self.to_index = QPushButton("Zoom to indexed imagery")
        self.to_index.setToolTip("show where the index has tiles, and when they were acquired")
        self.to_index.clicked.connect(self.zoom_to_index)
        self.marks = QLabel("")
        self.heard = QLabel("")
        self.heard.setWordWrap(True)
        self.relevant = []
        self.not_relevant = []
        self.last_query = None
        self.history_layer = None
        self.chip = QLabel("Select a hit to see its image")
        self.chip.setAlignment(Qt.AlignCenter)
        self.chip.setMinimumHeight(160)
        form.addRow("rsia-geo program", self.exe)
        form.addRow("Index folder", self.index_dir)
        form.addRow("Model (optional)", self.checkpoint)
        form.addRow("Port", self.port)
        form.addRow(self.start_stop, self.show_log)
        form.addRow("", self.service_status)
        form.addRow("Service URL", self.url)
        form.addRow("API key", self.key)
        form.addRow("Query audio", self.audio)
        form.addRow("", self.record)
        form.addRow("Typed query", self.text)
        form.addRow("Region", self.region)
        form.addRow("Polygon layer", self.layer)
        form.addRow("Results (k)", self.k)
        form.addRow("", self.rerank)
        form.addRow("", self.group)
        form.addRow("", self.distinct)
        form.addRow("Platforms", self.platform)
        form.addRow("Dates", self.dates)
        more = QGridLayout()
        more.addWidget(self.like, 0, 0)
        more.addWidget(self.history, 0, 1)
        more.addWidget(self.yes, 1, 0)
        more.addWidget(self.no, 1, 1)
        more.addWidget(self.refine_button, 2, 0)
        more.addWidget(self.reset, 2, 1)
        more.addWidget(self.to_index, 3, 0, 1, 2)
        box = QVBoxLayout()
        box.addLayout(form)
        box.addWidget(self.go)
        box.addLayout(more)
        box.addWidget(self.marks)
        box.addWidget(self.heard)
        box.addWidget(self.chip)
        box.addStretch(1)
        body.setLayout(box)
        self.setWidget(body)
        self.task = None
        self.result_layer = None

    # ------------------------------------------------------------------ local service

    def toggle_service(self):
        """Start the local service (remembering its settings), or stop it."""
        if self.service.is_running():
            self.stop_service()
            return
        s = QgsSettings()
        exe, index = self.exe.filePath(), self.index_dir.filePath()
        s.setValue(f"{SETTINGS}/exe", exe)
        s.setValue(f"{SETTINGS}/index", index)
        s.setValue(f"{SETTINGS}/port", self.port.value())
        s.setValue(f"{SETTINGS}/checkpoint", self.checkpoint.filePath())
        try:
            url = self.service.start(
                exe, index, port=self.port.value(), checkpoint=self.checkpoint.filePath() or None
            )
        except client.ServiceError as exc:
            self.service_status.setText(f"Local service: {exc}")
            self._message(str(exc), Qgis.Warning)
            return
        self.url.setText(url)
        self.start_stop.setText("Stop local service")
        self.service_status.setText(f"Local service: starting on {url} ...")
        self._timer.start()

    def stop_service(self):
        """Stop the local service the plugin started."""
        self._timer.stop()
        self.service.stop()
        self.start_stop.setText("Start local service")
        self.service_status.setText("Local service: stopped")

    def _poll_service(self):
        state = self.service.poll()
        if state == "running":
            self.service_status.setText(f"Local service: running on {self.service.url}")
            self._timer.stop()
        elif state == "exited":
            self._timer.stop()
            self.start_stop.setText("Start local service")
            last = self.service.log_text.strip().splitlines()[-1:] or ["(no output)"]
            self.service_status.setText(f"Local service exited: {last[0]}")
            self._message(f"the local service exited: {last[0]}", Qgis.Critical)

    def _show_log(self):
        from qgis.PyQt.QtWidgets import QDialog, QPlainTextEdit

        dlg = QDialog(self)
        dlg.setWindowTitle(f"rsia_geo service log ({self.service.log_path})")
        text = QPlainTextEdit(self.service.log_text or "(the service has not run yet)")
        text.setReadOnly(True)
        lay = QVBoxLayout()
        lay.addWidget(text)
        dlg.setLayout(lay)
        dlg.resize(700, 400)
        self.log_dialog = dlg
        dlg.show()

    # ------------------------------------------------------------------ actions

    def _toggle_record(self, on):
        if on:
            path = os.path.join(tempfile.gettempdir(), "rsia_query.wav")
            self.recorder.setOutputLocation(_qurl(path))
            self.recorder.record()
            self.audio.setFilePath(path)
        else:
            self.recorder.stop()

    def _region(self):
        canvas = self.iface.mapCanvas()
        if self.region.currentIndex() == 0:
            crs = canvas.mapSettings().destinationCrs()
            return {"bbox": extent_bbox(canvas.extent(), crs)}
        layer = self.layer.currentLayer()
        if layer is None:
            raise client.ServiceError("choose a polygon layer for the region")
        return {"geometry": features_geometry(layer)}

    def search(self):
        """Start a spoken or typed search in a QgsTask (the UI stays responsive)."""
        path = self.audio.filePath()
        typed = self.text.text().strip() or None
        if typed is None and (not path or not os.path.isfile(path)):
            self._message("Choose or record an audio file, or type the query.", Qgis.Warning)
            return
        self.reset_marks()
        self._start({"audio_path": path, "text": typed})

    def _selected_ids(self):
        """Tile ids of the hits selected in the result layer."""
        if self.result_layer is None:
            return []
        try:
            feats = self.result_layer.selectedFeatures()
        except RuntimeError:  # the layer was removed from the project
            self.result_layer = None
            return []
        return [f["tile_id"] for f in feats if f["tile_id"]]

    def more_like(self):
        """Search for tiles like the selected hit (a new query: the marks are reset)."""
        ids = self._selected_ids()
        if not ids:
            self._message("Select a hit in the result layer first.", Qgis.Warning)
            return
        self.reset_marks()
        self._start({"audio_path": None, "like": ids[0]})

    def mark(self, relevant):
        """Mark the selected hits relevant (or not) for the next refine."""
        ids = self._selected_ids()
        if not ids:
            self._message("Select hits in the result layer to mark them.", Qgis.Warning)
            return
        keep, drop = (
            (self.relevant, self.not_relevant) if relevant else (self.not_relevant, self.relevant)
        )
        for tid in ids:
            if tid in drop:
                drop.remove(tid)
            if tid not in keep:
                keep.append(tid)
        self._show_marks()

    def reset_marks(self):
        """Forget every mark."""
        self.relevant, self.not_relevant = [], []
        self._show_marks()

    def _show_marks(self):
        self.marks.setText(
            f"Marks: {len(self.relevant)} relevant, {len(self.not_relevant)} not relevant"
            if self.relevant or self.not_relevant
            else ""
        )

    def refine(self):
        """Search the last query again, moved by the marks."""
        if not self.relevant and not self.not_relevant:
            self._message("Mark hits relevant or not relevant first.", Qgis.Warning)
            return
        self._start(dict(self.last_query or {"audio_path": None}))

    def _start(self, query):
        s = QgsSettings()
        s.setValue(f"{SETTINGS}/url", self.url.text().strip())
        s.setValue(f"{SETTINGS}/key", self.key.text())
        try:
            region = self._region()
        except client.ServiceError as exc:
            self._message(str(exc), Qgis.Warning)
            return
        self.last_query = dict(query)
        marked = bool(self.relevant or self.not_relevant)
        spoken = query.get("like") is None and not marked
        self.go.setEnabled(False)
        self.task = SearchTask(
            self.url.text().strip(),
            self.key.text() or None,
            query.get("audio_path"),
            self.show_results,
            k=self.k.value(),
            rerank=self.rerank.isChecked() and spoken,
            group=self.group.isChecked(),
            group_overlap=DISTINCT_PLACES if self.distinct.isChecked() else 0.5,
            text=query.get("text"),
            like=query.get("like"),
            relevant=list(self.relevant),
            not_relevant=list(self.not_relevant),
            platform=self.platform.text().strip() or None,
            datetime=self.dates.text().strip() or None,
            **region,
        )
        QgsApplication.taskManager().addTask(self.task)

    def same_place(self):
        """Load the selected hit's place on other dates as a layer (one tile per date)."""
        ids = self._selected_ids()
        if not ids:
            self._message("Select a hit in the result layer first.", Qgis.Warning)
            return
        self.history.setEnabled(False)
        self.task = SamePlaceTask(
            self.url.text().strip(), self.key.text() or None, ids[0], self._show_history
        )
        QgsApplication.taskManager().addTask(self.task)

    def zoom_to_index(self):
        """Zoom the map to where the index has tiles, and say how many and when."""
        self.to_index.setEnabled(False)
        self.task = IndexInfoTask(
            self.url.text().strip(), self.key.text() or None, self._show_index_extent
        )
        QgsApplication.taskManager().addTask(self.task)

    def _show_index_extent(self, answer, error):
        self.to_index.setEnabled(True)
        if error:
            self._message(error, Qgis.Critical)
            return
        bbox, text = index_summary(answer)
        self._message(text, Qgis.Info)
        if bbox is None:
            return
        from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsRectangle

        canvas = self.iface.mapCanvas()
        ct = QgsCoordinateTransform(
            QgsCoordinateReferenceSystem("EPSG:4326"),
            canvas.mapSettings().destinationCrs(),
            QgsProject.instance(),
        )
        rect = ct.transformBoundingBox(QgsRectangle(*bbox))
        rect.scale(1.1)  # a margin around the imagery
        canvas.setExtent(rect)
        canvas.refresh()

    def _show_history(self, fc, error):
        self.history.setEnabled(True)
        if error:
            self._message(error, Qgis.Critical)
            return
        layer = history_layer(fc)
        if layer.featureCount() == 0:
            self._message("No other date of this place is indexed.", Qgis.Info)
        QgsProject.instance().addMapLayer(layer)
        self.history_layer = layer

    def show_results(self, fc, error):
        """Add the hits as a layer, zoom to them (or report the error)."""
        self.go.setEnabled(True)
        if error:
            self._message(error, Qgis.Critical)
            return
        layer = hits_layer(fc)
        self.heard.setText(heard_label(fc.get("query")))
        if layer.featureCount() == 0:
            self._message(empty_message(fc), Qgis.Info)
        QgsProject.instance().addMapLayer(layer)
        self.result_layer = layer
        layer.selectionChanged.connect(self._show_chip)
        if layer.featureCount():
            canvas = self.iface.mapCanvas()
            from qgis.core import QgsCoordinateTransform

            ct = QgsCoordinateTransform(
                layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance()
            )
            canvas.setExtent(ct.transformBoundingBox(layer.extent()))
            canvas.refresh()

    def _show_chip(self, selected, *_):
        if not selected or self.result_layer is None:
            return
        feat = self.result_layer.getFeature(selected[0])
        try:
            png = client.chip(self.url.text().strip(), feat["tile_id"], key=self.key.text() or None)
        except client.ServiceError as exc:
            self._message(str(exc), Qgis.Warning)
            return
        pix = QPixmap()
        pix.loadFromData(png, "PNG")
        self.chip.setPixmap(pix.scaled(256, 256, Qt.KeepAspectRatio))

    def _message(self, text, level):
        self.iface.messageBar().pushMessage("rsia_geo", text, level=level, duration=8)


def _make_recorder():
    try:
        from qgis.PyQt.QtMultimedia import QAudioEncoderSettings, QAudioRecorder
    except ImportError:
        return None
    rec = QAudioRecorder()
    settings = QAudioEncoderSettings()
    settings.setCodec("audio/pcm")
    settings.setSampleRate(16000)
    settings.setChannelCount(1)
    rec.setEncodingSettings(settings)
    rec.setContainerFormat("wav")
    return rec


def _qurl(path):
    from qgis.PyQt.QtCore import QUrl

    return QUrl.fromLocalFile(path)


class RsiaSearchPlugin:
    """QGIS plugin object (created by classFactory)."""

    def __init__(self, iface):
        self.iface = iface
        self.action = None
        self.dock = None

    def initGui(self):
        """Add the toolbar action and the dock."""
        icon = QIcon(os.path.join(os.path.dirname(__file__), "icon.png"))
        self.action = QAction(icon, "rsia_geo spoken search", self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.triggered.connect(self._toggle)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu("rsia_geo", self.action)
        self.dock = RsiaDock(self.iface, self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.hide()

    def _toggle(self, on):
        self.dock.setVisible(on)

    def unload(self):
        """Remove everything the plugin added."""
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginRasterMenu("rsia_geo", self.action)
        if self.dock is not None:
            self.dock.stop_service()  # never leave a service running behind QGIS
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
        self.action = self.dock = None
