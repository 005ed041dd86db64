"""The models against PAPER.md's equations, written out one sample at a time with the models' own weights.

The other model tests check invariances (masking, permutation, shapes, the memory being a sum of step products);
these recompute every step from the formulas, so a dropped tanh, a memory that stops accumulating or an attention
reading the wrong memory changes the answer.
"""

from __future__ import annotations

import pytest
import torch

from dan.models import MDAN, RDAN

VOCAB, DIM, HIDDEN, ANSWERS, REGIONS = 23, 10, 8, 6, 7


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Regions [B, N, D], tokens [B, T] with zero padding after each length, lengths [B] (all different)."""
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([5, 2, 1, 4])
    tokens = torch.randint(1, VOCAB, (4, 5), generator=g)
    tokens[torch.arange(5)[None, :] >= lengths[:, None]] = 0
    return torch.randn(4, REGIONS, DIM, generator=g), tokens, lengths


def attend(step: torch.nn.Module, items: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """One sample: a_n = softmax_n(w_h . (tanh(W items_n) * tanh(W_m memory))), items [n, d], memory [H]."""
    h = torch.tanh(step.key(items)) * torch.tanh(step.query(memory))  # [n, H]
    return torch.softmax(h @ step.score.weight[0], dim=0)  # [n]


def steps_of(model: torch.nn.Module, regions: torch.Tensor, words: torch.Tensor, shared: bool) -> list[tuple]:
    """(v(k), u(k)) for k = 0..K of one sample (regions [N, D], words [T, H] without padding); ``shared``: r-DAN's
    one memory m = sum v(k) * u(k), else m-DAN's m_v = sum v(k) and m_u = sum u(k)."""
    v = torch.tanh(model.visual.initial(regions.mean(0)))  # v(0) = tanh(P0 mean_n v_n)
    u = words.mean(0)  # u(0) = mean_t u_t
    out = [(v, u)]
    m, m_v, m_u = v * u, v, u
    for k in range(1, model.steps + 1):
        a_v = attend(model.visual.attention[k - 1], regions, m if shared else m_v)
        a_u = attend(model.textual.attention[k - 1], words, m if shared else m_u)
        v = torch.tanh(model.visual.project[k - 1](a_v @ regions))  # v(k) = tanh(P (sum_n a_vn v_n))
        u = a_u @ words  # u(k) = sum_t a_ut u_t, no projection
        m, m_v, m_u = m + v * u, m_v + v, m_u + u
        out.append((v, u))
    return out


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_rdan_logits_follow_the_equations(steps: int) -> None:
    torch.manual_seed(0)
    model = RDAN(VOCAB, ANSWERS, DIM, hidden_dim=HIDDEN, steps=steps, dropout=0.5).eval()
    regions, tokens, lengths = inputs()
    with torch.no_grad():
        words, _ = model.text(tokens, lengths)  # u_t [B, T, H]
        expected = []
        for b in range(len(lengths)):
            pairs = steps_of(model, regions[b], words[b, : lengths[b]], shared=True)
            memory = sum(v * u for v, u in pairs)  # m(K) = v(0) u(0) + sum_k v(k) u(k)
            expected.append(model.classifier(memory))  # W_ans m(K)
        logits = model(regions, tokens, lengths).logits
    torch.testing.assert_close(logits, torch.stack(expected), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_mdan_similarity_follows_the_equations(steps: int) -> None:
    torch.manual_seed(0)
    model = MDAN(VOCAB, DIM, hidden_dim=HIDDEN, steps=steps, dropout=0.5).eval()
    regions, tokens, lengths = inputs()
    with torch.no_grad():
        words, _ = model.text(tokens, lengths)
        z_v, z_u = [], []
        for b in range(len(lengths)):  # each sample with its own image and sentence: both branches per sample
            pairs = steps_of(model, regions[b], words[b, : lengths[b]], shared=False)
            z_v.append(torch.cat([v for v, _ in pairs]))  # z_v = [v(0); ...; v(K)]
            z_u.append(torch.cat([u for _, u in pairs]))
        similarity = model(regions, tokens, lengths).similarity  # S[i, j] = z_v(i) . z_u(j)
    torch.testing.assert_close(similarity, torch.stack(z_v) @ torch.stack(z_u).T, atol=1e-5, rtol=1e-5)
