"""The benchmark helpers measure what they claim on tiny sizes (speed itself is not asserted here)."""

import numpy as np
import torch

from dan.batches import FeatureBank
from dan.bench import retrieval_throughput, train_throughput, write_random_store

TINY = dict(batch_size=8, grid=(3, 3), dim=16, hidden=8, num_answers=5, vocab_size=20, steps=2, seq_len=6)


def test_random_store_is_a_complete_store(tmp_path):
    store = write_random_store(tmp_path / "s", num_images=10, grid=(2, 3), dim=4)
    assert store.grid == (2, 3) and store.dim == 4 and len(store) == 10
    bank = FeatureBank({"s": store})
    x = bank.fetch(np.array([3, 1]))
    assert x.shape == (2, 6, 4) and x.dtype == torch.float32
    assert np.allclose(x[0].numpy(), store[3].astype(np.float32))


def test_train_throughput_reports_both_rates_and_their_ratio():
    for task in ("vqa", "matching"):
        r = train_throughput(task, device="cpu", iters=2, warmup=1, store_images=32, **TINY)
        assert r["task"] == task and r["ceiling_samples_per_s"] > 0 and r["fed_samples_per_s"] > 0
        assert abs(r["ratio"] - r["fed_samples_per_s"] / r["ceiling_samples_per_s"]) < 1e-9


def test_retrieval_throughput_times_a_full_scoring():
    r = retrieval_throughput(n_images=20, dim=12, repeats=2)
    assert r["n_captions"] == 100 and 0 < r["seconds_min"] <= r["seconds_median"]
