"""STAC catalogs: build them from local rasters, open them, search STAC APIs, choose bands.

The catalog is the entry point of the pipeline: every tile that is encoded and indexed comes from
a STAC Item and one or more of its assets. Items built here carry:

* ``geometry``/``bbox`` in EPSG:4326 from the densified raster outline (antimeridian-cut);
* the projection extension (``proj:code`` or ``proj:wkt2``, ``proj:shape``, ``proj:transform``,
  ``proj:bbox``) on every asset, so tiles can be planned without opening the rasters;
* ``eo:bands`` with common names (from the colour interpretation, or the band file names of
  Landsat and Sentinel-2) and ``raster:bands`` (data type, nodata, scale, offset, resolution).

Asset hrefs are written relative to the item JSON, so a catalog folder can be moved (together
with its rasters when ``copy_assets=True``, which copies them inside the catalog).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsia_geo._types import BBox, PathLike
from rsia_geo.errors import (
    AssetSelectionError,
    CatalogError,
    EmptyCatalogError,
    RasterError,
)

if TYPE_CHECKING:
    import pystac

__all__ = [
    "BandSelection",
    "build_catalog",
    "item_from_band_files",
    "item_from_raster",
    "iter_items",
    "open_stac",
    "search_stac",
    "select_bands",
]

logger = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt")
DEFAULT_BANDS = ("red", "green", "blue")

# Band-file suffixes of common missions -> eo common names.
_LANDSAT_OLI = {
    "B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir08",
    "B6": "swir16", "B7": "swir22", "B8": "pan", "B9": "cirrus", "B10": "lwir11", "B11": "lwir12",
}  # fmt: skip
_SENTINEL2 = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge",
    "B06": "rededge", "B07": "rededge", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B10": "cirrus", "B11": "swir16", "B12": "swir22",
}  # fmt: skip
_BAND_FILE = re.compile(r"^(?P<stem>.+?)_(?:SR_|ST_)?(?P<band>B(?:\d{1,2}|8A))$", re.IGNORECASE)
_DATE_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
_NON_DATA_ROLES = {"thumbnail", "overview", "metadata", "cloud", "cloud-shadow", "snow-ice",
                   "water-mask", "saturation", "data-mask"}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Building items
# --------------------------------------------------------------------------------------------


def _crs_fields(crs: Any) -> dict[str, Any]:
    epsg = crs.to_epsg()
    if epsg is not None:
        return {"code": f"EPSG:{epsg}"}
    return {"wkt2": crs.to_wkt()}


def _band_common_names(src: Any, band_name_hint: str | None) -> list[str | None]:
    names: list[str | None] = []
    for ci in src.colorinterp:
        name = ci.name.lower()
        names.append(name if name in ("red", "green", "blue") else None)
    if band_name_hint is not None and src.count == 1:
        names = [band_name_hint]
    return names


def _utc(value: _dt.datetime) -> _dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)


def _landsat_mtl(path: Path) -> dict[str, Any] | None:
    """The Landsat Collection 2 ``*_MTL.json`` beside a band file, if there is one."""
    for mtl in sorted(path.parent.glob("*_MTL.json")):
        try:
            meta = json.loads(mtl.read_text())["LANDSAT_METADATA_FILE"]
        except (KeyError, ValueError, OSError) as exc:
            logger.warning("ignoring unreadable Landsat metadata %s: %s", mtl, exc)
            continue
        if isinstance(meta, dict):
            return meta
    return None


def _landsat_scale_offset(path: Path, band_id: str) -> tuple[float, float] | None:
    """Surface-reflectance scale and offset of a Landsat C2 L2 band, from its MTL file."""
    meta = _landsat_mtl(path)
    if meta is None or not path.stem.upper().endswith(f"SR_{band_id}"):
        return None
    params = meta.get("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS", {})
    n = band_id[1:]
    try:
        return (
            float(params[f"REFLECTANCE_MULT_BAND_{n}"]),
            float(params[f"REFLECTANCE_ADD_BAND_{n}"]),
        )
    except (KeyError, ValueError):
        return None


def _sensor_properties(path: Path, platform: str | None) -> dict[str, Any]:
    """STAC ``platform``/``instruments`` of a raster: its Landsat metadata, else ``platform``."""
    meta = _landsat_mtl(path)
    if meta is not None:
        img = meta.get("IMAGE_ATTRIBUTES", {})
        craft = str(img.get("SPACECRAFT_ID", "")).strip().lower().replace("_", "-")
        if craft:
            sensor = str(img.get("SENSOR_ID", "")).strip().lower()
            return {"platform": craft, **({"instruments": sensor.split("_")} if sensor else {})}
    return {"platform": platform.strip().lower()} if platform and platform.strip() else {}


def _read_datetime(
    path: Path, explicit: _dt.datetime | None, fallback: _dt.datetime | None = None
) -> _dt.datetime:
    """Acquisition time: explicit value, sidecar metadata, a YYYYMMDD in the name, fallback."""
    if explicit is not None:
        return _utc(explicit)
    meta = _landsat_mtl(path)
    if meta is not None:
        try:
            img = meta["IMAGE_ATTRIBUTES"]
            stamp = f"{img['DATE_ACQUIRED']}T{img.get('SCENE_CENTER_TIME', '00:00:00Z')}"
            stamp = re.sub(r"\.(\d{6})\d*Z$", r".\1Z", stamp).replace("Z", "+00:00")
            return _dt.datetime.fromisoformat(stamp)
        except (KeyError, ValueError) as exc:
            logger.warning("no acquisition date in the Landsat metadata of %s: %s", path, exc)
    match = _DATE_IN_NAME.search(path.stem)
    if match:
        y, m, d = (int(g) for g in match.groups())
        return _dt.datetime(y, m, d, tzinfo=_dt.UTC)
    if fallback is not None:
        return _utc(fallback)
    raise CatalogError(
        f"no acquisition date found for {str(path)!r} (no *_MTL.json beside it and no YYYYMMDD "
        "in its name); pass default_datetime=... (CLI: --datetime 2020-09-02)"
    )


def _open_raster(path: Path) -> Any:
    import rasterio
    from rasterio.errors import RasterioIOError

    if not path.exists():
        raise RasterError(f"raster {str(path)!r} does not exist; check the path")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterError(
            f"cannot open {str(path)!r} as a raster ({exc}); is it a corrupt or non-raster file?"
        ) from exc


def _asset_for(
    src: Any,
    href: str,
    common_names: Sequence[str | None],
    band_names: Sequence[str],
    roles: list[str],
    scale_offset: tuple[float, float] | None = None,
) -> pystac.Asset:
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterBand, RasterExtension

    if src.crs is None:
        raise RasterError(
            f"raster {href!r} has no CRS, so its tiles cannot be placed on the map; "
            "assign one first (e.g. gdal_edit.py -a_srs EPSG:xxxx) or use a georeferenced copy"
        )
    media = "image/tiff; application=geotiff"
    if src.driver == "GTiff" and src.overviews(1) and src.block_shapes[0][0] > 1:
        media += "; profile=cloud-optimized"
    asset = pystac.Asset(href=href, media_type=media, roles=roles)
    proj = ProjectionExtension.ext(asset)
    proj.apply(
        **_crs_fields(src.crs),
        shape=[src.height, src.width],
        transform=list(src.transform)[:6],
        bbox=list(src.bounds),
    )
    res = float(abs(src.transform.a))
    rbands = []
    for i in range(src.count):
        rbands.append(
            RasterBand.create(
                data_type=src.dtypes[i],
                nodata=src.nodata,
                scale=scale_offset[0] if scale_offset else float(src.scales[i]),
                offset=scale_offset[1] if scale_offset else float(src.offsets[i]),
                spatial_resolution=res,
            )
        )
    RasterExtension.ext(asset).apply(rbands)
    EOExtension.ext(asset).apply(
        bands=[
            Band.create(name=band_names[i], common_name=common_names[i]) for i in range(src.count)
        ]
    )
    return asset


def _item_geometry(src: Any) -> tuple[dict[str, Any], list[float]]:
    from shapely.geometry import mapping

    from rsia_geo._geo import window_footprint

    footprint = window_footprint(src.crs, src.transform, 0, 0, src.width, src.height)
    return mapping(footprint), list(footprint.bounds)


def item_from_raster(
    path: PathLike,
    *,
    item_id: str | None = None,
    datetime: _dt.datetime | None = None,
    default_datetime: _dt.datetime | None = None,
    asset_key: str = "image",
    properties: Mapping[str, Any] | None = None,
    platform: str | None = None,
) -> pystac.Item:
    """Build a STAC Item for one local raster file (one asset holding all its bands).

    Args:
        path: The raster file.
        item_id: Item id; defaults to the file stem.
        datetime: Acquisition time; when None it is read from sidecar metadata or a YYYYMMDD
            in the file name.
        default_datetime: Used when ``datetime`` is None and the file carries no date.
        asset_key: Key of the raster asset.
        properties: Extra Item properties.
        platform: STAC ``platform`` (e.g. ``"naip"``) when the file's metadata names none
            (Landsat metadata beside the file names its spacecraft).

    Returns:
        The Item, with an absolute asset href (relative once saved in a catalog).

    Raises:
        RasterError: The file is missing, unreadable or has no CRS.
        CatalogError: No acquisition date could be found and none was given.
    """
    import pystac

    p = Path(path).resolve()
    with _open_raster(p) as src:
        names = [f"b{i + 1}" for i in range(src.count)]
        asset = _asset_for(src, str(p), _band_common_names(src, None), names, ["data"])
        if src.count >= 3 and [c.name for c in src.colorinterp[:3]] == ["red", "green", "blue"]:
            asset.roles = ["data", "visual"]
        geometry, bbox = _item_geometry(src)
    item = pystac.Item(
        id=item_id or p.stem,
        geometry=geometry,
        bbox=bbox,
        datetime=_read_datetime(p, datetime, default_datetime),
        properties={**_sensor_properties(p, platform), **(properties or {})},
    )
    item.add_asset(asset_key, asset)
    _declare_extensions(item)
    return item


def item_from_band_files(
    files: Mapping[str, PathLike],
    *,
    item_id: str,
    datetime: _dt.datetime | None = None,
    default_datetime: _dt.datetime | None = None,
    properties: Mapping[str, Any] | None = None,
    platform: str | None = None,
) -> pystac.Item:
    """Build a multi-asset STAC Item from one single-band file per band (Landsat, Sentinel-2).

    Args:
        files: Asset key -> file. Keys that are eo common names (``red``, ``nir08``...) are used
            as the band's common name; band-file names such as ``*_SR_B4.TIF`` are recognised too.
        item_id: Item id.
        datetime: Acquisition time; when None it is read from metadata or the file names.
        default_datetime: Used when ``datetime`` is None and the files carry no date.
        properties: Extra Item properties.
        platform: STAC ``platform`` when the files' metadata names none.

    Returns:
        The Item; its geometry is the union of the band files' footprints.

    Raises:
        CatalogError: ``files`` is empty or no acquisition date could be found.
        RasterError: A file is missing, unreadable or has no CRS.
    """
    import pystac
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    if not files:
        raise CatalogError("files is empty; pass {asset_key: path} for at least one band")
    footprints = []
    assets: dict[str, pystac.Asset] = {}
    first: Path | None = None
    for key, fpath in files.items():
        p = Path(fpath).resolve()
        first = first or p
        match = _BAND_FILE.match(p.stem)
        band_id = match.group("band").upper() if match else key
        common = _LANDSAT_OLI.get(band_id) or _SENTINEL2.get(band_id)
        if common is None and key in set(_LANDSAT_OLI.values()) | set(_SENTINEL2.values()):
            common = key
        with _open_raster(p) as src:
            if src.count != 1:
                raise RasterError(
                    f"band file {str(p)!r} has {src.count} bands; item_from_band_files expects "
                    "one band per file (use item_from_raster for multi-band files)"
                )
            assets[key] = _asset_for(
                src,
                str(p),
                [common],
                [band_id],
                ["data", "reflectance"],
                scale_offset=_landsat_scale_offset(p, band_id),
            )
            geometry, _ = _item_geometry(src)
            footprints.append(shape(geometry))
    geom = unary_union(footprints)
    assert first is not None
    item = pystac.Item(
        id=item_id,
        geometry=mapping(geom),
        bbox=list(geom.bounds),
        datetime=_read_datetime(first, datetime, default_datetime),
        properties={**_sensor_properties(first, platform), **(properties or {})},
    )
    for key, asset in assets.items():
        item.add_asset(key, asset)
    _declare_extensions(item)
    return item


def _declare_extensions(item: pystac.Item) -> None:
    from pystac.extensions.eo import EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    for ext in (ProjectionExtension, RasterExtension, EOExtension):
        ext.add_to(item)


def _group_sources(sources: Iterable[PathLike]) -> list[tuple[str, dict[str, Path]]]:
    """Expand folders and group per-band files of one scene (``<stem>_B<n>``) into one item."""
    files: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in RASTER_SUFFIXES))
        elif p.exists():
            files.append(p)
        else:
            raise CatalogError(f"source {str(p)!r} does not exist; pass raster files or folders")
    groups: dict[str, dict[str, Path]] = {}
    singles: list[tuple[str, dict[str, Path]]] = []
    for f in files:
        m = _BAND_FILE.match(f.stem)
        if m:
            band = m.group("band").upper()
            key = _LANDSAT_OLI.get(band) or _SENTINEL2.get(band) or band.lower()
            group = groups.setdefault(m.group("stem"), {})
            if key in group:  # two bands with one common name (Sentinel-2 red edge)
                key = band.lower()
            group[key] = f
        else:
            singles.append((f.stem, {"image": f}))
    out = singles + [(stem, g) for stem, g in groups.items()]
    out.sort(key=lambda t: t[0])
    ids = [i for i, _ in out]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise CatalogError(
            f"several rasters would get the same item id {sorted(dupes)!r}; "
            "rename them or build the catalog from separate folders"
        )
    return out


# Long (~95 lines): most of it is the docstring and argument checks of a public entry point;
# the per-raster work already lives in item_from_raster / item_from_band_files.
def build_catalog(
    sources: Iterable[PathLike],
    out_dir: PathLike,
    *,
    catalog_id: str = "rsia-catalog",
    description: str = "Catalog of local rasters built by rsia_geo",
    default_datetime: _dt.datetime | None = None,
    copy_assets: bool = False,
    on_error: str = "raise",
    items: Iterable[pystac.Item] = (),
    platform: str | None = None,
) -> pystac.Catalog:
    """Build and save a self-contained STAC catalog from local raster files and folders.

    Files named ``<scene>_B<n>`` / ``<scene>_SR_B<n>`` in one scene become one multi-asset
    Item (asset keys are eo common names); every other raster becomes a one-asset Item.

    Args:
        sources: Raster files and/or folders (searched recursively for .tif/.tiff/.jp2/.img/.vrt).
        out_dir: Folder to write ``catalog.json`` and the item folders into.
        catalog_id: Catalog id.
        description: Catalog description.
        default_datetime: Acquisition time for rasters whose metadata and names carry none.
        copy_assets: Copy each raster into its item folder, so the catalog folder is portable
            alone. Otherwise hrefs are relative paths to the original files.
        on_error: ``"raise"`` to stop at the first bad raster, ``"skip"`` to log and skip it
            (the skipped files are listed in the catalog's ``rsia:skipped`` field).
        items: Existing STAC Items (e.g. read with :func:`open_stac`) to add as they are;
            their asset hrefs are resolved against their own location first.
        platform: STAC ``platform`` of the rasters whose metadata names none (e.g.
            ``"naip"``), so searches can filter and group by sensor.

    Returns:
        The saved catalog.

    Raises:
        EmptyCatalogError: No raster was found (or all were skipped).
        RasterError: A raster is unreadable or has no CRS (with ``on_error="raise"``).
        CatalogError: Bad arguments, or a raster without a date and no ``default_datetime``.
    """
    import pystac

    if on_error not in ("raise", "skip"):
        raise CatalogError(f"on_error={on_error!r}; use 'raise' or 'skip'")
    groups = _group_sources(sources)
    extra = [i.clone() for i in items]
    if not groups and not extra:
        raise EmptyCatalogError("no raster files (.tif, .tiff, .jp2, .img, .vrt) in the sources")
    catalog = pystac.Catalog(id=catalog_id, description=description)
    for item in extra:
        for asset in item.assets.values():
            asset.href = asset.get_absolute_href() or asset.href
        item.clear_links()
        catalog.add_item(item)
    skipped = _add_raster_items(catalog, groups, default_datetime, platform, on_error)
    if not list(catalog.get_items()):
        raise EmptyCatalogError(f"every raster was skipped: {skipped!r}")
    if skipped:
        catalog.extra_fields["rsia:skipped"] = skipped
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise CatalogError(
            f"output {str(out_dir)!r} is a file; the catalog is written into a folder: pass a "
            "folder path (it is created)"
        )
    # pystac takes a root with a dot in its last name ("my_catalog.v2") for a file and writes
    # into its parent; naming the root file itself leaves no doubt
    catalog.normalize_hrefs(str(out / "catalog.json"))
    if copy_assets:
        _copy_assets(catalog)
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return catalog


def _add_raster_items(
    catalog: pystac.Catalog,
    groups: list[tuple[str, dict[str, Path]]],
    default_datetime: _dt.datetime | None,
    platform: str | None,
    on_error: str,
) -> list[dict[str, str]]:
    """Add one Item per raster (or band-file group); return the skipped ones with reasons."""
    skipped: list[dict[str, str]] = []
    for item_id, group in groups:
        try:
            if list(group) == ["image"]:
                item = item_from_raster(
                    group["image"],
                    item_id=item_id,
                    default_datetime=default_datetime,
                    platform=platform,
                )
            else:
                item = item_from_band_files(
                    group, item_id=item_id, default_datetime=default_datetime, platform=platform
                )
        except (RasterError, CatalogError) as exc:
            if on_error == "raise":
                raise
            logger.warning("skipping %s: %s", item_id, exc)
            skipped.append({"item": item_id, "reason": str(exc)})
            continue
        catalog.add_item(item)
    return skipped


def _copy_assets(catalog: pystac.Catalog) -> None:
    """Copy every asset beside its Item's JSON (a portable catalog folder)."""
    for item in catalog.get_items():
        item_dir = Path(item.get_self_href() or "").parent
        item_dir.mkdir(parents=True, exist_ok=True)
        for asset in item.assets.values():
            src_path = Path(asset.get_absolute_href() or "")
            dst = item_dir / src_path.name
            if src_path.resolve() != dst.resolve():
                shutil.copy2(src_path, dst)
            asset.href = str(dst)


# --------------------------------------------------------------------------------------------
# Opening and searching
# --------------------------------------------------------------------------------------------


def open_stac(source: PathLike | Mapping[str, Any]) -> Any:
    """Open a STAC Catalog, Collection, Item or ItemCollection from a path, URL or dict.

    Args:
        source: Path or URL of a STAC JSON document, or the parsed document.

    Returns:
        A pystac Catalog, Collection, Item or ItemCollection.

    Raises:
        CatalogError: The document is missing or is not STAC.
    """
    import pystac

    try:
        if isinstance(source, Mapping):
            data = dict(source)
        else:
            href = str(source)
            if "://" not in href and not Path(href).exists():
                raise CatalogError(f"STAC document {href!r} does not exist; check the path")
            if "://" not in href and Path(href).is_dir():
                href = str(Path(href) / "catalog.json")
                if not Path(href).exists():
                    raise CatalogError(
                        f"folder {str(source)!r} has no catalog.json; pass the STAC JSON file"
                    )
            obj = pystac.read_file(href)
            return obj
        stac_type = data.get("type")
        if stac_type == "FeatureCollection":
            return pystac.ItemCollection.from_dict(data)
        if stac_type == "Feature":
            return pystac.Item.from_dict(data)
        if stac_type == "Collection":
            return pystac.Collection.from_dict(data)
        if stac_type == "Catalog":
            return pystac.Catalog.from_dict(data)
        raise CatalogError(f"not a STAC document: type={stac_type!r}")
    except pystac.STACError as exc:
        raise CatalogError(f"cannot read STAC from {source!r}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{source!r} is not valid JSON: {exc}") from exc


def iter_items(source: Any) -> Iterator[pystac.Item]:
    """Yield the Items of a catalog, collection, item collection, item, or an iterable of them.

    Args:
        source: A path/URL/dict (opened with :func:`open_stac`), a pystac object, or an
            iterable of Items.

    Yields:
        pystac Items.

    Raises:
        EmptyCatalogError: The source holds no Item.
    """
    import pystac

    if isinstance(source, (str, Path, Mapping)):
        source = open_stac(source)
    if isinstance(source, pystac.Item):
        items: Iterable[pystac.Item] = [source]
    elif isinstance(source, pystac.Catalog):  # Collection is a Catalog
        items = source.get_items(recursive=True)
    elif isinstance(source, pystac.ItemCollection):
        items = iter(source)
    else:
        items = source
    n = 0
    it = iter(items)
    while True:
        try:
            item = next(it)
        except StopIteration:
            break
        except (pystac.STACError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            # a linked item file that is corrupt or not STAC: pystac's own error names no file
            raise CatalogError(
                f"cannot read an item of {_describe_source(source)} ({type(exc).__name__}: "
                f"{exc}); fix or remove the item's JSON file, or rebuild the catalog"
            ) from exc
        except OSError as exc:
            raise CatalogError(
                f"cannot read an item of {_describe_source(source)}: {exc}; check the files"
            ) from exc
        n += 1
        yield item
    if n == 0:
        raise EmptyCatalogError(f"{_describe_source(source)} holds no STAC Item")


def _describe_source(source: Any) -> str:
    href = getattr(source, "get_self_href", None)
    where = href() if callable(href) else None
    return repr(where) if where else repr(source)[:200]


def search_stac(
    url: str,
    *,
    bbox: BBox | None = None,
    datetime: str | None = None,
    collections: Sequence[str] | None = None,
    query: Mapping[str, Any] | None = None,
    max_items: int | None = 100,
    client: Any = None,
) -> list[pystac.Item]:
    """Search a STAC API with pystac-client.

    Args:
        url: Root URL of the STAC API.
        bbox: ``(minx, miny, maxx, maxy)`` in lon/lat.
        datetime: A STAC datetime or interval, e.g. ``"2020-01-01/2020-12-31"``.
        collections: Collection ids to search.
        query: STAC API query extension filters, e.g. ``{"eo:cloud_cover": {"lt": 10}}``.
        max_items: Stop after this many items (None for all).
        client: An already opened ``pystac_client.Client`` (tests, custom StacApiIO).

    Returns:
        The matching Items.

    Raises:
        CatalogError: The API cannot be reached or rejects the search.
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    from rsia_geo._geo import validate_bbox

    if bbox is not None:
        bbox = validate_bbox(bbox)
    if max_items is not None and max_items <= 0:
        raise CatalogError(f"max_items={max_items!r} must be positive (or None for all)")
    try:
        api = client or Client.open(url)
        search = api.search(
            bbox=bbox,
            datetime=datetime,
            collections=list(collections) if collections else None,
            query=dict(query) if query else None,
            max_items=max_items,
        )
        return list(search.items())
    except (APIError, OSError) as exc:
        raise CatalogError(f"STAC API search at {url!r} failed: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Choosing bands
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandSelection:
    """Which asset and band index supply each requested band.

    Attributes:
        bands: The requested band names, in output order.
        sources: ``(asset_key, band_index)`` per requested band; band indexes are 1-based.
    """

    bands: tuple[str, ...]
    sources: tuple[tuple[str, int], ...]

    @property
    def asset_keys(self) -> tuple[str, ...]:
        """Distinct asset keys in first-use order."""
        return tuple(dict.fromkeys(k for k, _ in self.sources))


def _asset_bands(asset: pystac.Asset, item: pystac.Item) -> list[dict[str, Any]]:
    bands = asset.extra_fields.get("eo:bands")
    if bands is None and "bands" in asset.extra_fields:  # STAC 1.1 unified bands
        bands = [
            {"name": b.get("name"), "common_name": b.get("eo:common_name")}
            for b in asset.extra_fields["bands"]
        ]
    if bands is None and len(item.assets) == 1:  # STAC 1.0 items that list bands per item
        bands = item.properties.get("eo:bands")
    return list(bands or [])


def _asset_resolution(asset: pystac.Asset, item: pystac.Item) -> float:
    rb = asset.extra_fields.get("raster:bands") or []
    for b in rb:
        if b.get("spatial_resolution"):
            return float(b["spatial_resolution"])
    tr = asset.extra_fields.get("proj:transform") or item.properties.get("proj:transform")
    if tr:
        return float(abs(tr[0]))
    gsd = asset.extra_fields.get("gsd") or item.properties.get("gsd")
    return float(gsd) if gsd else float("inf")


def _is_raster_asset(asset: pystac.Asset) -> bool:
    roles = set(asset.roles or [])
    if roles and roles <= _NON_DATA_ROLES:
        return False
    media = (asset.media_type or "").lower()
    href = asset.href.lower().split("?")[0]
    return "tiff" in media or "jp2" in media or href.endswith(RASTER_SUFFIXES)


def _describe_assets(item: pystac.Item) -> str:
    parts = []
    for key, asset in item.assets.items():
        if not _is_raster_asset(asset):
            continue
        names = [b.get("common_name") or b.get("name") for b in _asset_bands(asset, item)]
        parts.append(f"{key}{names if names else ''}")
    return ", ".join(parts) or "(no raster assets)"


_BAND_ALIASES = {"nir": ("nir08", "nir09")}
"""Fallback eo common names per requested name (tried in order when the name itself is absent)."""


def _find_band(
    candidates: Sequence[tuple[str, pystac.Asset]], item: pystac.Item, w: str
) -> tuple[str, int] | None:
    """``(asset_key, band_index)`` of band ``w`` (common name, name, or one-band asset key)."""
    for key, asset in candidates:
        blist = _asset_bands(asset, item)
        for i, b in enumerate(blist):
            if w in ((b.get("common_name") or "").lower(), (b.get("name") or "").lower()):
                return key, i + 1
        if key.lower() == w and len(blist) <= 1:
            return key, 1
    return None


def select_bands(
    item: pystac.Item,
    bands: Sequence[str] | None = None,
    *,
    assets: Sequence[str] | None = None,
) -> BandSelection:
    """Choose, for each requested band, the asset and band index that supply it.

    With the default ``bands`` (red, green, blue), an asset with role ``visual`` holding those
    three bands is used when present; otherwise each band is looked up by eo common name,
    band name or asset key across the item's data assets, preferring the finest resolution.

    Args:
        item: The STAC Item.
        bands: Band names (eo common names such as ``red``/``nir``, or band names such as
            ``B04``). Defaults to red, green, blue.
        assets: Restrict the search to these asset keys (e.g. ``["visual"]``).

    Returns:
        The selection.

    Raises:
        AssetSelectionError: A band cannot be found; the message lists the item's assets and
            their bands.
    """
    wanted = tuple(b.lower() for b in (bands or DEFAULT_BANDS))
    if not wanted:
        raise AssetSelectionError("bands is empty; name at least one band, e.g. ['red']")
    if assets is not None:
        missing = [a for a in assets if a not in item.assets]
        if missing:
            raise AssetSelectionError(
                f"item {item.id!r} has no asset {missing!r}; its raster assets are: "
                f"{_describe_assets(item)}"
            )
    keys = list(assets) if assets is not None else list(item.assets)
    candidates = [(k, item.assets[k]) for k in keys if _is_raster_asset(item.assets[k])]
    candidates.sort(key=lambda kv: _asset_resolution(kv[1], item))

    # 1) one visual asset that covers everything
    for key, asset in candidates:
        if "visual" not in (asset.roles or []) and key != "visual":
            continue
        names = [
            (b.get("common_name") or b.get("name") or "").lower() for b in _asset_bands(asset, item)
        ]
        if not names and wanted == DEFAULT_BANDS:
            names = list(DEFAULT_BANDS)  # a visual asset without band metadata is RGB
        if all(w in names for w in wanted):
            return BandSelection(wanted, tuple((key, names.index(w) + 1) for w in wanted))

    # 2) band by band across data assets
    sources: list[tuple[str, int]] = []
    for w in wanted:
        found: tuple[str, int] | None = None
        # "nir" also finds the narrow NIR band of sensors that only have one (Landsat's nir08)
        for name in (w, *_BAND_ALIASES.get(w, ())):
            found = _find_band(candidates, item, name)
            if found:
                break
        if found is None:
            bands = [
                (b.get("common_name") or b.get("name") or key)
                for key, asset in candidates
                for b in (_asset_bands(asset, item) or [{}])
            ]
            gray = (
                f"; a single-band (grayscale or panchromatic) image is indexed as gray RGB "
                f"with bands=[{bands[0]!r}] * 3 (CLI: --bands {' '.join([bands[0]] * 3)})"
                if len(bands) == 1
                else ""
            )
            raise AssetSelectionError(
                f"item {item.id!r} has no band {w!r}; its raster assets are: "
                f"{_describe_assets(item)}. Pass bands= with names from that list "
                f"(or assets=[...] to pick an asset){gray}"
            )
        sources.append(found)
    return BandSelection(wanted, tuple(sources))
