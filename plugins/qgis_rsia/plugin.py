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
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import client
from .core import SearchTask, extent_bbox, features_geometry, hits_layer

SETTINGS = "rsia_geo"


class RsiaDock(QDockWidget):
    """Dock widget: service, audio, region, k, rerank, search, chip preview."""

    def __init__(self, iface, parent=None):
        super().__init__("rsia_geo spoken search", parent)
        self.iface = iface
        self.setObjectName("RsiaSearchDock")
        s = QgsSettings()
        body = QWidget()
        form = QFormLayout()
        self.url = QLineEdit(s.value(f"{SETTINGS}/url", client.DEFAULT_URL))
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
        self.go = QPushButton("Search")
        self.go.clicked.connect(self.search)
        self.chip = QLabel("Select a hit to see its image")
        self.chip.setAlignment(Qt.AlignCenter)
        self.chip.setMinimumHeight(160)
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
        box = QVBoxLayout()
        box.addLayout(form)
        box.addWidget(self.go)
        box.addWidget(self.chip)
        box.addStretch(1)
        body.setLayout(box)
        self.setWidget(body)
        self.task = None
        self.result_layer = None

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
        """Start a search in a QgsTask (the UI stays responsive)."""
        s = QgsSettings()
        s.setValue(f"{SETTINGS}/url", self.url.text().strip())
        s.setValue(f"{SETTINGS}/key", self.key.text())
        path = self.audio.filePath()
        typed = self.text.text().strip() or None
        if typed is None and (not path or not os.path.isfile(path)):
            self._message("Choose or record an audio file, or type the query.", Qgis.Warning)
            return
        try:
            region = self._region()
        except client.ServiceError as exc:
            self._message(str(exc), Qgis.Warning)
            return
        self.go.setEnabled(False)
        self.task = SearchTask(
            self.url.text().strip(),
            self.key.text() or None,
            path,
            self.show_results,
            k=self.k.value(),
            rerank=self.rerank.isChecked(),
            group=self.group.isChecked(),
            text=typed,
            **region,
        )
        QgsApplication.taskManager().addTask(self.task)

    def show_results(self, fc, error):
        """Add the hits as a layer, zoom to them (or report the error)."""
        self.go.setEnabled(True)
        if error:
            self._message(error, Qgis.Critical)
            return
        layer = hits_layer(fc)
        if layer.featureCount() == 0:
            self._message("No tile in this region matches the query.", Qgis.Info)
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
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
        self.action = self.dock = None
