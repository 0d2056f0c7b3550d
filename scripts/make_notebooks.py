"""Write the notebooks in ``notebooks/`` from the cell sources below (one place to edit them).

Usage:
    python scripts/make_notebooks.py            # write the .ipynb files (no outputs)
    python scripts/make_notebooks.py --execute  # write and execute them in place (real outputs)
    python scripts/make_notebooks.py --check    # fail when a committed notebook's code differs

The first code cell of each notebook is tagged ``parameters`` (papermill convention) and holds
the small settings CI runs with; raise them for real work.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"

Cell = tuple[str, str]


def md(text: str) -> Cell:
    return ("markdown", text.strip("\n"))


def code(text: str) -> Cell:
    return ("code", text.strip("\n"))


def params(text: str) -> Cell:
    return ("parameters", text.strip("\n"))


QUICKSTART: list[Cell] = [
    md("""
# Quickstart: spoken search over georeferenced tiles, restricted to a region

This notebook runs the whole pipeline on the sample data shipped with `rsia_geo`:

1. build a STAC catalog of local GeoTIFFs (NAIP, an aerial COG, Landsat, and a mosaic of real
   UC Merced validation images placed at *invented* locations, labelled so);
2. cut it into georeferenced tiles and index them with the shipped starter checkpoint into an
   embedded Qdrant folder (no server);
3. speak a query with offline speech synthesis;
4. search inside a region and look at the hits as a table with thumbnails, on a map, as chips.
"""),
    params("""
from pathlib import Path

WORKDIR = Path("rsia_work/quickstart")  # everything this notebook writes
QUERY_TEXT = "an airplane parked at the airport"
K = 8  # hits to show
"""),
    code("""
import datetime as dt
import shutil

import rsia_geo
from rsia_geo import TileIndex, build_catalog, build_index, open_stac, search
from rsia_geo.jupyter import hits_map, hits_table
from rsia_geo.sample_data import sample_data_dir

samples = sample_data_dir()
WORKDIR.mkdir(parents=True, exist_ok=True)
print("rsia_geo", rsia_geo.__version__, "| sample data in", samples.name)
"""),
    md("""
## 1. A STAC catalog of local rasters

`build_catalog` writes one STAC Item per raster (footprint in lon/lat, projection, bands, date)
into a self-contained catalog. `copy_assets=True` copies the rasters beside the catalog so it
can be moved. The mosaic arrives as a ready-made Item (`items=`).
"""),
    code("""
cat_dir = WORKDIR / "catalog"
if cat_dir.exists():
    shutil.rmtree(cat_dir)
catalog = build_catalog(
    [samples / "naip", samples / "aerial", samples / "landsat"],
    cat_dir,
    copy_assets=True,
    items=[open_stac(samples / "mosaic" / "item.json")],
    default_datetime=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
)
items = list(catalog.get_items())
for it in items:
    print(f"{it.id:45s} {it.datetime:%Y-%m-%d}  bbox {[round(v, 4) for v in it.bbox]}")
"""),
    md("""
## 2. Index the tiles

The default tiling cuts 78 m tiles (the ground size of the model's training images) read at
256 px, plus a 156 m level. Rasters too coarse for that (Landsat at 30-300 m) are skipped with
the reason. Re-running skips what is already stored. Each tile is embedded as the mean over
its 8 rotations and reflections (`image_views="d8"`, the default: imagery has no "up");
`build_index(catalog, index, image_views="single")` embeds each tile once, 8x faster.
"""),
    code("""
from rsia_geo.weights import STARTER

index = TileIndex(WORKDIR / f"index-{STARTER}")  # one per model: an index refuses other models
report = build_index(catalog, index)
print(f"{report.indexed} new tiles, {report.already_present} already indexed, "
      f"{index.count()} in the index, {report.seconds:.1f} s")
for s in report.skipped:
    if s.kind == "item":
        print("skipped", s.item_id, "-", s.reason)
"""),
    md("""
## 3. Speak a query

Any WAV/FLAC/OGG/MP3 clip, bytes or array works. Here espeak-ng voices the text with a speaker
that was never used for training; without a speech engine the pre-recorded clip is used.
"""),
    code("""
from IPython.display import Audio

from rsia_geo.training.synthesis import Voice, available_engines, synthesize

wav = WORKDIR / "query.wav"
if "espeak-ng" in available_engines():
    synthesize(QUERY_TEXT, Voice("espeak-ng", "en-gb-scotland+f2"), wav)
else:
    shutil.copy(samples / "queries" / "an_airplane_parked_at_the_airport.wav", wav)
Audio(str(wav))
"""),
    md("""
## 4. Search inside a region

The region here is the west half of the mosaic. A tile is in the region when its footprint's
interior overlaps it (not just its centre): Qdrant filters on the footprint's bounding box, then
shapely checks the exact footprint. `rescore=True` (default) reorders the candidates with the
exact IA pairwise score; `rerank=True` adds the BSWFR mutual-rank rerank. The query is heard
twice: by the audio route, and as the transcript Whisper's recogniser makes of it, embedded by
the starter's text route; both are fused (`attrs["query"]["text_weight"]`; `text_weight=0`
searches with the audio route alone).
"""),
    code("""
import geopandas as gpd
from shapely.geometry import box

cells = gpd.read_file(samples / "mosaic" / "cells.geojson")  # the scene class of each cell
minx, miny, maxx, maxy = cells.total_bounds
region = (minx, miny, (minx + maxx) / 2, maxy)

hits = search(wav, index, bbox=region, k=K, transcribe=True)
assert len(hits) == K and all(g.intersects(box(*region)) for g in hits.geometry)
print("heard:", hits.attrs["query"].get("heard"))  # what the speech recogniser understood
print("text route weight:", hits.attrs["query"].get("text_weight"))
hits["cell_class"] = [
    (lambda m: m.iloc[0]["class"] if len(m) else "-")(cells[cells.contains(g.centroid)])
    for g in hits.geometry
]
print("timings (ms):", hits.attrs["timings"])
hits_table(
    hits, size=64, columns=("score", "group_size", "cell_class", "item_id", "level")
)
"""),
    md("""
The hits on a map, coloured by score, with the query region dashed:
"""),
    code("""
hits_map(hits)
"""),
    md("""
To share the result, `write_map` writes one HTML file with every hit's picture in its popup
(no internet needed but for the basemap), and `write_hits` a GeoJSON/GeoPackage/GeoParquet that
carries the query (what was heard, region, model) as metadata:
"""),
    code("""
from rsia_geo.results import write_hits, write_map

print(write_map(hits, WORKDIR / "hits.html"), write_hits(hits, WORKDIR / "hits.gpkg"))
"""),
    md("""
### One hit per place, and typed queries

The default tiling overlaps tiles by half at two levels, so one place is seen by several tiles:
search groups them (`group=True`, the default), keeps the best and reports how many tiles
agreed (`group_size`) and their union footprint. When you cannot speak, type: the text goes
through the text route, and is also spoken by the bundled speech synthesis for the audio route.
"""),
    code("""
if "espeak-ng" in available_engines():
    typed = search(text=QUERY_TEXT, index=index, bbox=region, k=K)
    print(typed.attrs["query"])
    print(typed[["rank", "score", "group_size", "item_id", "level"]].head().to_string(index=False))
"""),
    md("""
### More like this, and refining with marks

Imagery is a query too: `example=` takes a hit (or its `tile_id`), pixels, or a polygon (the
tiles under it), and leaves the example's own place out. Marking hits relevant / not relevant
moves any query (spoken, typed or example) toward what you want (Rocchio by default, measured
in docs/benchmarks.md). Here the marks come from the mosaic's scene classes, as an analyst's
"yes" and "no" would.
"""),
    code("""
def classes(found):
    return [
        (lambda m: m.iloc[0]["class"] if len(m) else "-")(cells[cells.contains(g.centroid)])
        for g in found.geometry
    ]

example = hits.iloc[0]
like = search(example=example, index=index, k=K)
like["cell_class"] = classes(like)
yes = like[like.cell_class == example["cell_class"]]
no = like[like.cell_class != example["cell_class"]]
refined = search(example=example, relevant=yes, not_relevant=no, index=index, k=K)
refined["cell_class"] = classes(refined)
print("example:", example["cell_class"], "| query:", refined.attrs["query"])
for name, found in (("more like this", like), ("refined", refined)):
    same = sum(c == example["cell_class"] for c in found.cell_class)
    print(f"{name:15s} {same}/{len(found)} of the same class:", list(found.cell_class))
"""),
    md("""
`rsia_geo.similar.same_place` lists a hit's place on other dates (one tile per acquisition,
with the similarity of each date's embedding to the hit's). The sample data has one date per
place, so the table is empty here; with a catalog of revisits it answers "what did it look like
before?". `platform=` narrows any search to sensors (STAC `platform`).
"""),
    code("""
from rsia_geo.similar import same_place

print(len(same_place(example, index)), "other acquisitions of this place in the sample data")
"""),
    md("""
## 5. Pixels and exports

`read_chip` reads a hit's pixels back from the raster (a windowed read); hits export as GeoJSON
or GeoParquet for any GIS.
"""),
    code("""
import matplotlib.pyplot as plt

from rsia_geo import read_chip

fig, axes = plt.subplots(1, 4, figsize=(9, 2.6), dpi=72)
for ax, (_, h) in zip(axes, hits.head(4).iterrows()):
    ax.imshow(read_chip(h).transpose(1, 2, 0))
    ax.set_title(f"#{h['rank']} {h['cell_class']}\\n{h['score']:.3f}", fontsize=9)
    ax.axis("off")
plt.show()

write_hits(hits, WORKDIR / "hits.geojson")  # with the query, region and model as metadata
write_hits(hits, WORKDIR / "hits.parquet")
print(sorted(p.name for p in WORKDIR.glob("hits.*")))
"""),
    md("""
## 6. The interactive panel

Press *Record* and speak (the browser asks for the microphone), or upload or pick a clip, draw
a rectangle or polygon on the map (or type a bbox), choose `k` and the rerank, and press
*Search*. (The widgets need a live kernel; on a static page you see no
panel.)
"""),
    code("""
from rsia_geo.jupyter import SearchPanel

panel = SearchPanel(index, thumbnails=False)
panel.set_audio(wav.read_bytes(), name="query.wav")
panel
"""),
    code("""
# what pressing "Search" does, with the region typed in the panel's box:
panel.bbox_text.value = ", ".join(f"{v:.6f}" for v in region)
panel_hits = panel.run()
assert list(panel_hits.tile_id) == list(search(wav, index, bbox=region, k=10).tile_id)
print(panel.status.value)
"""),
    code("""
# pick a hit (the list, or a click on the map), then "More like this"; mark hits and "Refine"
panel.pick.value = panel_hits.iloc[0]["tile_id"]
panel.more_like()
panel.mark(True, panel.hits.iloc[0]["tile_id"])
panel.mark(False, panel.hits.iloc[-1]["tile_id"])
panel.refine()
print(panel.status.value)
"""),
    code("""
index.close()
"""),
]

OWN_IMAGERY: list[Cell] = [
    md("""
# Your own imagery: STAC catalogs, bands and multi-scale tiles

Point `RASTERS` at your GeoTIFFs (any CRS, any dtype). This notebook uses the sample NAIP tiles
(RGB + NIR, 0.6 m) and a Landsat 8 scene stored as one file per band, as STAC catalogs of
Landsat and Sentinel-2 are.
"""),
    params("""
from pathlib import Path

from rsia_geo.sample_data import sample_data_dir

RASTERS = sample_data_dir()  # your folder of GeoTIFFs
WORKDIR = Path("rsia_work/own_imagery")
TILE_METRES = 78.0  # ground size of a level-1 tile
"""),
    code("""
import datetime as dt
import shutil

import geopandas as gpd

from rsia_geo import TileIndex, TileSpec, build_catalog, build_index
from rsia_geo.catalog import item_from_raster, select_bands
from rsia_geo.tiles import read_tile, tile_item

WORKDIR.mkdir(parents=True, exist_ok=True)
"""),
    md("""
## 1. One raster -> one STAC Item

The Item carries the footprint in lon/lat (cut at the antimeridian when needed), the projection
(`proj:code`, shape, transform), the bands (`eo:bands` with common names) and the date, read
from metadata or the file name.
"""),
    code("""
naip = item_from_raster(RASTERS / "naip" / "m_4208701_ne_16_060_20200902.tif")
print(naip.id, naip.datetime)
asset = naip.assets["image"]
print({k: v for k, v in asset.extra_fields.items() if k.startswith("proj:")})
print([b.get("common_name") for b in asset.extra_fields["eo:bands"]])
"""),
    md("""
## 2. A folder -> a catalog

Files named `<scene>_SR_B<n>` of one scene become one multi-asset Item whose asset keys are
band common names; the scale/offset of Landsat Collection 2 surface reflectance comes from the
MTL file beside them.
"""),
    code("""
cat_dir = WORKDIR / "catalog"
if cat_dir.exists():
    shutil.rmtree(cat_dir)
catalog = build_catalog(
    [RASTERS / "naip", RASTERS / "aerial", RASTERS / "landsat"], cat_dir,
    default_datetime=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
)
items = {it.id: it for it in catalog.get_items()}
for it in items.values():
    print(f"{it.id:45s} assets: {sorted(it.assets)}")
"""),
    md("""
## 3. Choosing bands

`select_bands` finds each band by common name across the Item's assets (preferring the finest
resolution): natural colour, or NIR false colour for vegetation.
"""),
    code("""
landsat = next(it for it in items.values() if it.id.startswith("LC08"))
print("RGB   :", select_bands(landsat).sources)
print("false :", select_bands(landsat, ["nir", "red", "green"]).sources)
# NAIP's 4th band (NIR) carries no colour name in the file, so it is called b4:
print("NAIP false colour:", select_bands(naip, ["b4", "red", "green"]).sources)
"""),
    md("""
## 4. Multi-scale tiling

Sizes in metres (`units="m"`) give the same ground size whatever the resolution; levels 1, 2
and 4 cover 1x, 2x and 4x that size. Tiles mostly outside the data or nodata are skipped with
their reason. Each tile's footprint is its exact outline in lon/lat:
"""),
    code("""
aerial = items["cogeo"]  # a 1024 px aerial COG at 0.6 m (the NAIP samples are tiny crops)
spec = TileSpec(size=TILE_METRES, units="m", scales=(1, 2, 4), out_size=256)
ts = tile_item(aerial, spec)
tiles = gpd.GeoDataFrame(
    {"level": [t.level for t in ts.tiles], "window": [str(t.window) for t in ts.tiles]},
    geometry=[t.footprint for t in ts.tiles], crs="EPSG:4326",
)
print(tiles.groupby("level").size().rename("tiles").to_dict(), "| skipped:", len(ts.skipped))
tiles.explore(column="level", categorical=True, style_kwds={"fillOpacity": 0.1})
"""),
    code("""
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(9, 3), dpi=72)
for ax, level in zip(axes, (1, 2, 4)):
    t = next(t for t in ts.tiles if t.level == level)
    ax.imshow(read_tile(t, out_size=192)[:3].transpose(1, 2, 0))
    ax.set_title(f"level {level}: {t.window[2]} px of the raster")
    ax.axis("off")
plt.show()
"""),
    md("""
Landsat's 30 m pixels are too coarse for 78 m tiles (under `min_pixels`), so a coarser spec
is needed there; the false-colour bands read as reflectance:
"""),
    code("""
from rsia_geo import RsiaError

try:
    tile_item(landsat, spec)
except RsiaError as exc:  # every rsia_geo error derives from RsiaError and names the fix
    print(type(exc).__name__, ":", exc)
coarse = tile_item(landsat, TileSpec(size=64, scales=(1,)), bands=["nir", "red", "green"])
chip = read_tile(coarse.tiles[len(coarse.tiles) // 2])
print(len(coarse.tiles), "Landsat tiles; chip", chip.shape, "scaling", coarse.tiles[0].scaling.method)
plt.figure(figsize=(3, 3), dpi=72)
plt.imshow(chip.transpose(1, 2, 0)); plt.axis("off"); plt.show()
"""),
    md("""
## 5. Index your catalog

The starter model takes RGB. Restricting to a bbox indexes only the tiles that intersect it.
"""),
    code("""
from rsia_geo.weights import STARTER

with TileIndex(WORKDIR / f"index-{STARTER}") as index:  # one per model (an index refuses others)
    report = build_index(catalog, index, spec=TileSpec(size=TILE_METRES, units="m", scales=(1, 2), out_size=256),
                         bbox=tuple(aerial.bbox))
    print(report.indexed, "tiles indexed,", report.already_present, "already there;",
          len(report.skipped), "skipped (with reasons)")
    assert report.indexed + report.already_present > 0 and not report.failed  # a re-run adds 0
"""),
]

TRAIN: list[Cell] = [
    md("""
# Train and evaluate an ALAC model on spoken captions

1. pick a class-balanced subset of UCM-Captions (real images, human-written captions);
2. voice the captions with offline speech synthesis, varied voices (validation uses speakers
   never heard in training);
3. train briefly, then evaluate: recall@k both ways, recall curves, and the effect of the IA
   rescoring and the BSWFR rerank.

The settings below are tiny so that the notebook runs in a few minutes on 2 CPU cores: the
numbers show the mechanics, not the model's quality. The shipped starter model's full run is in
`docs/model_card.md`.
"""),
    params("""
import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("RSIA_SHARED_DATA", "../../shared/data"))  # has ucm/
WORKDIR = Path("rsia_work/train")
TRAIN_PER_CLASS = 3  # training images per scene class (UCM has 80)
VAL_PER_CLASS = 1  # validation images per class (UCM has 10)
EPOCHS = 4
MODEL = "alac-efficientnet-lite0"
"""),
    code("""
import json
from collections import Counter

import pandas as pd

from rsia_geo.training.evaluate import evaluate
from rsia_geo.training.train import TrainConfig, train
from rsia_geo.training.dataset import read_manifest, voice_captions

WORKDIR.mkdir(parents=True, exist_ok=True)
ucm = json.loads((SHARED_DATA / "ucm" / "captions.json").read_text())
subset = []
for cls in ucm["classes"]:
    for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        rows = [r for r in ucm["images"] if r["class"] == cls and r["split"] == split][:n]
        subset += [dict(r, image=str((SHARED_DATA / "ucm" / r["image"]).resolve())) for r in rows]
(WORKDIR / "captions.json").write_text(json.dumps({"images": subset}))
print(Counter(r["split"] for r in subset), "images;", subset[0]["captions"][0])
"""),
    md("""
## Voicing

Each clip's voice (engine, speaker, speed, pitch) is drawn from a seed and the clip's name, so
re-running resumes and gives the same clips.
"""),
    code("""
manifest = voice_captions(WORKDIR / "captions.json", WORKDIR / "voices", workers=2)
clips = read_manifest(manifest)
print(len(clips), "clips;", Counter(c["split"] for c in clips))
train_voices = {c["speaker"] for c in clips if c["split"] == "train"}
val_voices = {c["speaker"] for c in clips if c["split"] == "val"}
print(len(train_voices), "training voices,", len(val_voices), "validation voices, shared:",
      len(train_voices & val_voices))
from IPython.display import Audio
Audio(str(WORKDIR / "voices" / clips[0]["clip"]))
"""),
    md("""
## Training

The ImageNet EfficientNet-Lite0 backbone is frozen and its tokens are cached (x4 rotations);
RELA, the image head and the audio encoder train with ALAC's loss (triplet + NCE + adaptive
knowledge transfer). Checkpoints, a resumable state and CSV/JSONL logs go to `out_dir`.
"""),
    code("""
run = train(TrainConfig(
    manifest=str(manifest), out_dir=str(WORKDIR / "run"), model=MODEL, epochs=EPOCHS,
    batch_size=32, per_image=5,
))
log = pd.read_csv(WORKDIR / "run" / "log.csv")
log.tail()
"""),
    md("""
Other ways to train (not run here):

- on a GPU, every backbone stage: `TrainConfig(..., freeze_backbone=False, device="cuda",
  workers=8, amp=True)` (`rsia-geo train ... --full-finetune --device cuda --workers 8 --amp`):
  nothing of the images is cached, and each epoch draws new views;
- a new voice side for a model you already index with: `TrainConfig(..., image_from=CHECKPOINT,
  model=...)` (`--image-from CHECKPOINT`): its image side stays frozen, only a fresh audio
  branch trains, and the indexes built with `CHECKPOINT` accept the result (your speakers,
  microphones or language, no re-indexing).
"""),
    code("""
import matplotlib.pyplot as plt

fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3), dpi=72)
log.plot(x="epoch", y=["loss"], ax=a1, title="training loss")
log.plot(x="epoch", y=["cos_mR", "ia_mR"], ax=a2, title="validation mR (cosine, IA)")
plt.show()
"""),
    md("""
## Evaluation

The evaluation reads images and decodes clips from their files (no training caches), so it
measures what serving does. Variants: cosine only, IA pairwise rescoring of the top cosine
candidates, and BSWFR on top.
"""),
    code("""
report = evaluate(run["best_checkpoint"], manifest, split="val", out_dir=WORKDIR / "eval")
table = pd.DataFrame(report["metrics"]).T[["a2i_r1", "a2i_r5", "a2i_r10", "i2a_r1", "i2a_r5", "mR"]]
table.round(1)
"""),
    code("""
from IPython.display import Image
Image(str(WORKDIR / "eval" / "recall.png"))
"""),
    md("""
For comparison, the shipped starter checkpoint (trained on all 1,680 UCM training images with
25,200 clips of 603 voices, its speech encoder pretrained) on the same validation clips. A
gallery of 21 images (one per class) is far easier than the full 210-image validation set: the
model card reports mR 45.8 there.
"""),
    code("""
from rsia_geo.weights import default_checkpoint

starter = evaluate(default_checkpoint(), manifest, split="val")
pd.DataFrame(starter["metrics"]).T[["a2i_r1", "a2i_r5", "a2i_r10", "mR"]].round(1)
"""),
]

SCALING: list[Cell] = [
    md("""
# Scaling out: the same code against a Qdrant server

`TileIndex` picks the deployment at construction; everything else (indexing, search, region
filters, model checks) is the same code:

| deployment | construct | when |
|---|---|---|
| embedded Qdrant Edge folder (default) | `TileIndex("folder")` | one machine, one process, up to millions of tiles |
| qdrant-client local mode | `TileIndex(":memory:", engine="client")` | tests, tiny sets |
| Qdrant server / cluster | `TileIndex(url=..., api_key=..., shard_number=..., replication_factor=...)` | many users, many machines |

Cells that need a server run only when `RSIA_QDRANT_URL` is set and say so otherwise.
"""),
    params("""
import os
from pathlib import Path

QDRANT_URL = os.environ.get("RSIA_QDRANT_URL")  # e.g. http://localhost:6333
QDRANT_API_KEY = os.environ.get("RSIA_QDRANT_API_KEY")
WORKDIR = Path("rsia_work/scaling")
"""),
    code("""
import datetime as dt
import shutil

from rsia_geo import TileIndex, TileSpec, build_catalog, build_index, search
from rsia_geo.sample_data import sample_data_dir
from rsia_geo.weights import STARTER

samples = sample_data_dir()
WORKDIR.mkdir(parents=True, exist_ok=True)
cat_dir = WORKDIR / "catalog"
if cat_dir.exists():
    shutil.rmtree(cat_dir)
catalog = build_catalog([samples / "naip", samples / "aerial"], cat_dir,
                        default_datetime=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
SPEC = TileSpec(size=78.0, units="m", scales=(1,), out_size=256)
query = samples / "queries" / "an_airplane_parked_at_the_airport.wav"
"""),
    md("""
## Same data, same queries, same hits on every engine
"""),
    code("""
engines = {
    "edge (embedded folder)": TileIndex(WORKDIR / f"edge-{STARTER}"),  # one per model
    "qdrant-client local": TileIndex(":memory:", engine="client"),
}
if QDRANT_URL:
    engines["server"] = TileIndex(url=QDRANT_URL, api_key=QDRANT_API_KEY, collection="rsia_notebook",
                                  shard_number=2, replication_factor=1)
else:
    print("server skipped: no Qdrant server configured (set RSIA_QDRANT_URL=http://host:6333)")

results = {}
for name, idx in engines.items():
    build_index(catalog, idx, spec=SPEC, progress=False)
    hits = search(query, idx, k=5)
    results[name] = list(hits.tile_id)
    print(f"{name:24s} {idx.count():4d} tiles; top-5 {[t[:8] for t in results[name]]}")
first = next(iter(results.values()))
assert all(r == first for r in results.values()), results
"""),
    md("""
## Server settings

On a server, the collection is created with the given shards, replicas and optional scalar
quantization (`quantization="int8"`, vectors kept in RAM as int8 and rescored with the
originals). The embedded folder and the server record the same model signature: querying with
another model fails with `ModelMismatchError`.
"""),
    code("""
if QDRANT_URL:
    from qdrant_client import QdrantClient

    info = QdrantClient(url=QDRANT_URL, api_key=QDRANT_API_KEY).get_collection("rsia_notebook")
    print(info.config.params.shard_number, "shards,", info.config.params.replication_factor, "replicas")
else:
    print("skipped: needs RSIA_QDRANT_URL")
"""),
    md("""
## Sharding by region

When one machine is not enough, split the catalog by region and give each region its own
shard key (Qdrant's custom sharding) so that a region-restricted query touches only the shards
whose regions it overlaps. `docs/deployment.md` has the recipe. The routing itself is a pure
function of the region boxes, shown here with a 2 x 2 split of the world:
"""),
    code("""
from shapely.geometry import box

shard_regions = {
    "nw": box(-180, 0, 0, 90), "ne": box(0, 0, 180, 90),
    "sw": box(-180, -90, 0, 0), "se": box(0, -90, 180, 0),
}
def shards_for(bbox):
    return sorted(k for k, g in shard_regions.items() if g.intersects(box(*bbox)) and not g.touches(box(*bbox)))

print("query over northern Illinois ->", shards_for((-87.8, 42.0, -87.6, 42.2)))
print("query over the Gulf of Guinea ->", shards_for((-1.0, -1.0, 1.0, 1.0)))
"""),
    code("""
for idx in engines.values():
    idx.close()
"""),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_your_own_imagery.ipynb": OWN_IMAGERY,
    "03_train_and_evaluate.ipynb": TRAIN,
    "04_scaling_out.ipynb": SCALING,
}


def build(cells: list[Cell]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            c = nbformat.v4.new_code_cell(src)
            if kind == "parameters":
                c.metadata["tags"] = ["parameters"]
            nb.cells.append(c)
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives the same file
    return nb


def sources(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def execute(path: Path, *, timeout: int = 1200) -> nbformat.NotebookNode:
    """Execute a notebook in its folder with the current Python's kernel."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return nb


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--execute", action="store_true")
    p.add_argument("--check", action="store_true")
    p.add_argument("--only", nargs="*", default=None)
    a = p.parse_args()
    NB_DIR.mkdir(exist_ok=True)
    bad = []
    for name, cells in NOTEBOOKS.items():
        if a.only and name not in a.only:
            continue
        path = NB_DIR / name
        nb = build(cells)
        if a.check:
            if not path.exists() or sources(nbformat.read(path, as_version=4)) != sources(nb):
                bad.append(name)
            continue
        nbformat.write(nb, path)
        if a.execute:
            print("executing", name, flush=True)
            os.environ.setdefault("RSIA_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
            nbformat.write(execute(path), path)
        print("wrote", path.relative_to(ROOT))
    if bad:
        print(
            "out of date (run python scripts/make_notebooks.py):", ", ".join(bad), file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
