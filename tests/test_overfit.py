"""A tiny ALAC model overfits a small real batch: UCM images + synthesised speech of captions."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsia_geo.audio import load_audio  # noqa: E402
from rsia_geo.models import ALACLoss, build_model, get_config, ia_scores  # noqa: E402


@pytest.mark.requires_programs("espeak-ng")
def test_tiny_model_overfits_real_pairs(shared_data, tmp_path):
    from PIL import Image

    from rsia_geo.training.synthesis import sample_voice, synthesize, voice_catalogue

    torch.manual_seed(0)
    meta = json.loads((shared_data / "ucm" / "captions.json").read_text())
    # one training image from each of 8 classes, one caption each, 8 different voices
    picks = []
    for cls in meta["classes"][:: len(meta["classes"]) // 8][:8]:
        picks.append(next(r for r in meta["images"] if r["class"] == cls and r["split"] == "train"))
    rng = random.Random(0)
    voices = voice_catalogue("train", engines=["espeak-ng"])
    size = get_config("alac-tiny").backbone.input_size
    images, waves = [], []
    for i, rec in enumerate(picks):
        img = Image.open(shared_data / "ucm" / rec["image"]).convert("RGB").resize((size, size))
        images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1))
        wav = synthesize(rec["captions"][0], sample_voice(voices, rng), tmp_path / f"{i}.wav")
        waves.append(torch.from_numpy(load_audio(wav, trim=True).samples))
    lengths = torch.tensor([len(w) for w in waves])
    wave = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        wave[i, : len(w)] = w
    image = torch.stack(images)

    model = build_model(get_config("alac-tiny")).train()
    loss_fn = ALACLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    feats = model.audio_features(wave, lengths)  # the front end has no parameters
    losses = []
    for _ in range(60):
        opt.zero_grad()
        out = loss_fn(model.forward_image(image), model.forward_audio_features(feats))
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    v = model.encode_images(image, normalize=False)
    a = model.encode_audio(wave, lengths, normalize=False)
    s = ia_scores(v, a)
    recall1_i2a = (s.argmax(1) == torch.arange(8)).float().mean().item()
    recall1_a2i = (s.argmax(0) == torch.arange(8)).float().mean().item()
    assert recall1_i2a >= 0.875 and recall1_a2i >= 0.875, s
