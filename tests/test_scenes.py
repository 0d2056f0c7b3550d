"""Scene mixing (rsia_geo.training.scenes) and its use by the trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsia_geo.errors import InvalidArgumentError  # noqa: E402
from rsia_geo.training.scenes import MixSettings, mixed_view, neighbours  # noqa: E402


def _flat_scenes(n: int = 9, side: int = 64) -> list[torch.Tensor]:
    """Scenes of one flat grey level each (scene k at k / 10), so every pixel names its scene."""
    return [torch.full((3, side, side), k / 10) for k in range(n)]


def _scene_of(view: torch.Tensor) -> np.ndarray:
    return np.round(view[0].numpy() * 10).astype(int)


def test_a_plain_window_is_the_scene_itself():
    scenes = _flat_scenes()
    centre = torch.rand(3, 64, 64)
    plain = MixSettings(views=1, shift=False, scale=(1.0, 1.0), rotate=False)
    view, share = mixed_view(centre, scenes[1:], plain, np.random.default_rng(0))
    assert view.shape == (3, 64, 64)
    assert torch.allclose(view, centre, atol=1e-5)
    assert share == pytest.approx(1.0)


def test_zooming_in_keeps_the_middle_of_the_scene():
    scenes = _flat_scenes()
    centre = torch.zeros(3, 64, 64)
    centre[:, 16:48, 16:48] = 1.0  # a bright middle square
    half = MixSettings(views=1, shift=False, scale=(0.5, 0.5), rotate=False)
    view, share = mixed_view(centre, scenes[1:], half, np.random.default_rng(0))
    assert view.shape == (3, 32, 32) and share == pytest.approx(1.0)
    assert float(view.min()) == pytest.approx(1.0)  # only the middle square is seen


@pytest.mark.parametrize("seed", range(12))
def test_mixed_windows_straddle_scenes_and_keep_the_centre_dominant(seed):
    scenes = _flat_scenes()
    centre, around = scenes[4], scenes[:4] + scenes[5:]  # the centre is grey level 0.4
    rng = np.random.default_rng(seed)
    view, share = mixed_view(centre, around, MixSettings(views=1), rng)
    labels = _scene_of(view)
    counts = np.bincount(labels.ravel(), minlength=9)
    # the centre scene covers the largest share, and the reported share is what is seen
    assert counts.argmax() == 4
    assert share == pytest.approx(counts[4] / counts.sum(), abs=0.08)
    assert 32 <= view.shape[-1] <= 128  # the window's side in scene pixels: 0.5 to 2 scenes


def test_shifted_windows_show_neighbours():
    scenes = _flat_scenes()
    seen = set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        shift = MixSettings(views=1, shift=True, scale=(1.0, 1.0), rotate=False)
        view, _ = mixed_view(scenes[4], scenes[:4] + scenes[5:], shift, rng)
        seen |= set(np.unique(_scene_of(view)).tolist()) - {4}
    assert len(seen) >= 4  # windows straddle the centre and several different neighbours


def test_neighbours_follow_the_class_draw():
    labels = ["a"] * 5 + ["b"] * 5
    rng = np.random.default_rng(0)
    same = neighbours(0, labels, rng, same_class=1.0)
    assert len(same) == 8 and set(same) <= {1, 2, 3, 4}
    anyc = [j for _ in range(50) for j in neighbours(0, labels, rng, same_class=0.0)]
    assert 0 not in anyc and {labels[j] for j in anyc} == {"a", "b"}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"scale": (0.1, 1.0)}, "scale"),
        ({"scale": (1.0, 3.0)}, "scale"),
        ({"same_class": 1.5}, "same_class"),
        ({"views": -1}, "views"),
    ],
)
def test_bad_settings_name_the_value(kwargs, needle):
    with pytest.raises(InvalidArgumentError, match=needle):
        MixSettings(**kwargs)


def test_bad_mosaics_are_refused():
    scenes = _flat_scenes()
    with pytest.raises(InvalidArgumentError, match="8 neighbours"):
        mixed_view(scenes[0], scenes[1:5], MixSettings(), np.random.default_rng(0))
    odd = [torch.zeros(3, 32, 32)] * 8
    with pytest.raises(InvalidArgumentError, match="one shape"):
        mixed_view(scenes[0], odd, MixSettings(), np.random.default_rng(0))


def _voiced(tmp_path, shared_data):
    """8 training and 2 validation UCM images, each caption voiced once by espeak-ng."""
    from rsia_geo.training.dataset import voice_captions

    meta = json.loads((shared_data / "ucm" / "captions.json").read_text())
    rows = [r for r in meta["images"] if r["split"] == "train"][:40:5]
    rows += [r for r in meta["images"] if r["split"] == "val"][:2]
    caps = tmp_path / "captions.json"
    entries = [dict(r, image=str(shared_data / "ucm" / r["image"])) for r in rows]
    caps.write_text(json.dumps({"images": entries}))
    voices = tmp_path / "voices"
    voice_captions(caps, voices, engines=["espeak-ng"], voices_per_caption=1, progress=False)
    return voices


@pytest.mark.requires_programs("espeak-ng")
def test_training_caches_the_mixed_views(tmp_path, shared_data):
    """A tiny real run: the mixed views are cached beside the plain views and train."""
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    from rsia_geo.training.train import TrainConfig, TrainingError, train

    voices = _voiced(tmp_path, shared_data)
    cfg = TrainConfig(
        manifest=str(voices / "manifest.jsonl"),
        out_dir=str(tmp_path / "run"),
        model="alac-tiny",
        allow_random_backbone=True,
        epochs=1,
        batch_size=4,
        views=2,
        mix_views=3,
    )
    summary = train(cfg, progress=False)
    assert summary["best"]["epoch"] == 1
    cached = list((tmp_path / "run" / "cache").glob("train_mixed_*.safetensors"))
    assert len(cached) == 1
    tokens = load_file(str(cached[0]))["tokens"]
    plain = next((tmp_path / "run" / "cache").glob("train_tokens_*.safetensors"))
    assert tokens.shape[:2] == (8, 3)  # 8 training images x 3 mixed views
    assert tokens.shape[2:] == load_file(str(plain))["tokens"].shape[2:]
    assert not torch.equal(tokens[:, 0], load_file(str(plain))["tokens"][:, 0])
    bad = TrainConfig(**{**cfg.to_dict(), "out_dir": str(tmp_path / "bad"), "mix_scale": (1, 4)})
    with pytest.raises(TrainingError, match="scale"):
        train(bad, progress=False)


@pytest.mark.requires_programs("espeak-ng")
def test_full_fine_tuning_trains_every_stage_on_fresh_views(tmp_path, shared_data, capsys):
    """freeze_backbone=False: no image cache, every stage learns, views drawn by workers."""
    from rsia_geo.cli import main
    from rsia_geo.models import build_model, get_config, load_checkpoint
    from rsia_geo.training.train import TrainConfig, TrainingError, train

    voices = _voiced(tmp_path, shared_data)
    run = tmp_path / "run"
    args = ["train", str(voices / "manifest.jsonl"), "-o", str(run), "--model", "alac-tiny"]
    args += ["--full-finetune", "--workers", "2", "--epochs", "2", "--batch-size", "4"]
    args += ["--views", "2", "--mix-views", "2", "--no-progress"]
    assert main(args) == 0  # a random backbone may train when it is fine-tuned
    assert not list((run / "cache").glob("train_*tokens*"))  # nothing of the images cached
    assert not list((run / "cache").glob("train_mixed*"))
    torch.manual_seed(0)
    start = dict(build_model(get_config("alac-tiny")).named_parameters())
    tuned = dict(load_checkpoint(run / "best").named_parameters())
    stem = [n for n in start if n.startswith("backbone.") and n.endswith("weight")]
    assert not torch.equal(tuned[stem[0]], start[stem[0]])  # the first stage learned
    assert not torch.equal(tuned[stem[-1]], start[stem[-1]])  # and the last
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    # resuming on another device setting is no other run (the settings that change nothing)
    capsys.readouterr()
    assert main([*args[:-1], "--workers", "0", "--no-progress"]) == 0
    assert "other settings" not in capsys.readouterr().err
    base = {"manifest": str(voices / "manifest.jsonl"), "model": "alac-tiny"}
    with pytest.raises(TrainingError, match="cannot go with finetune_stages=1"):
        train(
            TrainConfig(
                **base, out_dir=str(tmp_path / "a"), freeze_backbone=False, finetune_stages=1
            ),
            progress=False,
        )
    with pytest.raises(TrainingError, match="device='gpu' is not a torch device"):
        train(
            TrainConfig(
                **base, out_dir=str(tmp_path / "b"), device="gpu", allow_random_backbone=True
            ),
            progress=False,
        )
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="sees no CUDA device"):
            train(
                TrainConfig(
                    **base, out_dir=str(tmp_path / "c"), device="cuda", allow_random_backbone=True
                ),
                progress=False,
            )
    with pytest.raises(TrainingError, match="workers=-1"):
        train(TrainConfig(**base, out_dir=str(tmp_path / "d"), workers=-1), progress=False)


def test_full_fine_tuning_views_are_fresh_each_epoch_and_reproducible(shared_data):
    from rsia_geo.training.scenes import MixSettings
    from rsia_geo.training.train import _scenes, _Views

    meta = json.loads((shared_data / "ucm" / "captions.json").read_text())
    rows = [r for r in meta["images"] if r["split"] == "train"][:30:3]
    paths = [str(shared_data / "ucm" / r["image"]) for r in rows]
    views = _Views(
        _scenes(paths, False), [r["class"] for r in rows], 2, MixSettings(views=2), 64, seed=0
    )
    assert views.codes == 4
    views.plan = [(0, 0), (0, 1), (0, 2), (3, 3)]
    first = [views[i] for i in range(4)]
    assert all(x.shape == (3, 64, 64) for x in first)
    torch.testing.assert_close(first[1], torch.rot90(first[0], 1, dims=(1, 2)))  # dihedral
    assert torch.equal(views[2], first[2])  # a mixed view is reproducible in its epoch
    views.epoch = 1
    assert not torch.equal(views[2], first[2])  # and drawn afresh in the next
    assert torch.equal(views[0], first[0])  # plain views do not change


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
@pytest.mark.requires_programs("espeak-ng")
def test_full_fine_tuning_on_a_gpu(tmp_path, shared_data):
    from rsia_geo.cli import main
    from rsia_geo.models import load_checkpoint

    voices = _voiced(tmp_path, shared_data)
    run = tmp_path / "run"
    args = ["train", str(voices / "manifest.jsonl"), "-o", str(run), "--model", "alac-tiny"]
    args += ["--full-finetune", "--device", "cuda", "--amp", "--workers", "2", "--epochs", "2"]
    assert main([*args, "--batch-size", "4", "--views", "2", "--mix-views", "2"]) == 0
    ck = load_checkpoint(run / "best")  # saved from the GPU, loads on the CPU
    assert next(ck.parameters()).device.type == "cpu"
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
