"""One training step's pieces, shared by :mod:`dan.train` and the benchmark (:mod:`dan.bench`): the loss of a batch
as a module, its precision, the device's numerics, the optimiser and its resumption, and each epoch's batches.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from dan.losses import matching_loss, vqa_loss

if TYPE_CHECKING:
    from dan.config import TrainConfig
    from dan.prepare import Prepared


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StepLoss(torch.nn.Module):
    """The loss of one batch as a module, so DDP sees a single forward for either task (also what
    ``dan.bench`` times, so the benchmark measures this step and not a copy of it)."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, amp: bool = False) -> None:
        super().__init__()
        self.model, self.cfg, self.amp = model, cfg, amp

    def forward(self, regions, tokens, lengths, targets, soft, generator=None):  # noqa: ANN001
        with torch.autocast(regions.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.cfg.task == "vqa":
                logits = self.model(regions, tokens, lengths).logits  # [B, C]
            else:
                img = self.model.encode_image(regions)
                txt = self.model.encode_text(tokens, lengths)
        if self.cfg.task == "vqa":  # losses in fp32 whatever the autocast precision
            return vqa_loss(logits.float(), targets, soft)
        # the similarities too: in bf16 (8 bits of mantissa) a score near 1,700 would be off by up to ~4, a few
        # per cent of the paper's margin of 100
        S = self.model.similarity(img.embedding.float(), txt.embedding.float())  # [B, B] fp32, positives diagonal
        return matching_loss(S, margin=self.cfg.margin, negatives=self.cfg.negatives, generator=generator)


def use_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether training steps run under bf16 autocast (``cfg.amp``; "auto": on CUDA only)."""
    return cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")


def epoch_batches(n: int, cfg: TrainConfig, epoch: int, prep: Prepared) -> list[np.ndarray]:
    """Index batches of one epoch; a deterministic function of (seed, epoch) so resumed runs see the same order."""
    rng = np.random.default_rng([cfg.seed, epoch])
    if cfg.task == "vqa":
        order = rng.permutation(n)
        return [order[i: i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    # matching: caption rounds; within a round each image appears once with one of its captions, so a batch
    # never holds two captions of one image (no false negatives)
    per = prep.train.per_image
    caption_round = np.argsort(rng.random((n, per)), axis=1)  # [I, per] caption order of each image
    batches = []
    for r in range(per):
        order = rng.permutation(n)
        caps = order * per + caption_round[order, r]
        for i in range(0, n, cfg.batch_size):
            if len(order[i: i + cfg.batch_size]) > 1:
                batches.append(np.stack([order[i: i + cfg.batch_size], caps[i: i + cfg.batch_size]]))
    return batches


def configure_device(device: torch.device) -> None:
    """Process-wide numerics for training on ``device`` (the benchmark's step uses the same): deterministic
    algorithms on the CPU; on a GPU speed rather than bit-reproducibility, with TF32 for the fp32 matrix products
    that autocast leaves."""
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    else:
        torch.set_float32_matmul_precision("high")


def build_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (SGD with momentum and weight decay, the paper's; or Adam) for ``params`` on ``device``.

    On a GPU the fused kernel updates every parameter in one launch (the eager step is bound by the host's kernel
    launches). On H200s the paper-size r-DAN step ran at 15,600 samples/s with it on one machine and 11,897 on
    another, against 12,125 without it (benchmarks/results/train_{fused,,profile}_h200.json): the gain is smaller
    than the spread between machines. On the CPU PyTorch's default implementation is kept, so CPU runs are unchanged.
    """
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)  # L2, as torch's Adam does


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict, device: torch.device) -> None:
    """Resume ``optimizer`` from a checkpoint's state; the saved run's kernel choice (fused on a GPU, PyTorch's
    default on the CPU) gives way to this device's, so a run moves freely between CPU and GPU."""
    optimizer.load_state_dict(saved)
    for group in optimizer.param_groups:
        group.update(fused=True if device.type == "cuda" else None, foreach=None)
