"""The ALAC training objective.

``L = L_triplet + w_nce * L_nce + w_akt * L_akt`` (ALAC: w_nce = w_akt = 0.1) over a batch of B
(image, clip) pairs, where pair i's image and clip match:

* **Triplet** on the IA score matrix ``S`` (B x B), margin 0.2, **summed over all negatives in
  both directions** (no hardest-negative mining, no averaging), as the reference code does.
* **NT-Xent** on the L2-normalised raw embeddings, temperature 0.1,
  ``0.75 * CE(image -> audio) + 0.25 * CE(audio -> image)``, each averaged over the batch.
* **AKT** (adaptive knowledge transfer): the detached IA score ``s1 = S`` teaches the plain
  dual-encoder cosine ``s2 = cos(f_v, f_a)``:
  ``L_akt = B * sum_ij W_ij * SmoothL1(s1_ij - s2_ij)`` with
  ``W = softmax_dim0(p1 * I + p2 * (1 - I))``.

Fixes relative to the reference code:

* **False negatives are masked.** Several clips of one image can share a batch; pairs whose
  image ids match are neither negatives in the triplet nor in the NT-Xent denominators. An
  ``exclude`` mask leaves out more pairs the same way: ``rsia-geo train --mask-same-caption``
  passes the pairs whose clip says, word for word, one of the other image's own captions
  (UCM-Captions repeats a sentence over many images of a class: about 49 of a 60-pair
  batch's 3,540 off-diagonal pairs, 29 % of its pairs of one class).
* **AKT weights adapt.** The reference builds ``M`` once from the initial ``p1 = p2 = 1``, so
  ``W`` is uniform (1/B) forever. Here ``W`` is rebuilt from ``p1, p2`` at every step, and
  ``p1, p2`` are trained on the reference's auxiliary objective
  ``B * sum W * SmoothL1(s1 - s2) / |s1|`` (see :meth:`ALACLoss.akt_weight_loss`) by their own
  optimiser. ``akt_adaptive=False`` reproduces the uniform weighting for comparison.
* No batch size is hard-coded: any B works, including a last partial batch.

An addition of ours, off unless a run asks for it (``rsia-geo train --voice-pairs W``):
:meth:`ALACLoss.voice_pair_loss`, an audio-to-audio NT-Xent between two voicings of the same
caption, which asks the audio embedding to forget who speaks (held-out voices otherwise land
where every image scores them a little higher or lower than other voices). And
:meth:`ALACLoss.caption_loss` (``rsia-geo train --caption-weight W``): an image-to-caption
NT-Xent through a trained head over frozen sentence vectors, which shapes the image side with
the captions' own words as well as with voices saying them.
"""

from __future__ import annotations

import torch
from torch import nn

from rsia_geo.errors import InvalidArgumentError
from rsia_geo.models.alac import cosine_scores, ia_scores

__all__ = ["ALACLoss"]


class ALACLoss(nn.Module):
    """ALAC loss with false-negative masking and truly adaptive AKT weights.

    Args:
        margin: Triplet margin.
        temperature: NT-Xent temperature.
        nce_directions: Weights of image->audio and audio->image cross-entropies.
        w_nce: Weight of the NT-Xent term.
        w_akt: Weight of the AKT term.
        akt_adaptive: Rebuild the AKT weights from ``p1, p2`` every step (False: uniform, as
            the reference code effectively runs).
    """

    def __init__(
        self,
        *,
        margin: float = 0.2,
        temperature: float = 0.1,
        nce_directions: tuple[float, float] = (0.75, 0.25),
        w_triplet: float = 1.0,
        w_nce: float = 0.1,
        w_akt: float = 0.1,
        akt_adaptive: bool = True,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.temperature = temperature
        self.nce_directions = nce_directions
        self.w_triplet = w_triplet
        self.w_nce = w_nce
        self.w_akt = w_akt
        self.akt_adaptive = akt_adaptive
        self.p1 = nn.Parameter(torch.ones(()))
        self.p2 = nn.Parameter(torch.ones(()))

    def akt_weights(self, b: int) -> torch.Tensor:
        """``W = softmax_dim0(p1 * I + p2 * (1 - I))`` for a batch of ``b`` pairs.

        Args:
            b: Batch size.

        Returns:
            ``(b, b)`` weights whose columns sum to 1 (uniform 1/b when not adaptive).
        """
        eye = torch.eye(b, device=self.p1.device)
        if not self.akt_adaptive:
            return torch.full((b, b), 1.0 / b, device=self.p1.device)
        m = self.p1 * eye + self.p2 * (1.0 - eye)
        return m.softmax(dim=0)

    def caption_loss(
        self,
        v: torch.Tensor,
        captions: torch.Tensor,
        image_ids: torch.Tensor | None = None,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """NT-Xent between images and their captions: ``captions[i]`` describes ``v[i]``.

        Symmetric cross-entropy over the cosine matrix at the loss's temperature, with the
        batch's other images as negatives (pairs of the same image are left out).

        Args:
            v: Raw image embeddings ``(B, D)``.
            captions: Raw caption embeddings ``(B, D)`` (a caption head's output).
            image_ids: ``(B,)`` image identity per pair, to mask false negatives.
            exclude: ``(B, B)`` bool, more pairs that are neither positives nor negatives
                (row: image, column: caption).

        Returns:
            Scalar loss.
        """
        pos, neg = self._masks(image_ids, v.shape[0], v.device, exclude)
        return self._nt_xent(v, captions, pos | neg, (0.5, 0.5))

    @staticmethod
    def _masks(
        image_ids: torch.Tensor | None,
        b: int,
        device: torch.device,
        exclude: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(b, dtype=torch.bool, device=device)
        same = eye if image_ids is None else image_ids[:, None] == image_ids[None, :]
        if exclude is not None:
            if tuple(exclude.shape) != (b, b):
                raise InvalidArgumentError(
                    f"exclude must be ({b}, {b}) for a batch of {b} pairs; got "
                    f"{tuple(exclude.shape)}: give one row per image and one column per clip"
                )
            same = same | exclude.to(device=device, dtype=torch.bool)
        return eye, ~same  # positives, true negatives (``same`` holds the diagonal)

    def forward(
        self,
        v: torch.Tensor,
        a: torch.Tensor,
        image_ids: torch.Tensor | None = None,
        exclude: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss of a batch of matched pairs.

        Args:
            v: Raw image embeddings ``(B, D)``.
            a: Raw audio embeddings ``(B, D)``; ``a[i]`` describes ``v[i]``'s image.
            image_ids: ``(B,)`` image identity per pair, to mask false negatives.
            exclude: ``(B, B)`` bool, more pairs that are neither positives nor negatives
                (row: image, column: clip), e.g. a clip saying one of the image's captions.

        Returns:
            ``loss`` (total) and its parts ``triplet``, ``nce``, ``akt`` and ``scores`` (S).
        """
        b = v.shape[0]
        pos, neg = self._masks(image_ids, b, v.device, exclude)
        s = ia_scores(v, a, chunk=max(b, 1))
        diag = s.diagonal()
        # image anchor (row i): negatives are other clips; audio anchor (column j): other images
        cost_i2a = (self.margin + s - diag[:, None]).clamp(min=0) * neg
        cost_a2i = (self.margin + s - diag[None, :]).clamp(min=0) * neg
        triplet = cost_i2a.sum() + cost_a2i.sum()

        nce = self._nt_xent(v, a, pos | neg, self.nce_directions)

        s1 = s.detach()
        s2 = cosine_scores(v, a)
        w = self.akt_weights(b).detach()
        akt = b * (w * nn.functional.smooth_l1_loss(s2, s1, reduction="none")).sum()

        total = self.w_triplet * triplet + self.w_nce * nce + self.w_akt * akt
        return {
            "loss": total,
            "triplet": triplet.detach(),
            "nce": nce.detach(),
            "akt": akt.detach(),
            "scores": s1,
        }

    def voice_pair_loss(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        image_ids: torch.Tensor | None = None,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """NT-Xent between two voicings of each caption: ``b[i]`` says ``a[i]``'s words.

        Symmetric cross-entropy over the cosine matrix of the two sets of raw audio embeddings
        at the loss's temperature; other clips of the same image are neither positives nor
        negatives (they may say the same thing in other words).

        Args:
            a: Raw audio embeddings ``(B, D)``.
            b: Raw audio embeddings ``(B, D)`` of the same captions in other voices.
            image_ids: ``(B,)`` image identity per pair, to mask false negatives.
            exclude: ``(B, B)`` bool, more pairs that are neither positives nor negatives
                (e.g. two clips saying the same words for different images).

        Returns:
            Scalar loss.
        """
        pos, neg = self._masks(image_ids, a.shape[0], a.device, exclude)
        return self._nt_xent(a, b, pos | neg, (0.5, 0.5))

    def _nt_xent(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        scored: torch.Tensor,
        directions: tuple[float, float],
    ) -> torch.Tensor:
        """Cross-entropy of matched rows ``x[i], y[i]`` over their cosines at the temperature.

        Pairs outside ``scored`` (the positives and true negatives) are left out of the
        denominators; ``directions`` weighs the ``x -> y`` and ``y -> x`` terms.
        """
        logits = cosine_scores(x, y) / self.temperature
        logits = logits.masked_fill(~scored, float("-inf"))
        target = torch.arange(x.shape[0], device=x.device)
        forward = nn.functional.cross_entropy(logits, target)
        backward = nn.functional.cross_entropy(logits.T, target)
        return directions[0] * forward + directions[1] * backward

    def akt_weight_loss(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Objective for ``p1, p2`` (the reference code's, on detached scores).

        ``B * sum_ij W_ij * SmoothL1(s1_ij - s2_ij) / |s1_ij|``; gradients reach only ``p1, p2``.

        Args:
            v: Raw image embeddings ``(B, D)``.
            a: Raw audio embeddings ``(B, D)``.

        Returns:
            Scalar loss.
        """
        b = v.shape[0]
        with torch.no_grad():
            s1 = ia_scores(v, a, chunk=max(b, 1))
            s2 = cosine_scores(v, a)
            err = nn.functional.smooth_l1_loss(s2, s1, reduction="none") / s1.abs().clamp(1e-3)
        return b * (self.akt_weights(b) * err).sum()
