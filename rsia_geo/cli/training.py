"""``rsia-geo data voice|iv|transcribe``, ``train``, ``train-text`` and ``evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rsia_geo.tiles import DEFAULT_IMAGE_VIEWS, IMAGE_VIEWS


def register(sub: Any) -> None:
    """Add ``data``, ``train``, ``train-text`` and ``evaluate``.

    Args:
        sub: The ``rsia-geo`` subcommand group (``add_subparsers`` result).
    """
    _add_data(sub)
    _add_train(sub)
    _add_train_text(sub)
    _add_evaluate(sub)


def _add_data(sub: Any) -> None:
    data = sub.add_parser("data", help="build training data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    v = data_sub.add_parser("voice", help="speak captions with offline speech synthesis")
    v.add_argument("captions", help="captions JSON (UCM or Karpathy format)")
    v.add_argument("-o", "--out", required=True, help="output folder (audio/, manifest.jsonl)")
    v.add_argument("--splits", nargs="+", default=None, help="splits to voice (default all)")
    v.add_argument("--voices-per-caption", type=int, default=1)
    v.add_argument(
        "--engines",
        nargs="+",
        default=None,
        help="espeak-ng, flite, festival (default: all installed)",
    )
    v.add_argument(
        "--eval-voices",
        choices=["heldout", "train"],
        default="heldout",
        help="voices for val/test splits (default: held-out speakers)",
    )
    v.add_argument(
        "--holdout",
        choices=["families", "variants"],
        default="families",
        help="held-out voices: whole families (default) or the first starter's variants",
    )
    v.add_argument(
        "--families",
        nargs="+",
        default=None,
        help="only these voice families, e.g. espeak-ng:en-029 flite:slt festival:kal_diphone",
    )
    v.add_argument("--speed-range", type=float, nargs=2, default=[0.8, 1.25], metavar=("LO", "HI"))
    v.add_argument("--pitch-range", type=float, nargs=2, default=[0.8, 1.25], metavar=("LO", "HI"))
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--limit", type=int, default=None, help="images per split (smoke runs)")
    v.add_argument("--image-root", default=None, help="folder image paths are relative to")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=_cmd_data_voice)
    iv = data_sub.add_parser("iv", help="index a published image-voice set (UCM IV, ...)")
    iv.add_argument("root", help="folder with images/, audio/ and split lists")
    iv.add_argument("-o", "--out", required=True, help="folder for manifest.jsonl")
    iv.set_defaults(func=_cmd_data_iv)
    tx = data_sub.add_parser(
        "transcribe", help="what the speech recogniser hears in each clip (for train-text)"
    )
    tx.add_argument("manifest", help="manifest.jsonl from `rsia-geo data voice`")
    tx.add_argument("-o", "--out", default=None, help="JSONL (default: transcripts.jsonl beside)")
    tx.add_argument("--whisper-path", default=None, help="CTranslate2 Whisper model folder")
    tx.add_argument("--threads", type=int, default=2)
    tx.add_argument("--batch-size", type=int, default=16, help="clips decoded together")
    tx.add_argument(
        "--limit", type=int, default=None, help="at most this many clips now (a rerun continues)"
    )
    tx.add_argument(
        "--prompt-from", default=None, metavar="CHECKPOINT",
        help="the recogniser prompt of this checkpoint's text route, as search uses it "
        "(default: no prompt)",
    )  # fmt: skip
    tx.add_argument("--no-progress", action="store_true")
    tx.set_defaults(func=_cmd_data_transcribe)


def _add_train_text(sub: Any) -> None:
    tt = sub.add_parser(
        "train-text", help="train the text route of a checkpoint (transcripts, typed queries)"
    )
    tt.add_argument("checkpoint", help="checkpoint folder or shipped name (its image space)")
    tt.add_argument("manifest", help="training manifest.jsonl (transcripts.jsonl beside it used)")
    tt.add_argument("-o", "--out", required=True, help="folder for text.safetensors, text.json")
    tt.add_argument("--val", nargs="*", default=[], help="val manifests with transcripts")
    tt.add_argument("--epochs", type=int, default=60)
    tt.add_argument("--batch-size", type=int, default=128)
    tt.add_argument("--lr", type=float, default=2e-3)
    tt.add_argument("--caption-share", type=float, default=0.5)
    tt.add_argument("--views", type=int, default=2, choices=[1, 2])
    tt.add_argument(
        "--image-views",
        choices=list(IMAGE_VIEWS),
        default="single",
        help="train against each image view as it is (single) or the d8 mean over the 8 "
        "rotations and reflections, as an index made with d8 holds its tiles",
    )
    tt.add_argument(
        "--kind",
        choices=["pretrained", "hashed", "bank", "ensemble"],
        default="pretrained",
        help="pretrained: frozen all-MiniLM-L6-v2 + a trained head (the text extra); "
        "hashed: word n-grams learned from the captions alone; bank: the training captions "
        "and the images they describe (nearest captions vote, nothing trained); "
        "ensemble: all three",
    )
    tt.add_argument("--seed", type=int, default=0)
    tt.add_argument("--threads", type=int, default=2)
    tt.add_argument(
        "--mask-same-caption",
        action="store_true",
        help="leave out of a step's negatives the images of which another image's drawn "
        "sentence is, word for word, one of their own captions",
    )
    tt.add_argument("--no-progress", action="store_true")
    tt.set_defaults(func=_cmd_train_text)


def _add_train(sub: Any) -> None:
    tr = sub.add_parser("train", help="train ALAC on voiced image-caption pairs")
    tr.add_argument("manifest", nargs="+", help="manifest.jsonl from `rsia-geo data voice`")
    tr.add_argument("-o", "--out", required=True, help="run folder (resumes if it exists)")
    tr.add_argument("--model", default="alac-efficientnet-lite0", help="registry config")
    tr.add_argument(
        "--model-overrides", default=None, help='JSON, e.g. \'{"audio": {"width": 0.5}}\''
    )
    tr.add_argument("--train-split", default="train")
    tr.add_argument("--val-split", default="val")
    tr.add_argument("--epochs", type=int, default=60)
    tr.add_argument("--batch-size", type=int, default=60)
    tr.add_argument("--lr", type=float, default=2e-4)
    tr.add_argument(
        "--akt-uniform",
        action="store_true",
        help="reproduce the reference code's uniform AKT weights",
    )
    tr.add_argument(
        "--views", type=int, default=4, help="cached views per image: rotations 1-4, mirrored 5-8"
    )
    tr.add_argument(
        "--finetune-stages",
        type=int,
        default=0,
        help="fine-tune the backbone's last N stages on cached trunk activations",
    )
    tr.add_argument(
        "--full-finetune",
        action="store_true",
        help="fine-tune every backbone stage on views drawn each epoch (no image cache; "
        "for GPUs, see --device)",
    )
    tr.add_argument(
        "--backbone-lr", type=float, default=0.1, help="lr factor of the fine-tuned stages"
    )
    tr.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA when available)"
    )
    tr.add_argument(
        "--workers", type=int, default=0, help="processes drawing --full-finetune's views"
    )
    tr.add_argument(
        "--audio-augment",
        action="store_true",
        help="degrade training clips with random noise, rooms, microphones, clipping, silence",
    )
    tr.add_argument(
        "--allow-random-backbone",
        action="store_true",
        help="train on a frozen backbone without pretrained weights (smoke runs)",
    )
    tr.add_argument("--no-spec-augment", action="store_true")
    tr.add_argument("--max-train-images", type=int, default=None)
    tr.add_argument("--max-val-images", type=int, default=None)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=2)
    tr.add_argument(
        "--k-folds",
        type=int,
        default=0,
        help="ALAC's protocol: N reshuffled 80/20 folds of the training split",
    )
    tr.add_argument("--amp", action="store_true", help="bfloat16 autocast forward passes")
    tr.add_argument(
        "--mix-views",
        type=int,
        default=0,
        help="scene-mixing views per image: windows of a mosaic of training scenes (0: none)",
    )
    tr.add_argument(
        "--mix-scale",
        type=float,
        nargs=2,
        default=(0.5, 2.0),
        metavar=("LOW", "HIGH"),
        help="window side of mixed views, in scenes (1 1: the scene's own footprint)",
    )
    tr.add_argument("--mix-no-shift", action="store_true", help="mixed windows stay centred")
    tr.add_argument("--mix-no-rotate", action="store_true", help="mixed windows stay upright")
    tr.add_argument(
        "--mix-same-class",
        type=float,
        default=0.5,
        help="probability that a mosaic neighbour shares the scene's class",
    )
    tr.add_argument(
        "--image-from",
        default=None,
        metavar="CHECKPOINT",
        help="keep this checkpoint's image side frozen and train only a new audio branch "
        "(its indexes stay valid)",
    )
    tr.add_argument(
        "--continue-audio",
        action="store_true",
        help="with --image-from: start the audio branch from that checkpoint's own (fine-tune "
        "its voice side) instead of fresh weights",
    )
    tr.add_argument(
        "--voice-pairs",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of a voice-invariance term: each caption's clip is pulled towards the "
        "same caption in another voice (0: off; needs --voices-per-caption > 1 voicing)",
    )
    tr.add_argument(
        "--caption-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of a caption term: each image is also pulled towards one of its captions "
        "(frozen sentence encoder + a head trained with the run; the text extra) (0: off)",
    )
    tr.add_argument(
        "--mask-same-caption",
        action="store_true",
        help="leave out of the negatives the pairs whose clip says, word for word, one of the "
        "other image's own captions (the manifest's caption field)",
    )
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_cmd_train)


def _add_evaluate(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="retrieval metrics of a checkpoint on a voiced split")
    ev.add_argument("checkpoint", help="checkpoint folder (model.safetensors + config.json)")
    ev.add_argument("manifest", help="manifest.jsonl")
    ev.add_argument("--split", default="val")
    ev.add_argument("--rescore-k", type=int, default=50, help="cosine candidates IA-rescored")
    ev.add_argument("--rerank-k", type=int, default=30, help="BSWFR k")
    ev.add_argument("-o", "--out", default=None, help="folder for report.json and recall.png")
    ev.add_argument(
        "--condition",
        choices=["clean", "snr20", "snr10", "snr5", "reverb", "bandlimit"],
        default="clean",
        help="recording condition applied to every clip (seeded per clip)",
    )
    ev.add_argument(
        "--image-views",
        choices=list(IMAGE_VIEWS),
        default=DEFAULT_IMAGE_VIEWS,
        help="images embedded as a new index embeds tiles (d8, the default) or as they are",
    )
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)


def _print_manifest_summary(manifest: Path) -> None:
    from rsia_geo.training.dataset import read_manifest

    by_split: dict[str, int] = {}
    rows = read_manifest(manifest)
    for r in rows:
        by_split[r["split"]] = by_split.get(r["split"], 0) + 1
    print(f"{len(rows)} clips in {manifest}: {by_split}")


def _cmd_data_voice(args: argparse.Namespace) -> int:
    from rsia_geo.training.dataset import voice_captions

    manifest = voice_captions(
        args.captions,
        args.out,
        splits=args.splits,
        voices_per_caption=args.voices_per_caption,
        engines=args.engines,
        eval_voices=args.eval_voices,
        seed=args.seed,
        workers=args.workers,
        limit=args.limit,
        image_root=args.image_root,
        progress=not args.no_progress,
        holdout=args.holdout,
        families=args.families,
        speed_range=tuple(args.speed_range),
        pitch_range=tuple(args.pitch_range),
    )
    _print_manifest_summary(manifest)
    return 0


def _cmd_data_iv(args: argparse.Namespace) -> int:
    from rsia_geo.training.published import read_iv_layout

    manifest = read_iv_layout(args.root, args.out)
    _print_manifest_summary(manifest)
    return 0


def _cmd_data_transcribe(args: argparse.Namespace) -> int:
    from rsia_geo.training.transcripts import read_transcripts, transcribe_manifest

    prompt = ""
    if args.prompt_from is not None:
        from rsia_geo.models.text import recogniser_prompt

        prompt = recogniser_prompt(args.prompt_from)
    out = transcribe_manifest(
        args.manifest,
        args.out,
        whisper_path=args.whisper_path,
        threads=args.threads,
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.no_progress,
        prompt=prompt,
    )
    heard = read_transcripts(out)
    conf = [h["confidence"] for h in heard.values()]
    mean = sum(conf) / max(1, len(conf))
    print(f"{len(heard)} transcripts (mean confidence {mean:.2f}) -> {out}")
    return 0


def _cmd_train_text(args: argparse.Namespace) -> int:
    from rsia_geo.training.text_route import TextRouteSettings, train_text_route

    settings = TextRouteSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        caption_share=args.caption_share,
        views=args.views,
        image_views=args.image_views,
        seed=args.seed,
        threads=args.threads,
        mask_same_caption=args.mask_same_caption,
    )
    report = train_text_route(
        args.checkpoint,
        args.manifest,
        args.out,
        val_manifests=tuple(args.val),
        settings=settings,
        kind=args.kind,
        progress=not args.no_progress,
    )
    final = report["final"]
    vals = {k: v["mR"] for k, v in final.items() if k.startswith("val:")}
    shown = ", ".join(f"{k[4:]} mR {v:.2f}" for k, v in vals.items()) or "no val manifests"
    print(
        f"text route: {report['train_images']} images, {report['captions']} captions, "
        f"{report['transcripts']} transcripts, {report['seconds']:.0f} s; {shown} -> {args.out}"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from rsia_geo.training.train import TrainConfig, train, train_kfold

    overrides = json.loads(args.model_overrides) if args.model_overrides else {}
    cfg = TrainConfig(
        manifest=args.manifest if len(args.manifest) > 1 else args.manifest[0],
        out_dir=args.out,
        model=args.model,
        model_overrides=overrides,
        train_split=args.train_split,
        val_split=args.val_split,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        akt_adaptive=not args.akt_uniform,
        views=args.views,
        finetune_stages=args.finetune_stages,
        freeze_backbone=not args.full_finetune,
        device=args.device,
        workers=args.workers,
        backbone_lr=args.backbone_lr,
        audio_augment=args.audio_augment,
        allow_random_backbone=args.allow_random_backbone,
        spec_augment=not args.no_spec_augment,
        max_train_images=args.max_train_images,
        max_val_images=args.max_val_images,
        seed=args.seed,
        threads=args.threads,
        amp=args.amp,
        mix_views=args.mix_views,
        mix_shift=not args.mix_no_shift,
        mix_scale=(args.mix_scale[0], args.mix_scale[1]),
        mix_rotate=not args.mix_no_rotate,
        mix_same_class=args.mix_same_class,
        image_from=args.image_from,
        continue_audio=args.continue_audio,
        voice_pairs=args.voice_pairs,
        caption_weight=args.caption_weight,
        mask_same_caption=args.mask_same_caption,
    )
    if args.k_folds:
        cfg.k_folds = args.k_folds
        summary = train_kfold(cfg, progress=not args.no_progress)
        for i, f in enumerate(summary["folds"]):
            print(f"fold {i}: best epoch {f['epoch']}, val mR {f['mR']:.2f}")
        print(
            f"mean val mR over {args.k_folds} folds: {summary['mean']['mR']:.2f} -> "
            f"{Path(args.out) / 'kfold.json'}"
        )
        if "test" in summary:
            test = summary["test"]
            per = ", ".join(f"{t['mR']:.2f}" for t in test["folds"])
            print(
                f"held-out split {test['split']!r} (the fold models, pipeline score): "
                f"mR {per}; mean {test['mean']['mR']:.2f}"
            )
        return 0
    result = train(cfg, progress=not args.no_progress)
    best = result["best"]
    print(f"best epoch {best['epoch']}: val mR {best['mR']:.2f} -> {result['best_checkpoint']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rsia_geo.training.evaluate import evaluate

    report = evaluate(
        args.checkpoint,
        args.manifest,
        split=args.split,
        rescore_k=args.rescore_k,
        rerank_k=args.rerank_k,
        out_dir=args.out,
        progress=not args.no_progress,
        condition=args.condition,
        image_views=args.image_views,
    )
    print(
        f"{report['model_id']} on {report['split']} ({report['condition']}, "
        f"{report['image_views']} image views): "
        f"{report['images']} images, {report['clips']} clips"
    )
    keys = ["i2a_r1", "i2a_r5", "i2a_r10", "a2i_r1", "a2i_r5", "a2i_r10", "mR"]
    print(f"{'variant':44s} " + " ".join(f"{k:>7s}" for k in keys))
    for name, m in report["metrics"].items():
        print(f"{name:44s} " + " ".join(f"{m[k]:7.2f}" for k in keys))
    if report.get("class_map"):
        print(f"per-class mAP (audio->image, pipeline): mean {report['class_map']['mean']:.2f}")
    if args.out:
        print(f"report: {Path(args.out) / 'report.json'}, plot: {Path(args.out) / 'recall.png'}")
    return 0
