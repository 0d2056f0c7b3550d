"""The voice-activity trim: real Silero VAD (faster-whisper's ONNX file) on real recorded speech."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rsia_geo.audio import SAMPLE_RATE, load_audio, trim_speech
from rsia_geo.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    InvalidAudioError,
)

pytest.importorskip("faster_whisper")
pytest.importorskip("onnxruntime")

from rsia_geo import vad

QUERY = Path(vad.__file__).parent / "sample_data" / "queries" / "boats_docked_at_a_harbour.wav"


def _speech() -> np.ndarray:
    return load_audio(QUERY, trim="energy").samples


def _over_noise(speech: np.ndarray, snr_db: float, pad_s: float = 1.5) -> tuple[np.ndarray, int]:
    """The words between ``pad_s`` of noise on each side, the noise over the whole recording."""
    pad = int(pad_s * SAMPLE_RATE)
    x = np.concatenate([np.zeros(pad), speech, np.zeros(pad)])
    rng = np.random.default_rng(7)
    power = float(np.mean(speech.astype(np.float64) ** 2))
    noise = rng.standard_normal(len(x)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32), pad


def test_detector_finds_the_words_over_noise_where_the_energy_trim_cuts_nothing():
    speech = _speech()
    noisy, pad = _over_noise(speech, snr_db=10)
    energy = trim_speech(noisy, SAMPLE_RATE, "energy")
    assert len(energy) > 0.95 * len(noisy)  # every frame within 40 dB of the loudest
    start, stop = vad.speech_detector().span(noisy)
    # the span holds the words (give or take a window and the 100 ms kept each side)
    assert start == pytest.approx(pad, abs=0.25 * SAMPLE_RATE)
    assert stop == pytest.approx(pad + len(speech), abs=0.25 * SAMPLE_RATE)
    for method in ("vad", "auto"):
        cut = trim_speech(noisy, SAMPLE_RATE, method)
        assert len(cut) == stop - start
        np.testing.assert_array_equal(cut, noisy[start:stop])
    # load_audio(trim=True) is "auto": the same cut, from a recording at another rate
    heard = load_audio(noisy, sample_rate=SAMPLE_RATE, trim=True, remove_dc=False).samples
    np.testing.assert_array_equal(heard, noisy[start:stop])


def test_auto_keeps_the_energy_trim_of_a_quiet_recording():
    speech = _speech()
    quiet = np.concatenate([np.zeros(SAMPLE_RATE), speech, np.zeros(SAMPLE_RATE)])
    quiet = quiet.astype(np.float32)
    auto = trim_speech(quiet, SAMPLE_RATE, "auto")
    np.testing.assert_array_equal(auto, trim_speech(quiet, SAMPLE_RATE, "energy"))
    assert len(auto) < len(speech) + 0.3 * SAMPLE_RATE


def test_auto_never_cuts_what_is_louder_than_the_background():
    """The detector's cut stands only where the cut part sounds like the clip's quiet frames:
    a sound it does not call speech but well above them (here a tone at -20 dB; in a real
    recording a whispered word) stays, on that side only."""
    speech = _speech()
    t = np.arange(int(0.4 * SAMPLE_RATE)) / SAMPLE_RATE  # a short sound after the words
    level = np.sqrt(np.mean(speech.astype(np.float64) ** 2)) * 0.1  # -20 dB of the speech
    tone = (level * np.sqrt(2) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    clip = np.concatenate([speech, tone, np.zeros(SAMPLE_RATE // 10, np.float32)])
    assert len(trim_speech(clip, SAMPLE_RATE, "energy")) >= 0.9 * len(clip)  # detector runs
    start, stop = vad.speech_detector().span(clip)
    assert stop < len(speech) + 0.2 * SAMPLE_RATE  # the detector would cut the tone
    cut = trim_speech(clip, SAMPLE_RATE, "auto")
    np.testing.assert_array_equal(cut, clip[start:])  # the head is cut, the tail kept
    assert len(trim_speech(clip, SAMPLE_RATE, "vad")) == stop - start  # asked for: as detected


def test_probabilities_are_high_on_words_and_low_on_noise():
    speech = _speech()
    probs = vad.speech_detector().probabilities(speech)
    assert probs.shape == (-(-len(speech) // vad.WINDOW),)
    assert float(np.mean(probs >= 0.5)) > 0.5
    noise = (np.random.default_rng(3).standard_normal(2 * SAMPLE_RATE) * 0.05).astype(np.float32)
    assert float(np.mean(vad.speech_detector().probabilities(noise) >= 0.5)) < 0.1
    assert vad.speech_detector().probabilities(np.zeros(0, np.float32)).shape == (0,)


def test_no_speech_is_an_error_for_vad_and_the_energy_trim_for_auto():
    noise = (np.random.default_rng(3).standard_normal(3 * SAMPLE_RATE) * 0.05).astype(np.float32)
    with pytest.raises(InvalidAudioError, match=r"no speech found in 3\.00 s.*'energy'"):
        trim_speech(noise, SAMPLE_RATE, "vad")
    with pytest.raises(InvalidAudioError, match="no speech found"):
        load_audio(noise, sample_rate=SAMPLE_RATE, trim="vad")
    np.testing.assert_array_equal(
        trim_speech(noise, SAMPLE_RATE, "auto"), trim_speech(noise, SAMPLE_RATE, "energy")
    )


def test_bad_methods_and_rates_are_refused():
    x = _speech()
    with pytest.raises(InvalidArgumentError, match=r"'silero'.*auto, energy, vad"):
        trim_speech(x, SAMPLE_RATE, "silero")
    with pytest.raises(InvalidArgumentError, match=r"trim='yes'.*True, False"):
        load_audio(x, sample_rate=SAMPLE_RATE, trim="yes")
    with pytest.raises(InvalidArgumentError, match="needs 16000 Hz audio, not 8000 Hz"):
        trim_speech(x, 8000, "vad")


def test_model_file_missing_or_altered(tmp_path, monkeypatch):
    with pytest.raises(CheckpointNotFoundError, match="no Silero VAD model at"):
        vad.SpeechDetector(tmp_path / "nothing.onnx")
    packaged = vad._packaged_model()
    altered = tmp_path / "silero_vad_v6.onnx"
    shutil.copyfile(packaged, altered)
    with altered.open("ab") as f:
        f.write(b"\0")
    monkeypatch.setattr(vad, "_packaged_model", lambda: altered)
    with pytest.raises(CheckpointError, match=r"install faster-whisper==1\.2\.1"):
        vad.SpeechDetector()
    # a file given by path is the user's own: used as given, not checked against the digest
    assert vad.SpeechDetector(packaged).probabilities(_speech()).size > 0
