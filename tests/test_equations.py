"""The models against PAPER.md's equations, written out one sample at a time with the models' own weights.

The other model tests check invariances (masking, permutation, shapes, the memory being a sum of step products);
these recompute every step from the formulas, so a dropped tanh, a memory that stops accumulating or an attention
reading the wrong memory changes the answer. The ablation types (a side that does not attend pools uniformly) and
the text encoder (u_t = forward h_t + backward h_t, from an LSTM cell written out here) are recomputed the same way.
"""

from __future__ import annotations

import pytest
import torch

from dan.models import MDAN, RDAN

VOCAB, DIM, HIDDEN, ANSWERS, REGIONS = 23, 10, 8, 6, 7
# which sides attend for each attention type (visual, textual), written out from the models' docstring
ATTENDS = {"dual": (True, True), "visual": (True, False), "textual": (False, True), "none": (False, False)}


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


def steps_of(model: torch.nn.Module, regions: torch.Tensor, words: torch.Tensor, shared: bool,
             attention: str = "dual") -> list[tuple]:
    """(v(k), u(k)) for k = 0..K of one sample (regions [N, D], words [T, H] without padding); ``shared``: r-DAN's
    one memory m = sum v(k) * u(k), else m-DAN's m_v = sum v(k) and m_u = sum u(k). A side that does not attend
    (``attention`` other than "dual") pools uniformly: v(k) = tanh(P^(k) mean_n v_n), u(k) = u(0) = mean_t u_t."""
    attend_v, attend_u = ATTENDS[attention]
    v = torch.tanh(model.visual.initial(regions.mean(0)))  # v(0) = tanh(P0 mean_n v_n)
    u = words.mean(0)  # u(0) = mean_t u_t
    out = [(v, u)]
    m, m_v, m_u = v * u, v, u
    for k in range(1, model.steps + 1):
        if attend_v:
            a_v = attend(model.visual.attention[k - 1], regions, m if shared else m_v)
            v = torch.tanh(model.visual.project[k - 1](a_v @ regions))  # v(k) = tanh(P (sum_n a_vn v_n))
        else:
            v = torch.tanh(model.visual.project[k - 1](regions.mean(0)))  # a_vn = 1/N, still P^(k)
        if attend_u:
            a_u = attend(model.textual.attention[k - 1], words, m if shared else m_u)
            u = a_u @ words  # u(k) = sum_t a_ut u_t, no projection
        else:
            u = words.mean(0)  # a_ut = 1/length on the valid words
        m, m_v, m_u = m + v * u, m_v + v, m_u + u
        out.append((v, u))
    return out


@pytest.mark.parametrize("attention", list(ATTENDS))
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_rdan_logits_follow_the_equations(steps: int, attention: str) -> None:
    torch.manual_seed(0)
    model = RDAN(VOCAB, ANSWERS, DIM, hidden_dim=HIDDEN, steps=steps, attention=attention, dropout=0.5).eval()
    regions, tokens, lengths = inputs()
    with torch.no_grad():
        words, _ = model.text(tokens, lengths)  # u_t [B, T, H]
        expected = []
        for b in range(len(lengths)):
            pairs = steps_of(model, regions[b], words[b, : lengths[b]], shared=True, attention=attention)
            memory = sum(v * u for v, u in pairs)  # m(K) = v(0) u(0) + sum_k v(k) u(k)
            expected.append(model.classifier(memory))  # W_ans m(K)
        logits = model(regions, tokens, lengths).logits
    torch.testing.assert_close(logits, torch.stack(expected), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", list(ATTENDS))
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_mdan_similarity_follows_the_equations(steps: int, attention: str) -> None:
    torch.manual_seed(0)
    model = MDAN(VOCAB, DIM, hidden_dim=HIDDEN, steps=steps, attention=attention, dropout=0.5).eval()
    regions, tokens, lengths = inputs()
    with torch.no_grad():
        words, _ = model.text(tokens, lengths)
        z_v, z_u = [], []
        for b in range(len(lengths)):  # each sample with its own image and sentence: both branches per sample
            pairs = steps_of(model, regions[b], words[b, : lengths[b]], shared=False, attention=attention)
            z_v.append(torch.cat([v for v, _ in pairs]))  # z_v = [v(0); ...; v(K)]
            z_u.append(torch.cat([u for _, u in pairs]))
        similarity = model(regions, tokens, lengths).similarity  # S[i, j] = z_v(i) . z_u(j)
    torch.testing.assert_close(similarity, torch.stack(z_v) @ torch.stack(z_u).T, atol=1e-5, rtol=1e-5)


def lstm_direction(x: torch.Tensor, lstm: torch.nn.LSTM, suffix: str) -> torch.Tensor:
    """Hidden states [L, H] of one LSTM direction over x [L, E], from h = c = 0, the cell written out:
    i, f, g, o = split(W_ih x_t + b_ih + W_hh h + b_hh); c = sigma(f) c + sigma(i) tanh(g); h = sigma(o) tanh(c)."""
    w_ih, w_hh = getattr(lstm, f"weight_ih_l0{suffix}"), getattr(lstm, f"weight_hh_l0{suffix}")
    b = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")
    h = c = torch.zeros(lstm.hidden_size)
    out = []
    for x_t in x:
        i, f, g, o = (w_ih @ x_t + w_hh @ h + b).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("aligned", [False, True])  # the CPU's packed path and the GPU's aligned one
def test_text_encoder_sums_the_two_directions_over_the_valid_words(aligned: bool) -> None:
    """u_t = forward h_t + backward h_t (summed, not concatenated): the forward direction reads words 1..L, the
    backward one words L..1 starting from the last valid word (never from padding); u_t = 0 on padding."""
    torch.manual_seed(0)
    model = RDAN(VOCAB, ANSWERS, DIM, hidden_dim=HIDDEN, steps=1, embed_dim=5, dropout=0.5).eval()
    model.text.aligned = aligned
    _, tokens, lengths = inputs()
    with torch.no_grad():
        words, mask = model.text(tokens, lengths)
        assert words.shape == (len(lengths), tokens.shape[1], HIDDEN)
        for b, n in enumerate(lengths.tolist()):
            x = model.text.embedding.weight[tokens[b, :n]]  # [L, E]
            forward = lstm_direction(x, model.text.lstm, "")
            backward = lstm_direction(x.flip(0), model.text.lstm, "_reverse").flip(0)
            torch.testing.assert_close(words[b, :n], forward + backward, atol=1e-5, rtol=1e-5)
            assert torch.all(words[b, n:] == 0) and mask[b].tolist() == [t < n for t in range(tokens.shape[1])]
