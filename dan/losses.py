"""Training losses: softmax cross-entropy for r-DAN (VQA) and the bidirectional hinge for m-DAN (matching).

Both return a scalar averaged over the batch (the rows that take part; see each function). Neither makes a
host sync, so they are safe inside a compiled training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dan.attention import host_to_device
from dan.io import ConfigError, DataError

__all__ = ["IGNORE_INDEX", "NEGATIVE_MODES", "matching_loss", "sample_negatives", "vqa_loss"]

IGNORE_INDEX = -1
NEGATIVE_MODES = ("sampled", "hardest")


def vqa_loss(logits: Tensor, targets: Tensor, soft_targets: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy over the C candidate answers, averaged over the questions that count.

    logits [B, C] unnormalised; targets [B] long, the answer index or -1 (answer outside the vocabulary:
    the question is ignored). With ``soft_targets`` [B, C] (VQA scores min(1, #annotators / 3), any
    non-negative weights) the loss is the soft cross-entropy ``-sum_c q_c log softmax(logits)_c`` with
    q = soft_targets normalised to sum 1 per row; rows whose scores are all 0 are ignored, and ``targets``
    only has to have the right shape. The mean is over the rows that count; if none counts the loss is 0
    (with a zero gradient), never NaN.
    """
    if logits.dim() != 2:
        raise DataError(f"vqa_loss: logits must be [B, C], got {list(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise DataError(f"vqa_loss: targets must be [{logits.shape[0]}], got {list(targets.shape)}")
    log_probs = F.log_softmax(logits.float(), dim=-1)  # [B, C]
    if soft_targets is None:
        valid = targets != IGNORE_INDEX  # [B]
        total = F.nll_loss(log_probs, targets.long(), ignore_index=IGNORE_INDEX, reduction="sum")
        return total / valid.sum().clamp_min(1)
    if soft_targets.shape != logits.shape:
        raise DataError(f"vqa_loss: soft_targets must be {list(logits.shape)}, "
                        f"got {list(soft_targets.shape)}")
    scores = soft_targets.to(log_probs.dtype)
    mass = scores.sum(dim=-1, keepdim=True)  # [B, 1]
    valid = mass.squeeze(-1) > 0
    q = scores / mass.clamp_min(torch.finfo(scores.dtype).tiny)
    per_row = -(q * log_probs).sum(dim=-1)  # [B]; 0 on rows with no score
    return per_row.sum() / valid.sum().clamp_min(1)


@torch.compiler.disable  # drawn on the host as in eager mode: a compiled step (train --compile) sees the same
# negatives, and tracing would fail on the pinned copy to the GPU (host_to_device: fake tensors cannot be pinned)
def sample_negatives(batch: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Random negative indices for each positive pair i: (caption j_u [B], image j_v [B]), j != i, uniform.

    Drawn as j = (i + r) mod B with r uniform in 1..B-1 (first the caption draws, then the image draws, from
    ``generator``, which lives on the CPU unless given otherwise), so j never equals i.
    """
    if batch < 2:
        raise DataError(f"matching_loss: a batch needs at least 2 pairs to have negatives, got {batch}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    base = torch.arange(batch, device=gen_device)
    shifts = torch.randint(1, batch, (2, batch), generator=generator, device=gen_device)
    picks = (base + shifts) % batch
    return host_to_device(picks[0], device or gen_device), host_to_device(picks[1], device or gen_device)


def matching_loss(S: Tensor, margin: float = 100.0, negatives: str = "sampled",
                  generator: torch.Generator | None = None) -> Tensor:
    """Bidirectional hinge loss on a similarity matrix S [B, B] whose diagonal holds the positive pairs.

    For each positive pair (v_i, u_i)::

        max(0, margin - S(v_i, u_i) + S(v_i, u-)) + max(0, margin - S(v_i, u_i) + S(v-, u_i))

    with S(v_i, u_j) = S[i, j]. ``negatives="sampled"`` (the paper's quadruplets <v+, u+, v-, u->): one
    random negative caption u- = u_j and one random negative image v- = v_j' per pair, j, j' != i, drawn
    independently from ``generator`` (see :func:`sample_negatives`). ``negatives="hardest"`` (VSE++): the
    highest-scoring negative caption in row i and negative image in column i. Reduction: the mean over the
    B positive pairs of the two-term sum.
    """
    if negatives not in NEGATIVE_MODES:
        raise ConfigError(f"negatives must be one of {', '.join(NEGATIVE_MODES)}; got {negatives!r}")
    if S.dim() != 2 or S.shape[0] != S.shape[1]:
        raise DataError(f"matching_loss: S must be a square [B, B] matrix, got {list(S.shape)}")
    S = S.float()  # margins of 100 on sums of hundreds of products need more than bf16/fp16 resolution
    batch = S.shape[0]
    if batch < 2:
        raise DataError(f"matching_loss: a batch needs at least 2 pairs to have negatives, got {batch}")
    positive = S.diagonal()  # [B]
    if negatives == "hardest":
        eye = torch.eye(batch, dtype=torch.bool, device=S.device)
        off = S.masked_fill(eye, float("-inf"))
        neg_caption = off.max(dim=1).values  # S(v_i, u-) [B]
        neg_image = off.max(dim=0).values  # S(v-, u_i) [B]
    else:
        j_caption, j_image = sample_negatives(batch, generator, S.device)
        rows = torch.arange(batch, device=S.device)
        neg_caption = S[rows, j_caption]
        neg_image = S[j_image, rows]
    cost = F.relu(margin - positive + neg_caption) + F.relu(margin - positive + neg_image)
    return cost.mean()
