from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rsia_geo.cli import main


def _build_aerial_catalog(tmp_path, samples) -> int:
    """`rsia-geo catalog build` of the sample aerial COG into tmp_path/c."""
    return main(
        [
            "catalog",
            "build",
            str(samples / "aerial"),
            "-o",
            str(tmp_path / "c"),
            "--datetime",
            "2021-06-01",
        ]
    )


def test_demo_main_job_end_to_end(tmp_path, capsys):
    """The README's first command: catalog, index with the starter model, spoken search."""
    from rsia_geo.weights import shipped_checkpoints

    if not shipped_checkpoints():
        pytest.skip("no shipped starter checkpoint")
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[4/4] west half of the mosaic" in out
    # rasters too coarse for the 78 m tiling: one plain line naming each, not a line apiece
    assert out.count("left out 6 rasters too coarse") == 1 and "skipped" not in out
    for raster in ("RGB.byte (300 m/px)", "m_4112001_sw_10_060_20220716 (22 m/px)"):
        assert raster in out
    assert out.count('heard: "') == 2  # what the recogniser heard, once per query
    result = json.loads((tmp_path / "demo.json").read_text())
    plane_all = result["query_2_all"]["hits"]
    plane_region = result["query_2_region"]
    # the spoken airplane query finds airplane (or runway) cells among its first hits
    assert {"airplane", "runway"} & {h["class"] for h in plane_all[:3]}
    # region hits lie in the region: each footprint's interior overlaps the west half
    import geopandas as gpd
    from shapely.geometry import box

    region = box(*plane_region["bbox"])
    hits = gpd.read_file(tmp_path / "query_2_region.geojson")
    assert len(hits) == len(plane_region["hits"]) > 0
    for geom in hits.geometry:
        assert geom.intersection(region).area > 0
    page = (tmp_path / "query_1_region.html").read_text()
    assert page.count("data:image/png;base64,") == len(result["query_1_region"]["hits"])
    assert json.loads((tmp_path / "query_1_region.geojson").read_text())["rsia_geo"]["query"]
    from rsia_geo.demo import index_folder
    from rsia_geo.pipeline import load_model

    index = index_folder(tmp_path, load_model(None))
    assert index.name == "index-alac-efficientnet-lite0-whisper-0.3.2"
    assert (index / "rsia_index.json").exists()
    # a demo run after a starter upgrade: the workdir holds the older demo's index (at the
    # path demos used before, built with another model); the new run neither fails on it nor
    # touches it, and reuses its own index
    import shutil

    from rsia_geo.index import TileIndex

    with TileIndex(index) as idx:
        n = idx.count()
    old = tmp_path / "index"
    shutil.copytree(index, old)
    meta = json.loads((old / "rsia_index.json").read_text())
    meta["model"]["version"] = "0.2.0"
    (old / "rsia_index.json").write_text(json.dumps(meta))
    before = (old / "rsia_index.json").read_bytes()
    capsys.readouterr()
    assert main(["demo", "--workdir", str(tmp_path), "-k", "3"]) == 0
    assert f"0 new tiles, {n} already indexed" in capsys.readouterr().out
    assert (old / "rsia_index.json").read_bytes() == before


def test_catalog_build_info_and_tiles(tmp_path, samples, capsys):
    rc = _build_aerial_catalog(tmp_path, samples)
    assert rc == 0
    rc = main(["catalog", "info", str(tmp_path / "c" / "catalog.json")])
    assert rc == 0
    assert "red<-image[1], green<-image[2], blue<-image[3]" in capsys.readouterr().out
    rc = main(
        [
            "tiles",
            str(tmp_path / "c" / "catalog.json"),
            "--size",
            "512",
            "--overlap",
            "0",
            "--units",
            "px",
            "--scales",
            "1",
            "2",
            "--out",
            str(tmp_path / "t.geojson"),
        ]
    )
    assert rc == 0
    assert "cogeo: 5 tiles, levels [1, 2]" in capsys.readouterr().out


def test_errors_become_exit_codes_with_messages(tmp_path, samples, capsys):
    rc = main(["catalog", "build", str(samples / "aerial"), "-o", str(tmp_path / "c")])
    assert rc == 4
    assert "default_datetime" in capsys.readouterr().err
    rc = _build_aerial_catalog(tmp_path, samples)
    assert rc == 0
    rc = main(["tiles", str(tmp_path / "c" / "catalog.json"), "--size", "0"])
    assert rc == 2
    assert "size=0" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    res = subprocess.run(
        [sys.executable, "-m", "rsia_geo", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "rsia_geo" in res.stdout


def test_cli_index_then_search_with_exports(tmp_path, samples, capsys):
    """`rsia-geo index` then `rsia-geo search --bbox --out .parquet/.geojson --map`."""
    import geopandas as gpd
    import torch
    from shapely.geometry import box

    from rsia_geo.models import build_model, get_config, save_checkpoint

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny"
    save_checkpoint(build_model(get_config("alac-tiny"), pretrained=False), ckpt)
    assert _build_aerial_catalog(tmp_path, samples) == 0
    idx = ["--location", str(tmp_path / "idx"), "--checkpoint", str(ckpt)]
    assert (
        main(
            [
                "index",
                str(tmp_path / "c" / "catalog.json"),
                *idx,
                "--units",
                "px",
                "--size",
                "128",
                "--overlap",
                "0",
                "--scales",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "indexed 64 tiles" in capsys.readouterr().out
    # what the index holds, for people and as JSON
    assert main(["info", "--location", str(tmp_path / "idx")]) == 0
    told = capsys.readouterr().out
    assert f"index {tmp_path / 'idx'} (collection tiles): 64 tiles" in told
    assert "extent: lon 128.65" in told and "model: alac-tiny" in told
    assert "platforms: none named" in told  # the sample raster names no platform
    assert main(["info", "--location", str(tmp_path / "idx"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["image_views"] == "d8"  # a new index's default
    assert "tiles: 128.0 px, overlap 0.0, levels 1, d8 image views, bands red, green, blue" in told
    assert summary["tiles"] == 64 and summary["model"]["model_id"] == "alac-tiny"
    assert summary["extent"]["interval"][0].startswith("20")
    wav = samples / "queries" / "an_airplane_parked_at_the_airport.wav"
    bbox = ["128.6555", "37.6670", "128.6575", "37.6690"]
    for suffix in (".parquet", ".geojson"):
        out = tmp_path / f"hits{suffix}"
        rc = main(
            [
                "search",
                str(wav),
                *idx,
                "--bbox",
                *bbox,
                "-k",
                "5",
                "--out",
                str(out),
                "--map",
                str(tmp_path / "map.html"),
            ]
        )
        assert rc == 0 and f"wrote {out}" in capsys.readouterr().out
    pq = gpd.read_parquet(tmp_path / "hits.parquet")
    gj = gpd.read_file(tmp_path / "hits.geojson")
    assert len(pq) == len(gj) == 5 and list(pq.tile_id) == list(gj.tile_id)
    assert pq.crs.to_epsg() == 4326
    assert all(g.intersects(box(*map(float, bbox))) for g in pq.geometry)
    page = (tmp_path / "map.html").read_text()
    assert all(t in page for t in pq.tile_id)  # every hit on the map, with its picture
    assert page.count("data:image/png;base64,") == len(pq)
    assert main(["search", str(wav), *idx, "-k", "5", "--hubness", "0"]) == 0
    capsys.readouterr()
    assert main(["search", str(wav), *idx, "-k", "5", "--hubness", "-1"]) == 2
    assert "hubness=-1.0 must be a number >= 0" in capsys.readouterr().err
    assert main(["search", str(wav), *idx, "-k", "5", "--hubness", "0.5"]) == 2  # no bank
    assert "needs the checkpoint's audio_bank.safetensors" in capsys.readouterr().err
    assert main(["search", str(wav), *idx, "-k", "5", "--feedback", "-1"]) == 2
    assert "feedback=-1.0 must be a number >= 0" in capsys.readouterr().err
    assert main(["search", str(wav), *idx, "-k", "5", "--feedback", "0"]) == 0
    capsys.readouterr()
    assert main(["search", str(wav), *idx, "-k", "5", "--group-overlap", "0"]) == 2
    assert "group_overlap=0.0 must be in (0, 1]" in capsys.readouterr().err
    # a region outside the imagery: no hits, and the reason on its own line
    assert main(["search", str(wav), *idx, "--bbox", "0", "0", "1", "1"]) == 0
    out = capsys.readouterr().out
    assert "0 hits" in out
    why = "why: no indexed tile lies in the region (the index's 64 tiles lie within lon 128.6"
    assert why in out


# ---------------------------------------------------------------- user mistakes (issue 12)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_search_mistakes_get_one_line_and_write_nothing(tmp_path, samples, capsys):
    wav = tmp_path / "q.wav"
    import soundfile as sf

    sf.write(wav, np.random.default_rng(0).standard_normal(16000) * 0.1, 16000)
    missing = tmp_path / "no_index"
    rc = main(["search", str(wav), "--location", str(missing)])
    assert rc == 10 and "no index at" in _one_line_error(capsys)
    assert not missing.exists()  # nothing written
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc = main(["search", str(wav), "--location", str(afile)])
    assert rc != 0 and "is a file" in _one_line_error(capsys)
    rc = main(["index", str(tmp_path / "cat.json"), "--location", str(afile)])
    assert rc != 0 and "is a file" in _one_line_error(capsys)
    rc = main(["search", str(wav), "--location", str(missing), "--geometry", "nope.geojson"])
    assert rc == 2 and "--geometry" in _one_line_error(capsys)
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    rc = main(["search", str(wav), "--location", str(missing), "--geometry", str(bad)])
    assert rc == 2 and "not GeoJSON" in _one_line_error(capsys)
    for out in (tmp_path / "nodir" / "hits.geojson", tmp_path / "hits.txt"):
        rc = main(["search", str(wav), "--location", str(missing), "--out", str(out)])
        assert rc == 2 and str(out) in _one_line_error(capsys)
    rc = main(["search", str(wav), "--location", str(missing), "--map", str(tmp_path)])
    assert rc == 2 and "folder" in _one_line_error(capsys)
    assert not missing.exists()


def test_catalog_folder_with_a_dot_and_corrupt_items(tmp_path, samples, capsys):
    out = tmp_path / "my_catalog.v2"
    rc = main(
        [
            "catalog",
            "build",
            str(samples / "aerial" / "cogeo.tif"),
            "-o",
            str(out),
            "--datetime",
            "2020-01-01",
        ]
    )
    assert rc == 0
    assert (out / "catalog.json").exists() and not (tmp_path / "catalog.json").exists()
    item = next(out.glob("*/*.json"))
    item.write_text("{corrupt")
    capsys.readouterr()
    idx = tmp_path / "idx"
    rc = main(["index", str(out / "catalog.json"), "--location", str(idx), "--no-progress"])
    assert rc == 4 and "item" in _one_line_error(capsys)
    assert not idx.exists()  # a failed run leaves no empty index folder behind


def test_index_that_indexes_nothing_says_why(tmp_path, samples, capsys):
    rc = main(
        [
            "catalog",
            "build",
            str(samples / "aerial" / "cogeo.tif"),
            "-o",
            str(tmp_path / "c"),
            "--datetime",
            "2020-01-01",
        ]
    )
    assert rc == 0
    capsys.readouterr()
    rc = main(
        [
            "index",
            str(tmp_path / "c" / "catalog.json"),
            "--location",
            str(tmp_path / "i"),
            "--size",
            "5000",
            "--no-progress",
        ]
    )
    line = _one_line_error(capsys)
    assert rc == 4 and "nothing was indexed" in line and "larger than item" in line
    assert not (tmp_path / "i").exists()


def test_index_help_shows_the_defaults_it_uses(capsys):
    from rsia_geo.tiles import DEFAULT_SPEC

    with pytest.raises(SystemExit):
        main(["index", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"tile side (default {DEFAULT_SPEC.size:g})" in text
    assert "(default m)" in text and "(default 1 2)" in text and "(default 256)" in text
    assert "(default 0.5 of a tile" in text


def test_bad_port_and_broken_pipe(tmp_path, samples):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "rsia_geo", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "outside 1-65535" in r.stderr
    # output piped into a reader that quits early: no traceback
    r = subprocess.run(
        f"{sys.executable} -m rsia_geo catalog build {samples / 'aerial'} -o {tmp_path / 'c'} "
        f"--datetime 2020-01-01 && {sys.executable} -m rsia_geo tiles "
        f"{tmp_path / 'c' / 'catalog.json'} --size 32 --units px --show 100000 | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_search_says_how_sure_the_recogniser_was_and_what_else_it_heard():
    from rsia_geo.cli.search import _sureness

    assert _sureness({"kind": "typed", "text": "a harbour"}) == ""
    sure = {"heard": "a harbour", "heard_confidence": 0.91, "heard_beam": 1}
    assert _sureness(sure) == " (confidence 0.91)"
    unsure = {
        "heard": "a piece of family", "heard_confidence": 0.38, "heard_beam": 3,
        "heard_alternatives": [["a piece of family", 0.38], ["a piece of farmland", 0.31]],
    }  # fmt: skip
    assert _sureness(unsure) == ' (confidence 0.38, heard twice; or "a piece of farmland")'
