"""m-DAN's split embedding and ranking (:mod:`dan.retrieval`) on a hand-made split, against the model's own encoders
called on one image and one caption at a time (no batching, no padding beyond the caption itself)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dan.batches import CaptionTensors
from dan.metrics import retrieval_metrics
from dan.models import MDAN
from dan.retrieval import embed_split, fold_metrics, pad_stack, retrieval

V, D, H, N, K = 23, 10, 8, 7, 2


class _Bank:
    """Stands in for :class:`dan.batches.FeatureBank`: ``fetch(rows)`` gives the float32 regions of those rows."""

    def __init__(self, regions: torch.Tensor) -> None:
        self.regions = regions

    def fetch(self, rows: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
        return self.regions[torch.as_tensor(np.asarray(rows, dtype=np.int64))]


def _split() -> tuple[CaptionTensors, _Bank]:
    """4 images at bank rows 5, 0, 3, 1 (of 6), 2 captions each, lengths 1..5 in a token array 7 wide."""
    gen = torch.Generator().manual_seed(0)
    lengths = np.array([3, 5, 1, 4, 2, 5, 2, 3])
    tokens = torch.randint(1, V, (8, 7), generator=gen).numpy()
    tokens[np.arange(7)[None, :] >= lengths[:, None]] = 0
    data = CaptionTensors(image_ids=np.array([11, 12, 13, 14]), rows=np.array([5, 0, 3, 1]), tokens=tokens,
                          lengths=lengths, sentence_ids=np.arange(100, 108), per_image=2)
    return data, _Bank(torch.randn(6, N, D, generator=gen))


def _one_by_one(model: MDAN, data: CaptionTensors, bank: _Bank) -> dict[str, np.ndarray]:
    """The embeddings and attention maps of every image and caption, each encoded alone."""
    img = [model.encode_image(bank.regions[r][None]) for r in data.rows]
    txt = [model.encode_text(torch.from_numpy(data.tokens[j: j + 1, :n]), torch.tensor([n]))
           for j, n in enumerate(data.lengths.tolist())]
    width = data.tokens.shape[1]
    return {"image_embedding": torch.cat([o.embedding for o in img]).numpy(),
            "text_embedding": torch.cat([o.embedding for o in txt]).numpy(),
            "image_attention": torch.cat([o.attention for o in img]).numpy(),
            "text_attention": np.concatenate([np.pad(o.attention.numpy(), [(0, 0), (0, 0), (0, width - n)])
                                              for o, n in zip(txt, data.lengths.tolist(), strict=True)])}


@pytest.mark.parametrize("batch_size", [1, 3, 16])  # one at a time, a last batch that is short, all in one
def test_embed_split_embeds_every_image_and_caption_in_split_order(batch_size: int) -> None:
    data, bank = _split()
    torch.manual_seed(0)
    model = MDAN(V, D, hidden_dim=H, steps=K, dropout=0.5)  # left in train mode: embed_split must switch to eval
    got = embed_split(model, data, bank, batch_size, torch.device("cpu"))
    assert not model.training
    with torch.no_grad():
        want = _one_by_one(model, data, bank)
    assert {k: v.shape for k, v in got.items()} == {
        "image_embedding": (4, (K + 1) * H), "text_embedding": (8, (K + 1) * H),
        "image_attention": (4, K, N), "text_attention": (8, K, 7)}
    for key in ("image_embedding", "text_embedding"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5, err_msg=key)
    for key in ("image_attention", "text_attention"):  # stored as fp16
        np.testing.assert_allclose(got[key].astype(np.float32), want[key], rtol=0, atol=1e-3, err_msg=key)


def test_retrieval_ranks_the_dot_products_of_the_split_embeddings() -> None:
    data, bank = _split()
    torch.manual_seed(1)
    model = MDAN(V, D, hidden_dim=H, steps=K, dropout=0.0)
    with torch.no_grad():
        want = _one_by_one(model.eval(), data, bank)
    S = want["image_embedding"] @ want["text_embedding"].T  # [4, 8]: S(v_i, u_j) = z_v(i) . z_u(j)
    metrics, emb = retrieval(model, data, bank, 3, torch.device("cpu"))
    np.testing.assert_allclose(emb["image_embedding"] @ emb["text_embedding"].T, S, rtol=1e-5, atol=1e-5)
    assert metrics["i2t"] == pytest.approx(retrieval_metrics(S, 2)["i2t"])
    assert metrics["t2i"] == pytest.approx(retrieval_metrics(S, 2)["t2i"])
    folded, _ = retrieval(model, data, bank, 3, torch.device("cpu"), folds=2)
    assert folded["i2t"] == pytest.approx(fold_metrics(S, 2, 2)["i2t"])


def test_pad_stack_pads_the_word_axis_only() -> None:
    a, b = np.ones((2, 3, 4)), np.full((1, 3, 2), 2.0)
    out = pad_stack([a, b], 5)
    assert out.shape == (3, 3, 5)
    assert (out[:2, :, :4] == 1).all() and (out[:2, :, 4:] == 0).all()
    assert (out[2, :, :2] == 2).all() and (out[2, :, 2:] == 0).all()
    assert pad_stack([], 5).shape == (0, 0, 5)
