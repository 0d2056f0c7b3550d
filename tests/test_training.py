from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsia_geo.cli import main  # noqa: E402
from rsia_geo.training.dataset import (  # noqa: E402
    DataError,
    read_captions,
    read_manifest,
    voice_captions,
)
from rsia_geo.training.metrics import class_map, retrieval_metrics  # noqa: E402
from rsia_geo.training.synthesis import SynthesisError, voice_catalogue  # noqa: E402

needs_espeak = pytest.mark.requires_programs("espeak-ng")


def _captions(tmp_path: Path, shared_data: Path, n_train=8, n_val=4) -> Path:
    """A small captions file over real UCM images (referenced in place)."""
    meta = json.loads((shared_data / "ucm" / "captions.json").read_text())
    classes = meta["classes"]
    train = [
        next(r for r in meta["images"] if r["class"] == c and r["split"] == "train")
        for c in classes[:n_train]
    ]
    val = [
        next(r for r in meta["images"] if r["class"] == c and r["split"] == "val")
        for c in classes[:n_val]
    ]
    entries = [dict(r, image=str(shared_data / "ucm" / r["image"])) for r in train + val]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": entries}))
    return path


# ---------------------------------------------------------------- metrics


def test_metrics_follow_the_lineage_definition():
    # 2 images x 2 clips: image 0's clips are columns 0, 1; image 1's are 2, 3
    s = np.array([[0.9, 0.1, 0.8, 0.2], [0.3, 0.95, 0.4, 0.5]])
    m = retrieval_metrics(s, per_image=2)
    # image 0: best own clip (col 0) ranked 1st; image 1: own clips cols 2 (0.4), 3 (0.5)
    # rank 2nd and 3rd behind col 1 (0.95) -> best rank 1 (0-based)
    assert m["i2a_r1"] == 50.0 and m["i2a_r5"] == 100.0
    # clips: col0 -> image 0 first (ok); col1 -> image 1 (0.95) first but it's image 0's ->
    # rank 1; col2 -> image 0 (0.8) first but belongs to image 1 -> rank 1; col3 -> image 1 ok
    assert m["a2i_r1"] == 50.0 and m["a2i_r5"] == 100.0
    assert m["mR"] == pytest.approx(np.mean([50, 100, 100, 50, 100, 100]))
    with pytest.raises(ValueError, match="N x"):
        retrieval_metrics(np.zeros((2, 3)), per_image=2)
    cm = class_map(s, ["a", "b"], per_image=2)
    assert cm["a"] == pytest.approx(100 * (1.0 + 0.5) / 2)  # clip 0: AP 1, clip 1: AP 0.5


def test_chance_level_is_low():
    rng = np.random.default_rng(0)
    m = retrieval_metrics(rng.standard_normal((100, 500)), per_image=5)
    assert m["mR"] < 15


# ---------------------------------------------------------------- captions and voicing


def test_read_captions_formats_and_errors(tmp_path, shared_data):
    recs = read_captions(shared_data / "ucm" / "captions.json")
    assert len(recs) == 1890 and recs[0].label == "agricultural" and len(recs[0].captions) == 5
    karpathy = {
        "images": [
            {
                "filename": "1.jpg",
                "filepath": "images",
                "split": "train",
                "sentences": [{"raw": "a farm ."}, {"tokens": ["green", "fields"]}],
            }
        ]
    }
    (tmp_path / "k.json").write_text(json.dumps(karpathy))
    recs = read_captions(tmp_path / "k.json", image_root=shared_data / "ucm")
    assert recs[0].captions == ("a farm .", "green fields")
    bad = {"images": [{"image": "images/1.jpg", "captions": ["  "]}]}
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="no caption"):
        read_captions(tmp_path / "b.json", image_root=shared_data / "ucm")
    missing = {"images": [{"image": "images/nope.jpg", "captions": ["x"]}]}
    (tmp_path / "m.json").write_text(json.dumps(missing))
    with pytest.raises(DataError, match="missing"):
        read_captions(tmp_path / "m.json")
    dup = {"images": [{"image": "images/1.jpg", "captions": ["x"]}] * 2}
    (tmp_path / "d.json").write_text(json.dumps(dup))
    with pytest.raises(DataError, match="twice"):
        read_captions(tmp_path / "d.json", image_root=shared_data / "ucm")
    with pytest.raises(DataError, match="does not exist"):
        read_captions(tmp_path / "none.json")


def test_voice_catalogue_splits_speakers():
    train = {v.speaker for v in voice_catalogue("train", ["espeak-ng", "flite"])}
    held = {v.speaker for v in voice_catalogue("heldout", ["espeak-ng", "flite"])}
    assert train and held and not train & held
    assert any("en-gb-scotland" in s for s in held)
    assert not any("en-gb-scotland" in s for s in train)


@needs_espeak
def test_voicing_is_resumable_and_uses_heldout_voices(tmp_path, shared_data):
    caps = _captions(tmp_path, shared_data, n_train=2, n_val=1)
    out = tmp_path / "voices"
    voice_captions(caps, out, engines=["espeak-ng"], limit=1, progress=False)
    first = read_manifest(out / "manifest.jsonl")
    assert len(first) == 10  # 1 train + 1 val image, 5 captions each
    manifest = voice_captions(caps, out, engines=["espeak-ng"], progress=False)
    rows = read_manifest(manifest)
    assert len(rows) == 15 and len({r["clip"] for r in rows}) == 15  # nothing duplicated
    assert {r["clip"] for r in first} <= {r["clip"] for r in rows}
    held = {v.speaker for v in voice_catalogue("heldout", ["espeak-ng"])}
    for r in rows:
        assert (out / r["clip"]).exists()
        assert Path(r["clip"]).name.startswith(f"{r['image_id']}S{r['caption_index'] + 1}")
        assert (r["speaker"] in held) == (r["split"] == "val")
        assert 0.8 <= r["speed"] <= 1.25 and r["engine"] == "espeak-ng"
    # the same seed gives the same voices when re-run from scratch
    again = read_manifest(
        voice_captions(caps, tmp_path / "v2", engines=["espeak-ng"], progress=False)
    )
    key = lambda rs: sorted((r["clip"], r["speaker"], r["speed"]) for r in rs)  # noqa: E731
    assert key(again) == key(rows)


def test_voicing_bad_arguments(tmp_path, shared_data):
    caps = _captions(tmp_path, shared_data, n_train=1, n_val=1)
    with pytest.raises(DataError, match="splits"):
        voice_captions(caps, tmp_path / "o", splits=["bogus"], progress=False)
    with pytest.raises(SynthesisError, match="not installed"):
        voice_captions(caps, tmp_path / "o", engines=["sam-reciter"], progress=False)
    with pytest.raises(DataError, match="voices_per_caption"):
        voice_captions(caps, tmp_path / "o", voices_per_caption=0, progress=False)


# ---------------------------------------------------------------- train + evaluate, tiny scale


@needs_espeak
def test_voice_train_evaluate_end_to_end_tiny(tmp_path, shared_data, capsys):
    caps = _captions(tmp_path, shared_data, n_train=8, n_val=4)
    out = tmp_path / "voices"
    assert (
        main(
            ["data", "voice", str(caps), "-o", str(out), "--engines", "espeak-ng", "--no-progress"]
        )
        == 0
    )
    manifest = out / "manifest.jsonl"
    run = tmp_path / "run"
    # train and select on the 8 training images (their clips): the model must fit them
    train_args = [
        "train",
        str(manifest),
        "-o",
        str(run),
        "--model",
        "alac-tiny",
        "--allow-random-backbone",
        "--val-split",
        "train",
        "--epochs",
        "60",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--views",
        "1",
        "--no-spec-augment",
        "--no-progress",
    ]
    assert main(train_args) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == 60
    first, last = np.mean([r["loss"] for r in log[:3]]), np.mean([r["loss"] for r in log[-3:]])
    assert last < 0.6 * first
    best = json.loads((run / "best" / "config.json").read_text())["val_metrics"]
    # chance R@1 audio -> image is 1/8 = 12.5 %; image -> audio about 5/40 = 12.5 %
    assert max(best["cos_a2i_r1"], best["ia_a2i_r1"]) >= 4 * 12.5
    assert max(best["cos_i2a_r1"], best["ia_i2a_r1"]) >= 4 * 12.5
    # evaluate the saved checkpoint from files: reproduces the training-time validation
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(run / "best"),
                str(manifest),
                "--split",
                "train",
                "-o",
                str(tmp_path / "ev"),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["metrics"]["cosine"]["mR"] == pytest.approx(best["cos_mR"], abs=5)
    assert (tmp_path / "ev" / "recall.png").stat().st_size > 1000
    # resuming a finished run does nothing more; other settings in the same folder refuse
    assert main(train_args) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 60
    assert (
        main(
            [
                "train",
                str(manifest),
                "-o",
                str(run),
                "--model",
                "alac-tiny",
                "--allow-random-backbone",
                "--val-split",
                "train",
                "--lr",
                "5e-4",
                "--views",
                "1",
                "--no-spec-augment",
                "--batch-size",
                "8",
                "--no-progress",
            ]
        )
        == 1
    )
    assert "other settings" in capsys.readouterr().err


@needs_espeak
def test_voice_pairs_train_on_two_voicings_of_each_caption(tmp_path, shared_data):
    from rsia_geo.training.train import TrainConfig, TrainingError, _voice_partners, train

    caps = _captions(tmp_path, shared_data, n_train=3, n_val=1)
    two, val = tmp_path / "two", tmp_path / "val"  # validation takes one voice per caption
    voice_captions(caps, two, engines=["espeak-ng"], voices_per_caption=2, splits=["train"],
                   progress=False)  # fmt: skip
    voice_captions(caps, val, engines=["espeak-ng"], splits=["val"], progress=False)
    manifests = [str(two / "manifest.jsonl"), str(val / "manifest.jsonl")]
    settings = dict(model="alac-tiny", allow_random_backbone=True, epochs=2, batch_size=3)
    run = tmp_path / "vp"
    summary = train(
        TrainConfig(
            manifest=manifests,
            out_dir=str(run),
            views=1,
            voice_pairs=0.5,
            **settings,
        ),
        progress=False,
    )
    assert (Path(summary["best_checkpoint"]) / "model.safetensors").exists()
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["voice"] > 0 for r in log)
    # the term is part of the total: loss = triplet + 0.1 nce + 0.1 akt + 0.5 voice (per step)
    for r in log:
        parts = r["triplet"] + 0.1 * r["nce"] + 0.1 * r["akt"] + 0.5 * r["voice"]
        assert r["loss"] == pytest.approx(parts, rel=1e-3)
    # partners: the same image and caption, another voice; never the clip itself
    rows = [json.loads(x) for x in (two / "manifest.jsonl").read_text().splitlines()]
    train_rows = sorted(
        (r for r in rows if r["split"] == "train"),
        key=lambda r: (int(r["image_id"]), r["caption_index"], r["voice_index"]),
    )
    partners = _voice_partners(train_rows)
    for ci, others in enumerate(partners):
        assert len(others) == 1 and others[0] != ci
        mine, theirs = train_rows[ci], train_rows[others[0]]
        assert (mine["image"], mine["caption_index"]) == (theirs["image"], theirs["caption_index"])
        assert mine["voice_index"] != theirs["voice_index"]
    # one voice per caption has no pairs; a negative weight is no weight
    one = tmp_path / "one"
    voice_captions(caps, one, engines=["espeak-ng"], splits=["train"], progress=False)
    with pytest.raises(TrainingError, match="voices-per-caption 3"):
        train(
            TrainConfig(
                manifest=[str(one / "manifest.jsonl"), manifests[1]],
                out_dir=str(tmp_path / "r1"),
                voice_pairs=0.1,
                **settings,
            ),
            progress=False,
        )
    with pytest.raises(TrainingError, match=r"voice_pairs=-1\.0 is a loss weight"):
        train(
            TrainConfig(
                manifest=manifests,
                out_dir=str(tmp_path / "r2"),
                voice_pairs=-1.0,
                **settings,
            ),
            progress=False,
        )


@needs_espeak
def test_caption_term_shapes_the_image_side(tmp_path, shared_data):
    from rsia_geo.training.train import TrainConfig, TrainingError, train

    pytest.importorskip("ctranslate2")  # the sentence encoder's runtime (text extra)
    caps = _captions(tmp_path, shared_data, n_train=3, n_val=1)
    voiced = tmp_path / "voiced"
    voice_captions(caps, voiced, engines=["espeak-ng"], progress=False)
    manifest = str(voiced / "manifest.jsonl")
    settings = dict(model="alac-tiny", allow_random_backbone=True, batch_size=3, views=1, seed=3)
    with_term, without = tmp_path / "cap", tmp_path / "plain"
    train(TrainConfig(manifest, str(with_term), epochs=1, caption_weight=2.0, **settings),
          progress=False)  # fmt: skip
    train(TrainConfig(manifest, str(without), epochs=1, **settings), progress=False)
    log = [json.loads(x) for x in (with_term / "log.jsonl").read_text().splitlines()]
    assert log[0]["caption"] > 0
    parts = log[0]["triplet"] + 0.1 * log[0]["nce"] + 0.1 * log[0]["akt"] + 2.0 * log[0]["caption"]
    assert log[0]["loss"] == pytest.approx(parts, rel=1e-3)
    # every distinct training caption embedded once, cached in the run
    rows = [json.loads(x) for x in Path(manifest).read_text().splitlines()]
    captions = {r["caption"] for r in rows if r["split"] == "train"}
    (cached,) = (with_term / "cache").glob("sentences_*.pt")
    assert set(torch.load(cached, weights_only=True)) == captions
    # the same draws otherwise: the term alone moves the image side's weights
    a = torch.load(with_term / "last" / "state.pt", weights_only=True)
    b = torch.load(without / "last" / "state.pt", weights_only=True)
    assert "captions" in a and "captions" not in b
    assert not torch.equal(a["model"]["image_proj.weight"], b["model"]["image_proj.weight"])
    # a resumed run continues the caption head where it stopped
    train(TrainConfig(manifest, str(with_term), epochs=2, caption_weight=2.0, **settings),
          progress=False)  # fmt: skip
    c = torch.load(with_term / "last" / "state.pt", weights_only=True)
    assert c["epoch"] == 1 and len((with_term / "log.jsonl").read_text().splitlines()) == 2
    assert c["captions"].keys() == a["captions"].keys()
    assert not torch.equal(c["captions"]["skip.weight"], a["captions"]["skip.weight"])
    # bad settings: a negative weight; a frozen image side; clips without their caption
    with pytest.raises(TrainingError, match=r"caption_weight=-1\.0 is a loss weight"):
        train(TrainConfig(manifest, str(tmp_path / "r1"), caption_weight=-1.0, **settings),
              progress=False)  # fmt: skip
    with pytest.raises(TrainingError, match="keeps it frozen: drop --caption-weight"):
        frozen = TrainConfig(
            manifest, str(tmp_path / "r2"), caption_weight=1.0, image_from=str(with_term / "best"),
            **settings,
        )  # fmt: skip
        train(frozen, progress=False)
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({**r, "caption": ""}) + "\n" for r in rows))
    for r in rows:  # the clips stay where the manifest's folder says
        (tmp_path / r["clip"]).parent.mkdir(parents=True, exist_ok=True)
        if not (tmp_path / r["clip"]).exists():
            shutil.copy(voiced / r["clip"], tmp_path / r["clip"])
    with pytest.raises(DataError, match="has no 'caption' field"):
        train(TrainConfig(str(bare), str(tmp_path / "r3"), caption_weight=1.0, **settings),
              progress=False)  # fmt: skip


def test_same_caption_pairs_are_found_word_for_word():
    from rsia_geo.training.train import _said_material

    rows = [  # image a says two sentences, b one of them (other case and spacing), c another
        {"clip": "1", "image": "a", "caption": "There is a piece of farmland ."},
        {"clip": "2", "image": "a", "caption": "Many trees ."},
        {"clip": "3", "image": "b", "caption": "there is a  piece of Farmland."},
        {"clip": "4", "image": "c", "caption": "Two tennis courts ."},
    ]
    said = _said_material(rows, {"a": 0, "b": 1, "c": 2})
    assert said.clip[0] == said.clip[2] != said.clip[1]
    images, clips = torch.tensor([0, 1, 2]), said.clip[torch.tensor([1, 2, 3])]
    # rows: images a, b, c; columns: clips 2 (a), 3 (b), 4 (c)
    expected = [[True, True, False], [False, True, False], [False, False, True]]
    assert said.exclude(images, clips).tolist() == expected
    # a caption no training image says excludes nothing
    assert said.id_of("An unheard sentence .") == -1
    assert not said.exclude(images, torch.tensor([-1, -1, -1])).any()
    with pytest.raises(DataError, match="mask_same_caption needs each clip's caption"):
        _said_material([{"clip": "9", "image": "a", "caption": " "}], {"a": 0})


@needs_espeak
def test_mask_same_caption_trains_without_word_for_word_negatives(tmp_path, shared_data):
    from rsia_geo.training.train import TrainConfig, train

    caps = _captions(tmp_path, shared_data, n_train=3, n_val=1)
    meta = json.loads(caps.read_text())
    for r in meta["images"]:  # every training image described by the same five sentences
        if r["split"] == "train":
            r["captions"] = [f"There is a piece of farmland number {i} ." for i in range(5)]
    caps.write_text(json.dumps(meta))
    voiced = tmp_path / "voiced"
    voice_captions(caps, voiced, engines=["espeak-ng"], progress=False)
    manifest = str(voiced / "manifest.jsonl")
    settings = dict(model="alac-tiny", allow_random_backbone=True, batch_size=3, views=1, seed=3)
    masked, plain = tmp_path / "masked", tmp_path / "plain"
    args = ["train", manifest, "-o", str(masked), "--model", "alac-tiny", "--allow-random-backbone"]
    args += ["--batch-size", "3", "--views", "1", "--seed", "3", "--epochs", "1"]
    assert main([*args, "--mask-same-caption", "--no-progress"]) == 0
    train(TrainConfig(manifest, str(plain), epochs=1, **settings), progress=False)
    log = json.loads((masked / "log.jsonl").read_text().splitlines()[0])
    # every other clip of the batch says one of each image's sentences: no negative is left
    assert log["triplet"] == 0.0 and log["nce"] == pytest.approx(0.0, abs=1e-6)
    assert json.loads((plain / "log.jsonl").read_text().splitlines()[0])["triplet"] > 0
    assert json.loads((masked / "train_config.json").read_text())["mask_same_caption"] is True


@needs_espeak
def test_training_data_errors(tmp_path, shared_data, capsys):
    caps = _captions(tmp_path, shared_data, n_train=2, n_val=1)
    out = tmp_path / "voices"
    voice_captions(caps, out, engines=["espeak-ng"], progress=False)
    rows = read_manifest(out / "manifest.jsonl")
    # a clip deleted after voicing
    (out / rows[0]["clip"]).unlink()
    rc = main(
        [
            "train",
            str(out / "manifest.jsonl"),
            "-o",
            str(tmp_path / "r1"),
            "--model",
            "alac-tiny",
            "--allow-random-backbone",
            "--epochs",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 1 and "missing" in capsys.readouterr().err
    # validation images without 5 clips each (mismatched counts)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    kept = [
        ln
        for ln in lines
        if not (json.loads(ln)["split"] == "val" and json.loads(ln)["caption_index"] == 4)
    ]
    (out / "m2.jsonl").write_text("\n".join(kept) + "\n")
    voice_captions(caps, out, engines=["espeak-ng"], progress=False)  # restores the clip
    rc = main(
        [
            "train",
            str(out / "m2.jsonl"),
            "-o",
            str(tmp_path / "r2"),
            "--model",
            "alac-tiny",
            "--allow-random-backbone",
            "--epochs",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 1 and "clips per image" in capsys.readouterr().err
    rc = main(["train", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "r3"), "--no-progress"])
    assert rc == 1 and "does not exist" in capsys.readouterr().err


@needs_espeak
def test_published_image_voice_layout(tmp_path, shared_data):
    """A UCM-IV-style folder (images, <stem>S<k>.wav clips, split lists) trains directly."""
    from rsia_geo.training.synthesis import Voice, synthesize

    root = tmp_path / "UCM_IV"
    (root / "images").mkdir(parents=True)
    (root / "audio").mkdir()
    meta = json.loads((shared_data / "ucm" / "captions.json").read_text())
    recs = [r for r in meta["images"] if r["split"] == "train"][::200][:4]
    for r in recs:
        stem = Path(r["image"]).stem
        shutil.copy(shared_data / "ucm" / r["image"], root / "images" / f"{stem}.jpg")
        for k, cap in enumerate(r["captions"][:5], start=1):
            synthesize(cap, Voice("espeak-ng", "en-us+m3"), root / "audio" / f"{stem}S{k}.wav")
    stems = [Path(r["image"]).stem for r in recs]
    (root / "train_filename.txt").write_text("".join(f"{s}.jpg\n" * 5 for s in stems[:3]))
    (root / "test_filename.txt").write_text(f"{stems[3]}.jpg\n" * 5)
    assert main(["data", "iv", str(root), "-o", str(tmp_path / "m")]) == 0
    rows = read_manifest(tmp_path / "m" / "manifest.jsonl")
    assert len(rows) == 20 and {r["split"] for r in rows} == {"train", "test"}
    assert sorted(r["caption_index"] for r in rows if r["image_id"] == stems[0]) == list(range(5))
    assert (
        main(
            [
                "train",
                str(tmp_path / "m" / "manifest.jsonl"),
                "-o",
                str(tmp_path / "run"),
                "--model",
                "alac-tiny",
                "--allow-random-backbone",
                "--val-split",
                "test",
                "--epochs",
                "2",
                "--batch-size",
                "3",
                "--views",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    # clips that match no image, and lists naming missing images, are refused
    (root / "audio" / "999S1.wav").write_bytes((root / "audio" / f"{stems[0]}S1.wav").read_bytes())
    with pytest.raises(DataError, match="match no image"):
        from rsia_geo.training.published import read_iv_layout

        read_iv_layout(root, tmp_path / "m2")
    (root / "audio" / "999S1.wav").unlink()
    (root / "val.txt").write_text("nope.jpg\n")
    with pytest.raises(DataError, match="not in"):
        read_iv_layout(root, tmp_path / "m3")


@needs_espeak
def test_k_fold_protocol_and_amp(tmp_path, shared_data, capsys):
    caps = _captions(tmp_path, shared_data, n_train=5, n_val=1)
    out = tmp_path / "voices"
    voice_captions(caps, out, engines=["espeak-ng"], voices_per_caption=2, progress=False)
    run = tmp_path / "kf"
    assert (
        main(
            [
                "train",
                str(out / "manifest.jsonl"),
                "-o",
                str(run),
                "--model",
                "alac-tiny",
                "--allow-random-backbone",
                "--k-folds",
                "2",
                "--epochs",
                "2",
                "--batch-size",
                "4",
                "--views",
                "1",
                "--amp",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((run / "kfold.json").read_text())
    assert len(summary["folds"]) == 2
    assert summary["mean"]["mR"] == pytest.approx(np.mean([f["mR"] for f in summary["folds"]]))
    # ALAC reports the fold models averaged on the held-out split (never trained or selected on)
    test = summary["test"]
    assert test["split"] == "val" and len(test["folds"]) == 2
    assert test["mean"]["mR"] == pytest.approx(np.mean([t["mR"] for t in test["folds"]]))
    from rsia_geo.training.evaluate import evaluate

    again = evaluate(run / "fold_1" / "best", out / "manifest.jsonl", split="val", progress=False)
    assert again["metrics"]["cosine+ia@50"]["mR"] == pytest.approx(test["folds"][1]["mR"])
    for i in range(2):
        settings = json.loads((run / f"fold_{i}" / "train_config.json").read_text())
        assert settings["fold"] == i and settings["amp"] is True
        assert (run / f"fold_{i}" / "best" / "model.safetensors").exists()
    # the two folds validate on different images (reshuffled 80/20 splits of the train pool)
    from rsia_geo.training.train import TrainConfig, _fold_split, _rows

    cfg = TrainConfig(manifest=str(out / "manifest.jsonl"), out_dir=str(run))
    rows = _rows(cfg, "train", None)
    for i in range(2):
        cfg.fold = i
        tr, va = _fold_split(rows, cfg)
        assert not {r["image"] for r in tr} & {r["image"] for r in va}
        assert len(va) == 5  # one voice per caption for validation
    printed = capsys.readouterr().out
    assert "mean val mR over 2 folds" in printed and "held-out split 'val'" in printed


@pytest.mark.requires_programs("espeak-ng", "flite", "text2wave")
def test_evaluate_reproduces_the_starter_model_card(tmp_path, shared_data):
    """Voicing val with the held-out voice families and evaluating the shipped starter gives
    the numbers of docs/model_card.md (voicing is seeded per clip: the same clips)."""
    from rsia_geo.training.evaluate import evaluate
    from rsia_geo.weights import default_checkpoint

    manifest = voice_captions(
        shared_data / "ucm" / "captions.json",
        tmp_path / "v",
        splits=["val"],
        engines=["espeak-ng", "flite", "festival"],
        progress=False,
    )
    # images embedded as a new index embeds its tiles: the mean of their 8 dihedral views
    report = evaluate(default_checkpoint(), manifest, split="val", progress=False)
    m = report["metrics"]
    assert report["model_id"] == "alac-efficientnet-lite0-whisper"
    assert report["images"] == 210 and report["clips"] == 1050
    assert report["model_version"] == "0.3.2" and report["image_views"] == "d8"
    assert m["cosine"]["mR"] == pytest.approx(47.40, abs=0.6)
    assert m["cosine+ia@50"]["mR"] == pytest.approx(46.65, abs=0.6)
    assert m["cosine+ia@50+bswfr@30"]["mR"] == pytest.approx(47.03, abs=0.6)
    assert m["served: cosine+ia@50+bswfr@30 (bank)"]["mR"] == pytest.approx(46.75, abs=0.6)
    # search's default: feedback from the first places (voice -> image only)
    assert m["cosine+ia@50+feedback"]["mR"] == pytest.approx(46.83, abs=0.6)
    # search(hubness=0.5): less half of each image's hubness (CSLS), voice -> image higher
    assert m["cosine+ia@50+hub"]["mR"] == pytest.approx(47.11, abs=0.6)
    a2i = lambda v: np.mean([m[v][f"a2i_r{r}"] for r in (1, 5, 10)])  # noqa: E731
    assert a2i("cosine+ia@50+hub") > a2i("cosine+ia@50")


@pytest.mark.slow
@pytest.mark.requires_programs("espeak-ng", "flite")
def test_evaluate_reproduces_the_first_starter_model_card(tmp_path, shared_data):
    """The first starter (kept for indexes built with it) still gives its model card's numbers
    on its own held-out voices (the "variants" catalogue)."""
    from rsia_geo.training.evaluate import evaluate
    from rsia_geo.weights import FIRST_STARTER, shipped_checkpoint

    manifest = voice_captions(
        shared_data / "ucm" / "captions.json",
        tmp_path / "v",
        splits=["val"],
        engines=["espeak-ng", "flite"],
        progress=False,
        holdout="variants",  # the first starter's catalogue of held-out voices
    )
    report = evaluate(
        shipped_checkpoint(FIRST_STARTER),
        manifest,
        split="val",
        progress=False,
        image_views="single",  # as its card was measured
    )
    m = report["metrics"]
    assert report["images"] == 210 and report["clips"] == 1050
    assert m["cosine"]["mR"] == pytest.approx(42.57, abs=0.6)
    assert m["cosine+ia@50"]["mR"] == pytest.approx(43.30, abs=0.6)
    assert m["cosine+ia@50+bswfr@30"]["mR"] == pytest.approx(44.54, abs=0.6)
    # the rerank as search serves it (reverse ranks against the checkpoint's bank)
    assert m["served: cosine+ia@50+bswfr@30 (bank)"]["mR"] == pytest.approx(42.89, abs=0.6)


def test_image_caches_are_sharded_and_resume(tmp_path, shared_data, monkeypatch):
    """A run killed while caching its image views resumes at the first missing shard."""
    import torch

    from rsia_geo.models import build_model, get_config
    from rsia_geo.training import train as train_mod

    meta = json.loads((shared_data / "ucm" / "captions.json").read_text())
    recs = [r for r in meta["images"] if r["split"] == "train"][::150][:5]
    paths = [str(shared_data / "ucm" / r["image"]) for r in recs]
    labels = [r["class"] for r in recs]
    model = build_model(get_config("alac-efficientnet-lite0"), pretrained=False)
    cfg = train_mod.TrainConfig(manifest="m", out_dir="o", mix_views=2, seed=3)
    mix = train_mod._mix_settings(cfg)
    orig = train_mod.load_image
    calls: list[str] = []

    def dies_after_3(path):
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the second shard
        calls.append(path)
        return orig(path)

    monkeypatch.setattr(train_mod, "load_image", dies_after_3)
    cache = tmp_path / "cache" / "train_tokens_trunk2_x.safetensors"
    kw = {"tail_stages": 2, "progress": False, "shard": 2, "batch": 2}
    with pytest.raises(KeyboardInterrupt):
        train_mod._image_tokens(model, paths, 3, cache, **kw)
    parts = cache.with_suffix("")
    assert sorted(p.name for p in parts.iterdir()) == ["part_00000.safetensors"]
    calls.clear()
    monkeypatch.setattr(train_mod, "load_image", lambda p: (calls.append(p), orig(p))[1])
    tokens = train_mod._image_tokens(model, paths, 3, cache, **kw)
    assert calls == paths[2:]  # only the missing shards were computed
    assert cache.exists() and not parts.exists()
    assert tokens.shape[:2] == (5, 3) and tokens.dtype == torch.float16
    fresh = train_mod._image_tokens(model, paths, 3, tmp_path / "fresh.safetensors", **kw)
    torch.testing.assert_close(tokens, fresh)  # the same tensors as one uninterrupted run
    calls.clear()
    assert torch.equal(train_mod._image_tokens(model, paths, 3, cache, **kw), tokens)
    assert calls == []  # a finished cache is read, nothing recomputed

    # the mixed views: seeded per image and view, so a resumed cache equals a fresh one
    mixed_cache = tmp_path / "cache" / "train_mixed_trunk2_x.safetensors"
    mkw = {"tail_stages": 2, "progress": False, "shard": 2, "batch": 2}
    real_view = train_mod._mixed_view
    drawn: list[int] = []

    def dies_in_third_shard(scenes, labels_, c, mix_, seed):
        if c == 4:
            raise KeyboardInterrupt
        drawn.append(c)
        return real_view(scenes, labels_, c, mix_, seed)

    monkeypatch.setattr(train_mod, "load_image", orig)
    monkeypatch.setattr(train_mod, "_mixed_view", dies_in_third_shard)
    with pytest.raises(KeyboardInterrupt):
        train_mod._mixed_tokens(model, paths, labels, mix, 3, mixed_cache, **mkw)
    assert len(list(mixed_cache.with_suffix("").glob("part_*.safetensors"))) == 2
    drawn.clear()
    monkeypatch.setattr(train_mod, "_mixed_view", lambda *a: (drawn.append(a[2]), real_view(*a))[1])
    mixed = train_mod._mixed_tokens(model, paths, labels, mix, 3, mixed_cache, **mkw)
    assert sorted(set(drawn)) == [4] and mixed.shape[:2] == (5, 2)
    again = train_mod._mixed_tokens(
        model, paths, labels, mix, 3, tmp_path / "fresh_mixed.safetensors", **mkw
    )
    torch.testing.assert_close(mixed, again)
