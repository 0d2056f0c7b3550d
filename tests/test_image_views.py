"""Image views: a tile embedded as the mean over its 8 rotations and reflections (d8)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsia_geo.errors import InvalidArgumentError, TilingMismatchError  # noqa: E402
from rsia_geo.index import TileIndex  # noqa: E402
from rsia_geo.models import load_checkpoint  # noqa: E402
from rsia_geo.models.alac import dihedral_views  # noqa: E402
from rsia_geo.pipeline import build_index, read_chip  # noqa: E402
from rsia_geo.tiles import DEFAULT_IMAGE_VIEWS, Tile, iter_tiles  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def _turned(x: torch.Tensor, k: int, mirror: bool) -> torch.Tensor:
    y = torch.rot90(x, k, dims=(-2, -1))
    return y.flip(-1) if mirror else y


def test_d8_is_the_mean_of_the_eight_views_and_invariant_to_them(model):
    torch.manual_seed(3)
    x = torch.rand(3, 3, 80, 80)
    d8 = model.encode_images(x, normalize=False, views="d8")
    single = model.encode_images(x, normalize=False)
    assert d8.shape == single.shape == (3, model.config.embed_dim)
    # the mean of the raw embeddings of the 8 turned and mirrored images, one at a time
    by_hand = torch.stack(
        [
            model.encode_images(_turned(x, k, m), normalize=False)
            for k in range(4)
            for m in (False, True)
        ]
    ).mean(dim=0)
    assert torch.allclose(d8, by_hand, atol=1e-5)
    assert not torch.allclose(d8, single, atol=1e-3)  # a random model is not invariant
    for k in range(4):
        for m in (False, True):
            turned = model.encode_images(_turned(x, k, m), normalize=False, views="d8")
            assert torch.allclose(turned, d8, atol=1e-5)
    # unit vectors by default; a non-square image is resized first, then viewed
    unit = model.encode_images(torch.rand(2, 3, 60, 90), views="d8")
    assert torch.allclose(unit.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_dihedral_views_order_and_errors(model):
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).view(2, 1, 2, 2)
    v = dihedral_views(x)
    assert v.shape == (16, 1, 2, 2)
    assert torch.equal(v[:2], x) and torch.equal(v[2:4], torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(v[8:10], x.flip(-1))
    assert len({tuple(t.flatten().tolist()) for t in v[0::2]}) == 8  # 8 distinct views
    with pytest.raises(InvalidArgumentError, match="square"):
        dihedral_views(torch.zeros(1, 3, 4, 5))
    with pytest.raises(InvalidArgumentError, match=r"image_views='d4'.*\['d8', 'single'\]"):
        model.encode_images(torch.rand(1, 3, 32, 32), views="d4")


def test_index_records_its_views_and_stores_d8_vectors(tmp_path, aerial_catalog, model):
    """A new index embeds each tile (a real COG read) as the d8 mean, and says so."""
    report = build_index(aerial_catalog, tmp_path / "idx", model, progress=False)
    assert report.indexed > 0 and not report.failed
    with TileIndex(tmp_path / "idx") as idx:
        assert DEFAULT_IMAGE_VIEWS == "d8" and idx.image_views == "d8"
        tiles = list(iter_tiles(aerial_catalog))[:3]
        hits = idx.retrieve([t.id for t in tiles], with_vectors=True)
    by_id = {h.id: h for h in hits}
    for tile in tiles:
        chip = torch.from_numpy(read_chip(tile))[None]
        want = model.encode_images(chip, views="d8")[0].numpy()
        other = model.encode_images(chip, views="single")[0].numpy()
        got = np.asarray(by_id[tile.id].vector)
        assert np.allclose(got, want, atol=1e-4)
        assert not np.allclose(got, other, atol=1e-3)


def test_a_later_run_keeps_the_index_views_and_refuses_others(tmp_path, aerial_catalog, model):
    idx_path = tmp_path / "idx"
    first = build_index(aerial_catalog, idx_path, model, progress=False, image_views="single")
    with TileIndex(idx_path) as idx:
        assert idx.image_views == "single"
    # unset: the index's own setting, so the run resumes instead of failing
    again = build_index(aerial_catalog, idx_path, model, progress=False)
    assert again.indexed == 0 and again.already_present == first.indexed
    with pytest.raises(TilingMismatchError, match=r"image_views.*'single', 'd8'"):
        build_index(aerial_catalog, idx_path, model, progress=False, image_views="d8")
    with TileIndex(idx_path) as idx:
        assert idx.image_views == "single" and idx.count() == first.indexed
    # a bad value is refused before any folder is made
    with pytest.raises(InvalidArgumentError, match="image_views='D8'"):
        build_index(aerial_catalog, tmp_path / "new", model, progress=False, image_views="D8")
    assert not (tmp_path / "new").exists()


def test_an_index_made_before_image_views_counts_as_single(tmp_path, aerial_catalog, model):
    idx_path = tmp_path / "idx"
    build_index(aerial_catalog, idx_path, model, progress=False, image_views="single")
    with TileIndex(idx_path) as idx:
        meta = idx.meta
        assert meta is not None
        del meta["image_views"]  # as indexes were recorded before this setting
        idx.backend.set_meta(meta)
    with TileIndex(idx_path) as idx:
        assert idx.image_views == "single"
    with pytest.raises(TilingMismatchError, match="image_views"):
        build_index(aerial_catalog, idx_path, model, progress=False, image_views="d8")
    build_index(aerial_catalog, idx_path, model, progress=False)  # resumes with single
    with TileIndex(idx_path) as idx:
        assert idx.image_views == "single"
        assert TileIndex(tmp_path / "empty").image_views is None


def test_a_chip_example_is_embedded_with_the_index_views(tmp_path, aerial_catalog, model):
    from rsia_geo.similar import resolve_example

    tile: Tile = next(iter(iter_tiles(aerial_catalog)))
    chip = read_chip(tile)
    for views in ("d8", "single"):
        path = tmp_path / views
        build_index(aerial_catalog, path, model, progress=False, image_views=views)
        with TileIndex(path) as idx:
            ex = resolve_example(chip, idx, model)
            stored = np.asarray(idx.retrieve([tile.id], with_vectors=True)[0].vector)
        assert ex.description["image_views"] == views
        assert float(np.dot(ex.vector, stored)) == pytest.approx(1.0, abs=1e-4)


def test_cli_index_image_views(tmp_path, aerial_catalog, tiny_checkpoint, capsys):
    from rsia_geo.cli import main

    cat = str(aerial_catalog.get_self_href())
    args = ["index", cat, "--location", str(tmp_path / "idx"), "--checkpoint", str(tiny_checkpoint)]
    assert main([*args, "--image-views", "single", "--no-progress"]) == 0
    assert "(single image views)" in capsys.readouterr().out
    with TileIndex(tmp_path / "idx") as idx:
        assert idx.image_views == "single"
        assert json.loads(json.dumps(idx.meta))["image_views"] == "single"
    with pytest.raises(SystemExit):
        main([*args, "--image-views", "d4"])
    assert "invalid choice: 'd4'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name",
    [
        "alac-tiny",
        "alac-efficientnet-lite0",
        "alac-efficientnet-lite0-whisper",
        "alac-torchgeo-resnet18",
        "alac-crossformer-s",
    ],
)
def test_serving_embeds_as_training_does_for_every_configuration(name):
    """encode_images (channels-last layout, eval, no grad) gives the training forward's f_v."""
    from rsia_geo.models import build_model, get_config, list_configs

    assert name in list_configs()
    torch.manual_seed(0)
    model = build_model(get_config(name), pretrained=False).eval()
    x = torch.rand(2, model.config.backbone.in_chans, 200, 200)
    with torch.no_grad():
        want = model.forward_image(x).float()
    got = model.encode_images(x, normalize=False)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
