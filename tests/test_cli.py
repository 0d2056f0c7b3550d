from __future__ import annotations

import json
import subprocess
import sys

from rsia_geo.cli import main


def test_demo_builds_catalog_and_tiles(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cogeo: 80 tiles, levels [1, 2]" in out
    assert (tmp_path / "catalog" / "catalog.json").exists()
    fc = json.loads((tmp_path / "tiles.geojson").read_text())
    assert len(fc["features"]) == int(out.split("total: ")[1].split(" tiles")[0])


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
