from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rsia_geo.cli import main


def test_demo_main_job_end_to_end(tmp_path, capsys):
    """The README's first command: catalog, index with the starter model, spoken search."""
    from rsia_geo.weights import shipped_checkpoints

    if not shipped_checkpoints():
        pytest.skip("no shipped starter checkpoint")
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[4/4] west half of the mosaic" in out
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
    assert (tmp_path / "query_1_region.html").exists()
    assert (tmp_path / "index" / "rsia_index.json").exists()


def test_catalog_build_info_and_tiles(tmp_path, samples, capsys):
    rc = main(
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
    rc = main(
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
    assert rc == 0
    rc = main(["tiles", str(tmp_path / "c" / "catalog.json"), "--size", "0"])
    assert rc == 2
    assert "size=0" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    res = subprocess.run(
        [sys.executable, "-m", "rsia_geo", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "rsia_geo" in res.stdout
