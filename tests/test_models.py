"""r-DAN / m-DAN behaviour: invariances, attention weights, similarity, independence, configuration errors."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dan.io import ConfigError, DataError
from dan.models import ATTENTION_TYPES, MDAN, RDAN, build_model

V, D, H, C, N = 23, 10, 8, 6, 7
LENGTHS = [5, 2, 1, 4]


def make_batch(seed: int = 0, lengths: list[int] = LENGTHS, width: int | None = None):
    """Regions [B, N, D], tokens [B, T] (0 after each length), lengths [B] (CPU)."""
    gen = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    regions = torch.randn(len(lengths), N, D, generator=gen)
    tokens = torch.randint(1, V, (len(lengths), width), generator=gen)
    lens = torch.tensor(lengths)
    tokens[torch.arange(width)[None, :] >= lens[:, None]] = 0
    return regions, tokens, lens


def rdan(attention: str = "dual", steps: int = 2, seed: int = 0) -> RDAN:
    torch.manual_seed(seed)
    return RDAN(V, C, D, hidden_dim=H, steps=steps, attention=attention).eval()


def mdan(attention: str = "dual", steps: int = 2, seed: int = 0) -> MDAN:
    torch.manual_seed(seed)
    return MDAN(V, D, hidden_dim=H, steps=steps, attention=attention).eval()


def test_output_shapes_follow_the_contract():
    regions, tokens, lengths = make_batch()
    out = rdan(steps=3)(regions, tokens, lengths)
    B, T = tokens.shape
    assert out.logits.shape == (B, C)
    assert out.visual_attention.shape == (B, 3, N)
    assert out.text_attention.shape == (B, 3, T)
    assert out.memory.shape == (B, H)
    m = mdan(steps=3)
    img, txt = m.encode_image(regions), m.encode_text(tokens, lengths)
    assert img.embedding.shape == (B, 4 * H) and img.steps.shape == (B, 4, H)
    assert txt.embedding.shape == (B, 4 * H) and txt.steps.shape == (B, 4, H)
    assert img.attention.shape == (B, 3, N) and txt.attention.shape == (B, 3, T)


def test_rdan_memory_is_the_sum_of_step_products():
    regions, tokens, lengths = make_batch()
    out = rdan()(regions, tokens, lengths)
    expected = (out.visual_steps * out.text_steps).sum(dim=1)  # m(K) = sum_k v(k) * u(k)
    torch.testing.assert_close(out.memory, expected)


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
def test_rdan_invariant_to_region_permutation(attention):
    regions, tokens, lengths = make_batch(1)
    model = rdan(attention)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    a, b = model(regions, tokens, lengths), model(regions[:, perm], tokens, lengths)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.visual_attention[:, :, perm], b.visual_attention, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(a.logits, model(regions.flip(0), tokens, lengths).logits)  # regions do matter


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
def test_extra_padding_columns_change_nothing(attention):
    regions, tokens, lengths = make_batch(2)
    wide = torch.cat([tokens, torch.zeros(tokens.shape[0], 3, dtype=tokens.dtype)], dim=1)
    model = rdan(attention)
    a, b = model(regions, tokens, lengths), model(regions, wide, lengths)
    T = tokens.shape[1]
    torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.text_attention, b.text_attention[:, :, :T], atol=1e-7, rtol=1e-6)
    assert torch.all(b.text_attention[:, :, T:] == 0)
    m = mdan(attention)
    ta, tb = m.encode_text(tokens, lengths), m.encode_text(wide, lengths)
    torch.testing.assert_close(ta.embedding, tb.embedding, atol=1e-6, rtol=1e-6)


def test_padding_does_not_leak_into_the_backward_lstm():
    # a sentence alone and the same sentence padded with garbage-free zeros inside a batch give the same u
    regions, tokens, lengths = make_batch(4)
    m = mdan()
    batch = m.encode_text(tokens, lengths).embedding
    for i, n in enumerate(lengths.tolist()):
        alone = m.encode_text(tokens[i : i + 1, :n], torch.tensor([n])).embedding
        torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
@pytest.mark.parametrize("steps", [1, 2])
def test_attention_weights_are_distributions(attention, steps):
    regions, tokens, lengths = make_batch(5)
    valid = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]  # [B, T]
    out = rdan(attention, steps)(regions, tokens, lengths)
    m = mdan(attention, steps)
    for a_v, a_u in ((out.visual_attention, out.text_attention),
                     (m.encode_image(regions).attention, m.encode_text(tokens, lengths).attention)):
        assert torch.all(a_v >= 0) and torch.all(a_u >= 0)
        torch.testing.assert_close(a_v.sum(-1), torch.ones(a_v.shape[:2]))
        torch.testing.assert_close(a_u.sum(-1), torch.ones(a_u.shape[:2]))
        assert torch.all(a_u.masked_select(~valid[:, None, :].expand_as(a_u)) == 0)


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
def test_uniform_variants_report_exactly_uniform_weights(attention):
    regions, tokens, lengths = make_batch(6)
    valid = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).float()
    uniform_text = (valid / lengths[:, None].float())[:, None, :].expand(-1, 2, -1)
    uniform_vis = torch.full((len(lengths), 2, N), 1.0 / N)
    out = rdan(attention)(regions, tokens, lengths)
    m = mdan(attention)
    for a_v, a_u in ((out.visual_attention, out.text_attention),
                     (m.encode_image(regions).attention, m.encode_text(tokens, lengths).attention)):
        assert torch.equal(a_v, uniform_vis) == (attention in ("textual", "none"))
        assert torch.equal(a_u, uniform_text) == (attention in ("visual", "none"))


def test_steps_zero_reduces_every_type_to_step_zero():
    regions, tokens, lengths = make_batch(7)
    logits = []
    for attention in ATTENTION_TYPES:
        out = rdan(attention, steps=0)(regions, tokens, lengths)  # same seed -> same P0, LSTM, W_ans
        assert out.visual_attention.shape == (4, 0, N) and out.text_attention.shape == (4, 0, tokens.shape[1])
        logits.append(out.logits)
    for other in logits[1:]:
        torch.testing.assert_close(logits[0], other, atol=0, rtol=0)


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
def test_similarity_matches_pairwise_and_per_step_scores(attention):
    regions, tokens, lengths = make_batch(8)
    m = mdan(attention)
    img, txt = m.encode_image(regions), m.encode_text(tokens, lengths)
    S = m.similarity(img.embedding, txt.embedding)
    per_step = torch.einsum("ikh,jkh->ij", img.steps, txt.steps)  # sum_k v(k) . u(k)
    torch.testing.assert_close(S, per_step, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m(regions, tokens, lengths).similarity, S)
    for i in range(len(lengths)):
        z_v = m.encode_image(regions[i : i + 1]).embedding[0]
        for j, n in enumerate(lengths.tolist()):
            z_u = m.encode_text(tokens[j : j + 1, :n], torch.tensor([n])).embedding[0]
            torch.testing.assert_close(S[i, j], torch.dot(z_v, z_u), atol=1e-5, rtol=1e-5)


def test_mdan_image_and_text_encoders_are_independent():
    regions, tokens, lengths = make_batch(9)
    m = mdan()
    other_regions, other_tokens, other_lengths = make_batch(10, lengths=[3, 3, 2, 1])
    a = m(regions, tokens, lengths)
    b = m(regions, other_tokens, other_lengths)
    c = m(other_regions, tokens, lengths)
    assert torch.equal(a.image.embedding, b.image.embedding)
    assert torch.equal(a.text.embedding, c.text.embedding)
    assert not torch.allclose(a.text.embedding, b.text.embedding)
    text_params = list(m.text.parameters()) + list(m.textual.parameters())
    image_params = list(m.visual.parameters())
    assert text_params and image_params
    grads = torch.autograd.grad(a.image.embedding.sum(), text_params + image_params, allow_unused=True)
    assert all(g is None or torch.all(g == 0) for g in grads[: len(text_params)])
    assert all(g is not None and g.abs().sum() > 0 for g in grads[len(text_params) :])
    grads = torch.autograd.grad(a.text.embedding.sum(), image_params, allow_unused=True)
    assert all(g is None or torch.all(g == 0) for g in grads)


def test_eval_is_deterministic_and_train_uses_dropout():
    regions, tokens, lengths = make_batch(11)
    model = rdan()
    torch.testing.assert_close(model(regions, tokens, lengths).logits, model(regions, tokens, lengths).logits,
                               atol=0, rtol=0)
    model.train()
    assert not torch.equal(model(regions, tokens, lengths).logits, model(regions, tokens, lengths).logits)
    seen = []  # dropout sits right before the classifier: its input is m(K) with units zeroed and scaled by 2
    model.classifier.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    memory = model(regions, tokens, lengths).memory
    assert torch.all((seen[0] == 0) | torch.isclose(seen[0], 2 * memory)) and torch.any(seen[0] == 0)
    fed = []  # and on the regions the visual attention reads: units zeroed, the rest scaled by 2 (eval(): unchanged)
    original_begin = model.visual.begin
    model.visual.begin = lambda x: (fed.append(x), original_begin(x))[1]
    model(regions, tokens, lengths)
    assert torch.all((fed[0] == 0) | torch.isclose(fed[0], 2 * regions)) and torch.any(fed[0] == 0)
    model.eval()
    model(regions, tokens, lengths)
    assert torch.equal(fed[1], regions)
    m = mdan().train()  # dropout on the regions (image side) and on the word embeddings (text side)
    assert not torch.equal(m.encode_image(regions).embedding, m.encode_image(regions).embedding)
    assert not torch.equal(m.encode_text(tokens, lengths).embedding, m.encode_text(tokens, lengths).embedding)
    m.eval()
    assert torch.equal(m.encode_image(regions).embedding, m.encode_image(regions).embedding)


def test_half_precision_regions_are_accepted():
    """Feature stores are fp16: the model takes them as they are, computes in float32 and matches float32 input
    up to fp16's rounding of the regions."""
    regions, tokens, lengths = make_batch(12)
    model = rdan()
    half = model(regions.half(), tokens, lengths).logits
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, model(regions.half().float(), tokens, lengths).logits)
    torch.testing.assert_close(half, model(regions, tokens, lengths).logits, atol=5e-3, rtol=5e-3)


class _CountRegionOps(TorchDispatchMode):
    """Records every op whose first argument has the regions' shape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape, self.ops = shape, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if args and isinstance(args[0], torch.Tensor) and tuple(args[0].shape) == self.shape:
            self.ops.append((str(func), args[0].dtype))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("task", ["vqa", "matching"])
def test_autocast_converts_the_regions_once(task):
    """Under bf16 autocast the [B, N, D] regions are converted to bf16 once, and dropout, the mean and the steps
    read that copy (not 1 + K autocast copies of the fp32 input); the result stays close to fp32."""
    regions, tokens, lengths = make_batch(3)
    model = (rdan() if task == "vqa" else mdan()).train()
    with torch.autocast("cpu", dtype=torch.bfloat16), _CountRegionOps(tuple(regions.shape)) as seen:
        torch.manual_seed(0)
        out = model(regions, tokens, lengths)
    copies = [op for op, _ in seen.ops if op.startswith("aten._to_copy")]
    assert len(copies) == 1, seen.ops
    assert all(dtype == torch.bfloat16 for op, dtype in seen.ops if not op.startswith("aten._to_copy")), seen.ops
    torch.manual_seed(0)
    ref = model(regions, tokens, lengths)
    got, want = (out.logits, ref.logits) if task == "vqa" else (out.similarity, ref.similarity)
    got, want = got.detach().float(), want.detach()
    torch.testing.assert_close(got, want, atol=0.05 * float(want.abs().max()), rtol=0.05)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(attention="cross"), "dual, visual, textual, none"),
        (dict(steps=-1), "steps"),
        (dict(steps=1.5), "steps"),
        (dict(hidden_dim=0), "hidden_dim"),
        (dict(embed_dim=-4), "embed_dim"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_configuration_raises_config_error(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        RDAN(V, C, D, **kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=fragment):
        MDAN(V, D, **kwargs)


def test_bad_sizes_and_factory_errors():
    with pytest.raises(ConfigError, match="vocab_size"):
        RDAN(0, C, D)
    with pytest.raises(ConfigError, match="num_answers"):
        RDAN(V, 0, D)
    with pytest.raises(ConfigError, match="visual_dim"):
        MDAN(V, -2)
    with pytest.raises(ConfigError, match="vqa, matching"):
        build_model("captioning", V, D)
    with pytest.raises(ConfigError, match="num_answers"):
        build_model("vqa", V, D)
    with pytest.raises(ConfigError, match="accepted"):
        build_model("matching", V, D, heads=4)
    assert isinstance(build_model("vqa", V, D, num_answers=C, hidden_dim=H), RDAN)
    assert isinstance(build_model("matching", V, D, hidden_dim=H, steps=0), MDAN)


def test_bad_inputs_raise_data_error():
    regions, tokens, lengths = make_batch(13)
    model = rdan()
    with pytest.raises(DataError, match="lengths"):
        model(regions, tokens, torch.tensor([5, 2, 0, 4]))
    with pytest.raises(DataError, match="lengths"):
        model(regions, tokens, torch.tensor([6, 2, 1, 4]))
    with pytest.raises(DataError, match="regions"):
        model(regions[..., :-1], tokens, lengths)
    with pytest.raises(DataError, match="batch size"):
        model(regions[:2], tokens, lengths)


def test_aligned_lstm_path_gives_the_rows_and_gradients_of_the_packed_one() -> None:
    """The GPU path of the text encoder (no packing: left- and right-aligned copies in one padded batch) against
    PyTorch's own packing: the same outputs, 0 on padding, and the same gradients for the weights and the input."""
    from dan.models import TextEncoder

    torch.manual_seed(0)
    enc = TextEncoder(vocab_size=30, embed_dim=8, hidden_dim=6, dropout=0.0).eval()
    lengths = torch.tensor([3, 7, 7, 1, 5, 7])  # ties, a one-word text, full-width texts
    x = torch.randn(6, 7, 8)
    probe = torch.randn(6, 7, 12)
    results = []
    for aligned in (False, True):
        enc.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = enc._lstm(xi, lengths, 7, aligned=aligned)
        (out * probe).sum().backward()
        results.append((out.detach(), xi.grad, {n: p.grad.clone() for n, p in enc.lstm.named_parameters()}))
    (ref, ref_dx, ref_dw), (got, got_dx, got_dw) = results
    assert got.shape == (6, 7, 12)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert torch.all(got[3, 1:] == 0) and torch.all(got[0, 3:] == 0)  # padding stays 0
    torch.testing.assert_close(got_dx, ref_dx, rtol=1e-5, atol=1e-6)
    assert torch.all(got_dx[3, 1:] == 0)  # padding gets no gradient
    for name, grad in ref_dw.items():
        torch.testing.assert_close(got_dw[name], grad, rtol=1e-5, atol=1e-6, msg=name)
