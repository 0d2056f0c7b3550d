"""Speech input: decode, check and normalise audio for the ALAC audio encoder.

:func:`load_audio` turns a path, bytes, a file object or an array into a mono float32
waveform at 16 kHz, with its DC offset removed and (optionally) leading and trailing silence
trimmed. Every unusable input raises an :class:`~rsia_geo.errors.AudioError` subclass that names
the problem and the fix:

* :class:`~rsia_geo.errors.AudioDecodeError`: unknown or corrupt container, unreadable file;
* :class:`~rsia_geo.errors.InvalidAudioError`: empty, all-silent, NaN/inf samples, longer than
  ``max_seconds``, or a sample rate outside ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]``.

Decoding uses ``soundfile`` (libsndfile: WAV, FLAC, OGG/Vorbis, Opus and MP3 with
libsndfile >= 1.1). Resampling uses torchaudio's band-limited sinc interpolation.

The feature extractors (:func:`cepstrum_features`, :func:`logmel_features`) are defined in
:mod:`rsia_geo.models.frontend` because they run as part of the model.
"""

from __future__ import annotations

import functools
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsia_geo.errors import AudioDecodeError, InvalidAudioError

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "SAMPLE_RATE",
    "AudioClip",
    "TRIM_METHODS",
    "load_audio",
    "trim_silence",
    "trim_speech",
]

SAMPLE_RATE = 16_000
"""Sample rate of the model's audio front end, Hz."""
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 384_000
SILENCE_PEAK = 1e-4
"""Peak amplitude (full scale = 1) under which a clip counts as silent."""
TRIM_METHODS = ("auto", "energy", "vad")
"""How :func:`trim_speech` finds the words: ``energy`` (frames near the loudest one), ``vad``
(Silero voice-activity detection) or ``auto`` (the energy trim, and the detector only where
the energy trim cut almost nothing: a recording over noise)."""
AUTO_VAD_KEPT = 0.9
"""``auto`` runs the detector when the energy trim kept at least this share of a clip."""
AUTO_VAD_MIN_SECONDS = 1.0
"""... and the clip lasts at least this long (shorter ones have no room for a silence to cut)."""
AUTO_VAD_MARGIN_DB = 6.0
"""``auto`` cuts what the detector calls non-speech only where it is at most this much louder
than the clip's quiet frames (background), never where the detector missed quiet words."""


@dataclass(frozen=True)
class AudioClip:
    """A decoded, checked mono waveform.

    Attributes:
        samples: float32 samples in [-1, 1] (approximately), mono.
        sample_rate: Hz.
        source_rate: Sample rate of the input before resampling.
        source_channels: Channel count of the input before downmixing.
    """

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate


def _is_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(str(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


MAX_CHANNELS = 8
"""Most channels accepted in an encoded query (a query is downmixed to mono)."""


def _check_header(fobj: Any, source: Any, max_seconds: float) -> None:
    """Refuse from the container's header, before decoding, what decoding would refuse.

    A few kilobytes of FLAC can declare minutes of 8-channel 96 kHz audio that cost hundreds
    of megabytes to decode; the header gives duration, channels and rate for free.
    """
    import soundfile as sf

    try:
        info = sf.info(fobj)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioDecodeError(
            f"cannot decode audio from {_describe(source)}: {str(exc).rstrip('.')}. "
            "Supported containers: WAV, FLAC, OGG/Vorbis/Opus, MP3; convert others "
            "(e.g. ffmpeg -i in.m4a out.wav)"
        ) from exc
    finally:
        if hasattr(fobj, "seek"):
            fobj.seek(0)
    what = _describe(source)
    rate, channels = int(info.samplerate), int(info.channels)
    if not (MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE):
        raise InvalidAudioError(
            f"audio {what} has sample rate {rate} Hz, outside [{MIN_SAMPLE_RATE}, "
            f"{MAX_SAMPLE_RATE}] Hz; resample it (e.g. to 16000 Hz)"
        )
    if channels > MAX_CHANNELS:
        raise InvalidAudioError(
            f"audio {what} has {channels} channels, more than {MAX_CHANNELS}; send a mono "
            "(or stereo) recording of the query"
        )
    frames = int(info.frames)
    if 0 < frames < 2**62 and frames / rate > max_seconds:
        raise InvalidAudioError(
            f"audio {what} lasts {frames / rate:.1f} s, more than max_seconds={max_seconds:g}; "
            "cut it to the spoken query (or raise max_seconds)"
        )


def _decode(source: Any, max_seconds: float = float("inf")) -> tuple[np.ndarray, int]:
    """Decode a path, bytes or file object to (samples, channels) float32 and its rate.

    The header is checked first (:func:`_check_header`), so oversized audio is refused
    without being decoded; decoding then reads at most ``max_seconds`` (+1 s) of frames.
    """
    import soundfile as sf

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioDecodeError(f"audio file {str(path)!r} does not exist; check the path")
        if path.is_dir():
            raise AudioDecodeError(
                f"{str(path)!r} is a folder, not an audio file; pass the recording's path"
            )
        if path.stat().st_size == 0:
            raise InvalidAudioError(f"audio file {str(path)!r} is empty (0 bytes)")
        fobj: Any = str(path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidAudioError("audio bytes are empty (0 bytes)")
        fobj = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        fobj = source
    else:
        raise AudioDecodeError(
            f"cannot read audio from {_describe(source)}; pass a path, bytes, a binary file "
            "object, or an array with sample_rate="
        )
    try:
        _check_header(fobj, source, max_seconds)
        with sf.SoundFile(fobj) as snd:
            limit = -1 if not np.isfinite(max_seconds) else int((max_seconds + 1) * snd.samplerate)
            data = snd.read(frames=limit, dtype="float32", always_2d=True)
            rate = snd.samplerate
            if limit > 0 and len(data) >= limit:  # a header that under-reported its length
                raise InvalidAudioError(
                    f"audio {_describe(source)} lasts more than max_seconds={max_seconds:g}; "
                    "cut it to the spoken query (or raise max_seconds)"
                )
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if isinstance(exc, (InvalidAudioError, AudioDecodeError)):
            raise
        raise AudioDecodeError(
            f"cannot decode audio from {_describe(source)}: {str(exc).rstrip('.')}. "
            "Supported containers: WAV, FLAC, OGG/Vorbis/Opus, MP3; convert others "
            "(e.g. ffmpeg -i in.m4a out.wav)"
        ) from exc
    return data, int(rate)


def _from_array(array: Any, sample_rate: int | None) -> tuple[np.ndarray, int]:
    if sample_rate is None:
        raise InvalidAudioError(
            "an audio array needs its sample rate: pass sample_rate=... (e.g. 16000)"
        )
    if _is_tensor(array):
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    if arr.dtype.kind == "c" or arr.dtype.kind not in "iuf":
        raise InvalidAudioError(f"audio array has dtype {arr.dtype}; pass real-valued samples")
    if arr.dtype.kind == "i":
        arr = arr.astype(np.float64) / float(2 ** (8 * arr.dtype.itemsize - 1))
    elif arr.dtype.kind == "u":
        half = float(2 ** (8 * arr.dtype.itemsize - 1))
        arr = (arr.astype(np.float64) - half) / half
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim == 2:
        # (channels, samples) when the first axis is clearly the short one
        if arr.shape[0] <= 8 and arr.shape[1] > arr.shape[0]:
            arr = arr.T
    else:
        raise InvalidAudioError(
            f"audio array has shape {arr.shape}; pass (samples,), (samples, channels) or "
            "(channels, samples)"
        )
    return arr.astype(np.float32), int(sample_rate)


def trim_silence(
    samples: np.ndarray,
    sample_rate: int,
    *,
    threshold_db: float = -40.0,
    frame_ms: float = 25.0,
    pad_ms: float = 100.0,
) -> np.ndarray:
    """Cut leading and trailing silence.

    A frame is silent when its RMS is more than ``-threshold_db`` dB below the loudest frame.

    Args:
        samples: Mono waveform.
        sample_rate: Hz.
        threshold_db: Level relative to the loudest frame under which frames are silent.
        frame_ms: Analysis frame length.
        pad_ms: Silence kept on each side of the speech.

    Returns:
        The trimmed waveform (the input unchanged when nothing is silent).
    """
    frame = max(1, int(sample_rate * frame_ms / 1000))
    db = _frame_db(samples, frame)
    if db is None:
        return samples
    loud = np.flatnonzero(db - db.max() > threshold_db)
    if loud.size == 0:
        return samples
    pad = int(sample_rate * pad_ms / 1000)
    start = max(0, loud[0] * frame - pad)
    stop = min(len(samples), (loud[-1] + 1) * frame + pad)
    return samples[start:stop]


def _frame_db(samples: np.ndarray, frame: int) -> np.ndarray | None:
    """Power of each whole ``frame``-sample frame in dB (None: fewer than two frames)."""
    n = len(samples) // frame
    if n < 2:
        return None
    frames = samples[: n * frame].reshape(n, frame).astype(np.float64)
    return np.asarray(10 * np.log10((frames**2).mean(axis=1) + 1e-20))


def trim_speech(samples: np.ndarray, sample_rate: int, method: str = "auto") -> np.ndarray:
    """Cut what comes before the first word and after the last one.

    ``energy`` is :func:`trim_silence`: right for a quiet room, but over a fan, traffic or a
    laptop's hiss every frame is within 40 dB of the speech and nothing is cut. ``vad`` asks a
    voice-activity detector (:class:`rsia_geo.vad.SpeechDetector`, Silero VAD from the
    ``speech`` extra, ~2-3 ms per second of audio) where the words are. ``auto`` (what search,
    the service and training use) runs the energy trim, and the detector only when the energy
    trim kept at least :data:`AUTO_VAD_KEPT` of a clip of :data:`AUTO_VAD_MIN_SECONDS` or more,
    and cuts what it calls non-speech only where that sounds like the background (within
    :data:`AUTO_VAD_MARGIN_DB` of the clip's quiet frames: whispered or robotic words the
    detector misses are kept); when the detector is not installed or hears no speech, the
    energy trim stands.

    Args:
        samples: float32 mono samples.
        sample_rate: Hz (the detector needs 16 kHz: other rates fall back to the energy trim
            in ``auto`` and are refused by ``vad``).
        method: One of :data:`TRIM_METHODS`.

    Returns:
        The trimmed waveform (a view of ``samples``).

    Raises:
        InvalidArgumentError: Unknown method, or ``vad`` at a rate other than 16 kHz.
        InvalidAudioError: ``vad`` found no speech in the clip.
        DependencyNotFoundError: ``vad`` without faster-whisper / onnxruntime installed.
    """
    from rsia_geo.errors import DependencyNotFoundError, InvalidArgumentError

    if method not in TRIM_METHODS:
        raise InvalidArgumentError(
            f"trim method {method!r} is unknown; use one of {', '.join(TRIM_METHODS)}"
        )
    if method == "vad":
        return _vad_trim(samples, sample_rate)
    cut = trim_silence(samples, sample_rate)
    over_noise = (
        sample_rate == SAMPLE_RATE
        and len(cut) >= AUTO_VAD_KEPT * len(samples)
        and len(samples) >= AUTO_VAD_MIN_SECONDS * sample_rate
    )
    if method == "energy" or not over_noise:
        return cut
    try:
        span = _detector().span(samples)
    except DependencyNotFoundError:
        return cut
    if span is None:
        return cut
    start, stop = _background_edges(samples, sample_rate, span)
    return samples[start:stop]


def _vad_trim(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """``trim_speech(method="vad")``: the detector's span, no speech being an error."""
    from rsia_geo.errors import InvalidArgumentError

    if sample_rate != SAMPLE_RATE:
        raise InvalidArgumentError(
            f"the voice-activity trim needs {SAMPLE_RATE} Hz audio, not {sample_rate} Hz; "
            "resample first (load_audio does) or use method='energy'"
        )
    span = _detector().span(samples)
    if span is None:
        raise InvalidAudioError(
            f"no speech found in {len(samples) / sample_rate:.2f} s of audio by the "
            "voice-activity detector; check the recording, or trim with 'energy'"
        )
    return samples[span[0] : span[1]]


def _background_edges(
    samples: np.ndarray, sample_rate: int, span: tuple[int, int], frame_ms: float = 25.0
) -> tuple[int, int]:
    """The detector's span, cut only on the sides where what it cuts sounds like background.

    A side the detector would cut is kept (from the clip's edge) when its level is more than
    :data:`AUTO_VAD_MARGIN_DB` above the clip's quiet frames (the 10th percentile of 25 ms
    frame levels): the detector missed words there (whispered or robotic speech), and a
    quiet-room recording loses nothing it would have kept before.
    """
    db = _frame_db(samples, max(1, int(sample_rate * frame_ms / 1000)))
    if db is None:
        return span
    floor = float(np.percentile(db, 10))

    def background(part: np.ndarray) -> bool:
        if len(part) == 0:
            return True
        level = 10 * np.log10(float(np.mean(part.astype(np.float64) ** 2)) + 1e-20)
        return bool(level <= floor + AUTO_VAD_MARGIN_DB)

    start = span[0] if background(samples[: span[0]]) else 0
    stop = span[1] if background(samples[span[1] :]) else len(samples)
    return start, stop


def _detector() -> Any:
    from rsia_geo.vad import speech_detector

    return speech_detector()


@functools.lru_cache(maxsize=8)
def _resampler(orig: int, target: int) -> Any:
    """The windowed-sinc resampler of torchaudio for one pair of rates, its kernel built once.

    The samples of ``torchaudio.functional.resample`` exactly, which built the kernel again on
    every call (~1 ms of each 22.05 kHz query). The module holds no state but the kernel, so
    threads share it.
    """
    from rsia_geo._lazy import lazy_import

    transforms = lazy_import("torchaudio.transforms")
    g = math.gcd(orig, target)
    # a float32 kernel as the functional form builds it for float32 clips: the same samples
    return transforms.Resample(orig // g, target // g, dtype=lazy_import("torch").float32)


def _resample(samples: np.ndarray, orig: int, target: int) -> np.ndarray:
    if orig == target:
        return samples
    from rsia_geo._lazy import lazy_import

    torch = lazy_import("torch")
    with torch.inference_mode():
        out = _resampler(orig, target)(torch.from_numpy(np.ascontiguousarray(samples)))
    return np.asarray(out.numpy(), dtype=np.float32)


# Over 80 lines because of its public signature and docstring (34 of 81); the body (47) is one
# sequence of checks, each naming the bad value and its fix, in the order the data is read.
def load_audio(
    source: Any,
    *,
    sample_rate: int | None = None,
    target_rate: int = SAMPLE_RATE,
    max_seconds: float = 60.0,
    min_seconds: float = 0.1,
    trim: bool | str = False,
    remove_dc: bool = True,
) -> AudioClip:
    """Decode and check audio, returning a mono waveform at ``target_rate``.

    Args:
        source: A path, bytes, a binary file object, or an array/tensor of samples (then
            ``sample_rate`` is required). Arrays may be ``(samples,)``, ``(samples, channels)``
            or ``(channels, samples)``; integer samples are scaled to [-1, 1]. Float samples
            beyond full scale (a float file saved with gain) are scaled to a peak of 1.
        sample_rate: Sample rate of an array input, Hz.
        target_rate: Output sample rate, Hz.
        max_seconds: Longer inputs are refused (a spoken query is a few seconds).
        min_seconds: Shorter inputs (after trimming) are refused.
        trim: Cut what comes before and after the words (:func:`trim_speech`): False, True
            (``"auto"``), or one of :data:`TRIM_METHODS`.
        remove_dc: Subtract the mean.

    Returns:
        The clip.

    Raises:
        AudioDecodeError: The container is unknown, corrupt or unreadable.
        InvalidAudioError: Empty, silent, non-finite, too short or long, or a bad sample rate;
            or ``trim="vad"`` and no speech was found.
        InvalidArgumentError: ``trim`` is not a bool or one of :data:`TRIM_METHODS`.
    """
    method = _trim_method(trim)
    if isinstance(source, (np.ndarray, list)) or _is_tensor(source):
        data, rate = _from_array(source, sample_rate)
    else:
        if sample_rate is not None:
            raise InvalidAudioError(
                "sample_rate= is only for array input; encoded audio carries its own rate"
            )
        data, rate = _decode(source, max_seconds)
    what = _describe(source)
    if not (MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE):
        raise InvalidAudioError(
            f"audio {what} has sample rate {rate} Hz, outside [{MIN_SAMPLE_RATE}, "
            f"{MAX_SAMPLE_RATE}] Hz; is sample_rate= right?"
        )
    if data.size == 0 or data.shape[0] == 0:
        raise InvalidAudioError(f"audio {what} has no samples")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InvalidAudioError(f"audio {what} has {bad} NaN/inf samples; fix the recording")
    seconds = data.shape[0] / rate
    if seconds > max_seconds:
        raise InvalidAudioError(
            f"audio {what} lasts {seconds:.1f} s, more than max_seconds={max_seconds:g}; "
            "cut it to the spoken query (or raise max_seconds)"
        )
    channels = data.shape[1]
    mono = data.mean(axis=1, dtype=np.float64)
    if remove_dc:
        mono = mono - mono.mean()
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise InvalidAudioError(
            f"audio {what} is silent (peak below {SILENCE_PEAK:g} of full scale); "
            "check the microphone or the file"
        )
    if peak > 1.0:  # float samples beyond full scale (saved with gain): nothing was clipped
        mono = mono / peak
    out = _resample(mono.astype(np.float32), rate, target_rate)
    if method is not None:
        out = trim_speech(out, target_rate, method)
    if out.shape[0] / target_rate < min_seconds:
        raise InvalidAudioError(
            f"audio {what} lasts {out.shape[0] / target_rate:.3f} s (after trimming), less than "
            f"min_seconds={min_seconds:g}"
        )
    return AudioClip(np.ascontiguousarray(out), target_rate, rate, channels)


def _trim_method(trim: Any) -> str | None:
    """``load_audio``'s ``trim`` as a method name (None: no trim)."""
    from rsia_geo.errors import InvalidArgumentError

    if trim is True:
        return "auto"
    if trim is False or trim is None:
        return None
    if isinstance(trim, str) and trim in TRIM_METHODS:
        return trim
    raise InvalidArgumentError(
        f"trim={trim!r} is not a trim; pass True, False or one of {', '.join(TRIM_METHODS)}"
    )
