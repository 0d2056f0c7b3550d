"""Audio front ends: waveform batches -> time-frequency features for the audio encoder.

Two front ends, chosen by :class:`AudioFrontendConfig.kind`:

``"cepstrum"`` (the ALAC reference code's features)
    STFT (n_fft 4096, hop 200, Hann window of 1024 centred in the FFT frame, centred frames with
    zero padding) -> magnitude -> orthonormal DCT-II along frequency keeping 64 coefficients ->
    ``10 log10(max(x, 1e-10))`` with an 80 dB floor below each clip's maximum. The reference
    code calls this "MFCC", but there is no mel filterbank and no log before the DCT: it is a
    DCT of the *linear* magnitude spectrum (a cepstrum-like transform), then converted to dB.

``"logmel"`` (the standard option, and the default of the trained configurations)
    25 ms Hann windows every 10 ms, 64 mel bands 20-7600 Hz, ``log(mel + 1e-6)``, then per-clip
    mean subtraction per band (cepstral mean normalisation, which removes channel and voice
    colouring).

``"whisper"`` (a frozen pretrained speech encoder, :mod:`rsia_geo.models.whisper`)
    Whisper tiny.en's encoder (CTranslate2, int8) over a ``max_frames`` window (600 log-mel
    frames = 6 s), or with ``whisper_window="fitted"`` over a window fitted to each clip (its
    length plus 1 s, :func:`~rsia_geo.models.whisper.fitted_window`: the encoder's cost grows
    with its window and spoken queries are mostly 2-4 s); its 20 ms frames are averaged
    ``pool`` at a time, and frames after the clip's end are exactly zero (the ``whisper_head``
    encoder reads them as padding). Output ``(batch, 1, max_frames // 2 // pool, 384)`` either
    way. Nothing here trains.

Length policy (both): features are computed on the whole clip, then the first ``max_frames``
frames are kept; shorter clips are padded at the end with zeros (for ``logmel`` after mean
normalisation, so padding equals the clip's mean level). Output: ``(batch, 1, frames, bins)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rsia_geo.errors import ModelConfigError

__all__ = ["AudioFrontend", "AudioFrontendConfig"]


@dataclass(frozen=True)
class AudioFrontendConfig:
    """Audio front-end settings (stored in checkpoints).

    Attributes:
        kind: ``"cepstrum"`` (ALAC reference), ``"logmel"`` or ``"whisper"``.
        sample_rate: Input sample rate, Hz.
        n_fft: FFT size.
        win_length: Window length, samples.
        hop_length: Hop between frames, samples.
        n_coeffs: Output bins: DCT coefficients or mel bands.
        max_frames: Frames kept (longer clips are cut at the end, shorter ones padded).
        f_min: Lowest mel frequency (``logmel``).
        f_max: Highest mel frequency (``logmel``).
        top_db: Dynamic range floor below the clip maximum (``cepstrum``).
        pool: Encoder frames averaged into one (``whisper``).
        whisper_path: CTranslate2 Whisper model folder (``whisper``; None: the packaged
            tiny.en, or the folder in the ``RSIA_WHISPER_PATH`` environment variable).
        whisper_window: ``"fixed"`` (every clip in a ``max_frames`` window, as the features
            are cached for training) or ``"fitted"`` (each clip in a window fitted to its
            length, at most ``max_frames``; the recogniser then decodes the same encoder
            pass). Serving-only: the output shape, the checkpoint's weights and the indexes
            built with it do not change.
    """

    kind: Literal["cepstrum", "logmel", "whisper"] = "logmel"
    sample_rate: int = 16_000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_coeffs: int = 64
    max_frames: int = 500
    f_min: float = 20.0
    f_max: float = 7600.0
    top_db: float = 80.0
    pool: int = 1
    whisper_path: str | None = None
    whisper_window: Literal["fixed", "fitted"] = "fixed"

    @classmethod
    def whisper(cls, *, max_frames: int = 600, pool: int = 2) -> AudioFrontendConfig:
        """Whisper tiny.en's frozen encoder over a ``max_frames`` window (6 s by default).

        Args:
            max_frames: Window in 10 ms frames (even).
            pool: Encoder frames (20 ms) averaged into one.

        Returns:
            The configuration.
        """
        return cls(kind="whisper", max_frames=max_frames, pool=pool, n_coeffs=384)

    @property
    def frames_out(self) -> int:
        """Time steps of the features (``max_frames``, or encoder frames for ``whisper``)."""
        if self.kind == "whisper":
            return self.max_frames // 2 // self.pool
        return self.max_frames

    @classmethod
    def reference(cls) -> AudioFrontendConfig:
        """The ALAC reference code's settings (300 frames x 64 coefficients, ~3.75 s).

        Returns:
            The configuration.
        """
        return cls(
            kind="cepstrum",
            n_fft=4096,
            win_length=1024,
            hop_length=200,
            n_coeffs=64,
            max_frames=300,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form.

        Returns:
            The fields as a dict.
        """
        return asdict(self)

    @property
    def seconds(self) -> float:
        """Audio duration covered by ``max_frames``."""
        return self.max_frames * self.hop_length / self.sample_rate


def _dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II basis, shape ``(n_out, n_in)``."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    basis = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


class AudioFrontend(nn.Module):
    """Turn waveforms ``(batch, samples)`` into features ``(batch, 1, max_frames, n_coeffs)``.

    Args:
        config: Front-end settings.
    """

    window: torch.Tensor
    dct: torch.Tensor

    def __init__(self, config: AudioFrontendConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        if config.kind == "cepstrum":
            self.register_buffer(
                "dct", _dct_matrix(config.n_fft // 2 + 1, config.n_coeffs), persistent=False
            )
        elif config.kind == "whisper":
            if config.max_frames % 2 or config.pool < 1:
                raise ModelConfigError(
                    f"whisper front end: max_frames={config.max_frames} must be even and "
                    f"pool={config.pool} >= 1"
                )
            if config.whisper_window not in ("fixed", "fitted"):
                raise ModelConfigError(
                    f"whisper_window={config.whisper_window!r}; use 'fixed' or 'fitted'"
                )
        elif config.kind == "logmel":
            import torchaudio

            self.mel = torchaudio.transforms.MelScale(
                n_mels=config.n_coeffs,
                sample_rate=config.sample_rate,
                f_min=config.f_min,
                f_max=config.f_max,
                n_stft=config.n_fft // 2 + 1,
                norm="slaney",
                mel_scale="slaney",
            )
        else:
            raise ModelConfigError(f"kind={config.kind!r}; use 'cepstrum', 'logmel' or 'whisper'")

    def _stft_magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.config
        spec = torch.stft(
            wave,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return spec.abs()  # (batch, freq, frames)

    def speech_encoder(self) -> Any:
        """The frozen Whisper encoder of a ``whisper`` front end (loaded once per process).

        Returns:
            A :class:`~rsia_geo.models.whisper.WhisperEncoder`.
        """
        import os

        return _whisper_at(self.config.whisper_path or os.environ.get("RSIA_WHISPER_PATH"))

    def recogniser(self) -> tuple[Any, bool]:
        """The Whisper model that transcribes queries for the text route.

        By default the front end's own encoder (its pass over a query is decoded, not run
        again). A larger or better Whisper for transcripts alone (the trained head keeps its
        encoder) is a CTranslate2 Whisper folder in the ``RSIA_RECOGNISER_PATH`` environment
        variable, e.g. a faster-whisper download of ``base.en`` or ``small.en``; it encodes
        each query once more, at its own cost.

        Returns:
            ``(WhisperEncoder, shares the front end's encoder pass)``.
        """
        import os

        path = os.environ.get("RSIA_RECOGNISER_PATH")
        return (_whisper_at(path), False) if path else (self.speech_encoder(), True)

    def whisper_frames(self, samples: int) -> int | None:
        """The Whisper encoder's window for a clip of ``samples``, in 10 ms frames.

        Args:
            samples: The clip's length at ``config.sample_rate``.

        Returns:
            ``max_frames``, or the fitted window (``whisper_window="fitted"``); None for front
            ends that are not ``whisper``.
        """
        from rsia_geo.models.whisper import fitted_window

        c = self.config
        if c.kind != "whisper":
            return None
        if c.whisper_window == "fitted":
            return fitted_window(samples, c.max_frames)
        return c.max_frames

    def _whisper(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        c = self.config
        clips = [wave[i, : int(n)].detach().cpu().numpy() for i, n in enumerate(lengths.tolist())]
        encoder = self.speech_encoder()
        by_window: dict[int, list[int]] = {}  # clips of one window are encoded as one batch
        for i, clip in enumerate(clips):
            by_window.setdefault(int(self.whisper_frames(len(clip)) or c.max_frames), []).append(i)
        out: np.ndarray | None = None
        for window, members in by_window.items():
            part = encoder.encode([clips[i] for i in members], max_frames=window, pool=c.pool)
            if out is None:
                out = np.zeros((len(clips), c.frames_out, part.shape[-1]), np.float32)
            out[members, : part.shape[1]] = part  # the rest stays 0: padding, as trained
        assert out is not None
        return torch.from_numpy(out).to(wave.device)[:, None]

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Compute features.

        Args:
            wave: ``(batch, samples)`` float waveforms at ``config.sample_rate``; clips shorter
                than the batch are zero-padded at the end.
            lengths: Valid samples per clip (default: all). Frames past a clip's end are set to
                the padding value, so a clip's features do not depend on its batch.

        Returns:
            ``(batch, 1, max_frames, n_coeffs)`` features.
        """
        c = self.config
        if wave.dim() == 1:
            wave = wave[None]
        wave = wave.float()
        b = wave.shape[0]
        if lengths is None:
            lengths = torch.full((b,), wave.shape[1], dtype=torch.long, device=wave.device)
        if c.kind == "whisper":
            return self._whisper(wave, lengths)
        frames_valid = torch.div(lengths, c.hop_length, rounding_mode="floor") + 1
        # zero the samples past each clip's end so padding never leaks into its frames
        idx = torch.arange(wave.shape[1], device=wave.device)[None]
        wave = wave * (idx < lengths[:, None])
        mag = self._stft_magnitude(wave)  # (b, freq, t)
        t = mag.shape[-1]
        valid = torch.arange(t, device=wave.device)[None] < frames_valid[:, None]  # (b, t)
        if c.kind == "cepstrum":
            # float64: the DCT of a linear spectrum cancels large terms, and the dB of the
            # small results is sensitive to float32 rounding
            coeffs = torch.einsum("kf,bft->bkt", self.dct.double(), mag.double())
            db = (10.0 * torch.log10(torch.clamp(coeffs, min=1e-10))).float()
            masked = db.masked_fill(~valid[:, None, :], float("-inf"))
            peak = masked.amax(dim=(1, 2), keepdim=True)
            feats = torch.maximum(db, peak - c.top_db)
            feats = feats.masked_fill(~valid[:, None, :], 0.0)
        else:
            mel = self.mel(mag**2)
            logmel = torch.log(mel + 1e-6)
            w = valid[:, None, :].float()
            mean = (logmel * w).sum(-1, keepdim=True) / w.sum(-1, keepdim=True).clamp(min=1)
            feats = (logmel - mean) * w
        feats = feats.transpose(1, 2)  # (b, t, k)
        if feats.shape[1] >= c.max_frames:
            feats = feats[:, : c.max_frames]
        else:
            feats = nn.functional.pad(feats, (0, 0, 0, c.max_frames - feats.shape[1]))
        return feats[:, None]


def _whisper_at(path: str | None) -> Any:
    """The process-wide Whisper of a folder (None or "": the packaged tiny.en).

    It runs with as many CTranslate2 threads as torch has (1 to 4).
    """
    from rsia_geo.models.whisper import get_whisper

    return get_whisper(path or None, threads=max(1, min(4, torch.get_num_threads())))
