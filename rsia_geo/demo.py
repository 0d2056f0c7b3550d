"""The main job on the bundled sample data (``rsia-geo demo``, the README's first command).

1. builds a STAC catalog of the sample rasters (NAIP, an aerial COG, Landsat) and of the UCM
   mosaic (real UC Merced validation images at *invented* locations, labelled so);
2. indexes its tiles with the shipped starter checkpoint into an embedded Qdrant folder;
3. speaks each query with offline speech synthesis (espeak-ng, a voice never used in training),
   or uses the pre-recorded clip shipped for it when no engine is installed;
4. searches everywhere and inside a region (the west half of the mosaic), prints the ranked hits
   with the scene class of the mosaic cell they fall on, and writes GeoJSON and an HTML map.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_QUERIES", "index_folder", "run_demo"]

DEFAULT_QUERIES = ("boats docked at a harbour", "an airplane parked at the airport")
_QUERY_VOICE = "en-gb-scotland+f2"  # an espeak-ng speaker held out of training


def _slug(text: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())[:40]


def _speak(text: str, out: Path, shipped: Path) -> tuple[Path, str]:
    from rsia_geo.training.synthesis import Voice, available_engines, synthesize

    if "espeak-ng" in available_engines():
        return synthesize(text, Voice("espeak-ng", _QUERY_VOICE), out), f"espeak-ng {_QUERY_VOICE}"
    clip = shipped / f"{_slug(text)}.wav"
    if clip.exists():
        shutil.copy(clip, out)
        return out, "pre-recorded clip (no speech engine installed)"
    raise FileNotFoundError(
        f"no speech engine to voice {text!r} and no shipped clip; apt-get install espeak-ng"
    )


def _explain_skipped(skipped: list[Any]) -> None:
    """Say once, plainly, which rasters were left out and why (not one line per raster)."""
    import re

    coarse: list[str] = []
    other: list[str] = []
    for s in skipped:
        if s.kind != "item":
            continue  # edges and levels smaller than a tile: normal, not worth a line
        m = re.search(r"would be (\d+) px of ([\d.]+) m", s.reason)
        if "too coarse" in s.reason and m:
            coarse.append(f"{s.item_id} ({float(m.group(2)):.0f} m/px)")
        else:
            other.append(f"{s.item_id}: {s.reason}")
    if coarse:
        print(
            f"      left out {len(coarse)} rasters too coarse for the starter model's 78 m "
            "scenes (it learned them from 0.3 m/px aerial images; a 78 m tile would be 1-4 of "
            "their pixels): " + ", ".join(coarse) + ". Such imagery needs larger tiles, in an "
            "index of its own (e.g. rsia-geo index CATALOG --size 64 --units px --location "
            "coarse_index), and a model trained at that scale to be searched well."
        )
    for line in other:
        print(f"      skipped {line}")


def _cell_classes(cells_path: Path) -> Any:
    import geopandas as gpd

    return gpd.read_file(cells_path)


def index_folder(workdir: Path, model: Any) -> Path:
    """The demo's index folder for a model: one per model id and version.

    An index records its model and refuses others, so a demo run after an upgrade of the
    starter builds its own index beside the old one instead of failing on it.

    Args:
        workdir: The demo's output folder.
        model: The loaded model.

    Returns:
        ``workdir / "index-<model id>-<version>"``.
    """
    return workdir / f"index-{model.config.model_id}-{model.config.version}"


def _print_hits(hits: Any, cells: Any) -> list[dict[str, Any]]:
    """Print each hit with the scene class of the mosaic cell under it; the rows for demo.json."""
    found = []
    for _, h in hits.iterrows():
        c = h.geometry.centroid
        inside = cells[cells.contains(c)]
        cls = inside.iloc[0]["class"] if len(inside) else "-"
        found.append(
            {
                "rank": int(h["rank"]),
                "tile_id": h["tile_id"],
                "item_id": h["item_id"],
                "class": cls,
                "level": int(h["level"]),
                "lon": c.x,
                "lat": c.y,
                "score": float(h["score"]),
            }
        )
        print(
            f"      {int(h['rank'])}. {cls:18s} score {h['score']:.3f}  "
            f"{h['item_id']} L{h['level']} ({c.x:.5f}, {c.y:.5f})"
        )
    return found


# Over 80 lines with its docstring: the demo's four printed steps (catalog, index, queries,
# outputs) in order, each a few library calls; splitting it would only move the narration.
def run_demo(workdir: Path, *, queries: list[str] | None = None, k: int = 5) -> int:
    """Run the main job end to end on the sample data.

    Args:
        workdir: Output folder (catalog, index, query clips, hits, maps).
        queries: What to say; defaults to :data:`DEFAULT_QUERIES`.
        k: Hits printed per search.

    Returns:
        0 on success.
    """
    import time

    from rsia_geo import build_catalog, open_stac
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import DEFAULT_SPEC, build_index, load_model, search
    from rsia_geo.results import write_hits, write_map
    from rsia_geo.sample_data import sample_data_dir

    t_all = time.perf_counter()
    samples = sample_data_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    cat_dir = workdir / "catalog"
    print(f"[1/4] STAC catalog of the sample rasters in {samples}")
    if cat_dir.exists():
        shutil.rmtree(cat_dir)
    mosaic_item = open_stac(samples / "mosaic" / "item.json")
    catalog = build_catalog(
        [samples / "naip", samples / "aerial", samples / "landsat"],
        cat_dir,
        catalog_id="rsia-sample",
        copy_assets=True,
        items=[mosaic_item],
        default_datetime=_dt.datetime(2020, 1, 1, tzinfo=_dt.UTC),
    )
    print(f"      {len(list(catalog.get_items()))} items -> {cat_dir / 'catalog.json'}")

    model = load_model(None)
    # tiles of ~78 m, the ground size of the UCM training images (256 px at 0.3 m), read at
    # 256 px; level 2 covers 156 m. Rasters too coarse for that are skipped with a reason.
    spec = DEFAULT_SPEC
    index_dir = index_folder(workdir, model)
    print(
        f"[2/4] indexing with {model.config.model_id} v{model.config.version} "
        f"(78 m tiles at levels 1 and 2) into the embedded Qdrant folder {index_dir}"
    )
    with TileIndex(index_dir) as idx:
        report = build_index(catalog, idx, model, spec=spec, progress=False)
        print(
            f"      {report.indexed} new tiles, {report.already_present} already indexed, "
            f"{idx.count()} in the index ({report.seconds:.1f} s)"
        )
        _explain_skipped(report.skipped)

        cells = _cell_classes(samples / "mosaic" / "cells.geojson")
        minx, miny, maxx, maxy = cells.total_bounds
        west_half = (float(minx), float(miny), float((minx + maxx) / 2), float(maxy))
        results: dict[str, Any] = {}
        for q_i, text in enumerate(queries or list(DEFAULT_QUERIES)):
            wav, how = _speak(text, workdir / f"query_{q_i + 1}.wav", samples / "queries")
            print(f'[3/4] query {q_i + 1}: "{text}" spoken by {how} -> {wav}')
            for label, bbox in (("everywhere", None), ("west half of the mosaic", west_half)):
                hits = search(wav, idx, model, bbox=bbox, k=k, transcribe=bbox is None)
                t = hits.attrs["timings"]
                heard = hits.attrs["query"].get("heard")
                if heard and bbox is None:  # said once per query (both searches hear it)
                    weight = hits.attrs["query"].get("text_weight")
                    route = f"; text route weight {weight:g}" if weight is not None else ""
                    print(f'      heard: "{heard}" (Whisper tiny.en{route})')
                print(
                    f"[4/4] {label}: {len(hits)} hits in {t['total_ms']:.0f} ms "
                    f"(search stage {t['search_ms']:.1f} ms)"
                )
                found = _print_hits(hits, cells)
                stem = f"query_{q_i + 1}_{'all' if bbox is None else 'region'}"
                write_hits(hits, workdir / f"{stem}.geojson")  # with the query as metadata
                write_map(hits, workdir / f"{stem}.html", bbox=bbox)  # chips in the popups
                results[stem] = {"query": text, "bbox": bbox, "hits": found, "timings": t}
    (workdir / "demo.json").write_text(json.dumps(results, indent=2))
    print(
        f"done in {time.perf_counter() - t_all:.0f} s: hits as GeoJSON and HTML maps in {workdir}"
    )
    return 0
