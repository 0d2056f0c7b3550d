"""Offline speech synthesis of captions with varied voices (espeak-ng, flite, festival).

Published image-voice datasets are human recordings that cannot be obtained here, so training
clips are synthesised. To keep the model from learning one synthetic speaker, every clip gets a
voice drawn from many (engine x accent x variant), with random but seeded speed and pitch. The
catalogue is split into **training voices** and **held-out voices**: evaluation uses speakers the
model never heard (:func:`voice_catalogue`).

Engines (Debian packages): ``espeak-ng`` (English accents x voice variants; formant synthesis),
``flite`` (kal, kal16, awb, rms, slt; diphone/clustergen), ``festival`` with ``festvox-kallpc16k``
(kal_diphone).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rsia_geo.errors import InvalidArgumentError, RsiaError

__all__ = [
    "TYPED_QUERY_VOICE",
    "SynthesisError",
    "TypedQueryError",
    "Voice",
    "speak",
    "available_engines",
    "sample_voice",
    "synthesize",
    "voice_catalogue",
]

Engine = Literal["espeak-ng", "flite", "festival"]

# espeak-ng English accents and human-sounding variants
_ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-gb-scotland",
    "en-029",
    "en-us-nyc",
)
# The variants of the first catalogue (kept so that its voicings stay reproducible).
_ESPEAK_VARIANTS_V1 = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "adam",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "aunty",
    "belinda",
    "benjamin",
    "caleb",
    "david",
    "ed",
    "edward",
    "Gene",
    "iven",
    "john",
    "Lee",
    "linda",
    "max",
    "Michael",
    "Mike",
    "paul",
    "rob",
    "robert",
    "steph",
    "travis",
    "victor",
    "zac",
    "norbert",
    "shelby",
    "grandma",
    "grandpa",
)
# Every variant espeak-ng 1.51 ships (``espeak-ng --voices=variant``; "Mr serious" has a space
# in its file name and cannot be named on the command line).
_ESPEAK_VARIANTS = (
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "AnxiousAndy",
    "Demonic",
    "Denis",
    "Diogo",
    "Gene",
    "Gene2",
    "Henrique",
    "Hugo",
    "Jacky",
    "Lee",
    "Marco",
    "Mario",
    "Michael",
    "Mike",
    "Nguyen",
    "RicishayMax",
    "RicishayMax2",
    "RicishayMax3",
    "Storm",
    "Tweaky",
    "UniRobot",
    "adam",
    "anika",
    "anikaRobot",
    "announcer",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "croak",
    "david",
    "ed",
    "edward",
    "edward2",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "fast",
    "grandma",
    "grandpa",
    "gustave",
    "iven",
    "iven2",
    "iven3",
    "iven4",
    "john",
    "kaukovalta",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt5",
    "klatt6",
    "linda",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "marcelo",
    "max",
    "michel",
    "miguel",
    "norbert",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "robosoft",
    "robosoft2",
    "robosoft3",
    "robosoft4",
    "robosoft5",
    "robosoft6",
    "robosoft7",
    "robosoft8",
    "sandro",
    "shelby",
    "steph",
    "steph2",
    "steph3",
    "travis",
    "victor",
    "whisper",
    "whisperf",
    "zac",
)
_FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
_FLITE_F0 = {"kal": 105.0, "kal16": 105.0, "awb": 110.0, "rms": 100.0, "slt": 170.0}
_FESTIVAL_VOICES = ("kal_diphone",)

_ENGINE_SHARE = {"espeak-ng": 0.6, "flite": 0.25, "festival": 0.15}

# held out of training: two accents, two flite voices; "variants" also a third of the variants
_HELD_OUT_ACCENTS = {"en-gb-scotland", "en-029"}
_HELD_OUT_VARIANTS = set(_ESPEAK_VARIANTS_V1[2::3])
_HELD_OUT_FLITE = {"slt", "rms"}

HOLDOUTS = ("families", "variants")
"""Ways to split speakers into training and held-out voices (see :func:`voice_catalogue`)."""


class SynthesisError(RsiaError, RuntimeError):
    """A speech engine is missing or failed."""


class TypedQueryError(SynthesisError, InvalidArgumentError):
    """A typed query that is no query: empty, or longer than a phrase (a bad argument)."""


TYPED_QUERY_VOICE = ("espeak-ng", "en-us+m3")
"""Engine and voice that speak typed queries (a training voice: its speech is well learned)."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    Attributes:
        engine: ``espeak-ng``, ``flite`` or ``festival``.
        name: Engine voice: ``<accent>+<variant>`` for espeak-ng, a voice name otherwise.
        speed: Speaking-rate factor (1 = the engine's default).
        pitch: Pitch factor (1 = the voice's default).
    """

    engine: Engine
    name: str
    speed: float = 1.0
    pitch: float = 1.0

    @property
    def family(self) -> str:
        """Voice family: the espeak-ng accent, or the flite/festival voice (``"flite:slt"``)."""
        if self.engine == "espeak-ng":
            return f"{self.engine}:{self.name.split('+')[0]}"
        return f"{self.engine}:{self.name}"

    @property
    def speaker(self) -> str:
        """Engine and voice, without prosody: ``"espeak-ng:en-us+f3"``."""
        return f"{self.engine}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form.

        Returns:
            The fields as a dict.
        """
        return asdict(self)


def available_engines() -> list[str]:
    """Speech engines installed on this machine.

    Returns:
        Engine names whose programs are on PATH.
    """
    progs = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}
    return [e for e, prog in progs.items() if shutil.which(prog)]


def voice_catalogue(
    split: Literal["train", "heldout", "all"] = "all",
    engines: Sequence[str] | None = None,
    *,
    holdout: str = "families",
) -> list[Voice]:
    """Speakers (engine + voice) in the training or held-out set.

    Two ways of holding voices out:

    * ``"families"`` (default): whole voice families never heard in training: the espeak-ng
      accents ``en-gb-scotland`` and ``en-029`` (every variant), flite ``slt`` and ``rms``, and
      festival's ``kal_diphone``. Training uses the six other espeak-ng accents with every
      variant espeak-ng ships, and flite ``kal``, ``kal16`` and ``awb``.
    * ``"variants"`` (the first starter's catalogue): the same two accents, a third of 44
      variants on every accent and flite ``slt``/``rms``; festival is a training voice.

    Args:
        split: ``"train"``, ``"heldout"`` or ``"all"``.
        engines: Restrict to these engines (default: all that are installed).
        holdout: ``"families"`` or ``"variants"``.

    Returns:
        Voices with default prosody; :func:`sample_voice` randomises speed and pitch.

    Raises:
        SynthesisError: Unknown ``holdout``.
    """
    if holdout not in HOLDOUTS:
        raise SynthesisError(f"holdout={holdout!r}; use one of {', '.join(HOLDOUTS)}")
    engines = list(engines) if engines is not None else available_engines()
    families = holdout == "families"
    out: list[tuple[Voice, bool]] = []
    if "espeak-ng" in engines:
        for acc in _ESPEAK_ACCENTS:
            for var in _ESPEAK_VARIANTS if families else _ESPEAK_VARIANTS_V1:
                held = acc in _HELD_OUT_ACCENTS or (not families and var in _HELD_OUT_VARIANTS)
                out.append((Voice("espeak-ng", f"{acc}+{var}"), held))
    if "flite" in engines:
        out += [(Voice("flite", v), v in _HELD_OUT_FLITE) for v in _FLITE_VOICES]
    if "festival" in engines:
        out += [(Voice("festival", v), families) for v in _FESTIVAL_VOICES]
    if split == "all":
        return [v for v, _ in out]
    return [v for v, held in out if held == (split == "heldout")]


def sample_voice(
    voices: Sequence[Voice],
    rng: random.Random,
    *,
    speed_range: tuple[float, float] = (0.8, 1.25),
    pitch_range: tuple[float, float] = (0.8, 1.25),
) -> Voice:
    """Draw a speaker and a random speed and pitch.

    The engine is drawn first (espeak-ng 60 %, flite 25 %, festival 15 %, renormalised over
    the engines present), then a speaker of that engine, so the few flite and festival voices
    neither vanish among espeak-ng's hundreds nor dominate.

    Args:
        voices: Candidate speakers.
        rng: Random source (seeded by the caller).
        speed_range: Range of the speed factor.
        pitch_range: Range of the pitch factor.

    Returns:
        A voice with prosody set.
    """
    if not voices:
        raise SynthesisError("no voices to sample from; install espeak-ng, flite or festival")
    by_engine: dict[str, list[Voice]] = {}
    for v in voices:
        by_engine.setdefault(v.engine, []).append(v)
    engines = sorted(by_engine)
    engine = rng.choices(engines, weights=[_ENGINE_SHARE.get(e, 0.1) for e in engines])[0]
    base = rng.choice(by_engine[engine])
    return Voice(
        base.engine,
        base.name,
        round(rng.uniform(*speed_range), 3),
        round(rng.uniform(*pitch_range), 3),
    )


def _run(cmd: list[str], *, timeout: float = 60.0) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise SynthesisError(
            f"{cmd[0]} is not installed; apt-get install espeak-ng flite festival festvox-kallpc16k"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise SynthesisError(f"{cmd[0]} timed out after {timeout:g} s") from exc
    if res.returncode != 0:
        raise SynthesisError(f"{' '.join(cmd[:3])}... failed ({res.returncode}): {res.stderr}")


def synthesize(text: str, voice: Voice, out_path: str | Path) -> Path:
    """Speak ``text`` with ``voice`` into a WAV file.

    Args:
        text: What to say (one caption).
        voice: Speaker and prosody.
        out_path: WAV file to write (its folder must exist).

    Returns:
        The written path.

    Raises:
        SynthesisError: Empty text, missing engine, or an engine failure.
    """
    text = " ".join(text.split())
    if not text:
        raise SynthesisError("text is empty; nothing to synthesise")
    out = Path(out_path)
    tmp = out.with_name(out.name + ".part.wav")
    if voice.engine == "espeak-ng":
        _run(
            [
                "espeak-ng",
                "-v",
                voice.name,
                "-s",
                str(round(175 * voice.speed)),
                "-p",
                str(max(0, min(99, round(50 * voice.pitch)))),
                "-w",
                str(tmp),
                text,
            ]
        )
    elif voice.engine == "flite":
        f0 = _FLITE_F0.get(voice.name, 110.0) * voice.pitch
        _run(
            [
                "flite",
                "-voice",
                voice.name,
                "--setf",
                f"duration_stretch={1.0 / voice.speed:.3f}",
                "--setf",
                f"int_f0_target_mean={f0:.1f}",
                "-t",
                text,
                "-o",
                str(tmp),
            ]
        )
    elif voice.engine == "festival":
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text + "\n")
            txt = f.name
        try:
            _run(
                [
                    "text2wave",
                    "-o",
                    str(tmp),
                    "-eval",
                    f"(voice_{voice.name})",
                    "-eval",
                    f"(Parameter.set 'Duration_Stretch {1.0 / voice.speed:.3f})",
                    txt,
                ]
            )
        finally:
            Path(txt).unlink(missing_ok=True)
    else:
        raise SynthesisError(f"unknown engine {voice.engine!r}; use espeak-ng, flite or festival")
    if not tmp.exists() or tmp.stat().st_size <= 44:
        tmp.unlink(missing_ok=True)
        raise SynthesisError(f"{voice.speaker} produced no audio for {text!r}")
    tmp.replace(out)  # atomic: a killed run never leaves a half-written clip
    return out


def speak(text: str, *, voice: Voice | None = None) -> tuple[Any, str]:
    """Speak a typed query with the bundled synthesis, for the same audio encoder.

    Args:
        text: The query, e.g. ``"boats docked at a harbour"``.
        voice: Speaker (default :data:`TYPED_QUERY_VOICE` at default speed and pitch).

    Returns:
        ``(samples, speaker)``: mono float32 numpy samples at 16 kHz, and the speaker name.

    Raises:
        TypedQueryError: Empty text, or longer than 500 characters (a
            :class:`~rsia_geo.errors.InvalidArgumentError` too).
        SynthesisError: The engine is not installed or failed.
    """
    from rsia_geo.audio import load_audio

    text = " ".join(str(text).split())
    if not text:
        raise TypedQueryError("the typed query is empty; type what to look for")
    if len(text) > 500:
        raise TypedQueryError(
            f"the typed query has {len(text)} characters; a query is a phrase (500 at most)"
        )
    v = voice or Voice(*TYPED_QUERY_VOICE)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="rsia_typed_") as tmp:
        wav = synthesize(text, v, Path(tmp) / "query.wav")
        clip = load_audio(wav, trim=True)
    return clip.samples, v.speaker
