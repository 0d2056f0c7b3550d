"""Ship a trained text route beside a checkpoint (float16, its training summary kept).

Usage:
    python scripts/ship_text_route.py runs/text_route/v0 rsia_geo/weights/CHECKPOINT [--weight 1.0]
        [--manifest runs/v2_train/manifest.jsonl] [--with-hashed FOLDER] [--with-bank MANIFEST]

``--with-hashed`` ships an ensemble (:class:`rsia_geo.models.text.EnsembleTextEncoder`) of the
trained pretrained route and the hashed route in FOLDER (which may be the checkpoint's own
folder: it is read before anything is written). When the trained folder holds an ensemble
already (a shipped checkpoint's), the hashed route in FOLDER replaces its hashed member, the
pretrained member and the bank kept.

``--with-bank MANIFEST`` adds a caption bank built from that manifest's training captions
(:class:`rsia_geo.models.text.CaptionBankTextEncoder`, nothing trained) to an ensemble (the
trained folder's, or the one ``--with-hashed`` makes).

``--manifest`` recomputes the route's vocabulary from its training manifest (with the current
:func:`rsia_geo.training.text_route.route_vocabulary` rule).

``--prompt-from MANIFEST`` sets the recogniser prompt searches give Whisper to that manifest's
training captions, one per class (:func:`rsia_geo.training.transcripts.domain_prompt`);
``--no-prompt`` removes it. Without either, the trained folder's prompt is kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rsia_geo.models import image_side_sha256, load_checkpoint
from rsia_geo.models.text import (
    TEXT_CONFIG_NAME,
    CaptionBankTextEncoder,
    EnsembleTextEncoder,
    PretrainedTextEncoder,
    TextEncoder,
    load_text_encoder,
    save_text_encoder,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trained", help="folder written by rsia-geo train-text")
    p.add_argument("checkpoint", help="checkpoint folder it was trained for")
    p.add_argument("--weight", type=float, default=1.0, help="the route's default weight")
    p.add_argument("--manifest", default=None, help="training manifest: recompute vocabulary")
    p.add_argument("--with-hashed", default=None, help="hashed route to ship an ensemble with")
    p.add_argument("--with-bank", default=None, help="training manifest: add a caption bank")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-from", default=None, help="training manifest: recogniser prompt")
    prompt.add_argument("--no-prompt", action="store_true", help="ship no recogniser prompt")
    a = p.parse_args()
    sha = image_side_sha256(load_checkpoint(a.checkpoint))  # what the route was trained for
    encoder = load_text_encoder(a.trained, image_sha256=sha)
    if encoder is None:
        raise SystemExit(f"{a.trained} has no text route")
    summary = json.loads((Path(a.trained) / TEXT_CONFIG_NAME).read_text())["summary"]
    if a.with_hashed:
        hashed = load_text_encoder(a.with_hashed, image_sha256=sha)
        ensemble = isinstance(encoder, EnsembleTextEncoder)
        if not isinstance(hashed, TextEncoder) or not (
            ensemble or isinstance(encoder, PretrainedTextEncoder)
        ):
            raise SystemExit(
                "--with-hashed needs a hashed route there and a pretrained route or an "
                "ensemble here"
            )
        hashed_summary = json.loads((Path(a.with_hashed) / TEXT_CONFIG_NAME).read_text())
        kept = encoder.recogniser_prompt
        if isinstance(encoder, EnsembleTextEncoder):
            members = {**summary.get("members", {}), "hashed": hashed_summary["summary"]}
            encoder = EnsembleTextEncoder(hashed, encoder.pretrained, encoder.bank)
        else:
            members = {"hashed": hashed_summary["summary"], "pretrained": summary}
            encoder = EnsembleTextEncoder(hashed, encoder)
        summary = {"text_kind": "ensemble", "members": members}
        encoder.recogniser_prompt = kept
    if a.with_bank:
        import tempfile

        from rsia_geo.training.text_route import train_text_route

        if not isinstance(encoder, EnsembleTextEncoder):
            raise SystemExit("--with-bank adds to an ensemble: give --with-hashed too")
        with tempfile.TemporaryDirectory() as tmp:
            report = train_text_route(a.checkpoint, a.with_bank, tmp, kind="bank")
            bank = load_text_encoder(tmp, image_sha256=sha, sentence=encoder.sentence)
        if not isinstance(bank, CaptionBankTextEncoder):
            raise SystemExit("building the caption bank failed")
        members = dict(summary["members"])
        members["bank"] = report
        summary = {"text_kind": "ensemble", "members": members}
        kept = encoder.recogniser_prompt
        encoder = EnsembleTextEncoder(encoder.hashed, encoder.pretrained, bank)
        encoder.recogniser_prompt = kept
    if a.manifest:
        from rsia_geo.training.text_route import _sentences, route_vocabulary

        _, captions, spoken = _sentences(a.manifest, "train")
        encoder.vocabulary = route_vocabulary(captions, spoken)
    if a.prompt_from or a.no_prompt:
        from rsia_geo.training.dataset import read_manifest
        from rsia_geo.training.transcripts import domain_prompt

        rows = read_manifest(a.prompt_from) if a.prompt_from else []
        encoder.recogniser_prompt = domain_prompt(rows)
    out = save_text_encoder(
        encoder, a.checkpoint, image_sha256=sha, summary=summary, default_weight=a.weight,
        half=True,
    )  # fmt: skip
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
