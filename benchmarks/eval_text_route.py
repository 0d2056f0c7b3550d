"""The text route (recogniser transcript -> text encoder) alone and fused with the audio route.

For each voicing (one held-out voice family each, plus recording conditions of the mixed one
when asked), scores val images against the clips as the search pipeline does: cosine
candidates (top 50) rescored by IA (``audio``); the transcript's cosine alone (``text``); and
the fusion the pipeline serves with a text encoder (``fused``): candidates by
``cos(audio) + w * cos(text)``, ranked by ``IA + w * cos(text)``
(:func:`rsia_geo.models.text.fused_scores`), where ``w`` is the route weight times the share
of the transcript's words seen in training; ``fused_confidence`` also multiplies by the
recogniser's confidence (measured worse, so not served), and ``fused_confidence_scaled``
scales each query's fused scores by ``2 / (1 + w)`` as well, so that one image's ranking of the
clips compares scores on one scale (measured in session 22, not served). A sweep over the
route weight is reported for transparency; the shipped weight, 1.0, was fixed in advance.

``--audio-members CK ...`` scores the audio route with the mean of the raw audio embeddings of
the checkpoint and of these checkpoints (voice sides trained with ``--image-from`` it: the same
image side), an ensemble of audio branches. The summary also gives the voice-to-image half of
the fused mR (``:a2i``), the direction search serves. ``--heard-as-said`` replaces every
transcript by the caption the clip says (a perfect recogniser): the ceiling of better
recognition with this image side.

Usage:
    python benchmarks/eval_text_route.py CHECKPOINT --text TEXT_FOLDER \
        --manifests runs/v2_val/manifest.jsonl runs/v2_val_*/manifest.jsonl \
        --conditions snr20 snr10 snr5 reverb bandlimit --cache runs/text_eval \
        --out runs/text_eval.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from eval_voices import (  # the same clips as the audio tables
    _rows,
    add_image_views_arg,
    set_whisper_window,
)

from rsia_geo.models import image_side_sha256, load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.models.text import encode_heard, fused_scores, load_text_encoder
from rsia_geo.pipeline import DEFAULT_FEEDBACK
from rsia_geo.training.augment import CONDITIONS
from rsia_geo.training.evaluate import (
    _metrics_both,
    candidates_only,
    encode_clips,
    encode_images,
    with_feedback,
)
from rsia_geo.training.transcripts import read_transcripts, transcripts_path
from rsia_geo.weights import hub_bank, tile_hubness

KEYS = ["i2a_r1", "i2a_r5", "i2a_r10", "a2i_r1", "a2i_r5", "a2i_r10", "mR"]
WEIGHTS = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]


def _suffix(model) -> str:
    """Cache files of a fitted Whisper window are not the fixed window's."""
    fitted = getattr(model.config.frontend, "whisper_window", "fixed") == "fitted"
    return "_fitted" if fitted else ""


def _audio(model, rows, cache: Path | None, name: str, condition: str = "clean") -> torch.Tensor:
    f = cache / f"audio_{name}_{condition}{_suffix(model)}.pt" if cache else None
    if f is not None and f.exists():
        return torch.load(f, weights_only=True)
    a = encode_clips(model, rows, condition=condition)
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        torch.save(a, f)
    return a


def _pipeline(
    cos: np.ndarray,
    second: np.ndarray,
    per_image: int,
    k: int,
    feedback: tuple[np.ndarray, float] | None = None,
) -> dict[str, float]:
    """Metrics of candidates by ``cos`` ranked by ``second`` (both ``N x Q``).

    ``feedback`` is ``(unit image vectors, weight)``: each query's candidates gain
    :func:`rsia_geo.pipeline.feedback_scores` toward its first
    :data:`~rsia_geo.pipeline.FEEDBACK_PLACES` (whole scenes: one place each), as search
    serves voice -> image; the image -> voice half is unchanged.
    """
    a2i = candidates_only(cos.T, second.T, k)
    if feedback is not None:
        a2i = with_feedback(a2i, *feedback)
    return _metrics_both(candidates_only(cos, second, k), a2i.T, per_image)


def _heard_under(
    model,
    rows,
    condition: str,
    cache: Path | None,
    name: str,
    prompt: str = "",
    alternatives: bool = False,
) -> dict:
    """Transcripts of the clips under a recording condition (the served clip, window, prompt).

    With ``alternatives``, each unsure clip's distinct transcripts too (``Heard.alternatives``).
    """
    import hashlib

    from rsia_geo.models.whisper import RETRY_BEAM, RETRY_BELOW, get_whisper
    from rsia_geo.training.evaluate import _heard

    tag = f"_p{hashlib.sha1(prompt.encode()).hexdigest()[:8]}" if prompt else ""
    if RETRY_BEAM > 1:  # transcripts of unsure clips decoded again (session 15 on)
        tag += f"_r{RETRY_BEAM}b{RETRY_BELOW:g}" + ("_alt" if alternatives else "")
    f = cache / f"heard_{name}_{condition}{_suffix(model)}{tag}.json" if cache else None
    if f is not None and f.exists():
        return json.loads(f.read_text())
    enc = get_whisper()
    out = {}
    for r in rows:
        wave = _heard(r["clip_path"], condition).numpy()
        window = model.frontend.whisper_frames(len(wave))
        h = enc.recognise([wave], window=window, prompt=prompt)[0]
        out[r["clip"]] = {"text": h.text, "confidence": h.confidence}
        if alternatives and h.alternatives:
            out[r["clip"]]["alternatives"] = [list(alt) for alt in h.alternatives]
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(out))
    return out


def heard_for(model, encoder, rows, manifest, condition, cache, hedge=False) -> dict:
    """What the recogniser heard for each clip, as the route serves it.

    The manifest's transcript file where its settings are the served ones (clean, fixed
    window, no prompt, no alternatives); else decoded under the condition with the route's
    prompt (cached).
    """
    name = Path(manifest).parent.name
    prompt = encoder.recogniser_prompt
    if condition == "clean" and not _suffix(model) and not prompt and not hedge:
        return read_transcripts(transcripts_path(manifest))  # the files' settings
    return _heard_under(model, rows, condition, cache, name, prompt, alternatives=hedge)


def route_scores(v, a, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cosine, IA, text cosine)`` scores, images x clips, of raw image / audio vectors and
    unit text vectors."""
    cos_t = (torch.nn.functional.normalize(v, dim=-1) @ t.T).numpy()
    return cosine_scores(v, a).numpy(), ia_scores(v, a).numpy(), cos_t


def _audio_mean(model, members, rows, cache, name, condition) -> torch.Tensor:
    """Raw audio embeddings of the clips: the checkpoint's, or its and its members' mean."""
    a = _audio(model, rows, cache, name, condition)
    if not members:
        return a
    for m in members:
        sha = m.checkpoint_meta["weights_sha256"][:12]
        a = a + _audio(m, rows, cache / f"member_{sha}" if cache else None, name, condition)
    return a / (1 + len(members))


def evaluate_voicing(
    model,
    encoder,
    v,
    manifest,
    split,
    per_image,
    k,
    cache,
    condition="clean",
    as_typed=False,
    members=(),
    hub=None,
    feedback=0.0,
    hedge=False,
    bank_above=None,
    as_said=False,
) -> dict:
    rows = _rows(manifest, split, per_image)
    name = Path(manifest).parent.name
    if as_said:  # a perfect recogniser: each clip heard as the caption it says
        heard = {r["clip"]: {"text": r["caption"], "confidence": 1.0} for r in rows}
    else:
        heard = heard_for(model, encoder, rows, manifest, condition, cache, hedge)
    texts = [heard[r["clip"]]["text"] for r in rows]
    # the served weight per query at route weight 1 (scaled by each swept weight below)
    cover = np.array([encoder.weight_for(t, 1.0) for t in texts])
    conf = np.array([heard[r["clip"]]["confidence"] for r in rows])
    a = _audio_mean(model, members, rows, cache, name, condition)
    # transcripts, as the pipeline serves them (--bank-for-transcripts: as typed text)
    if hedge:  # an unsure query's transcripts weighted by confidence (measured, not served)
        t = encode_heard(encoder, [
            heard[r["clip"]].get("alternatives") or [(heard[r["clip"]]["text"], 1.0)] for r in rows
        ])  # fmt: skip
    else:
        t = encoder.encode(texts, heard=not as_typed)
    sure = conf >= bank_above if bank_above is not None else None
    if sure is not None and sure.any():  # the bank only for a transcript heard this surely
        t[sure] = encoder.encode([x for x, s in zip(texts, sure, strict=True) if s])
    cos_a, ia, cos_t = route_scores(v, a, t)
    if hub is not None:  # as search(hubness=...) serves it: the scores less the hubness share
        ia = ia - hub[:, None]
    units = torch.nn.functional.normalize(v.double(), dim=-1).numpy()
    out: dict = {
        "clips": len(rows),
        "confidence_mean": float(conf.mean()),
        "bank_share": float(sure.mean()) if sure is not None else None,
        "audio": _pipeline(cos_a, ia, per_image, k, (units, feedback)),
        "text": _metrics_both(cos_t, cos_t, per_image),
        "fused": {},
        "fused_confidence": {},
        "fused_confidence_scaled": {},
    }
    for w in WEIGHTS:
        first, second = fused_scores(cos_a, ia, cos_t, w * cover[None, :])
        out["fused"][str(w)] = _pipeline(first, second, per_image, k, (units, feedback))
        wq = w * (cover * conf)
        first, second = fused_scores(cos_a, ia, cos_t, wq[None, :])
        out["fused_confidence"][str(w)] = _pipeline(first, second, per_image, k, (units, feedback))
        # the same scores, each query's scaled by 2 / (1 + w_q): the same ranking for that
        # query, but clips on one scale when an image ranks them
        scale = (2.0 / (1.0 + wq))[None, :]
        out["fused_confidence_scaled"][str(w)] = _pipeline(
            first * scale, second * scale, per_image, k, (units, feedback)
        )
    return out


def _a2i(m: dict) -> float:
    """The voice-to-image half of mR (what search serves): mean of a2i R@1, R@5, R@10."""
    return float(np.mean([m["a2i_r1"], m["a2i_r5"], m["a2i_r10"]]))


def _prompt_arg(value: str) -> str:
    """``--prompt``: 'none', 'train:MANIFEST' or the text."""
    if value == "none":
        return ""
    if value.startswith("train:"):
        from rsia_geo.training.dataset import read_manifest
        from rsia_geo.training.transcripts import domain_prompt

        return domain_prompt(read_manifest(value[len("train:") :]))
    return value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--text", required=True, help="folder with text.safetensors / text.json")
    p.add_argument("--manifests", nargs="+", required=True, help="voicings with transcripts")
    p.add_argument(
        "--conditions", nargs="*", default=[], choices=CONDITIONS[1:],
        help="recording conditions of the first voicing",
    )  # fmt: skip
    p.add_argument("--split", default="val")
    p.add_argument("--per-image", type=int, default=5)
    p.add_argument("--rescore-k", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=None, help="folder for the clips' audio embeddings")
    p.add_argument(
        "--whisper-window",
        choices=["fixed", "fitted"],
        default=None,
        help="override the checkpoint's Whisper window policy",
    )
    p.add_argument(
        "--prompt", default=None,
        help="the recogniser's prompt: 'none', 'train:MANIFEST' (its training captions, "
        "domain_prompt) or the text itself (default: the text route's own)",
    )  # fmt: skip
    p.add_argument(
        "--bank-for-transcripts", action="store_true",
        help="encode transcripts as typed text (the ensemble's caption bank included)",
    )  # fmt: skip
    p.add_argument(
        "--bank-above", type=float, default=None,
        help="encode a transcript as typed text (the caption bank included) when the "
        "recogniser's confidence is at least this",
    )  # fmt: skip
    p.add_argument(
        "--audio-members", nargs="*", default=[],
        help="checkpoints trained with --image-from CHECKPOINT: the audio route is the mean "
        "of their raw audio embeddings and the checkpoint's",
    )  # fmt: skip
    add_image_views_arg(p)
    p.add_argument(
        "--hubness", type=float, default=None,
        help="weight of the images' hubness subtracted from the rescored scores, as "
        "search(hubness=...) does (CSLS: 0.5; default 0, off, as search)",
    )  # fmt: skip
    p.add_argument(
        "--feedback", type=float, default=DEFAULT_FEEDBACK,
        help="search(feedback=...) on the voice -> image half: weight of the first places' "
        f"look (default {DEFAULT_FEEDBACK}, as search serves; 0: off, as measured before "
        "session 20)",
    )  # fmt: skip
    p.add_argument(
        "--hedge", action="store_true",
        help="embed an unsure query's distinct transcripts weighted by confidence "
        "(rsia_geo.models.text.encode_heard) instead of the likelier one alone",
    )  # fmt: skip
    p.add_argument(
        "--heard-as-said", action="store_true",
        help="a perfect recogniser: each clip's transcript is the caption it says (a ceiling "
        "for what better recognition could give)",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="JSON report")
    a = p.parse_args()
    if a.heard_as_said and (a.hedge or a.bank_above is not None):
        p.error("--heard-as-said has no recogniser confidences: drop --hedge / --bank-above")
    if a.bank_above is not None and (a.bank_for_transcripts or a.hedge):
        p.error(
            "--bank-above decides which transcripts get the bank: "
            "drop --bank-for-transcripts / --hedge"
        )
    if a.bank_above is not None and not 0.0 <= a.bank_above <= 1.0:
        p.error(f"--bank-above {a.bank_above}: a confidence, in [0, 1]")
    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint)
    if a.whisper_window:
        set_whisper_window(model, a.whisper_window)
    encoder = load_text_encoder(a.text, image_sha256=image_side_sha256(model))
    if encoder is None:
        raise SystemExit(f"{a.text} has no text.safetensors / text.json")
    if a.prompt is not None:
        encoder.recogniser_prompt = _prompt_arg(a.prompt)
    members = [load_checkpoint(m) for m in a.audio_members]
    for m in members:  # checked before any clip is encoded
        if image_side_sha256(m) != image_side_sha256(model):
            raise SystemExit(f"{m.checkpoint_path} has another image side than the checkpoint")
    t0 = time.time()
    first = _rows(a.manifests[0], a.split, a.per_image)
    v, _ = encode_images(model, first, views=a.image_views)
    beta = a.hubness or 0.0
    if beta > 0 and hub_bank(model) is None:
        raise SystemExit(f"--hubness needs {a.checkpoint}'s audio_bank.safetensors")
    hub = beta * tile_hubness(model, v.numpy()) if beta > 0 else None
    cache = Path(a.cache) if a.cache else None
    report: dict = {
        "checkpoint": a.checkpoint,
        "text": a.text,
        "whisper_window": model.config.frontend.whisper_window,
        "recogniser_prompt": encoder.recogniser_prompt,
        "bank_for_transcripts": a.bank_for_transcripts,
        "bank_above": a.bank_above,
        "audio_members": a.audio_members,
        "image_views": a.image_views,
        "hubness": beta,
        "feedback": a.feedback,
        "hedge": a.hedge,
        "heard_as_said": a.heard_as_said,
        "voicings": {},
    }
    for m in a.manifests:
        r = evaluate_voicing(
            model, encoder, v, m, a.split, a.per_image, a.rescore_k, cache,
            as_typed=a.bank_for_transcripts, members=members, hub=hub,
            feedback=a.feedback, hedge=a.hedge, bank_above=a.bank_above, as_said=a.heard_as_said,
        )  # fmt: skip
        report["voicings"][Path(m).parent.name] = r
        print(
            Path(m).parent.name,
            f"audio {r['audio']['mR']:.2f} text {r['text']['mR']:.2f} fused@1 "
            f"{r['fused']['1.0']['mR']:.2f} conf {r['confidence_mean']:.2f}",
            flush=True,
        )
    report["conditions"] = {}
    for cond in a.conditions:
        r = evaluate_voicing(
            model, encoder, v, a.manifests[0], a.split, a.per_image, a.rescore_k, cache, cond,
            as_typed=a.bank_for_transcripts, members=members, hub=hub,
            feedback=a.feedback, hedge=a.hedge, bank_above=a.bank_above, as_said=a.heard_as_said,
        )  # fmt: skip
        report["conditions"][cond] = r
        print(
            f"{cond}: audio {r['audio']['mR']:.2f} text {r['text']['mR']:.2f} "
            f"fused@1 {r['fused']['1.0']['mR']:.2f}",
            flush=True,
        )
    names = list(report["voicings"])
    summary = {}
    for variant in ("audio", "text"):
        summary[variant] = float(np.mean([report["voicings"][n][variant]["mR"] for n in names]))
    for w in WEIGHTS:
        for key in ("fused", "fused_confidence", "fused_confidence_scaled"):
            vals = [report["voicings"][n][key][str(w)]["mR"] for n in names]
            summary[f"{key}@{w}"] = float(np.mean(vals))
            summary[f"{key}@{w}:spread"] = float(max(vals) - min(vals))
            a2i = [_a2i(report["voicings"][n][key][str(w)]) for n in names]
            summary[f"{key}@{w}:a2i"] = float(np.mean(a2i))
    summary["audio:a2i"] = float(np.mean([_a2i(report["voicings"][n]["audio"]) for n in names]))
    report["mean_over_voicings"] = summary
    report["seconds"] = round(time.time() - t0, 1)
    print("\n| voicing | audio | text | " + " | ".join(f"fused w={w}" for w in WEIGHTS) + " |")
    print("|---|" + "---:|" * (2 + len(WEIGHTS)))
    for n in names:
        r = report["voicings"][n]
        cells = [r["audio"]["mR"], r["text"]["mR"]] + [r["fused"][str(w)]["mR"] for w in WEIGHTS]
        print(f"| {n} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    if report["conditions"]:
        print("\n| condition | audio | text | fused w=1 |")
        print("|---|---:|---:|---:|")
        for c, r in report["conditions"].items():
            cells = [r["audio"]["mR"], r["text"]["mR"], r["fused"]["1.0"]["mR"]]
            print(f"| {c} | " + " | ".join(f"{x:.2f}" for x in cells) + " |")
    print(json.dumps(summary, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
