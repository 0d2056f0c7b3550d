"""Where the words are: a voice-activity detector for spoken queries.

The energy trim of :func:`rsia_geo.audio.trim_silence` cuts frames far below the loudest one.
That works for a quiet room; over a fan, traffic or a laptop's own hiss every frame is within
40 dB of the speech and nothing is cut, so the model hears seconds of noise around a 2 s query
(and a query that starts late may fall outside the speech encoder's window). A voice-activity
detector finds the words themselves.

The detector is Silero VAD v6 (MIT licence) as the ONNX model that ``faster-whisper`` 1.2.1 (the
``speech`` extra) ships in its wheel, run by ``onnxruntime`` (a dependency of faster-whisper):
nothing is downloaded. The whole clip is scored in one call (one row per 32 ms window, each with
the 4 ms before it), ~3-4 ms per second of audio on one core. The file is checked against its
sha256 at load.

This module imports nothing heavy at import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rsia_geo.errors import CheckpointError, CheckpointNotFoundError, DependencyNotFoundError

__all__ = ["SILERO_SHA256", "SpeechDetector", "speech_detector"]

SAMPLE_RATE = 16_000
WINDOW = 512
"""Samples per scored window (32 ms at 16 kHz), as the model was trained."""
CONTEXT = 64
"""Samples of the previous window prepended to each one."""
SILERO_SHA256 = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2"
"""sha256 of ``faster_whisper/assets/silero_vad_v6.onnx`` in faster-whisper 1.2.1."""


def _packaged_model() -> Path:
    """The Silero VAD model inside the installed faster-whisper (found without importing it)."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyNotFoundError(
            "voice-activity trimming needs faster-whisper (its wheel ships Silero VAD): "
            "pip install 'rsia_geo[speech]', or trim with trim='energy'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"


class SpeechDetector:
    """Silero VAD on whole 16 kHz clips: per-window speech probabilities and the speech span.

    Args:
        path: The ONNX model (None: the one faster-whisper ships, checked by sha256; another
            file is used as given).
        threads: onnxruntime threads (1: the detector is small; queries run beside the encoders).

    Raises:
        DependencyNotFoundError: faster-whisper or onnxruntime is not installed.
        CheckpointNotFoundError: The model file is missing.
        CheckpointError: The packaged file does not match :data:`SILERO_SHA256`.
    """

    def __init__(self, path: str | Path | None = None, *, threads: int = 1) -> None:
        packaged = path is None
        self.path = _packaged_model() if path is None else Path(path)
        if not self.path.is_file():
            raise CheckpointNotFoundError(
                f"no Silero VAD model at {str(self.path)!r}; reinstall faster-whisper==1.2.1 "
                "(pip install 'rsia_geo[speech]') or pass the path of silero_vad_v6.onnx"
            )
        if packaged:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
            if digest != SILERO_SHA256:
                raise CheckpointError(
                    f"{self.path} has sha256 {digest}, not the {SILERO_SHA256} of "
                    "faster-whisper 1.2.1's Silero VAD; install faster-whisper==1.2.1"
                )
        try:
            import onnxruntime
        except ImportError as exc:
            raise DependencyNotFoundError(
                "voice-activity trimming needs onnxruntime: pip install 'rsia_geo[speech]', "
                "or trim with trim='energy'"
            ) from exc
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        self._session: Any = onnxruntime.InferenceSession(
            str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._lock = threading.Lock()

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms window of a 16 kHz clip (the last one zero-padded).

        Args:
            samples: float32 mono samples at 16 kHz.

        Returns:
            float32 ``(ceil(len / 512),)`` in [0, 1].
        """
        x = np.asarray(samples, dtype=np.float32).ravel()
        n = -(-len(x) // WINDOW)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        windows = np.zeros((n, WINDOW), dtype=np.float32)
        windows.reshape(-1)[: len(x)] = x
        rows = np.empty((n, CONTEXT + WINDOW), dtype=np.float32)
        rows[:, CONTEXT:] = windows
        rows[0, :CONTEXT] = 0.0
        rows[1:, :CONTEXT] = windows[:-1, -CONTEXT:]
        state = np.zeros((1, 1, 128), dtype=np.float32)
        with self._lock:
            probs, _, _ = self._session.run(None, {"input": rows, "h": state, "c": state})
        return np.asarray(probs, dtype=np.float32).reshape(-1)[:n]

    def span(
        self,
        samples: np.ndarray,
        *,
        threshold: float = 0.5,
        min_run: int = 2,
        pad_ms: float = 100.0,
        min_speech_ms: float = 250.0,
    ) -> tuple[int, int] | None:
        """From the first word to the last: the sample range that holds the speech.

        A window is speech when its probability reaches ``threshold``; only runs of at least
        ``min_run`` such windows count (one noisy window far from the words does not stretch
        the span). The pauses between words stay: the span runs from the first run's start to
        the last run's end, with ``pad_ms`` more on each side.

        Args:
            samples: float32 mono samples at 16 kHz.
            threshold: Speech probability of a speech window.
            min_run: Consecutive speech windows that make a run.
            pad_ms: Kept before the first and after the last run.
            min_speech_ms: Less speech than this in all runs together is no speech.

        Returns:
            ``(start, stop)`` sample indices, or None when no speech was found.
        """
        speech = self.probabilities(samples) >= threshold
        if not speech.any():
            return None
        edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(np.int8), [0]])))
        starts, stops = edges[::2], edges[1::2]  # runs [start, stop) in windows
        long = (stops - starts) >= min_run
        if not long.any() or (stops - starts)[long].sum() * WINDOW < min_speech_ms * 16:
            return None
        pad = int(pad_ms * SAMPLE_RATE / 1000)
        start = max(0, int(starts[long][0]) * WINDOW - pad)
        stop = min(len(samples), int(stops[long][-1]) * WINDOW + pad)
        return start, stop


@lru_cache(maxsize=1)
def speech_detector() -> SpeechDetector:
    """The packaged detector, loaded once per process (thread-safe to call)."""
    return SpeechDetector()
