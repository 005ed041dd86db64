"""Losses: hand-worked hinge values, negative sampling, VQA cross-entropy with ignored and soft targets."""

from __future__ import annotations

import math

import pytest
import torch

import dan.losses
from dan.io import ConfigError, DataError
from dan.losses import matching_loss, sample_negatives, vqa_loss

# rows = images v_i, columns = captions u_j; positives on the diagonal (5, 6, 7); margin 4 below
S3 = torch.tensor([[5.0, 1.0, 3.0],
                   [2.0, 6.0, 0.0],
                   [4.0, 1.0, 7.0]])
# caption-negative cost max(0, 4 - S[i,i] + S[i,j]), worked by hand:
#   i=0: j=1 -> 4-5+1 = 0, j=2 -> 4-5+3 = 2;  i=1: j=0 -> 0, j=2 -> 0;  i=2: j=0 -> 4-7+4 = 1, j=1 -> 0
CAPTION_COST = {0: {1: 0.0, 2: 2.0}, 1: {0: 0.0, 2: 0.0}, 2: {0: 1.0, 1: 0.0}}
# image-negative cost max(0, 4 - S[i,i] + S[j,i]):
#   i=0: j=1 -> 4-5+2 = 1, j=2 -> 4-5+4 = 3;  i=1: j=0 -> 0, j=2 -> 0;  i=2: j=0 -> 4-7+3 = 0, j=1 -> 0
IMAGE_COST = {0: {1: 1.0, 2: 3.0}, 1: {0: 0.0, 2: 0.0}, 2: {0: 0.0, 1: 0.0}}


def test_hardest_negative_hinge_by_hand():
    # hardest caption per row: 3, 2, 4; hardest image per column: 4, 1, 3
    # i=0: (4-5+3) + (4-5+4) = 2 + 3;  i=1: 0 + 0;  i=2: (4-7+4) + 0 = 1  ->  mean 6/3 = 2
    assert matching_loss(S3, margin=4.0, negatives="hardest").item() == pytest.approx(2.0)
    assert matching_loss(S3, margin=1.0, negatives="hardest").item() == pytest.approx(0.0)  # 1-5+4 = 0
    assert matching_loss(S3, margin=10.0, negatives="hardest").item() == pytest.approx(
        ((10 - 5 + 3) + (10 - 5 + 4) + (10 - 6 + 2) + (10 - 6 + 1) + (10 - 7 + 4) + (10 - 7 + 3)) / 3)
    # the default margin is the paper's m = 100
    assert matching_loss(S3, negatives="hardest").item() == pytest.approx(
        ((100 - 5 + 3) + (100 - 5 + 4) + (100 - 6 + 2) + (100 - 6 + 1) + (100 - 7 + 4) + (100 - 7 + 3)) / 3)


def test_sampled_negative_hinge_by_hand():
    # two pairs: the only negative is the other pair; i=0: (4-3+1) + (4-3+2) = 5; i=1: (4-5+2) + (4-5+1) = 1
    S2 = torch.tensor([[3.0, 1.0], [2.0, 5.0]])
    assert matching_loss(S2, margin=4.0, negatives="sampled").item() == pytest.approx(3.0)
    for seed in range(8):  # 3 pairs: the value must be the hand-worked cost of the negatives drawn
        j_cap, j_img = sample_negatives(3, torch.Generator().manual_seed(seed))
        expected = sum(CAPTION_COST[i][int(j_cap[i])] + IMAGE_COST[i][int(j_img[i])] for i in range(3)) / 3
        gen = torch.Generator().manual_seed(seed)
        got = matching_loss(S3, margin=4.0, negatives="sampled", generator=gen)
        assert got.item() == pytest.approx(expected)


def test_sampled_negatives_never_pick_the_positive_and_cover_the_rest():
    gen = torch.Generator().manual_seed(0)
    seen = torch.zeros(5, 5, dtype=torch.bool)
    for _ in range(200):
        j_cap, j_img = sample_negatives(5, gen)
        for j in (j_cap, j_img):
            assert torch.all(j != torch.arange(5))
            seen[torch.arange(5), j] = True
    assert torch.equal(seen, ~torch.eye(5, dtype=torch.bool))
    # behavioural check: positives score 0, negatives -1000, so the loss is 0 unless a positive were drawn
    S = torch.full((6, 6), -1000.0).fill_diagonal_(0.0)
    for seed in range(20):
        assert matching_loss(S, 100.0, "sampled", torch.Generator().manual_seed(seed)).item() == 0.0


def test_sampled_caption_and_image_negatives_are_drawn_independently():
    # the quadruplet's negative caption u- and negative image v- are two draws, not one index used twice: over
    # many batches every pair (j_caption, j_image) with both != i turns up, including the pairs with j_caption !=
    # j_image, and the two agree about as often as chance (1 / (B - 1)) says
    gen = torch.Generator().manual_seed(0)
    seen = torch.zeros(5, 5, 5, dtype=torch.bool)  # [i, j_caption, j_image]
    same = 0
    for _ in range(400):
        j_cap, j_img = sample_negatives(5, gen)
        seen[torch.arange(5), j_cap, j_img] = True
        same += int((j_cap == j_img).sum())
    eye = torch.eye(5, dtype=torch.bool)
    assert torch.equal(seen, ~eye[:, :, None] & ~eye[:, None, :])
    assert 0.15 < same / (400 * 5) < 0.35  # chance: 1/4


def test_sampled_negatives_are_reproducible():
    S = torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    a = matching_loss(S, 1.0, "sampled", torch.Generator().manual_seed(5))
    b = matching_loss(S, 1.0, "sampled", torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_matching_loss_gradient_pushes_positives_up():
    S = S3.clone().requires_grad_(True)
    matching_loss(S, margin=4.0, negatives="hardest").backward()
    assert torch.all(S.grad.diagonal() <= 0) and S.grad.diagonal()[0] < 0  # descent raises active positives
    assert S.grad[0, 2] > 0 and S.grad[2, 0] > 0  # and lowers the hardest negatives


def test_matching_loss_errors():
    with pytest.raises(ConfigError, match="sampled, hardest"):
        matching_loss(S3, negatives="semi-hard")
    with pytest.raises(DataError, match="square"):
        matching_loss(torch.zeros(2, 3))
    with pytest.raises(DataError, match="at least 2"):
        matching_loss(torch.zeros(1, 1), negatives="hardest")


def test_vqa_loss_is_cross_entropy_and_ignores_minus_one():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, -5.0, 9.0]])
    targets = torch.tensor([0, 1, -1])
    lse0, lse1 = math.log(math.exp(2) + 2), math.log(2 + math.e)
    expected = ((lse0 - 2.0) + (lse1 - 1.0)) / 2  # mean over the two counted questions only
    assert vqa_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    changed = logits.clone()
    changed[2] = torch.tensor([-50.0, 50.0, 0.0])  # the ignored row cannot matter
    assert vqa_loss(changed, targets).item() == pytest.approx(expected, rel=1e-6)
    grad_logits = logits.clone().requires_grad_(True)
    vqa_loss(grad_logits, targets).backward()
    assert torch.all(grad_logits.grad[2] == 0)


def test_vqa_loss_all_ignored_is_zero_not_nan():
    logits = torch.randn(2, 4, requires_grad=True)
    loss = vqa_loss(logits, torch.tensor([-1, -1]))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_vqa_soft_targets():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [4.0, 0.0, 1.0]])
    targets = torch.tensor([2, 0, -1])
    # VQA scores: row 0: answer 2 by 3 annotators (1.0), answer 1 by 1 (1/3); row 2: nothing in the vocabulary
    soft = torch.tensor([[0.0, 1 / 3, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    log_p = torch.log_softmax(logits, dim=-1)
    row0 = -(0.25 * log_p[0, 1] + 0.75 * log_p[0, 2])  # scores normalised to sum 1
    row1 = -log_p[1, 0]
    assert vqa_loss(logits, targets, soft).item() == pytest.approx(((row0 + row1) / 2).item(), rel=1e-6)
    one_hot = torch.nn.functional.one_hot(torch.tensor([2, 0, 1]), 3).float()
    assert vqa_loss(logits, torch.tensor([2, 0, 1]), one_hot).item() == pytest.approx(
        vqa_loss(logits, torch.tensor([2, 0, 1])).item(), rel=1e-6)
    with pytest.raises(DataError, match="soft_targets"):
        vqa_loss(logits, targets, soft[:, :2])


def test_the_matching_step_scores_pairs_in_fp32_under_bf16_autocast():
    """Under autocast (GPU training) the encoders run in bf16, but the similarities the hinge compares against the
    margin are computed from fp32 embeddings: in bf16 they would be off by whole units at trained scales."""
    from dan.config import preset
    from dan.losses import matching_loss
    from dan.models import build_model
    from dan.train import StepLoss

    torch.manual_seed(0)
    cfg = preset("smoke", "matching", negatives="hardest", margin=100.0)
    model = build_model("matching", 30, 16, hidden_dim=32, steps=2, dropout=0.0).eval()
    regions = torch.randn(6, 9, 16) * 30  # large activations: large scores, where bf16 rounding shows
    tokens = torch.randint(1, 30, (6, 5))
    lengths = torch.tensor([5, 4, 3, 5, 2, 1])
    loss = StepLoss(model, cfg, amp=True)(regions, tokens, lengths, None, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zi, zt = model.encode_image(regions).embedding, model.encode_text(tokens, lengths).embedding
    want = matching_loss(model.similarity(zi.float(), zt.float()), margin=100.0, negatives="hardest")
    rounded = matching_loss(model.similarity(zi, zt).float(), margin=100.0, negatives="hardest")
    assert torch.equal(loss, want)
    assert not torch.equal(want, rounded)  # the check can tell the two apart


def test_a_compiled_matching_loss_draws_its_negatives_outside_the_graph(monkeypatch):
    """train --compile on a GPU traced sample_negatives and failed: its pinned copy to the device cannot be made of
    fake tensors. Here host_to_device pins while being traced, as it does on CUDA; the compiled loss must run and
    equal the eager one drawn from the same seed (the negatives are drawn on the host, as without compile)."""
    real = dan.losses.host_to_device

    def pins_when_traced(t, device):  # noqa: ANN001, ANN202 - the CUDA branch's call, where tracing sees it
        if torch.compiler.is_compiling():
            t = t.pin_memory()
        return real(t, device)

    monkeypatch.setattr(dan.losses, "host_to_device", pins_when_traced)
    torch._dynamo.reset()
    S = torch.randn(6, 6, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(lambda S, gen: matching_loss(S, 100.0, "sampled", gen), backend="eager")
    got = compiled(S, torch.Generator().manual_seed(3))
    assert got.item() == pytest.approx(matching_loss(S, 100.0, "sampled", torch.Generator().manual_seed(3)).item())
