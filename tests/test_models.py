from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsia_geo.errors import (  # noqa: E402
    CheckpointError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    ModelConfigError,
)
from rsia_geo.models import (  # noqa: E402
    ALACConfig,
    ALACLoss,
    AudioFrontend,
    AudioFrontendConfig,
    BackboneConfig,
    build_backbone,
    build_model,
    get_config,
    ia_scores,
    list_configs,
    load_checkpoint,
    save_checkpoint,
)
from rsia_geo.models.alac import ia_gate  # noqa: E402
from rsia_geo.models.crossformer import (  # noqa: E402
    CrossFormer,
)
from rsia_geo.models.rela import RELA, rela_mask  # noqa: E402

torch.manual_seed(0)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("cfg", "tokens", "dim"),
    [
        (BackboneConfig("crossformer_s3", 224), 196, 384),
        (BackboneConfig("efficientnet_lite0", 224, options={"pretrained": False}), 49, 1280),
        (BackboneConfig("efficientnet_lite0", 256, options={"pretrained": False}), 64, 1280),
        (BackboneConfig("torchgeo_resnet18", 224), 49, 512),
        (
            BackboneConfig(
                "torchgeo_resnet18", 224, 4, (0.5,) * 4, (0.25,) * 4, {"layer": "layer3"}
            ),
            196,
            256,
        ),
        (BackboneConfig("torchgeo_resnet50", 128), 16, 2048),
    ],
)
def test_backbone_token_shapes(cfg, tokens, dim):
    bb = build_backbone(cfg).eval()
    with torch.no_grad():
        out = bb(torch.rand(2, cfg.in_chans, cfg.input_size, cfg.input_size))
    assert out.shape == (2, tokens, dim) and bb.out_dim == dim


def test_backbone_rejects_wrong_input_and_config():
    bb = build_backbone(BackboneConfig("torchgeo_resnet18", 64))
    with pytest.raises(ValueError, match=r"expected images \(B, 3"):
        bb(torch.rand(1, 4, 64, 64))
    with pytest.raises(ModelConfigError, match="unknown backbone 'vgg'"):
        build_backbone(BackboneConfig("vgg"))
    with pytest.raises(ModelConfigError, match="mean/std need 4"):
        build_backbone(BackboneConfig("torchgeo_resnet18", in_chans=4))
    with pytest.raises(CheckpointNotFoundError, match="local file"):
        build_backbone(
            BackboneConfig(
                "torchgeo_resnet18", options={"weights": "ResNet18_Weights.SENTINEL2_RGB_MOCO"}
            )
        )
    with pytest.raises(ModelConfigError, match="unknown model config"):
        get_config("nope")


def test_torchgeo_weights_load_from_local_file(tmp_path):
    src = build_backbone(BackboneConfig("torchgeo_resnet18", 64))
    path = tmp_path / "weights.pth"
    torch.save(src.net.state_dict(), path)
    dst = build_backbone(
        BackboneConfig("torchgeo_resnet18", 64, options={"weights_path": str(path)})
    )
    x = torch.rand(1, 3, 64, 64)
    src.eval(), dst.eval()
    torch.testing.assert_close(src(x), dst(x))
    assert dst.load_report["missing"] == []


def test_pretrained_efficientnet_loads_offline_and_differs_from_random():
    pre = build_backbone(BackboneConfig("efficientnet_lite0", options={"pretrained": True}))
    assert pre.load_report["loaded"] == 245
    rnd = build_backbone(BackboneConfig("efficientnet_lite0", options={"pretrained": False}))
    assert not torch.equal(pre.net.conv_stem.weight, rnd.net.conv_stem.weight)
    four = build_backbone(
        BackboneConfig(
            "efficientnet_lite0",
            in_chans=4,
            mean=(0.5,) * 4,
            std=(0.5,) * 4,
            options={"pretrained": True},
        )
    )
    assert four.net.conv_stem.weight.shape[1] == 4


def test_alac_reference_shapes():
    m = build_model(get_config("alac-crossformer-s")).eval()
    assert m.config.frontend.kind == "cepstrum"
    tokens = m.image_tokens(torch.rand(2, 3, 224, 224))
    assert tokens.shape == (2, 196, 384)
    assert m.rela(tokens).shape == (2, 196, 384)
    feats = m.audio_features(torch.randn(2, 16000 * 4) * 0.1)
    assert feats.shape == (2, 1, 300, 64)
    fmap = m.audio_encoder.feature_map(feats)
    assert fmap.shape == (2, 256, 38, 8)  # 300x64 -> 150x32 -> 75x16 -> 38x8
    assert m.encode_images(torch.rand(2, 3, 224, 224)).shape == (2, 256)
    assert m.encode_audio(torch.randn(2, 16000) * 0.1).shape == (2, 256)


def test_crossformer_stage3_has_no_position_bias():
    net = CrossFormer()
    assert all(b.attn.position_bias for b in net.layers[0].blocks)
    assert not any(b.attn.position_bias for b in net.layers[2].blocks)
    assert [b.long_distance for b in net.layers[1].blocks] == [False, True]


def _published_crossformer_s_state() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the official CrossFormer-S ImageNet checkpoint's ``model`` entry,
    written down from the published code (cheerss/CrossFormer ``models/crossformer.py`` and
    ``configs/crossformer/small_patch4_group7_224.yaml``: embed 96, depths 2-2-6-2, heads
    3-6-12-24, group 7, patch sizes 4/8/16/32, merge sizes 2/4), not from our model."""
    out: dict[str, tuple[int, ...]] = {}
    for i, (ps, dim) in enumerate([(4, 48), (8, 24), (16, 12), (32, 12)]):
        out[f"patch_embed.projs.{i}.weight"] = (dim, 3, ps, ps)
        out[f"patch_embed.projs.{i}.bias"] = (dim,)
    out["patch_embed.norm.weight"] = out["patch_embed.norm.bias"] = (96,)
    for i, (depth, heads) in enumerate([(2, 3), (2, 6), (6, 12), (2, 24)]):
        dim = 96 * 2**i
        pos = dim // 16  # DynamicPosBias(dim // 4).pos_dim = (dim // 4) // 4
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            for norm in ("norm1", "norm2"):
                out[b + norm + ".weight"] = out[b + norm + ".bias"] = (dim,)
            out[b + "attn.pos.pos_proj.weight"], out[b + "attn.pos.pos_proj.bias"] = (
                (pos, 2),
                (pos,),
            )
            for k in (1, 2, 3):
                out[b + f"attn.pos.pos{k}.0.weight"] = out[b + f"attn.pos.pos{k}.0.bias"] = (pos,)
            for k in (1, 2):
                out[b + f"attn.pos.pos{k}.2.weight"] = (pos, pos)
                out[b + f"attn.pos.pos{k}.2.bias"] = (pos,)
            out[b + "attn.pos.pos3.2.weight"], out[b + "attn.pos.pos3.2.bias"] = (
                (heads, pos),
                (heads,),
            )
            out[b + "attn.biases"] = (169, 2)  # (2G - 1)^2 relative offsets
            out[b + "attn.relative_position_index"] = (49, 49)
            out[b + "attn.qkv.weight"], out[b + "attn.qkv.bias"] = (3 * dim, dim), (3 * dim,)
            out[b + "attn.proj.weight"], out[b + "attn.proj.bias"] = (dim, dim), (dim,)
            out[b + "mlp.fc1.weight"], out[b + "mlp.fc1.bias"] = (4 * dim, dim), (4 * dim,)
            out[b + "mlp.fc2.weight"], out[b + "mlp.fc2.bias"] = (dim, 4 * dim), (dim,)
        if i < 3:
            d = f"layers.{i}.downsample."
            out[d + "norm.weight"] = out[d + "norm.bias"] = (dim,)
            for r, ks in enumerate((2, 4)):
                out[d + f"reductions.{r}.weight"] = (dim, dim, ks, ks)
                out[d + f"reductions.{r}.bias"] = (dim,)
    out["norm.weight"] = out["norm.bias"] = (768,)
    out["head.weight"], out["head.bias"] = (1000, 768), (1000,)
    return out


def test_crossformer_loads_the_published_checkpoint_layout(tmp_path):
    """Every tensor of ALAC's truncated CrossFormer-S comes from the published checkpoint
    names; what is skipped is exactly the 4th stage, the truncated blocks, the head and the
    position-bias MLPs of stage 3 (ALAC removes them)."""
    import re

    shapes = _published_crossformer_s_state()
    gen = torch.Generator().manual_seed(0)
    state = {
        k: (torch.randn(s, generator=gen) if "index" not in k else torch.zeros(s, dtype=torch.long))
        for k, s in shapes.items()
    }
    path = tmp_path / "crossformer-s.pth"
    torch.save({"model": state, "epoch": 300}, path)
    bb = build_backbone(BackboneConfig("crossformer_s3", options={"weights_path": str(path)}))
    report = bb.load_report
    assert report["missing"] == []  # nothing of the truncated model is left random
    own = dict(bb.net.state_dict())
    for name in report["loaded"]:
        torch.testing.assert_close(own[name], state[name])
    expected_skips = {
        k
        for k in shapes
        if k.startswith(("layers.3.", "layers.2.downsample.", "norm.", "head."))
        or re.match(r"layers\.2\.blocks\.([2-5])\.", k)
        or re.match(r"layers\.2\.blocks\.[01]\.attn\.pos\.", k)
        or k.endswith(("attn.biases", "attn.relative_position_index"))
    }
    assert set(report["skipped"]) == expected_skips
    assert len(report["loaded"]) == len(shapes) - len(expected_skips)


# ---------------------------------------------------------------- IA, RELA, rerank


def test_ia_gating_hand_computed():
    v = torch.tensor([[1.0, -2.0, 0.5]])
    a = torch.tensor([[0.5, 1.0, -1.0]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    a_g = [sig(1.0 * 0.5) * 0.5, sig(-2.0 * 1.0) * 1.0, sig(0.5 * -1.0) * -1.0]
    v_g = [sig(vi * ai) * vi for vi, ai in zip([1.0, -2.0, 0.5], a_g, strict=False)]
    vg, ag = ia_gate(v, a)
    torch.testing.assert_close(ag[0], torch.tensor(a_g))
    torch.testing.assert_close(vg[0], torch.tensor(v_g))
    cos = float(np.dot(v_g, a_g) / np.linalg.norm(v_g) / np.linalg.norm(a_g))
    assert ia_scores(v, a).item() == pytest.approx(cos, abs=1e-6)


def test_ia_scores_chunked_equals_dense():
    v, a = torch.randn(37, 16), torch.randn(23, 16)
    dense = torch.nn.functional.cosine_similarity(*ia_gate(v[:, None], a[None]), dim=-1)
    torch.testing.assert_close(ia_scores(v, a, chunk=5), dense)


def test_rela_mask_matches_formula():
    f = torch.randn(2, 8, 10)
    m = rela_mask(f)[:, 0]
    for b in range(2):
        mean_c = f[b].mean(0).numpy().astype(np.float64)
        a = np.exp(mean_c - mean_c.max())
        a /= a.sum()
        mu, sd = a.mean(), a.std(ddof=1)
        expected = np.clip((a - mu) / sd**0.3 + 1, 0, 2)
        np.testing.assert_allclose(m[b].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_rela_progressive_suppression():
    rela = RELA(12, 4).eval()
    with torch.no_grad():
        for br in (rela.f1, rela.f2, rela.f3):
            br[0].weight.copy_(torch.eye(4, 12)[..., None])  # branch = first 4 channels
        tokens = torch.zeros(1, 6, 12)
        tokens[0, 2, :4] = 5.0  # token 2 is salient
        tokens[0, :, :4] += 1.0
        out = rela(tokens)
    f1, f2 = out[0, :, :4], out[0, :, 4:8]
    # the salient token is damped for the second level, the others boosted
    assert f2[2].sum() < f1[2].sum()
    assert f2[0].sum() > f1[0].sum()


def test_bswfr_hand_computed():
    from rsia_geo.rerank import bswfr_rerank, reverse_ranks

    s = np.array([[0.9, 0.8, 0.1], [0.95, 0.2, 0.3], [0.1, 0.7, 0.6]])
    # reverse rank of query 0 in column 0: column [0.9, 0.95, 0.1] -> query 0 is 2nd (rank 1)
    assert reverse_ranks(s, np.array([0]), np.array([0]))[0] == 1
    out = bswfr_rerank(s, k=2, k_min=2, fill=0.0)
    # row 0: candidates 0 (r_f 0, rev 1) and 1 (r_f 1, rev 0) -> r_b: cand 1 -> 0, cand 0 -> 1
    w = lambda rf, rb: 0.7 * math.exp(-0.05 * (rf + 1)) * 0.3 * math.exp(-0.05 * (rb + 1))  # noqa: E731
    assert out[0, 0] == pytest.approx(0.9 * w(0, 1))
    assert out[0, 1] == pytest.approx(0.8 * w(1, 0))
    assert out[0, 2] == 0.0
    # row 1: candidates 0 (rev 0) and 2 (column [0.1, 0.3, 0.6] -> rev 1)
    assert out[1, 0] == pytest.approx(0.95 * w(0, 0))
    assert out[1, 2] == pytest.approx(0.3 * w(1, 1))
    assert np.isneginf(bswfr_rerank(s, k=1, k_min=1)[0, 2])
    with pytest.raises(ValueError, match="k=0"):
        bswfr_rerank(s, k=0)


# ---------------------------------------------------------------- loss


def _tiny():
    return build_model(get_config("alac-tiny"))


def _batch(model, b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.config.backbone.input_size
    return torch.rand(b, 3, s, s, generator=g), torch.randn(b, 16000, generator=g) * 0.1


def test_loss_gradients_reach_every_trainable_parameter():
    model = _tiny().train()
    loss_fn = ALACLoss()
    images, waves = _batch(model)
    ids = torch.tensor([0, 1, 2, 3, 4, 4])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    # two steps: timm ResNets zero-init each block's last BN, so the convs before it get
    # their first gradient only once that BN has moved
    for _ in range(2):
        opt.zero_grad()
        out = loss_fn(model.forward_image(images), model.forward_audio(waves), ids)
        out["loss"].backward()
        opt.step()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert missing == []
    assert loss_fn.p1.grad is None  # AKT weights are trained by their own objective


def test_false_negatives_are_masked():
    loss_fn = ALACLoss()
    v = torch.randn(4, 8)
    a = v.clone()
    a[1] = v[0]  # pair 1's clip equals pair 0's: the same image spoken twice
    ids_same = torch.tensor([0, 0, 1, 2])
    out_masked = loss_fn(v, a, ids_same)
    out_plain = loss_fn(v, a, torch.arange(4))
    assert out_masked["triplet"] < out_plain["triplet"]
    assert out_masked["nce"] < out_plain["nce"]


def test_excluded_pairs_are_neither_positives_nor_negatives():
    loss_fn = ALACLoss(w_nce=0.0, w_akt=0.0)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 8, generator=g)
    a = torch.randn(5, 8, generator=g)
    a[3] = v[0] + 0.1 * torch.randn(8, generator=g)  # clip 3 also says what image 0 shows
    # excluding (i, j) for every pair of one image is exactly the image-id mask
    ids = torch.tensor([0, 0, 1, 2, 2])
    same = ids[:, None] == ids[None, :]
    by_ids = loss_fn(v, a, ids)["loss"].item()
    assert loss_fn(v, a, None, same)["loss"].item() == pytest.approx(by_ids, rel=1e-6)
    # one excluded pair (image 0, clip 3) drops exactly its two triplet costs
    s = ia_scores(v, a)
    d = s.diagonal()
    exclude = torch.zeros(5, 5, dtype=torch.bool)
    exclude[0, 3] = True
    cost = float((0.2 + s[0, 3] - d[0]).clamp(min=0) + (0.2 + s[0, 3] - d[3]).clamp(min=0))
    assert cost > 0  # a violating negative until excluded
    plain = loss_fn(v, a)["loss"].item()
    assert loss_fn(v, a, None, exclude)["loss"].item() == pytest.approx(plain - cost, abs=1e-4)
    # the NT-Xent terms leave it out of their denominators too
    full = ALACLoss()
    assert full(v, a, None, exclude)["nce"] < full(v, a)["nce"]
    assert full.caption_loss(v, a, None, exclude) < full.caption_loss(v, a)
    assert full.voice_pair_loss(v, a, None, exclude) < full.voice_pair_loss(v, a)
    with pytest.raises(InvalidArgumentError, match=r"exclude must be \(5, 5\)"):
        full(v, a, None, torch.zeros(4, 4, dtype=torch.bool))


def test_voice_pair_loss_rewards_voicings_that_agree():
    loss_fn = ALACLoss()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 16, generator=g)
    near = a + 0.05 * torch.randn(6, 16, generator=g)  # the same captions, other voices
    far = near[torch.tensor([1, 0, 3, 2, 5, 4])]  # each caption paired with another's
    ids = torch.arange(6)
    assert loss_fn.voice_pair_loss(a, near, ids) < 0.1 < loss_fn.voice_pair_loss(a, far, ids)
    # a clip of the same image saying something else is no negative
    twin = near.clone()
    twin[1] = a[0]
    masked = loss_fn.voice_pair_loss(a, twin, torch.tensor([0, 0, 1, 2, 3, 4]))
    plain = loss_fn.voice_pair_loss(a, twin, ids)
    assert masked < plain
    # symmetric, and its gradient reaches both voicings
    a.requires_grad_(True)
    b = near.clone().requires_grad_(True)
    loss = loss_fn.voice_pair_loss(a, b, ids)
    assert loss.item() == pytest.approx(loss_fn.voice_pair_loss(b, a, ids).item(), rel=1e-5)
    loss.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_triplet_is_summed_over_all_negatives():
    loss_fn = ALACLoss(w_nce=0.0, w_akt=0.0)
    v = torch.randn(5, 8)
    a = torch.randn(5, 8)
    s = ia_scores(v, a)
    d = s.diagonal()
    expected = 0.0
    for i in range(5):
        for j in range(5):
            if i != j:
                expected += max(0.0, 0.2 + s[i, j] - d[i]) + max(0.0, 0.2 + s[i, j] - d[j])
    assert loss_fn(v, a)["loss"].item() == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("adaptive", [True, False])
def test_akt_weights_adapt_only_when_adaptive(adaptive):
    loss_fn = ALACLoss(akt_adaptive=adaptive)
    before = loss_fn.akt_weights(6).clone()
    assert torch.allclose(before, torch.full((6, 6), 1 / 6))
    opt = torch.optim.Adam([loss_fn.p1, loss_fn.p2], lr=0.05)
    v, a = torch.randn(6, 16), torch.randn(6, 16)
    for _ in range(20):
        opt.zero_grad()
        aux = loss_fn.akt_weight_loss(v, a)
        if aux.requires_grad:
            aux.backward()
            opt.step()
    after = loss_fn.akt_weights(6)
    if adaptive:
        assert not torch.allclose(after, before, atol=1e-3)
        torch.testing.assert_close(after.sum(0), torch.ones(6))  # columns still sum to 1
    else:
        torch.testing.assert_close(after, before)


# ---------------------------------------------------------------- batch independence, ckpt


def test_embeddings_do_not_depend_on_the_batch():
    model = _tiny()
    model.train()  # move BN running stats away from their init
    images, waves = _batch(model, b=8)
    with torch.no_grad():
        for _ in range(3):
            model.forward_image(images)
            model.forward_audio(waves)
    lengths = torch.full((8,), 16000)
    lengths[3] = 9000
    waves[3, 9000:] = 0.0
    full_v = model.encode_images(images)
    full_a = model.encode_audio(waves, lengths)
    alone_v = model.encode_images(images[3:4])
    alone_a = model.encode_audio(waves[3:4, :9000])
    other_v = model.encode_images(torch.cat([images[3:4], torch.rand_like(images[:5])]))
    torch.testing.assert_close(full_v[3:4], alone_v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other_v[:1], alone_v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full_a[3:4], alone_a, atol=1e-5, rtol=1e-5)


def test_encoding_leaves_every_submodule_in_its_own_mode():
    model = _tiny()
    model.train()
    model.backbone.eval()  # as the training loop keeps a frozen backbone
    before = {n: m.training for n, m in model.named_modules()}
    assert any(before.values()) and not all(before.values())
    images, waves = _batch(model, b=2)
    seen = []
    hook = model.audio_encoder.register_forward_pre_hook(
        lambda mod, args: seen.append(any(m.training for m in model.modules()))
    )
    model.encode_audio(waves)
    model.encode_images(images)
    hook.remove()
    assert seen == [False]  # the whole model was in eval mode inside the call
    assert {n: m.training for n, m in model.named_modules()} == before
    # dropout off inside: two calls agree even though the model is training
    torch.testing.assert_close(model.encode_audio(waves), model.encode_audio(waves))


@pytest.mark.parametrize(
    ("name", "options", "norms"),
    [
        ("efficientnet_lite0", {"pretrained": False}, 49),  # stem, 16 blocks, head
        ("torchgeo_resnet18", {}, 20),  # stem, 8 blocks x 2, 3 downsamples
    ],
)
def test_folded_backbone_computes_the_same_tokens(name, options, norms):
    from rsia_geo.models._fold import fold_batchnorm

    net = build_backbone(BackboneConfig(name, 96, options=options))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # norms that are not the identity: affine and statistics of their own
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
        net.train()
        for _ in range(3):
            net(torch.rand(4, 3, 96, 96, generator=g))
    net.eval()
    folded = copy.deepcopy(net)
    assert fold_batchnorm(folded) == norms
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(3, 3, 96, 96, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want, got = net(x), folded(x)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_image_vectors_follow_every_change_of_the_backbone():
    """encode_images runs a batch-norm-folded copy of the backbone: never a stale one."""
    model = _tiny()
    images, _ = _batch(model, b=4)
    keys = set(model.state_dict())

    def plain():
        with torch.no_grad():
            model.eval()
            return torch.nn.functional.normalize(model.forward_image(images), dim=-1)

    first = model.encode_images(images)
    torch.testing.assert_close(first, plain(), atol=1e-5, rtol=1e-5)
    model.train()  # new batch-norm statistics (buffers written in place), no optimiser step
    with torch.no_grad():
        model.forward_image(torch.rand_like(images) * 3)
    moved = model.encode_images(images)
    assert not torch.allclose(moved, first, atol=1e-4)
    torch.testing.assert_close(moved, plain(), atol=1e-5, rtol=1e-5)
    opt = torch.optim.SGD(model.backbone.parameters(), lr=0.5)  # weights changed in place
    model.train()
    model.forward_image(images).square().mean().backward()
    opt.step()
    stepped = model.encode_images(images)
    assert not torch.allclose(stepped, moved, atol=1e-4)
    torch.testing.assert_close(stepped, plain(), atol=1e-5, rtol=1e-5)
    moved_model = copy.deepcopy(model)  # another model's tensors
    torch.testing.assert_close(moved_model.encode_images(images), stepped)
    # the folded copy is no part of the model
    assert set(model.state_dict()) == keys
    assert not any("folded" in n for n, _ in model.named_modules())
    with torch.inference_mode():  # tensors without versions: the model's own backbone runs
        built_there = _tiny()
        built_there.load_state_dict(model.state_dict())
        torch.testing.assert_close(built_there.encode_images(images), stepped)
    torch.testing.assert_close(built_there.encode_images(images), stepped)


def test_checkpoint_round_trip_is_bit_identical(tmp_path):
    model = _tiny().eval()
    images, waves = _batch(model)
    path = save_checkpoint(model, tmp_path / "ckpt", extra={"metrics": {"mR": 1.0}})
    again = load_checkpoint(path)
    assert torch.equal(model.encode_images(images), again.encode_images(images))
    assert torch.equal(model.encode_audio(waves), again.encode_audio(waves))
    assert again.config == model.config
    assert again.checkpoint_meta["metrics"] == {"mR": 1.0}
    half = load_checkpoint(save_checkpoint(model, tmp_path / "half", half=True))
    torch.testing.assert_close(
        model.encode_images(images), half.encode_images(images), atol=5e-3, rtol=5e-3
    )
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * (
        tmp_path / "ckpt" / "model.safetensors"
    ).stat().st_size


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"config\.json"):
        load_checkpoint(tmp_path)
    model = _tiny()
    path = save_checkpoint(model, tmp_path / "c")
    raw = bytearray((path / "model.safetensors").read_bytes())
    raw[-5] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)
    (path / "config.json").write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="not an rsia_geo"):
        load_checkpoint(path)
    # a pickle that is not plain tensors is refused, not executed
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"model": Evil()}))
    from rsia_geo.models.backbones import load_torch_state

    with pytest.raises(CheckpointError, match="safely"):
        load_torch_state(bad)


def test_registry_lists_configs_and_config_round_trips():
    assert {"alac-crossformer-s", "alac-efficientnet-lite0", "alac-tiny"} <= set(list_configs())
    for name in list_configs():
        cfg = get_config(name)
        assert ALACConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ModelConfigError, match="embed_dim"):
        build_model(dataclasses.replace(get_config("alac-tiny"), embed_dim=32))


# ---------------------------------------------------------------- front end


def test_cepstrum_frontend_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    cfg = AudioFrontendConfig.reference()
    feats = AudioFrontend(cfg)(torch.from_numpy(x))[0, 0].numpy()
    # independent numpy: centred frames (zero pad n_fft/2), Hann(1024) centred in 4096
    n_fft, hop, win = 4096, 200, 1024
    padded = np.pad(x.astype(np.float64), n_fft // 2)
    window = np.zeros(n_fft)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic
    window[(n_fft - win) // 2 : (n_fft + win) // 2] = hann
    n_frames = 1 + len(x) // hop
    frames = np.stack([padded[t * hop : t * hop + n_fft] * window for t in range(n_frames)])
    mag = np.abs(np.fft.rfft(frames, axis=1))  # (t, 2049)
    n = mag.shape[1]
    k = np.arange(64)[:, None]
    dct = np.cos(np.pi / n * (np.arange(n) + 0.5) * k) * np.sqrt(2 / n)
    dct[0] /= np.sqrt(2)
    coeffs = mag @ dct.T  # (t, 64)
    db = 10 * np.log10(np.maximum(coeffs, 1e-10))
    db = np.maximum(db, db.max() - 80)
    assert feats.shape == (300, 64)
    # float32 STFT: exact to 2e-3 dB where coefficients are within 40 dB of the peak, and to
    # 1e-5 of the peak in the linear domain everywhere (tiny coefficients are rounding-bound)
    strong = db > db.max() - 40
    np.testing.assert_allclose(feats[:n_frames][strong], db[strong], atol=2e-3)
    lin = lambda d: 10 ** (d / 10)  # noqa: E731
    np.testing.assert_allclose(lin(feats[:n_frames]), lin(db), atol=1e-5 * lin(db.max()))
    assert (feats[n_frames:] == 0).all()  # padding past the clip


def test_logmel_length_policy():
    fe = AudioFrontend(AudioFrontendConfig(max_frames=100))
    short = fe(torch.randn(1, 8000) * 0.1)  # 0.5 s -> 51 frames, then padding
    long = fe(torch.randn(1, 32000) * 0.1)  # 2 s -> cut to 100 frames
    assert short.shape == long.shape == (1, 1, 100, 64)
    assert (short[0, 0, 51:] == 0).all() and (short[0, 0, :51] != 0).any()
    # per-band mean of the valid frames is zero (cepstral mean normalisation)
    torch.testing.assert_close(short[0, 0, :51].mean(0), torch.zeros(64), atol=1e-4, rtol=0)
