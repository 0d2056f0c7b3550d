"""Build image-voice data from a captioned image dataset by offline speech synthesis.

:func:`voice_captions` speaks every caption of the chosen splits with voices drawn (seeded) from
the training voices for training splits and from the held-out voices for evaluation splits, in
parallel, resumably: each clip is written atomically, and a line is appended to
``manifest.jsonl`` only after its clip exists, so a killed run restarts where it stopped and
never lists a half-written clip.

Clips are named as in the published image-voice sets: ``<image stem>S<k>.wav`` for caption
``k`` (1-based) and the first voice, ``<image stem>S<k>_<j>.wav`` for further voices.

Accepted caption files:

* the rsia/UCM format: ``{"images": [{"image": "images/1.jpg", "class": ..., "split": ...,
  "captions": [...]}]}`` (paths relative to the JSON's folder);
* the Karpathy format: ``{"images": [{"filename": ..., "filepath": ..., "split": ...,
  "sentences": [{"raw": ...}]}]}``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsia_geo.errors import RsiaError
from rsia_geo.training.synthesis import (
    SynthesisError,
    Voice,
    available_engines,
    sample_voice,
    synthesize,
    voice_catalogue,
)

__all__ = [
    "CaptionRecord",
    "DataError",
    "load_split",
    "read_captions",
    "read_manifest",
    "voice_captions",
]

logger = logging.getLogger(__name__)

EVAL_SPLITS = {"val", "test", "restval_test"}


class DataError(RsiaError, ValueError):
    """A dataset file is malformed or inconsistent."""


@dataclass(frozen=True)
class CaptionRecord:
    """One image and its captions.

    Attributes:
        image: Path of the image file.
        image_id: Image stem, unique in the dataset.
        split: ``train``, ``val``, ``test``...
        captions: The captions.
        label: Scene class, if known.
    """

    image: Path
    image_id: str
    split: str
    captions: tuple[str, ...]
    label: str | None = None


def read_captions(
    path: str | Path, *, image_root: str | Path | None = None, check_images: bool = True
) -> list[CaptionRecord]:
    """Read a captions JSON file (UCM or Karpathy format).

    Args:
        path: The JSON file.
        image_root: Folder image paths are relative to (default: the JSON's folder).
        check_images: Fail when an image file is missing.

    Returns:
        One record per image.

    Raises:
        DataError: Unknown format, duplicate image ids, images without captions, or missing
            image files.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"captions file {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{str(p)!r} is not valid JSON: {exc}") from exc
    root = Path(image_root) if image_root is not None else p.parent
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{str(p)!r} has no 'images' list; expected the UCM or Karpathy format")
    out: list[CaptionRecord] = []
    seen: set[str] = set()
    missing: list[str] = []
    for i, e in enumerate(entries):
        if "captions" in e:
            rel = e.get("image")
            caps = [str(c) for c in e["captions"]]
        elif "sentences" in e:
            rel = str(Path(e.get("filepath", "")) / e["filename"]) if "filename" in e else None
            caps = [str(s.get("raw", " ".join(s.get("tokens", [])))) for s in e["sentences"]]
        else:
            raise DataError(f"entry {i} of {str(p)!r} has neither 'captions' nor 'sentences'")
        if not rel:
            raise DataError(f"entry {i} of {str(p)!r} names no image file")
        caps = [c.strip() for c in caps if c and c.strip()]
        if not caps:
            raise DataError(f"image {rel!r} (entry {i}) has no caption; remove it or add some")
        image = root / rel
        image_id = Path(rel).stem
        if image_id in seen:
            raise DataError(f"image id {image_id!r} appears twice in {str(p)!r}")
        seen.add(image_id)
        if check_images and not image.exists():
            missing.append(str(image))
        out.append(
            CaptionRecord(
                image,
                image_id,
                str(e.get("split", "train")),
                tuple(caps),
                e.get("class") or e.get("label"),
            )
        )
    if missing:
        raise DataError(
            f"{len(missing)} image files listed in {str(p)!r} are missing, e.g. {missing[:3]}; "
            "pass image_root= if the images live elsewhere"
        )
    return out


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Read a voicing manifest (JSON lines), skipping a torn last line.

    A clip listed twice (re-synthesised after its file was lost) keeps its last row.

    Args:
        path: ``manifest.jsonl``.

    Returns:
        One dict per clip.
    """
    p = Path(path)
    if not p.exists():
        return []
    rows: dict[str, dict[str, Any]] = {}
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("ignoring a torn line in %s", p)
            continue
        rows.pop(row["clip"], None)
        rows[row["clip"]] = row
    return list(rows.values())


# Over 80 lines with its public signature and docstring (52); the body (55) checks the
# arguments, then voices the clips not on disk yet (resumable).
def voice_captions(
    captions: str | Path,
    out_dir: str | Path,
    *,
    splits: Sequence[str] | None = None,
    voices_per_caption: int = 1,
    engines: Sequence[str] | None = None,
    eval_voices: str = "heldout",
    seed: int = 0,
    workers: int = 2,
    limit: int | None = None,
    image_root: str | Path | None = None,
    progress: bool = True,
    on_clip: Callable[[dict[str, Any]], None] | None = None,
    holdout: str = "families",
    families: Sequence[str] | None = None,
    speed_range: tuple[float, float] = (0.8, 1.25),
    pitch_range: tuple[float, float] = (0.8, 1.25),
) -> Path:
    """Synthesise spoken versions of captions; resumable and parallel.

    Args:
        captions: Captions JSON (UCM or Karpathy format).
        out_dir: Output folder (``audio/`` and ``manifest.jsonl``).
        splits: Splits to voice (default: all).
        voices_per_caption: Clips per caption, each with another voice.
        engines: Speech engines to use (default: all installed).
        eval_voices: Voices for evaluation splits (val/test): ``"heldout"`` (speakers never
            used for training) or ``"train"``.
        seed: Seed of the voice and prosody draws (each clip's draw depends only on the seed
            and its name, so resuming or changing ``workers`` gives the same clips).
        workers: Parallel synthesis processes.
        limit: Voice only the first ``limit`` images of each split (smoke runs).
        image_root: Folder image paths are relative to.
        progress: Show a progress bar.
        on_clip: Called with each new manifest row.
        holdout: How speakers are split into training and held-out voices (``"families"``:
            whole accents and voices; ``"variants"``: the first starter's catalogue), see
            :func:`~rsia_geo.training.synthesis.voice_catalogue`.
        families: Use only voices of these families (``"espeak-ng:en-029"``, ``"flite:slt"``,
            ``"festival:kal_diphone"``...), e.g. to voice a validation split once per held-out
            family.
        speed_range: Range of the speaking-rate factor drawn per clip.
        pitch_range: Range of the pitch factor drawn per clip.

    Returns:
        The manifest path.

    Raises:
        DataError: Bad captions file or arguments.
        SynthesisError: No speech engine is installed.
    """
    every = read_captions(captions, image_root=image_root)
    have = {r.split for r in every}
    if splits is not None and set(splits) - have:
        raise DataError(
            f"splits {sorted(set(splits) - have)} not in {str(captions)!r}; it has {sorted(have)}"
        )
    records = _select_records(every, splits, limit)
    if voices_per_caption < 1:
        raise DataError(f"voices_per_caption={voices_per_caption!r} must be >= 1")
    if eval_voices not in ("heldout", "train"):
        raise DataError(f"eval_voices={eval_voices!r}; use 'heldout' or 'train'")
    for name, rng_ in (("speed_range", speed_range), ("pitch_range", pitch_range)):
        if not 0.3 <= rng_[0] <= rng_[1] <= 3.0:
            raise DataError(f"{name}={rng_!r} must be (low, high) with 0.3 <= low <= high <= 3")
    engines = list(engines) if engines is not None else available_engines()
    train_voices, held_voices = _voice_pools(engines, eval_voices, holdout, families)

    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    done = {row["clip"] for row in read_manifest(manifest) if (out / row["clip"]).exists()}
    plan = _VoicingPlan(
        train_voices, held_voices, voices_per_caption, eval_voices, seed, speed_range,
        pitch_range, families,
    )  # fmt: skip
    jobs = [job for r in records for job in plan.jobs(r) if job["clip"] not in done]
    failures = _synthesise(jobs, out, manifest, workers, progress, on_clip)
    (out / "voicing.json").write_text(
        json.dumps(
            {
                "captions": str(captions),
                "splits": list(splits) if splits else None,
                "voices_per_caption": voices_per_caption,
                "engines": engines,
                "eval_voices": eval_voices,
                "holdout": holdout,
                "families": list(families) if families is not None else None,
                "speed_range": list(speed_range),
                "pitch_range": list(pitch_range),
                "seed": seed,
                "train_speakers": [v.speaker for v in train_voices],
                "heldout_speakers": [v.speaker for v in held_voices]
                if eval_voices == "heldout"
                else [],
                "clips": len(read_manifest(manifest)),
                "failures": failures[:20],
            },
            indent=2,
        )
    )
    if failures:
        logger.warning(
            "%d clips failed (listed in voicing.json); re-run to retry them", len(failures)
        )
    return manifest


def _select_records(
    records: list[CaptionRecord], splits: Sequence[str] | None, limit: int | None
) -> list[CaptionRecord]:
    """The records of the splits asked for, the first ``limit`` images of each."""
    if splits is not None:
        records = [r for r in records if r.split in splits]
    if limit is None:
        return records
    by_split: dict[str, list[CaptionRecord]] = {}
    for r in records:
        by_split.setdefault(r.split, []).append(r)
    return [r for rs in by_split.values() for r in rs[:limit]]


def _voice_pools(
    engines: list[str], eval_voices: str, holdout: str, families: Sequence[str] | None
) -> tuple[list[Voice], list[Voice]]:
    """Training voices and the voices of evaluation splits (held out, or the training ones)."""
    missing_engines = set(engines) - set(available_engines())
    if missing_engines:
        raise SynthesisError(f"speech engines {sorted(missing_engines)} are not installed")
    train_voices = voice_catalogue("train", engines, holdout=holdout)
    held_voices = voice_catalogue(
        "heldout" if eval_voices == "heldout" else "train", engines, holdout=holdout
    )
    if families is not None:
        wanted = set(families)
        known = {v.family for v in voice_catalogue("all", engines, holdout=holdout)}
        if wanted - known:
            raise DataError(
                f"unknown voice families {sorted(wanted - known)}; known: {sorted(known)}"
            )
        train_voices = [v for v in train_voices if v.family in wanted]
        held_voices = [v for v in held_voices if v.family in wanted]
    if not train_voices and not held_voices:
        raise SynthesisError("no speech engine installed; apt-get install espeak-ng flite")
    return train_voices, held_voices


@dataclass
class _VoicingPlan:
    """Which voice speaks each clip.

    Drawn from the clip's name and the seed alone, so a resumed run, or one with more
    workers, voices exactly the same clips.
    """

    train_voices: list[Voice]
    held_voices: list[Voice]
    voices_per_caption: int
    eval_voices: str
    seed: int
    speed_range: tuple[float, float]
    pitch_range: tuple[float, float]
    families: Sequence[str] | None

    def jobs(self, r: CaptionRecord) -> list[dict[str, Any]]:
        """The manifest rows (clips to synthesise) of one image's captions."""
        evaluation = r.split in EVAL_SPLITS
        pool = self.held_voices if evaluation else self.train_voices
        out = []
        for k, caption in enumerate(r.captions, start=1):
            for j in range(self.voices_per_caption):
                name = f"{r.image_id}S{k}.wav" if j == 0 else f"{r.image_id}S{k}_{j}.wav"
                if not pool:
                    raise DataError(
                        f"no {'held-out' if evaluation else 'training'} voice left "
                        f"for split {r.split!r} with families={sorted(self.families or [])}"
                    )
                rng = random.Random(f"{self.seed}/{name}")
                voice = sample_voice(
                    pool, rng, speed_range=self.speed_range, pitch_range=self.pitch_range
                )
                out.append(
                    {
                        "clip": f"audio/{name}",
                        "image": str(r.image),
                        "image_id": r.image_id,
                        "split": r.split,
                        "label": r.label,
                        "caption": caption,
                        "caption_index": k - 1,
                        "voice_index": j,
                        "voice_set": "heldout"
                        if evaluation and self.eval_voices == "heldout"
                        else "train",
                        **voice.to_dict(),
                        "speaker": voice.speaker,
                        "family": voice.family,
                        "seed": self.seed,
                    }
                )
        return out


def _synthesise(
    jobs: list[dict[str, Any]],
    out: Path,
    manifest: Path,
    workers: int,
    progress: bool,
    on_clip: Callable[[dict[str, Any]], None] | None,
) -> list[str]:
    """Voice the planned clips in parallel, appending each finished one to the manifest.

    Returns:
        The failures' messages (those clips are left for a re-run).
    """
    from tqdm.auto import tqdm

    lock = threading.Lock()
    failures: list[str] = []

    def run(job: dict[str, Any]) -> dict[str, Any]:
        voice = Voice(job["engine"], job["name"], job["speed"], job["pitch"])
        synthesize(job["caption"], voice, out / job["clip"])
        return job

    bar = tqdm(total=len(jobs), desc="voicing", unit="clip", disable=not progress)
    with manifest.open("a") as mf, ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        futures = [ex.submit(run, j) for j in jobs]
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except SynthesisError as exc:
                failures.append(str(exc))
                logger.warning("clip failed: %s", exc)
            else:
                with lock:
                    mf.write(json.dumps(row) + "\n")
                    mf.flush()
                if on_clip is not None:
                    on_clip(row)
            bar.update(1)
    bar.close()
    return failures


def load_split(manifest: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows of one split of a manifest, ordered, with ``clip_path`` resolved to a file path.

    Args:
        manifest: ``manifest.jsonl`` (clip paths in it are relative to its folder, or absolute).
        split: Split name.

    Returns:
        The rows (empty when the split is absent).

    Raises:
        DataError: The manifest does not exist.
    """
    m = Path(manifest)
    if not m.exists():
        raise DataError(f"manifest {str(m)!r} does not exist; run `rsia-geo data voice` first")
    return [
        dict(r, clip_path=str(m.parent / r["clip"]))
        for r in manifest_pairs(read_manifest(m), split)
    ]


def manifest_pairs(rows: Iterable[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Manifest rows of one split, in a stable order (image id, caption, voice).

    Args:
        rows: Manifest rows.
        split: Split name.

    Returns:
        The rows of that split.
    """

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        iid = str(r["image_id"])
        num = (0, int(iid), "") if iid.isdigit() else (1, 0, iid)
        return (*num, r["caption_index"], r["voice_index"])

    return sorted((r for r in rows if r["split"] == split), key=key)


def _caption_key(caption: str) -> str:
    """A caption's words, lower-cased, without punctuation or extra spaces.

    Two captions are the same words when their keys are equal (``mask_same_caption``).
    """
    return " ".join("".join(c if c.isalnum() else " " for c in caption.lower()).split())
