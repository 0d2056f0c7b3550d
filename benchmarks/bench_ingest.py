"""Ingest throughput: the indexing pipeline vs the encoder alone vs a torchgeo DataLoader loop.

All three encode the same tiles of the same raster (default: the 210-image val mosaic built by
``bench_e2e.py``, 256 px tiles at 0.3 m, one level) with the shipped checkpoint:

* ``encoder only``: tiles read into memory first, then only ``model.encode_images`` is timed;
* ``pipeline``: ``rsia_geo.build_index`` end to end (tiling, windowed reads in threads,
  encoding, Qdrant Edge upserts in a writer thread) into a fresh index;
* ``pipeline's own cost``: ``build_index`` again with a stand-in for the encoder that costs
  next to nothing: its CPU milliseconds a tile (all threads) are what the pipeline takes from the
  encoder on a machine whose cores the encoder fills (compare ``encoder_cpu_ms_per_tile``);
* ``torchgeo loop``: torchgeo ``RasterDataset`` + ``GridGeoSampler`` + ``DataLoader`` feeding the
  same encoder (no index writes), the usual way to run a model over a raster with torchgeo.

Usage:
    python benchmarks/bench_ingest.py --raster runs/bench_e2e/mosaic/ucm_mosaic.tif \
        --workdir runs/bench_ingest --out runs/bench_ingest.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from rsia_geo import TileSpec, build_catalog
from rsia_geo.pipeline import build_index, load_model
from rsia_geo.tiles import DEFAULT_IMAGE_VIEWS, IMAGE_VIEWS, iter_tiles, read_tile


def _pipeline_own_cost(cat, folder: Path, model, spec, batch: int, views: str):
    """CPU seconds a tile and tiles/s of ``build_index`` with a stand-in for the encoder.

    The stand-in (each tile's mean pixel spread over the embedding) costs next to nothing, so
    what is left is the pipeline's own work (tiling, reads, payloads, hubness, upserts, the
    index's start-up), all threads counted: on 2 cores, the CPU it takes from the encoder.
    """
    dim = model.config.embed_dim

    def stand_in(images, *, normalize=True, views="single"):
        v = images.float().mean(dim=(1, 2, 3))[:, None].expand(-1, dim) + torch.rand(
            len(images), dim
        )
        return torch.nn.functional.normalize(v, dim=-1) if normalize else v

    model.encode_images = stand_in  # an instance attribute, over the method
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        report = build_index(
            cat, folder, model, spec=spec, batch_size=batch, progress=False, image_views=views
        )
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    finally:
        del model.encode_images
    return cpu / report.indexed, report.indexed / wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raster", required=True)
    p.add_argument("--workdir", default="runs/bench_ingest")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--overlap", type=int, default=0, help="tile overlap in px (128: ~4x the tiles)")
    p.add_argument(
        "--image-views",
        choices=list(IMAGE_VIEWS),
        default=DEFAULT_IMAGE_VIEWS,
        help="how each tile is embedded, by all three (d8: 8 views a tile, build_index's default)",
    )
    p.add_argument("--out", default=None)
    a = p.parse_args()
    views = a.image_views
    work = Path(a.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    import datetime as dt

    cat = build_catalog([a.raster], work / "catalog", default_datetime=dt.datetime(2010, 1, 1))
    model = load_model(None)
    spec = TileSpec(size=256, overlap=a.overlap)
    tiles = list(iter_tiles(cat, spec))
    n = len(tiles)
    arrays = [read_tile(t) for t in tiles]

    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, n, a.batch):
        batch = torch.from_numpy(np.stack(arrays[i : i + a.batch]))
        model.encode_images(batch, normalize=False, views=views)
    enc = n / (time.perf_counter() - t0)
    enc_cpu = (time.process_time() - c0) / n

    t0 = time.perf_counter()
    report = build_index(
        cat, work / "index", model, spec=spec, batch_size=a.batch, progress=False,
        image_views=views,
    )  # fmt: skip
    pipe = report.indexed / (time.perf_counter() - t0)

    own_cpu, own_rate = _pipeline_own_cost(cat, work / "index_null", model, spec, a.batch, views)

    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    class Mosaic(RasterDataset):
        filename_glob = Path(a.raster).name
        is_image = True

    ds = Mosaic(paths=str(Path(a.raster).parent))
    sampler = GridGeoSampler(ds, size=256, stride=256)
    loader = torch.utils.data.DataLoader(
        ds, sampler=sampler, batch_size=a.batch, collate_fn=stack_samples, num_workers=0
    )
    t0 = time.perf_counter()
    seen = 0
    for batch in loader:
        images = batch["image"].float() / 255.0
        model.encode_images(images, normalize=False, views=views)
        seen += images.shape[0]
    tg = seen / (time.perf_counter() - t0)
    row = {
        "tiles": n,
        "overlap": a.overlap,
        "batch": a.batch,
        "image_views": views,
        "threads": torch.get_num_threads(),
        "encoder_only_tiles_per_s": round(enc, 2),
        "pipeline_tiles_per_s": round(pipe, 2),
        "pipeline_vs_encoder": round(pipe / enc, 3),
        "encoder_cpu_ms_per_tile": round(1000 * enc_cpu, 2),
        "pipeline_own_cpu_ms_per_tile": round(1000 * own_cpu, 2),
        "pipeline_own_tiles_per_s": round(own_rate, 1),
        "torchgeo_tiles": seen,
        "torchgeo_loop_tiles_per_s": round(tg, 2),
    }
    print(json.dumps(row))
    if a.out:
        Path(a.out).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
