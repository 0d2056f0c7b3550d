"""QGIS-side logic, independent of the widgets: regions, the search task, the result layer."""

from qgis.core import (
    QgsClassificationEqualInterval,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsGradientColorRamp,
    QgsGraduatedSymbolRenderer,
    QgsProject,
    QgsTask,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

from . import client

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")

FIELDS = (
    ("rank", QVariant.Int),
    ("score", QVariant.Double),
    ("score_cosine", QVariant.Double),
    ("score_ia", QVariant.Double),
    ("tile_id", QVariant.String),
    ("item_id", QVariant.String),
    ("level", QVariant.Int),
    ("datetime", QVariant.String),
    ("platform", QVariant.String),
    ("href", QVariant.String),
    ("group_size", QVariant.Int),
    ("group_tile_ids", QVariant.String),
)

HISTORY_FIELDS = (
    ("datetime", QVariant.String),
    ("platform", QVariant.String),
    ("item_id", QVariant.String),
    ("similarity", QVariant.Double),
    ("overlap", QVariant.Double),
    ("level", QVariant.Int),
    ("tile_id", QVariant.String),
    ("href", QVariant.String),
)


def heard_label(query):
    """What the dock says the service heard or was given (``""`` for other queries).

    A spoken query shows the transcript and how sure the recogniser was (speak again if low),
    and, when it was unsure, the likeliest other transcript it heard.
    """
    q = query or {}
    if q.get("kind") == "typed":
        return f'Typed: "{q.get("text")}" (spoken by {q.get("voiced_by")})'
    if q.get("heard"):
        sure = q.get("heard_confidence")
        # rsia_geo.results.also_heard's rule, written here: the plugin imports no rsia_geo
        others = [t for t, _ in q.get("heard_alternatives") or () if t != q["heard"]]
        maybe = f'; or "{others[0]}"' if others else ""
        return f'Heard: "{q["heard"]}"' + (
            f" (confidence {sure:.2f}{maybe})" if sure is not None else ""
        )
    if q.get("kind") == "example":
        return f"More like tile {q.get('tile_id') or q.get('example')}"
    return ""


def empty_message(fc):
    """What the dock says when a search found nothing: the service's reason when it gives one.

    The service names the filter that leaves no tile (``rsia_geo.search``'s ``attrs["empty"]``:
    a region outside the imagery, dates or a platform the index does not hold).
    """
    why = (fc or {}).get("empty")
    return f"No hits: {why}." if why else "No tile in this region matches the query."


def extent_bbox(extent, crs, project=None):
    """Lon/lat bbox of a map extent given in ``crs``.

    An extent that crosses the antimeridian (a Pacific view) gives ``minx > maxx``, which the
    service reads as a box crossing 180 degrees, instead of a box around the whole world.
    """
    ct = QgsCoordinateTransform(crs, WGS84, project or QgsProject.instance())
    r = ct.transformBoundingBox(extent, QgsCoordinateTransform.ForwardTransform, True)
    return (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum())


def features_geometry(layer, selected_only=True, project=None):
    """GeoJSON (EPSG:4326) of the union of a polygon layer's (selected) features."""
    feats = layer.selectedFeatures() if selected_only else list(layer.getFeatures())
    if not feats:
        raise client.ServiceError(
            f"layer {layer.name()!r} has no selected polygon; select one or use the map extent"
        )
    geom = QgsGeometry.unaryUnion([f.geometry() for f in feats])
    if geom.isEmpty():
        raise client.ServiceError(f"the selected features of {layer.name()!r} are empty")
    ct = QgsCoordinateTransform(layer.crs(), WGS84, project or QgsProject.instance())
    geom.transform(ct)
    import json

    return json.loads(geom.asJson())


def _memory_layer(fc, name, field_spec):
    """A memory polygon layer (EPSG:4326) holding a FeatureCollection's listed properties."""
    layer = QgsVectorLayer("MultiPolygon?crs=EPSG:4326", name, "memory")
    fields = QgsFields()
    for fname, ftype in field_spec:
        fields.append(QgsField(fname, ftype))
    prov = layer.dataProvider()
    prov.addAttributes(fields.toList())
    layer.updateFields()
    feats = []
    for f in fc.get("features", []):
        qf = QgsFeature(layer.fields())
        qf.setGeometry(QgsGeometry.fromWkt(_geojson_to_wkt(f["geometry"])))
        props = f.get("properties", {})
        qf.setAttributes([props.get(n) for n, _ in field_spec])
        feats.append(qf)
    prov.addFeatures(feats)
    layer.updateExtents()
    return layer, feats


def history_layer(fc, name="rsia same place, other dates"):
    """A memory layer of a hit's place on other dates (the service's same-place answer)."""
    import json

    layer, _ = _memory_layer(fc, name, HISTORY_FIELDS)
    layer.setCustomProperty("rsia/hit", json.dumps(fc.get("hit", {})))
    return layer


def hits_layer(fc, name="rsia hits"):
    """A memory polygon layer (EPSG:4326) of the service's FeatureCollection, graduated by score."""
    import json

    layer, feats = _memory_layer(fc, name, FIELDS)
    if feats:
        renderer = QgsGraduatedSymbolRenderer("score")
        renderer.setClassificationMethod(QgsClassificationEqualInterval())
        renderer.updateClasses(layer, min(5, len(feats)))
        renderer.updateColorRamp(QgsGradientColorRamp(QColor(49, 54, 149), QColor(215, 48, 39)))
        layer.setRenderer(renderer)
        layer.setOpacity(0.7)
    layer.setCustomProperty("rsia/timings", json.dumps(fc.get("timings", {})))
    layer.setCustomProperty("rsia/query", json.dumps(fc.get("query", {})))
    return layer


def _geojson_to_wkt(geom):
    import json

    from osgeo import ogr

    return ogr.CreateGeometryFromJson(json.dumps(geom)).ExportToWkt()


class ServiceTask(QgsTask):
    """One request to the service off the UI thread; ``on_done(fc, error)`` on the UI thread.

    Subclasses say what the request is in :meth:`request`.
    """

    def __init__(self, description, on_done):
        super().__init__(description, QgsTask.CanCancel)
        self.on_done = on_done
        self.result_fc = None
        self.error = None

    def request(self):
        """The HTTP request (worker thread); returns the parsed answer."""
        raise NotImplementedError

    def run(self):
        """Do the request (worker thread), keeping a message for users on failure."""
        try:
            self.result_fc = self.request()
            return True
        except client.ServiceError as exc:
            self.error = str(exc)
            return False
        except Exception as exc:  # never let a worker exception kill QGIS
            self.error = f"{type(exc).__name__}: {exc}"
            return False

    def finished(self, ok):
        """Hand the result back (UI thread)."""
        self.on_done(self.result_fc if ok else None, self.error)


class SearchTask(ServiceTask):
    """One search request.

    Extra keyword arguments (``like``, ``relevant``, ``not_relevant``, ``platform``,
    ``datetime``, ``refine_method``) go to :func:`client.search`.
    """

    def __init__(
        self,
        url,
        key,
        audio_path,
        on_done,
        bbox=None,
        geometry=None,
        k=20,
        rerank=False,
        group=True,
        text=None,
        **query,
    ):
        super().__init__("rsia_geo spoken search", on_done)
        self.args = dict(
            url=url,
            key=key,
            audio_path=audio_path,
            bbox=bbox,
            geometry=geometry,
            k=k,
            rerank=rerank,
            group=group,
            text=text,
            **query,
        )

    def request(self):
        """POST /search."""
        a = dict(self.args)
        return client.search(a.pop("url"), a.pop("audio_path"), **a)


class IndexInfoTask(ServiceTask):
    """Asks the service what its index holds (``GET /collections``)."""

    def __init__(self, url, key, on_done):
        super().__init__("rsia_geo index extent", on_done)
        self.url, self.key = url, key

    def request(self):
        """GET /collections."""
        return client.collections(self.url, key=self.key)


def index_summary(answer):
    """The index's lon/lat bbox and a sentence on what it holds, from ``/collections``.

    The sentence follows ``rsia_geo.jupyter._index_line``'s, written here: the plugin imports
    no rsia_geo.

    Returns:
        ``(bbox or None, text)``: ``bbox`` is ``(minx, miny, maxx, maxy)`` (``maxx`` above 180
        when the imagery crosses the antimeridian), None for an index without tiles.
    """
    cols = (answer or {}).get("collections") or [{}]
    info = cols[0]
    tiles = info.get("tiles") or 0
    ext = info.get("extent") or {}
    if not tiles or not ext.get("bbox"):
        return None, "The index holds no tiles yet: index a catalog into it (rsia-geo index)."
    start, end = (str(t or "unknown")[:10] for t in ext.get("interval") or (None, None))
    when = start if start == end else f"{start} to {end}"
    names = ext.get("platforms")
    kinds = f" ({', '.join(names)})" if names else ""
    text = f"The index holds {tiles} tiles{kinds}, acquired {when}."
    return tuple(float(v) for v in ext["bbox"]), text


class SamePlaceTask(ServiceTask):
    """Fetches a hit's place on other dates."""

    def __init__(self, url, key, tile_id, on_done):
        super().__init__("rsia_geo same place, other dates", on_done)
        self.url, self.key, self.tile_id = url, key, tile_id

    def request(self):
        """GET /tiles/{id}/same-place."""
        return client.same_place(self.url, self.tile_id, key=self.key)


class LocalService:
    """A local ``rsia-geo serve`` started and stopped by the plugin (a QProcess).

    The process's output is kept (``log_text``) and written to ``log_path``; ``poll()`` asks
    ``/health`` and says whether the service answers.
    """

    def __init__(self, log_path=None):
        import os
        import tempfile

        self.process = None
        self.url = None
        self.log_path = log_path or os.path.join(tempfile.gettempdir(), "rsia_geo_service.log")
        self.log_text = ""

    def start(self, executable, index, port=8765, checkpoint=None):
        """Start ``rsia-geo serve --location INDEX --port PORT`` on loopback."""
        import os

        from qgis.PyQt.QtCore import QProcess

        if self.is_running():
            raise client.ServiceError("the local service is already running; stop it first")
        if not executable or not os.path.isfile(executable):
            raise client.ServiceError(
                f"rsia-geo executable {executable!r} not found; choose the rsia-geo of the "
                "environment where rsia_geo is installed (e.g. .venv/bin/rsia-geo)"
            )
        if not index or not os.path.isdir(index):
            raise client.ServiceError(
                f"index folder {index!r} not found; build one with rsia-geo index"
            )
        args = ["serve", "--location", index, "--host", "127.0.0.1", "--port", str(int(port))]
        if checkpoint:
            args += ["--checkpoint", checkpoint]
        self.log_text = f"$ {executable} {' '.join(args)}\n"
        proc = QProcess()
        proc.setProcessChannelMode(QProcess.MergedChannels)
        proc.readyReadStandardOutput.connect(self._read)
        proc.start(executable, args)
        if not proc.waitForStarted(10000):
            raise client.ServiceError(f"cannot start {executable}: {proc.errorString()}")
        self.process = proc
        self.url = f"http://127.0.0.1:{int(port)}"
        return self.url

    def _read(self):
        if self.process is None:
            return
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self.log_text += text
        try:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(text)
        except OSError:
            pass

    def is_running(self):
        """Whether the process is alive."""
        from qgis.PyQt.QtCore import QProcess

        return self.process is not None and self.process.state() != QProcess.NotRunning

    def poll(self):
        """``"running"`` (answers /health), ``"starting"``, ``"stopped"`` or ``"exited"``."""
        self._read()
        if self.process is None:
            return "stopped"
        if not self.is_running():
            return "exited"
        try:
            client.health(self.url, timeout=1.0)
            return "running"
        except client.ServiceError:
            return "starting"

    def stop(self, timeout_ms=10000):
        """Stop the process (terminate, then kill)."""
        if self.process is None:
            return
        self._read()
        if self.is_running():
            self.process.terminate()
            if not self.process.waitForFinished(timeout_ms):
                self.process.kill()
                self.process.waitForFinished(timeout_ms)
        self._read()
        self.process = None
