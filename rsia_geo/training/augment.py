"""Recording conditions for synthetic speech: noise, rooms, microphones, clipping, silence, timbre.

Synthesised clips are clean studio-like speech; an analyst speaks into a laptop in an office.
:func:`random_condition` degrades a clip the way real recordings are degraded, for training
(applied to the waveform before the frozen speech encoder, so each cached clip carries one draw);
:func:`apply_condition` applies one of the fixed :data:`CONDITIONS` of the model card's
robustness table, seeded, so every model is measured on the same degraded clips.

All functions take and return float32 mono waveforms at 16 kHz and never modify their input.
"""

from __future__ import annotations

import numpy as np

from rsia_geo.errors import InvalidArgumentError

__all__ = [
    "CONDITIONS",
    "add_noise",
    "apply_condition",
    "band_limit",
    "clip_peaks",
    "pad_silence",
    "random_condition",
    "resample_timbre",
    "reverberate",
]

SR = 16_000

CONDITIONS = ("clean", "snr20", "snr10", "snr5", "reverb", "bandlimit")
"""Fixed conditions of the robustness table: clean; pink+white noise at 20/10/5 dB SNR; a room
with RT60 0.6 s; a telephone band (300-3400 Hz)."""


def _coloured_noise(n: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    if "+" in colour:  # equal-power mixture, e.g. "pink+white"
        parts = [_coloured_noise(n, rng, c) for c in colour.split("+")]
        return np.sum([p / (np.sqrt(np.mean(p**2)) + 1e-12) for p in parts], axis=0)
    white = rng.standard_normal(n)
    if colour == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1.0 / SR)
    f[0] = f[1] if n > 1 else 1.0
    exponent = {"pink": 0.5, "brown": 1.0, "blue": -0.5}[colour]
    out: np.ndarray = np.fft.irfft(spec / f**exponent, n)
    return out


def add_noise(
    wave: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "pink"
) -> np.ndarray:
    """Add noise at a signal-to-noise ratio (over the whole clip).

    Args:
        wave: Clip.
        snr_db: Target SNR in dB.
        rng: Random source.
        colour: ``white``, ``pink``, ``brown``, ``blue``, or an equal-power mixture such as
            ``pink+white``.

    Returns:
        The noisy clip.
    """
    noise = _coloured_noise(len(wave), rng, colour)
    p_sig = float(np.mean(wave.astype(np.float64) ** 2)) + 1e-12
    p_noise = float(np.mean(noise**2)) + 1e-12
    scale = np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (wave + scale * noise).astype(np.float32)


def reverberate(wave: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room impulse response (direct path + exponential tail).

    Args:
        wave: Clip.
        rt60: Reverberation time (s) for a 60 dB decay.
        rng: Random source.

    Returns:
        The reverberant clip, at the input's peak level.
    """
    n = max(1, int(rt60 * SR))
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # 60 dB = e^-6.9
    delay = int(rng.uniform(0.002, 0.01) * SR)
    rir = np.zeros(n + delay)
    rir[0] = 1.0
    rir[delay:] += 0.3 * tail
    m = len(wave) + len(rir) - 1
    size = 1 << (m - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(rir, size), size)[: len(wave)]
    peak = float(np.abs(out).max()) + 1e-12
    result: np.ndarray = (out * (float(np.abs(wave).max()) / peak)).astype(np.float32)
    return result


def band_limit(wave: np.ndarray, low: float, high: float) -> np.ndarray:
    """Keep ``[low, high]`` Hz with 100 Hz raised-cosine edges (a microphone or phone band).

    Args:
        wave: Clip.
        low: Lower edge, Hz.
        high: Upper edge, Hz.

    Returns:
        The filtered clip.
    """
    spec = np.fft.rfft(wave.astype(np.float64))
    f = np.fft.rfftfreq(len(wave), 1.0 / SR)
    gain = np.clip((f - (low - 100)) / 200, 0, 1) * np.clip(((high + 100) - f) / 200, 0, 1)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    out: np.ndarray = np.fft.irfft(spec * gain, len(wave)).astype(np.float32)
    return out


def clip_peaks(wave: np.ndarray, level: float) -> np.ndarray:
    """Overdrive: scale the peak to 1, then clip at ``level`` (0-1).

    Args:
        wave: Clip.
        level: Clipping level relative to the peak.

    Returns:
        The clipped clip.
    """
    peak = float(np.abs(wave).max()) + 1e-12
    return np.clip(wave / peak, -level, level).astype(np.float32)


def pad_silence(wave: np.ndarray, before: float, after: float) -> np.ndarray:
    """Add leading and trailing silence (seconds).

    Args:
        wave: Clip.
        before: Seconds before.
        after: Seconds after.

    Returns:
        The padded clip.
    """
    return np.concatenate(
        [np.zeros(int(before * SR), np.float32), wave, np.zeros(int(after * SR), np.float32)]
    )


def resample_timbre(wave: np.ndarray, factor: float) -> np.ndarray:
    """Shift pitch, formants and rate together by ``factor`` (a shorter or longer vocal tract).

    Played back at 16 kHz after resampling by ``1 / factor``, every frequency is multiplied by
    ``factor`` and the duration divided by it.

    Args:
        wave: Clip.
        factor: Frequency factor (e.g. 0.88-1.15).

    Returns:
        The transformed clip.
    """
    n = max(2, round(len(wave) / factor))
    x = np.linspace(0, len(wave) - 1, n)
    return np.interp(x, np.arange(len(wave)), wave).astype(np.float32)


def random_condition(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random recording condition for training (about 1 clip in 4 stays clean).

    Args:
        wave: Clean clip.
        rng: Random source.

    Returns:
        The degraded clip and a short description of what was applied.
    """
    if rng.random() < 0.25:
        return wave.astype(np.float32), "clean"
    steps: list[str] = []
    w = wave.astype(np.float32)
    if rng.random() < 0.5:
        f = float(rng.uniform(0.88, 1.15))
        w = resample_timbre(w, f)
        steps.append(f"timbre{f:.2f}")
    if rng.random() < 0.35:
        rt = float(rng.uniform(0.2, 0.9))
        w = reverberate(w, rt, rng)
        steps.append(f"rt{rt:.1f}")
    if rng.random() < 0.35:
        low, high = [(300, 3400), (150, 7000), (100, 5000), (200, 4000)][int(rng.integers(4))]
        w = band_limit(w, low, high)
        steps.append(f"band{low}-{high}")
    if rng.random() < 0.15:
        lv = float(rng.uniform(0.3, 0.7))
        w = clip_peaks(w, lv)
        steps.append(f"clip{lv:.1f}")
    if rng.random() < 0.4:
        w = pad_silence(w, float(rng.uniform(0.1, 0.8)), float(rng.uniform(0.1, 0.8)))
        steps.append("silence")
    if rng.random() < 0.7:
        snr = float(rng.uniform(3, 25))
        colour = ["white", "pink", "brown", "blue"][int(rng.integers(4))]
        w = add_noise(w, snr, rng, colour)
        steps.append(f"{colour}{snr:.0f}dB")
    w = w * np.float32(10 ** (rng.uniform(-20, 3) / 20))
    return w.astype(np.float32), "+".join(steps) or "gain"


def apply_condition(wave: np.ndarray, condition: str, seed: int = 0) -> np.ndarray:
    """One fixed condition of :data:`CONDITIONS` (seeded, so every model hears the same clip).

    Args:
        wave: Clean clip.
        condition: A name from :data:`CONDITIONS`.
        seed: Seed of the noise and the room.

    Returns:
        The degraded clip.

    Raises:
        InvalidArgumentError: Unknown condition.
    """
    rng = np.random.default_rng(seed)
    if condition == "clean":
        return wave.astype(np.float32)
    if condition.startswith("snr") and condition[3:].isdigit():
        return add_noise(wave, float(condition[3:]), rng, "pink+white")
    if condition == "reverb":
        return reverberate(wave, 0.6, rng)
    if condition == "bandlimit":
        return band_limit(wave, 300, 3400)
    raise InvalidArgumentError(
        f"unknown recording condition {condition!r}; use one of {', '.join(CONDITIONS)}"
    )
