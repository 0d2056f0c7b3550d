from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf

from rsia_geo.audio import load_audio, trim_silence
from rsia_geo.errors import AudioDecodeError, InvalidAudioError


def _tone(seconds=1.0, rate=16000, freq=440.0, channels=1, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    x = amp * np.sin(2 * math.pi * freq * t)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


@pytest.mark.parametrize("rate", [22050, 44100, 48000, 8000])
def test_resampling_is_torchaudios_with_its_kernel_built_once(rate):
    import torch
    import torchaudio.functional as F

    from rsia_geo.audio import _resampler

    x = _tone(1.3, rate, freq=1000.0)[:, 0]
    centred = (x.astype(np.float64) - x.mean(dtype=np.float64)).astype(np.float32)  # DC first
    ref = F.resample(torch.from_numpy(centred), rate, 16000).numpy()
    _resampler.cache_clear()
    clip = load_audio(x, sample_rate=rate)
    again = load_audio(x, sample_rate=rate)
    assert _resampler.cache_info().hits >= 1 and _resampler.cache_info().currsize == 1
    assert clip.samples.shape == ref.shape
    np.testing.assert_array_equal(clip.samples, ref)
    np.testing.assert_array_equal(clip.samples, again.samples)
    peak_hz = np.argmax(np.abs(np.fft.rfft(clip.samples))) * 16000 / len(clip.samples)
    assert peak_hz == pytest.approx(1000, abs=2)


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")],
)
def test_decode_containers_from_path_bytes_and_file(tmp_path, fmt, subtype):
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile here has no {fmt}")
    data = _tone(1.0, 44100, channels=2)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, data, 44100, format=fmt, subtype=subtype)
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        clip = load_audio(source)
        assert clip.sample_rate == 16000 and clip.source_rate == 44100
        assert clip.source_channels == 2
        assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
        assert clip.duration == pytest.approx(1.0, abs=0.08)  # mp3 adds encoder padding
        # a 440 Hz tone survives resampling: its spectrum peaks at 440 Hz
        spec = np.abs(np.fft.rfft(clip.samples))
        peak_hz = np.argmax(spec) * 16000 / len(clip.samples)
        assert peak_hz == pytest.approx(440, abs=3)


def test_array_input_layouts_and_integer_scaling():
    x = _tone(0.5, 8000)
    a = load_audio(x[:, 0], sample_rate=8000)
    b = load_audio(np.repeat(x, 2, axis=1), sample_rate=8000)  # (samples, channels)
    c = load_audio(np.repeat(x, 2, axis=1).T, sample_rate=8000)  # (channels, samples)
    d = load_audio((x[:, 0] * 32767).astype(np.int16), sample_rate=8000)
    assert a.samples.shape == b.samples.shape == c.samples.shape == d.samples.shape == (8000,)
    np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)
    np.testing.assert_allclose(a.samples, c.samples, atol=1e-6)
    np.testing.assert_allclose(a.samples, d.samples, atol=1e-3)
    torch = pytest.importorskip("torch")
    e = load_audio(torch.from_numpy(x[:, 0]), sample_rate=8000)
    np.testing.assert_allclose(a.samples, e.samples)


def test_dc_removed_and_silence_trimmed():
    tone = _tone(0.5)[:, 0] + 0.2
    padded = np.concatenate([np.zeros(16000), tone, np.zeros(8000)]).astype(np.float32)
    clip = load_audio(padded, sample_rate=16000, trim=True, remove_dc=False)
    assert clip.duration == pytest.approx(0.5 + 0.2, abs=0.03)  # the tone + 2 x 100 ms padding
    clip = load_audio(padded, sample_rate=16000, trim=False)
    assert abs(float(clip.samples.mean())) < 1e-6
    speech = np.concatenate([np.zeros(16000), _tone(0.5)[:, 0], np.zeros(16000)])
    trimmed = trim_silence(speech.astype(np.float32), 16000)
    assert 0.5 <= len(trimmed) / 16000 <= 0.75  # 0.5 s of tone + 2 x 0.1 s padding


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "match"),
    [
        (
            lambda p: np.zeros(0, np.float32),
            {"sample_rate": 16000},
            InvalidAudioError,
            "no samples",
        ),
        (
            lambda p: np.zeros(16000, np.float32),
            {"sample_rate": 16000},
            InvalidAudioError,
            "silent",
        ),
        (
            lambda p: np.array([0.1, np.nan, 0.2] * 1000, np.float32),
            {"sample_rate": 16000},
            InvalidAudioError,
            "NaN/inf",
        ),
        (
            lambda p: np.array([0.1, np.inf] * 1000, np.float32),
            {"sample_rate": 16000},
            InvalidAudioError,
            "NaN/inf",
        ),
        (
            lambda p: _tone(2.0)[:, 0],
            {"sample_rate": 16000, "max_seconds": 1.0},
            InvalidAudioError,
            "max_seconds",
        ),
        (lambda p: _tone(0.01)[:, 0], {"sample_rate": 16000}, InvalidAudioError, "min_seconds"),
        (lambda p: _tone(1.0)[:, 0], {"sample_rate": 100}, InvalidAudioError, "sample rate 100"),
        (lambda p: _tone(1.0)[:, 0], {"sample_rate": 10_000_000}, InvalidAudioError, "sample rate"),
        (lambda p: _tone(1.0)[:, 0], {}, InvalidAudioError, "sample_rate="),
        (
            lambda p: np.ones((2, 2, 2), np.float32),
            {"sample_rate": 16000},
            InvalidAudioError,
            "shape",
        ),
        (lambda p: b"", {}, InvalidAudioError, "empty"),
        (lambda p: b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", {}, AudioDecodeError, "cannot decode"),
        (lambda p: b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, {}, AudioDecodeError, "WAV, FLAC"),
        (lambda p: p / "missing.wav", {}, AudioDecodeError, "does not exist"),
        (lambda p: 12345, {}, AudioDecodeError, "cannot read audio"),
        (lambda p: p, {}, AudioDecodeError, "is a folder, not an audio file"),
        (lambda p: b"\x00\x01" * 500, {}, AudioDecodeError, r"recognised\. Supported"),
    ],
)
def test_bad_audio(tmp_path, make, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_audio(make(tmp_path), **kwargs)


def test_float_audio_beyond_full_scale_is_scaled_not_misheard(tmp_path):
    """A float file saved with gain (peaks of 100) reads as the same clip at a peak of 1."""
    tone = _tone(1.0, amp=0.5)[:, 0]
    loud = tmp_path / "loud.wav"
    sf.write(loud, tone * 200.0, 16000, subtype="FLOAT")
    clip = load_audio(loud)
    assert float(np.abs(clip.samples).max()) == pytest.approx(1.0, abs=1e-6)
    normal = load_audio(tone, sample_rate=16000)
    np.testing.assert_allclose(
        clip.samples, normal.samples / np.abs(normal.samples).max(), atol=1e-5
    )
    quiet = load_audio(tone * 0.9, sample_rate=16000)  # within full scale: left as it is
    assert float(np.abs(quiet.samples).max()) == pytest.approx(0.45, abs=1e-3)


def test_empty_and_truncated_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InvalidAudioError, match="empty"):
        load_audio(empty)
    good = tmp_path / "good.wav"
    sf.write(good, _tone(1.0), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[:30])  # header only, truncated
    with pytest.raises((AudioDecodeError, InvalidAudioError)):
        load_audio(cut)
    with pytest.raises(InvalidAudioError, match="only for array input"):
        load_audio(good, sample_rate=16000)


@pytest.mark.requires_programs("espeak-ng")
def test_synthesised_speech_decodes(tmp_path):
    from rsia_geo.training.synthesis import Voice, synthesize

    p = synthesize(
        "an airplane parked at the airport", Voice("espeak-ng", "en-us+f3"), tmp_path / "q.wav"
    )
    clip = load_audio(p, trim=True)
    assert clip.source_rate == 22050 and clip.sample_rate == 16000
    assert 1.0 < clip.duration < 4.0
