"""The text route: what the recogniser heard (or the analyst typed), in the image space.

A spoken query is embedded twice: by the audio branch (Whisper's frames through a trained head)
and, through Whisper's recogniser, as a transcript. :class:`TextEncoder` maps a sentence into
the *same* embedding space as a checkpoint's images (it is trained against that checkpoint's
frozen image embeddings), so an index built with the checkpoint serves both routes and nothing
is re-indexed when the text route is added. This is the ASR-then-text route of the MMFR method
(see ``shared/docs/alac.md``), fused here with ALAC's audio route instead of replacing it.

Words are embedded fastText-style: each word is a bag of hashed ids (the word itself and its
character 3-5-grams) into one table, so recogniser misspellings ("free ways", "farm land",
"parrallel") and words never seen in training land near the words they resemble. A bidirectional
GRU reads the word vectors, attention pooling and a linear layer give the embedding.

Two kinds of encoder (``TextConfig.kind``):

* ``"pretrained"`` (:class:`PretrainedTextEncoder`): a frozen all-MiniLM-L6-v2 sentence encoder
  (:mod:`rsia_geo.models.sentence`, trained on a billion sentence pairs) and a small trained
  head; it knows words UCM's captions never use, so queries in an analyst's own words reach the
  right scenes.
* ``"bank"`` (:class:`CaptionBankTextEncoder`): no training at all: the training captions
  nearest to the sentence (in MiniLM's space) vote for the images they describe, and the route
  returns the weighted mean of those images' embeddings (a class prototype when the nearest
  captions are generic: "a piece of farmland" describes dozens of images).
* ``"ensemble"`` (:class:`EnsembleTextEncoder`): the hashed and pretrained kinds (and the caption
  bank when it has one), their unit vectors summed, the hashed one weighted by the share of the
  sentence's words it learned.
* ``"hashed"`` (:class:`TextEncoder`): words embedded fastText-style, learned from the captions
  alone. Each word is a bag of hashed ids (the word itself and its character 3-5-grams) into
  one table, so recogniser misspellings ("free ways", "farm land", "parrallel") land near the
  words they resemble. A bidirectional GRU reads the word vectors, attention pooling and a
  linear layer give the embedding. No extra dependency.

Files: ``text.safetensors`` (trained weights) and ``text.json`` (its :class:`TextConfig` and the
sha256 of the image checkpoint it was trained for) in the checkpoint's folder.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rsia_geo.errors import CheckpointError, InvalidArgumentError, ModelConfigError
from rsia_geo.models._modes import eval_mode

__all__ = [
    "TEXT_CONFIG_NAME",
    "TEXT_WEIGHTS_NAME",
    "CaptionBankTextEncoder",
    "EnsembleTextEncoder",
    "PretrainedTextEncoder",
    "TextConfig",
    "TextEncoder",
    "encode_heard",
    "fused_scores",
    "load_text_encoder",
    "normalise_text",
    "recogniser_prompt",
    "save_text_encoder",
]

TEXT_WEIGHTS_NAME = "text.safetensors"
DEFAULT_WEIGHT = 1.0
"""The text route's weight against the audio route's when a checkpoint does not say (fixed in
advance, equal shares; not tuned on val)."""
TEXT_CONFIG_NAME = "text.json"
TEXT_KINDS = ("hashed", "pretrained", "bank", "ensemble")

_NUMBERS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve",
}  # fmt: skip


def normalise_text(text: str) -> list[str]:
    """Lower-case words of a sentence, digits spelled out, punctuation and hyphens removed.

    Args:
        text: A caption, transcript or typed query.

    Returns:
        Its words.
    """
    words = re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split()
    return [_NUMBERS.get(w, w) for w in (w.strip("'") for w in words) if w]


@dataclass(frozen=True)
class TextConfig:
    """Text encoder settings (stored in ``text.json``).

    Attributes:
        embed_dim: Output size (the checkpoint's ``embed_dim``).
        kind: ``"hashed"`` (:class:`TextEncoder`), ``"pretrained"``
            (:class:`PretrainedTextEncoder`), ``"bank"`` (:class:`CaptionBankTextEncoder`) or
            ``"ensemble"`` (:class:`EnsembleTextEncoder`, whose members share these settings).
        buckets: Hashed ids (words and character n-grams share them).
        width: Word vector size (the GRU's hidden size per direction too).
        min_n: Shortest character n-gram.
        max_n: Longest character n-gram.
        max_words: Words read per sentence (the rest are ignored).
        dropout: Dropout on word vectors (hashed) or in the head (pretrained) while training.
        hidden: Hidden size of the pretrained kind's head.
        sentence_dim: Size of the pretrained sentence vectors (384 for all-MiniLM-L6-v2).
        bank_size: Captions in the caption bank (0: none; an ensemble without a bank member).
        bank_k: Nearest captions that vote for a sentence.
        bank_tau: Softmax temperature of their votes (over cosine similarities).
    """

    embed_dim: int = 512
    kind: str = "hashed"
    buckets: int = 16384
    width: int = 128
    min_n: int = 3
    max_n: int = 5
    max_words: int = 48
    dropout: float = 0.1
    hidden: int = 1024
    sentence_dim: int = 384
    bank_size: int = 0
    bank_k: int = 20
    bank_tau: float = 0.02

    def __post_init__(self) -> None:
        if self.kind not in TEXT_KINDS:
            raise ModelConfigError(
                f"TextConfig.kind={self.kind!r} is not one of {', '.join(TEXT_KINDS)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"TextConfig.dropout={self.dropout} must be in [0, 1)")
        names = ("embed_dim", "buckets", "width", "min_n", "max_words", "hidden", "sentence_dim")
        for name in names:
            if int(getattr(self, name)) < 1:
                raise ModelConfigError(f"TextConfig.{name}={getattr(self, name)} must be >= 1")
        if self.max_n < self.min_n:
            raise ModelConfigError(f"TextConfig.max_n={self.max_n} must be >= min_n={self.min_n}")
        if self.bank_size < 0 or self.bank_k < 1 or not self.bank_tau > 0:
            raise ModelConfigError(
                f"TextConfig.bank_size={self.bank_size} must be >= 0, bank_k={self.bank_k} >= 1 "
                f"and bank_tau={self.bank_tau} > 0"
            )


def _bucket(token: str, buckets: int) -> int:
    return zlib.crc32(token.encode("utf-8")) % buckets


class _TextRoute(nn.Module):
    """What both kinds share: the route weight, the vocabulary and encoding in eval mode."""

    config: TextConfig

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        self.default_weight = DEFAULT_WEIGHT
        self.vocabulary: frozenset[str] = frozenset()  # words seen in training
        # what the recogniser reads as said before a spoken query (its training captions,
        # rsia_geo.training.transcripts.domain_prompt); "" for none
        self.recogniser_prompt = ""

    def coverage(self, text: str) -> float:
        """Share of a sentence's words seen in training (1.0 when no vocabulary is recorded).

        Searches scale the text route's weight by it, so a query in words the route never
        learned leans on the audio route.

        Args:
            text: A transcript or typed query.

        Returns:
            A number in [0, 1].
        """
        words = normalise_text(text)
        if not self.vocabulary or not words:
            return 1.0
        return sum(w in self.vocabulary for w in words) / len(words)

    def weight_for(self, text: str, route_weight: float | None = None) -> float:
        """The text route's weight for one query: the route weight times :meth:`coverage`.

        The one rule searches and the benchmarks apply (not times the recogniser's
        confidence: that measured worse, docs/model_card.md).

        Args:
            text: The transcript or typed query.
            route_weight: The route weight (None: :attr:`default_weight`).

        Returns:
            The weight ``w`` of :func:`fused_scores`.
        """
        base = self.default_weight if route_weight is None else route_weight
        return float(base) * self.coverage(text)

    @torch.no_grad()
    def encode(
        self, texts: list[str], *, normalize: bool = True, heard: bool = False
    ) -> torch.Tensor:
        """Embed sentences in eval mode.

        Args:
            texts: Sentences.
            normalize: L2-normalise (for cosine search).
            heard: The sentences are what the recogniser heard (transcripts of spoken queries),
                not typed text: an ensemble leaves its caption bank out for them (a misheard
                sentence snaps onto the wrong captions; measured in docs/model_card.md). The
                other kinds embed both alike.

        Returns:
            float32 ``(B, embed_dim)``.
        """
        with eval_mode(self):
            t = self._raw(list(texts), heard).float()
        return nn.functional.normalize(t, dim=-1) if normalize else t

    def _raw(self, texts: list[str], heard: bool) -> torch.Tensor:
        out: torch.Tensor = self(texts)
        return out

    def members(self, *, heard: bool = False) -> tuple[str, ...]:
        """The kinds that embed a sentence (what :meth:`encode` sums), e.g. ``("hashed",)``.

        Args:
            heard: For a transcript (see :meth:`encode`).
        """
        return (self.config.kind,)


class TextEncoder(_TextRoute):
    """Sentences -> embeddings in a checkpoint's image space (raw, not normalised): hashed words.

    Args:
        config: Settings (``kind="hashed"``).
    """

    def __init__(self, config: TextConfig | None = None) -> None:
        c = config or TextConfig()
        if c.kind != "hashed":
            raise ModelConfigError(
                f"TextEncoder is the hashed kind, not {c.kind!r}; use PretrainedTextEncoder"
            )
        super().__init__(c)
        self.table = nn.EmbeddingBag(c.buckets, c.width, mode="mean")
        self.drop = nn.Dropout(c.dropout)
        self.gru = nn.GRU(c.width, c.width, batch_first=True, bidirectional=True)
        self.attend = nn.Linear(2 * c.width, 1)
        self.norm = nn.LayerNorm(2 * c.width)
        self.proj = nn.Linear(2 * c.width, c.embed_dim)
        self._ids: dict[str, list[int]] = {}

    def word_ids(self, word: str) -> list[int]:
        """Hashed ids of a word: the word itself and its character n-grams (memoised)."""
        ids = self._ids.get(word)
        if ids is None:
            c = self.config
            w = f"<{word}>"
            grams = [
                w[i : i + n] for n in range(c.min_n, c.max_n + 1) for i in range(len(w) - n + 1)
            ]
            ids = [_bucket("w:" + word, c.buckets)] + [_bucket("g:" + g, c.buckets) for g in grams]
            if len(self._ids) < 200_000:
                self._ids[word] = ids
        return ids

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Raw embeddings ``(B, embed_dim)`` of sentences (an empty one as the word ``<empty>``).

        Args:
            texts: Sentences.

        Returns:
            float32 ``(B, embed_dim)``.
        """
        c = self.config
        sentences = [normalise_text(t)[: c.max_words] or ["<empty>"] for t in texts]
        flat: list[int] = []
        offsets: list[int] = []
        for words in sentences:
            for word in words:
                offsets.append(len(flat))
                flat.extend(self.word_ids(word))
        dev = self.proj.weight.device
        vecs = self.table(
            torch.tensor(flat, dtype=torch.long, device=dev),
            torch.tensor(offsets, dtype=torch.long, device=dev),
        )
        lengths = torch.tensor([len(s) for s in sentences])
        seq = nn.utils.rnn.pad_sequence(list(torch.split(vecs, lengths.tolist())), batch_first=True)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.drop(seq), lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        mask = torch.arange(h.shape[1], device=dev)[None] < lengths.to(dev)[:, None]
        logits = self.attend(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        pooled = (torch.softmax(logits, dim=1)[..., None] * h).sum(dim=1)
        result: torch.Tensor = self.proj(self.norm(pooled))
        return result


def _checked_sentence(sentence: Any, config: TextConfig) -> Any:
    """``sentence``, or the packaged sentence encoder when None, checked against ``config``."""
    if sentence is None:
        from rsia_geo.models.sentence import get_sentence_encoder

        sentence = get_sentence_encoder()
    if sentence.dim != config.sentence_dim:
        raise ModelConfigError(
            f"the sentence encoder at {str(sentence.path)!r} gives {sentence.dim}-d vectors; "
            f"this text route was built on {config.sentence_dim}-d ones"
        )
    return sentence


class _SentenceRoute(_TextRoute):
    """What the kinds built on the frozen sentence encoder share: the encoder, full coverage."""

    _sentence: Any

    @property
    def sentence(self) -> Any:
        """The frozen sentence encoder (loaded on first use)."""
        self._sentence = _checked_sentence(self._sentence, self.config)
        return self._sentence

    def coverage(self, text: str) -> float:
        """Always 1.0: the sentence encoder knows the words (no down-weighting)."""
        return 1.0


def _bank_text(text: str) -> str:
    """A sentence as the caption bank keys it (:func:`normalise_text`, joined)."""
    return " ".join(normalise_text(text))


class PretrainedTextEncoder(_SentenceRoute):
    """Sentences -> embeddings in a checkpoint's image space: frozen MiniLM + a trained head.

    The sentence encoder (:class:`~rsia_geo.models.sentence.SentenceEncoder`) is frozen and
    not part of this module's weights (it loads from its own folder, checked by sha256); only
    the head is trained and saved. The head is a residual MLP: ``Linear(x) + MLP(x)``.

    It learned its words in pretraining, so :meth:`coverage` is always 1.0: a query in words
    the captions never use is not down-weighted (the hashed kind's coverage rule is for words
    it never learned).

    Args:
        config: Settings (``kind="pretrained"``).
        sentence: The sentence encoder (None: the packaged all-MiniLM-L6-v2, loaded on first use).
    """

    def __init__(self, config: TextConfig | None = None, sentence: Any = None) -> None:
        c = config or TextConfig(kind="pretrained")
        if c.kind != "pretrained":
            raise ModelConfigError(
                f"PretrainedTextEncoder is the pretrained kind, not {c.kind!r}; use TextEncoder"
            )
        super().__init__(c)
        self.skip = nn.Linear(c.sentence_dim, c.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(c.sentence_dim, c.hidden),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, c.embed_dim),
        )
        self._sentence = sentence  # not a submodule: its weights are not ours to save

    def head(self, vectors: torch.Tensor) -> torch.Tensor:
        """Raw embeddings ``(B, embed_dim)`` of sentence vectors ``(B, sentence_dim)``."""
        out: torch.Tensor = self.skip(vectors) + self.mlp(vectors)
        return out

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Raw embeddings ``(B, embed_dim)`` of sentences.

        Args:
            texts: Sentences.

        Returns:
            float32 ``(B, embed_dim)``.
        """
        vectors = self.sentence.embed(list(texts)).to(self.skip.weight.device)
        return self.head(vectors)


class CaptionBankTextEncoder(_SentenceRoute):
    """Sentences -> the images their nearest training captions describe (nothing trained).

    The bank holds each distinct training caption (normalised by :func:`normalise_text`) as a
    frozen sentence vector (the key) and the mean unit embedding of the training images it
    describes (the value). A sentence is embedded by the same sentence encoder; its ``bank_k``
    nearest keys vote with ``softmax(cosine / bank_tau)`` and the route returns the weighted
    mean of their values. UCM's captions repeat within a class ("there is a piece of
    farmland"), so a generic sentence lands on its class prototype and a specific one on the
    few images it fits. Coverage is always 1.0 (the sentence encoder knows every word).

    Build one from a checkpoint's training images with :meth:`build`; ``bank_size`` keys and
    values (float16 when shipped) are this module's buffers.

    Args:
        config: Settings (``kind="bank"``, ``bank_size`` >= 1).
        sentence: The sentence encoder (None: the packaged all-MiniLM-L6-v2, loaded on first use).
    """

    keys: torch.Tensor
    values: torch.Tensor

    def __init__(self, config: TextConfig, sentence: Any = None) -> None:
        if config.kind != "bank":
            raise ModelConfigError(f"CaptionBankTextEncoder is the bank kind, not {config.kind!r}")
        if config.bank_size < 1:
            raise ModelConfigError(
                f"a caption bank of bank_size={config.bank_size} captions holds nothing; build "
                "one from training captions with CaptionBankTextEncoder.build"
            )
        super().__init__(config)
        self.register_buffer("keys", torch.zeros(config.bank_size, config.sentence_dim))
        self.register_buffer("values", torch.zeros(config.bank_size, config.embed_dim))
        self._sentence = sentence

    @classmethod
    def build(
        cls,
        captions: list[list[str]],
        image_vectors: torch.Tensor,
        config: TextConfig,
        sentence: Any = None,
    ) -> CaptionBankTextEncoder:
        """A bank of training captions and the images they describe.

        Args:
            captions: Per training image, its captions.
            image_vectors: ``(N, embed_dim)`` embeddings of those images (normalised here).
            config: Settings (``kind`` and ``bank_size`` are set from the captions).
            sentence: The sentence encoder (None: the packaged one).

        Returns:
            The bank, in eval mode.

        Raises:
            ModelConfigError: Captions and image vectors do not pair up, or there are no
                captions.
        """
        if len(captions) != len(image_vectors):
            raise ModelConfigError(
                f"{len(captions)} images' captions but {len(image_vectors)} image vectors; "
                "give one row of vectors per image"
            )
        described: dict[str, list[int]] = {}
        for i, group in enumerate(captions):
            for c in group:
                text = _bank_text(c)
                if text and i not in described.setdefault(text, []):
                    described[text].append(i)
        if not described:
            raise ModelConfigError("no captions to build a caption bank from")
        units = nn.functional.normalize(image_vectors.float(), dim=-1)
        values = torch.stack([units[rows].mean(0) for rows in described.values()])
        bank = cls(replace(config, kind="bank", bank_size=len(described)), sentence)
        bank.keys.copy_(nn.functional.normalize(bank.sentence.embed(list(described)), dim=-1))
        bank.values.copy_(nn.functional.normalize(values, dim=-1))
        return bank.eval()

    def lookup(self, vectors: torch.Tensor) -> torch.Tensor:
        """Weighted mean of the values of the nearest keys, ``(B, embed_dim)``.

        Args:
            vectors: Sentence vectors ``(B, sentence_dim)`` (normalised here).
        """
        q = nn.functional.normalize(vectors.float().to(self.keys.device), dim=-1)
        top, rows = (q @ self.keys.T).topk(min(self.config.bank_k, len(self.keys)), dim=1)
        w = torch.softmax(top / self.config.bank_tau, dim=1)
        out: torch.Tensor = (w[..., None] * self.values[rows]).sum(1)
        return out

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Raw embeddings ``(B, embed_dim)`` of sentences (normalised as the keys were).

        Args:
            texts: Sentences.

        Returns:
            float32 ``(B, embed_dim)``.
        """
        return self.lookup(self.sentence.embed([_bank_text(t) for t in texts]))


class EnsembleTextEncoder(_TextRoute):
    """The kinds at once: ``c unit(hashed) + unit(pretrained) [+ unit(bank)]``.

    The sum is raw (:meth:`encode` normalises it).

    ``c`` is the hashed member's :meth:`~TextEncoder.coverage` of the sentence: it speaks only
    for the words it learned (and for the recogniser's misspellings of them, which its
    character n-grams place near the words), while the pretrained member and the caption bank
    know every word. The route as a whole is not down-weighted (:meth:`coverage` is 1.0). The
    members share one sentence encoder, run once per batch.

    Args:
        hashed: The hashed member (trained for the same image weights).
        pretrained: The pretrained member.
        bank: The caption bank (:class:`CaptionBankTextEncoder`), or None.

    Raises:
        ModelConfigError: The members' output or sentence sizes differ.
    """

    def __init__(
        self,
        hashed: TextEncoder,
        pretrained: PretrainedTextEncoder,
        bank: CaptionBankTextEncoder | None = None,
    ) -> None:
        members = [hashed, pretrained] + ([bank] if bank is not None else [])
        if len({m.config.embed_dim for m in members}) > 1:
            raise ModelConfigError(
                "the members embed in "
                + ", ".join(f"{m.config.kind} {m.config.embed_dim}" for m in members)
                + " dimensions; build them all for one checkpoint"
            )
        pc = pretrained.config
        if bank is not None and bank.config.sentence_dim != pc.sentence_dim:
            raise ModelConfigError(
                f"the caption bank's sentence vectors are {bank.config.sentence_dim}-d, the "
                f"pretrained member's {pc.sentence_dim}-d; build both on one sentence encoder"
            )
        bc = bank.config if bank is not None else replace(pc, bank_size=0)
        super().__init__(
            replace(
                hashed.config, kind="ensemble", hidden=pc.hidden, sentence_dim=pc.sentence_dim,
                bank_size=bc.bank_size, bank_k=bc.bank_k, bank_tau=bc.bank_tau,
            )
        )  # fmt: skip
        self.hashed = hashed
        self.pretrained = pretrained
        self.bank = bank

    @property  # type: ignore[override]
    def vocabulary(self) -> frozenset[str]:
        """The hashed member's vocabulary (what its coverage counts)."""
        hashed = self._modules.get("hashed")
        return hashed.vocabulary if hashed is not None else frozenset()  # type: ignore[return-value]

    @vocabulary.setter
    def vocabulary(self, words: frozenset[str]) -> None:
        hashed = self._modules.get("hashed")
        if isinstance(hashed, TextEncoder):
            hashed.vocabulary = frozenset(words)

    @property
    def sentence(self) -> Any:
        """The sentence encoder the pretrained member (and the bank) use."""
        return self.pretrained.sentence

    @classmethod
    def from_config(cls, config: TextConfig, sentence: Any = None) -> EnsembleTextEncoder:
        """Untrained members built from one config (``kind="ensemble"``).

        With ``bank_size`` > 0, a zero caption bank of that size (to load saved weights into).
        """
        pretrained = PretrainedTextEncoder(replace(config, kind="pretrained"), sentence)
        bank = None
        if config.bank_size:
            bank = CaptionBankTextEncoder(replace(config, kind="bank"), sentence)
        return cls(TextEncoder(replace(config, kind="hashed")), pretrained, bank)

    def coverage(self, text: str) -> float:
        """Always 1.0 (the hashed member's coverage weights that member only)."""
        return 1.0

    def forward(self, texts: list[str], heard: bool = False) -> torch.Tensor:
        """``c unit(hashed) + unit(pretrained) [+ unit(bank)]`` per sentence, ``(B, embed_dim)``.

        Args:
            texts: Sentences.
            heard: Transcripts of spoken queries: the caption bank is left out (see
                :meth:`encode`).

        Returns:
            float32 ``(B, embed_dim)`` (not unit length).
        """
        texts = list(texts)
        c = torch.tensor([self.hashed.coverage(t) for t in texts], dtype=torch.float32)
        h = nn.functional.normalize(self.hashed(texts), dim=-1)
        if self.bank is None or heard:
            p = nn.functional.normalize(self.pretrained(texts), dim=-1)
            out: torch.Tensor = c.to(h.device)[:, None] * h + p
            return out
        # one sentence-encoder pass: the texts as typed (the head's inputs) and normalised
        # (the bank's keys are normalised captions)
        n = len(texts)
        vectors = self.sentence.embed(texts + [_bank_text(t) for t in texts])
        vectors = vectors.to(h.device)
        p = nn.functional.normalize(self.pretrained.head(vectors[:n]), dim=-1)
        b = nn.functional.normalize(self.bank.lookup(vectors[n:]), dim=-1)
        out = c.to(h.device)[:, None] * h + p + b
        return out

    def _raw(self, texts: list[str], heard: bool) -> torch.Tensor:
        return self(texts, heard)

    def members(self, *, heard: bool = False) -> tuple[str, ...]:
        """``("hashed", "pretrained")``, plus ``"bank"`` for typed text when it has one."""
        return ("hashed", "pretrained") + (("bank",) if self.bank is not None and not heard else ())


def fused_scores(
    cos_audio: np.ndarray, ia: np.ndarray, cos_text: np.ndarray, weight: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """The two stages' scores of a spoken query heard by both routes.

    Stage 1 (candidates) ranks by ``cos(audio, v) + w cos(text, v)``; stage 2 (the candidates'
    order) by ``IA(audio, v) + w cos(text, v)``. ``w`` is :meth:`TextEncoder.weight_for` (the
    route weight, times the share of known words for the hashed kind). For one query, stage 1
    is the cosine of ``unit(audio) + w unit(text)`` with the unit image vectors, up to a
    constant factor: the index searches that single vector.

    Args:
        cos_audio: Cosine scores of the audio route (any shape, e.g. ``(N, Q)``).
        ia: IA scores, same shape.
        cos_text: Cosine scores of the text route, same shape.
        weight: ``w``, a scalar or broadcastable to the scores (e.g. ``(1, Q)`` per query).

    Returns:
        ``(stage 1 scores, stage 2 scores)``.
    """
    w = np.asarray(weight, dtype=np.float64)
    text = w * np.asarray(cos_text, dtype=np.float64)
    return np.asarray(cos_audio, np.float64) + text, np.asarray(ia, np.float64) + text


def encode_heard(encoder: _TextRoute, heard: Sequence[Sequence[tuple[str, float]]]) -> torch.Tensor:
    """Unit text-route vectors of what the recogniser heard, hedged over its alternatives.

    Each query is a list of ``(transcript, confidence)``: one pair for a query heard surely,
    the distinct transcripts of an unsure one otherwise
    (:attr:`rsia_geo.models.whisper.Heard.alternatives`). A query's vector is the normalised
    mean of its transcripts' unit vectors weighted by their confidences, so a misheard word the
    recogniser itself doubted pulls the query only part of the way. Measured on val and not
    served by search (docs/benchmarks.md, "Hedging an unsure transcript");
    ``benchmarks/eval_text_route.py --hedge`` measures it.

    Args:
        encoder: The text route.
        heard: Per query, its transcripts and their confidences (at least one each).

    Returns:
        float32 ``(len(heard), embed_dim)`` unit vectors.

    Raises:
        InvalidArgumentError: A query without a transcript, or a negative confidence.
    """
    texts, weights, owner = [], [], []
    for q, alternatives in enumerate(heard):
        if not alternatives or any(c < 0 for _, c in alternatives):
            raise InvalidArgumentError(
                f"query {q} was heard as {list(alternatives)!r}: give each query at least one "
                "(transcript, confidence) pair with a confidence >= 0"
            )
        total = sum(c for _, c in alternatives)
        for text, c in alternatives:
            texts.append(text)
            weights.append(c / total if total > 0 else 1.0 / len(alternatives))
            owner.append(q)
    units = encoder.encode(texts, heard=True)
    out = torch.zeros(len(heard), units.shape[1], dtype=units.dtype)
    out.index_add_(
        0, torch.tensor(owner), units * torch.tensor(weights, dtype=units.dtype)[:, None]
    )
    return nn.functional.normalize(out, dim=-1)


def _sentence_sha(encoder: _TextRoute) -> str | None:
    if isinstance(encoder, (_SentenceRoute, EnsembleTextEncoder)):
        sha: str = encoder.sentence.sha256
        return sha
    return None


def save_text_encoder(
    encoder: _TextRoute,
    folder: str | Path,
    *,
    image_sha256: str,
    summary: dict[str, Any],
    default_weight: float = DEFAULT_WEIGHT,
    half: bool = False,
) -> Path:
    """Write ``text.safetensors`` and ``text.json`` into a checkpoint's folder.

    Args:
        encoder: The trained encoder.
        folder: The checkpoint folder it was trained for.
        image_sha256: ``weights_sha256`` of that checkpoint (checked when loading).
        summary: Training summary (data, command, measured numbers).
        default_weight: The route weight searches use unless told otherwise.
        half: Store float16 tensors (half the size; loaded back as float32).

    Returns:
        The weights file.
    """
    from safetensors.torch import save_file

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in encoder.state_dict().items()
    }
    save_file(tensors, str(d / TEXT_WEIGHTS_NAME))
    meta = {
        "format": "rsia-text",
        "format_version": 1,
        "config": asdict(encoder.config),
        "image_weights_sha256": image_sha256,
        "default_weight": float(default_weight),
        "sentence_weights_sha256": _sentence_sha(encoder),
        "vocabulary": sorted(encoder.vocabulary),
        "recogniser_prompt": encoder.recogniser_prompt,
        "summary": summary,
    }
    (d / TEXT_CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return d / TEXT_WEIGHTS_NAME


def recogniser_prompt(folder: str | Path) -> str:
    """The recogniser prompt a checkpoint's text route ships (``text.json``), without its weights.

    Args:
        folder: A checkpoint folder (or a folder written by ``rsia-geo train-text``).

    Returns:
        The prompt; "" when the route has none.

    Raises:
        CheckpointError: The folder has no readable ``text.json``.
    """
    path = Path(folder) / TEXT_CONFIG_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable text route description ({exc}); give a checkpoint "
            "folder with a text route (text.json), e.g. the starter's"
        ) from exc
    return str(meta.get("recogniser_prompt") or "")


def load_text_encoder(
    folder: str | Path, *, image_sha256: str | None = None, sentence: Any = None
) -> TextEncoder | PretrainedTextEncoder | CaptionBankTextEncoder | EnsembleTextEncoder | None:
    """The text encoder shipped beside a checkpoint, or None when it has none.

    Args:
        folder: The checkpoint folder.
        image_sha256: The loaded checkpoint's ``weights_sha256``; when given, a text encoder
            trained for other image weights is refused (its embeddings would not match the index).
        sentence: For the kinds that use one, the sentence encoder (None: the packaged
            all-MiniLM-L6-v2, loaded on first use; a route trained on other sentence weights is
            refused then).

    Returns:
        The encoder in eval mode, or None.

    Raises:
        CheckpointError: The files are unreadable or belong to other image or sentence weights.
    """
    from safetensors.torch import load_file

    d = Path(folder)
    meta_path, weights = d / TEXT_CONFIG_NAME, d / TEXT_WEIGHTS_NAME
    if not meta_path.exists() or not weights.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        config = TextConfig(**meta["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{str(meta_path)!r} is not a text encoder description: {exc}"
        ) from exc
    expected = meta.get("image_weights_sha256")
    if image_sha256 is not None and expected != image_sha256:
        raise CheckpointError(
            f"{str(weights)!r} was trained for image weights {str(expected)[:16]}..., not "
            f"{image_sha256[:16]}...; retrain it with `rsia-geo train-text` for this checkpoint "
            "or remove text.safetensors and text.json"
        )
    encoder: TextEncoder | PretrainedTextEncoder | CaptionBankTextEncoder | EnsembleTextEncoder
    if config.kind == "hashed":
        encoder = TextEncoder(config)
    else:
        if config.kind == "pretrained":
            encoder = PretrainedTextEncoder(config, sentence)
        elif config.kind == "bank":
            encoder = CaptionBankTextEncoder(config, sentence)
        else:
            encoder = EnsembleTextEncoder.from_config(config, sentence)
        got = _sentence_sha(encoder)
        wanted = meta.get("sentence_weights_sha256")
        if wanted and got != wanted:
            raise CheckpointError(
                f"{str(weights)!r} was trained on sentence encoder weights {wanted[:16]}..., "
                f"not {str(got)[:16]}... ({str(encoder.sentence.path)!r}); retrain it with "
                "`rsia-geo train-text` or load the sentence encoder it was trained on"
            )
    try:
        encoder.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    except RuntimeError as exc:
        raise CheckpointError(f"cannot load {str(weights)!r}: {exc}") from exc
    encoder.default_weight = float(meta.get("default_weight", DEFAULT_WEIGHT))
    encoder.vocabulary = frozenset(meta.get("vocabulary", ()))
    encoder.recogniser_prompt = str(meta.get("recogniser_prompt") or "")
    return encoder.eval()
