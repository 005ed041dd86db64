"""The two attention mechanisms of Dual Attention Networks (Nam, Ha & Kim, CVPR 2017), all K steps of each.

Notation (shapes in brackets): B batch, N image regions, D region dimension, T words, H hidden size, K steps.

Visual attention, step k = 1..K (weights W_v^(k), W_vm^(k), w_vh^(k), P^(k) are separate for every k)::

    h_vn  = tanh(W_v v_n) * tanh(W_vm m_v)          # * is elementwise; m_v is the memory the step reads
    a_vn  = softmax_n(w_vh . h_vn)
    v(k)  = tanh(P (sum_n a_vn v_n))
    v(0)  = tanh(P^(0) mean_n v_n)

Textual attention, step k = 1..K (weights W_u^(k), W_um^(k), w_uh^(k))::

    h_ut  = tanh(W_u u_t) * tanh(W_um m_u)
    a_ut  = softmax_t(w_uh . h_ut)                  # padding gets -inf before the softmax -> exactly 0
    u(k)  = sum_t a_ut u_t                          # no projection on the text side
    u(0)  = mean_t u_t                              # mean over the valid (non-padding) words only

With ``attend=False`` a side keeps only its uniform pooling (the ablation baselines):
visual ``a_vn = 1/N`` and ``v(k) = tanh(P^(k) mean_n v_n)``; textual ``a_ut = 1/length`` on valid words
(0 on padding) and ``u(k) = u(0)``. No attention weights (W_v, W_vm, w_vh / W_u, W_um, w_uh) are created then.

Linear layers have biases except the scoring vectors w_vh, w_uh: a bias there would shift every score equally
and cancel in the softmax, so it could never receive a gradient.

Efficiency: the key projections tanh(W_v^(k) v_n) of all K steps depend only on the regions, so they are
computed once, before the first step, as ONE matmul [B*N, D] x [D, K*H] (the per-step weights are concatenated
on the fly); the scores w . (tanh(W v) * g) are evaluated as a batched matrix-vector product without
materialising h [B, N, H].
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def host_to_device(t: Tensor, device: torch.device | str | None) -> Tensor:
    """``t`` on ``device`` without making the host wait for the GPU.

    A host tensor goes to a CUDA device through pinned memory with a non-blocking copy: from pageable memory
    the driver may first wait for the stream, and one such wait per training step stops the host from running
    ahead of the GPU. Other moves are plain ``.to``.
    """
    device = torch.device(device) if device is not None else t.device
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def length_mask(lengths: Tensor, max_len: int, device: torch.device | None = None) -> Tensor:
    """Boolean mask [B, max_len], True on the first ``lengths[b]`` positions (valid words)."""
    lengths = host_to_device(lengths, device)
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last axis; where ``mask`` is False the score becomes -inf, hence weight exactly 0."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def uniform_weights(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Uniform weights [B, T]: 1/length on valid positions, exactly 0 on padding."""
    weights = mask.to(dtype)
    return weights / weights.sum(dim=-1, keepdim=True)


def weighted_sum(weights: Tensor, values: Tensor) -> Tensor:
    """sum_n weights[b, n] values[b, n, :]  ->  [B, F] (one batched matmul)."""
    return torch.bmm(weights.unsqueeze(1).to(values.dtype), values).squeeze(1)


def attention_scores(keys: Tensor, query: Tensor, score: nn.Linear) -> Tensor:
    """Scores [B, N] = w . (keys_n * query) for keys [B, N, H], query [B, H]; h is never materialised."""
    vec = query * score.weight.squeeze(0)  # [B, H]
    return torch.bmm(keys, vec.unsqueeze(-1)).squeeze(-1)


def fused_keys(layers: list[nn.Linear], inputs: Tensor) -> list[Tensor]:
    """[tanh(L_k inputs) for each layer] computed as one matmul over all steps; each item [B, N, H]."""
    if not layers:
        return []
    weight = torch.cat([layer.weight for layer in layers], dim=0)  # [K*H, in]
    bias = torch.cat([layer.bias for layer in layers], dim=0)  # [K*H]
    keys = torch.tanh(F.linear(inputs, weight, bias))  # [B, N, K*H]
    return list(keys.split(layers[0].out_features, dim=-1))


class AttentionStep(nn.Module):
    """Weights of one step k >= 1: key W (in -> H), query W_m (H -> H), score w (H -> 1, no bias)."""

    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.key = nn.Linear(in_dim, hidden_dim)  # W_v / W_u
        self.query = nn.Linear(hidden_dim, hidden_dim)  # W_vm / W_um
        self.score = nn.Linear(hidden_dim, 1, bias=False)  # w_vh / w_uh

    def weights(self, keys: Tensor, memory: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention weights [B, N] from precomputed keys tanh(W x_n) [B, N, H] and the memory [B, H]."""
        query = torch.tanh(self.query(memory))  # [B, H]
        return masked_softmax(attention_scores(keys, query, self.score), mask)


class VisualState(NamedTuple):
    """Per-batch quantities the visual steps share: regions, their mean and the fused keys of every step."""

    regions: Tensor  # [B, N, D]
    mean: Tensor  # [B, D]
    keys: list[Tensor]  # K x [B, N, H]


class TextState(NamedTuple):
    """Per-batch quantities the textual steps share."""

    words: Tensor  # [B, T, H]  u_t (0 on padding)
    mask: Tensor  # [B, T] bool, True on valid words
    uniform: Tensor  # [B, T]  1/length on valid words
    mean: Tensor  # [B, H]  u(0)
    keys: list[Tensor]  # K x [B, T, H]


class VisualAttention(nn.Module):
    """All K steps of visual attention (``attend=True``) or of uniform region pooling (``attend=False``).

    Parameters: P^(0) and P^(k) (D -> H, with bias) always; W_v^(k) (D -> H), W_vm^(k) (H -> H) and w_vh^(k)
    (H, no bias) only when ``attend``.
    """

    def __init__(self, visual_dim: int, hidden_dim: int, steps: int, attend: bool) -> None:
        super().__init__()
        self.attend = attend
        self.initial = nn.Linear(visual_dim, hidden_dim)  # P^(0)
        self.project = nn.ModuleList(nn.Linear(visual_dim, hidden_dim) for _ in range(steps))  # P^(k)
        self.attention = nn.ModuleList(
            AttentionStep(visual_dim, hidden_dim) for _ in range(steps if attend else 0)
        )

    def begin(self, regions: Tensor) -> tuple[VisualState, Tensor]:
        """Shared state and v(0) = tanh(P^(0) mean_n v_n) [B, H] for regions [B, N, D]."""
        mean = regions.mean(dim=1)  # [B, D]
        keys = fused_keys([step.key for step in self.attention], regions)
        return VisualState(regions, mean, keys), torch.tanh(self.initial(mean))

    def step(self, k: int, state: VisualState, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Step k (1-based) reading ``memory`` [B, H]: returns v(k) [B, H] and the weights a_v [B, N]."""
        regions = state.regions
        if self.attend:
            weights = self.attention[k - 1].weights(state.keys[k - 1], memory)  # [B, N]
            pooled = weighted_sum(weights, regions)  # [B, D]
        else:
            batch, num_regions = regions.shape[0], regions.shape[1]
            weights = regions.new_full((batch, num_regions), 1.0 / num_regions)
            pooled = state.mean
        return torch.tanh(self.project[k - 1](pooled)), weights


class TextAttention(nn.Module):
    """All K steps of textual attention (``attend=True``) or of uniform word pooling (``attend=False``).

    Parameters: W_u^(k) (H -> H), W_um^(k) (H -> H), w_uh^(k) (H, no bias) only when ``attend``; else none.
    """

    def __init__(self, hidden_dim: int, steps: int, attend: bool) -> None:
        super().__init__()
        self.attend = attend
        self.attention = nn.ModuleList(
            AttentionStep(hidden_dim, hidden_dim) for _ in range(steps if attend else 0)
        )

    def begin(self, words: Tensor, mask: Tensor) -> tuple[TextState, Tensor]:
        """Shared state and u(0) = masked mean_t u_t [B, H] for words [B, T, H] and mask [B, T]."""
        uniform = uniform_weights(mask, words.dtype)  # [B, T]
        mean = weighted_sum(uniform, words)  # [B, H]
        keys = fused_keys([step.key for step in self.attention], words)
        return TextState(words, mask, uniform, mean, keys), mean

    def step(self, k: int, state: TextState, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Step k (1-based) reading ``memory`` [B, H]: returns u(k) [B, H] and the weights a_u [B, T]."""
        if not self.attend:
            return state.mean, state.uniform
        weights = self.attention[k - 1].weights(state.keys[k - 1], memory, state.mask)  # [B, T]
        return weighted_sum(weights, state.words), weights
