"""Parameter counts from the equations, gradients reaching every parameter, and overfitting a tiny batch."""

from __future__ import annotations

import pytest
import torch

from dan.losses import matching_loss, vqa_loss
from dan.models import ATTENTION_TYPES, MDAN, RDAN, count_parameters

# the paper's sizes: vocabulary V, embedding E = hidden H = 512, ResNet-152 regions D = 2048, C = 2000 answers
V, E, H, D, C = 10_000, 512, 512, 2048, 2000


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def expected_count(K: int, attend_visual: bool, attend_text: bool, answers: int | None) -> int:
    """Closed-form count written out from the equations (independently of dan.models' docstring formula)."""
    embedding = V * E
    # one direction: input-hidden [4H, E] and hidden-hidden [4H, H] weights, two bias vectors [4H]
    lstm = 2 * (4 * H * E + 4 * H * H + 4 * H + 4 * H)
    projections = (K + 1) * linear(D, H)  # P^(0), P^(1..K)
    score = linear(H, 1, bias=False)  # w_vh / w_uh
    visual = K * (linear(D, H) + linear(H, H) + score) if attend_visual else 0  # W_v, W_vm, w_vh
    text = K * (linear(H, H) + linear(H, H) + score) if attend_text else 0  # W_u, W_um, w_uh
    classifier = linear(H, answers) if answers else 0  # W_ans
    return embedding + lstm + projections + visual + text + classifier


@pytest.mark.parametrize(
    "attention, K, attends",
    [("dual", 2, (True, True)), ("textual", 2, (False, True)), ("visual", 1, (True, False)),
     ("none", 2, (False, False)), ("dual", 0, (False, False))],
)
def test_parameter_count_matches_closed_form(attention, K, attends):
    with torch.device("meta"):  # only counts, allocates nothing
        r = RDAN(V, C, D, hidden_dim=H, steps=K, attention=attention)
        m = MDAN(V, D, hidden_dim=H, steps=K, attention=attention)
    assert count_parameters(r) == expected_count(K, *attends, answers=C)
    assert count_parameters(m) == expected_count(K, *attends, answers=None)


def test_paper_configuration_count_by_hand():
    # r-DAN, K = 2, dual, the numbers spelled out
    n = (10_000 * 512  # embedding
         + 2 * (4 * 512 * 512 + 4 * 512 * 512 + 8 * 512)  # BiLSTM
         + 3 * (2048 * 512 + 512)  # P0, P1, P2
         + 2 * ((2048 * 512 + 512) + (512 * 512 + 512) + 512)  # visual attention, 2 steps
         + 2 * (2 * (512 * 512 + 512) + 512)  # textual attention, 2 steps
         + (512 * 2000 + 2000))  # W_ans
    with torch.device("meta"):
        assert count_parameters(RDAN(V, C, D)) == n == 17_171_920
        assert count_parameters(MDAN(V, D)) == n - (512 * 2000 + 2000)


def test_embed_dim_changes_only_the_embedding_and_lstm_input():
    with torch.device("meta"):
        a = count_parameters(RDAN(V, C, D, embed_dim=300))
        b = count_parameters(RDAN(V, C, D))
    assert b - a == V * (512 - 300) + 2 * 4 * 512 * (512 - 300)


SV, SD, SH, SC, SN = 17, 6, 4, 5, 5  # small sizes for gradient and overfitting checks


def small_batch(seed: int, lengths: list[int]):
    gen = torch.Generator().manual_seed(seed)
    regions = torch.randn(len(lengths), SN, SD, generator=gen)
    tokens = torch.randint(1, SV, (len(lengths), max(lengths)), generator=gen)
    lens = torch.tensor(lengths)
    tokens[torch.arange(max(lengths))[None, :] >= lens[:, None]] = 0
    return regions, tokens, lens


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
@pytest.mark.parametrize("K", [0, 1, 2])
def test_every_parameter_receives_a_gradient(attention, K):
    regions, tokens, lengths = small_batch(K, [4, 2, 3])
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    for model in (RDAN(SV, SC, SD, hidden_dim=SH, steps=K, attention=attention, dropout=0.0),
                  MDAN(SV, SD, hidden_dim=SH, steps=K, attention=attention, dropout=0.0)):
        model.train()
        out = model(regions, tokens, lengths)
        target = out.logits if isinstance(model, RDAN) else out.similarity
        (target * torch.randn(target.shape, generator=gen)).sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{type(model).__name__} {attention} K={K}: {name} unused"
            assert p.grad.abs().sum() > 0, f"{type(model).__name__} {attention} K={K}: {name} zero gradient"


def test_rdan_overfits_a_tiny_batch():
    torch.manual_seed(0)
    regions, tokens, lengths = small_batch(20, [5, 3, 4, 2, 5, 1, 3, 4])
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 2, 1])
    model = RDAN(SV, SC, SD, hidden_dim=16, steps=2, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = vqa_loss(model(regions, tokens, lengths).logits, targets).item()
    for _ in range(120):
        opt.zero_grad()
        loss = vqa_loss(model(regions, tokens, lengths).logits, targets)
        loss.backward()
        opt.step()
    model.eval()
    final = vqa_loss(model(regions, tokens, lengths).logits, targets).item()
    assert first > 1.0 and final < 0.05, (first, final)


@pytest.mark.parametrize("negatives", ["sampled", "hardest"])
def test_mdan_overfits_a_tiny_batch(negatives):
    torch.manual_seed(0)
    regions, tokens, lengths = small_batch(21, [5, 3, 4, 2, 5, 1])
    model = MDAN(SV, SD, hidden_dim=16, steps=2, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(0)
    margin = 1.0  # |S| < 3 steps x 16 dims x |v| <= 1 x |u| < 2: the paper's 100 is unreachable here
    first = matching_loss(model(regions, tokens, lengths).similarity, margin, "hardest").item()
    for _ in range(150):
        opt.zero_grad()
        loss = matching_loss(model(regions, tokens, lengths).similarity, margin, negatives, generator=gen)
        loss.backward()
        opt.step()
    model.eval()
    final = matching_loss(model(regions, tokens, lengths).similarity, margin, "hardest").item()
    assert first > 1.0 and final < 0.05, (first, final)
