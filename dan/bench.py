"""Training-step and retrieval throughput, measured in one process: model-only ceiling vs data-fed step.

* ceiling: the batch already on the device, reused every step (forward, backward, optimiser step);
* fed: every step gathers its batch from a real :class:`~dan.store.FeatureStore` (fp16 memmap, or resident on
  the device) through :class:`~dan.batches.FeatureBank`, exactly as :func:`dan.train.train` does;
* retrieval: embeddings of ``n_images`` images and ``5 n_images`` captions -> S (one matrix product) -> R@K and
  median rank both ways.

``benchmarks/train.py`` is the command-line front end; the performance notebook calls these functions. The
recorded results' tables and verdicts are in :mod:`dan.bench_records`, their side-by-side pairs and the GPU
decoders' check in :mod:`dan.bench_compare` (both re-exported here).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from dan.attention import host_to_device
from dan.batches import FeatureBank, batch_text
from dan.bench_compare import EXTRACT_PAIRS, ab_table, decoder_table, staging_table  # noqa: F401 (re-exported)
from dan.bench_records import (  # noqa: F401 (re-exported: the book and the tests read them from dan.bench)
    CEILING_SLACK,
    COPY_TOLERANCE,
    GC_TIMELINE_KEYS,
    GPU_TIMELINE_KEYS,
    PAPER_SIZES,
    TARGET_CARD,
    TARGETS,
    TIMELINE_KEYS,
    command_of,
    extraction_verdict,
    kernel_profile_table,
    profile_markdown,
    profile_table,
    recorded_results,
    target_markdown,
    target_table,
    targets_markdown,
    timeline_table,
)
from dan.config import TrainConfig
from dan.io import write_json_atomic
from dan.metrics import retrieval_metrics
from dan.models import build_model
from dan.step import StepLoss, configure_device
from dan.store import FeatureStore

# The default CPU profile's sizes (dan.config / dan.features presets).
DEFAULT_SIZES = dict(batch_size=128, grid=(10, 10), dim=112, hidden=64, num_answers=24, vocab_size=60, steps=2,
                     seq_len=12)


def write_random_store(path: Path, num_images: int, grid: tuple[int, int], dim: int, seed: int = 0) -> FeatureStore:
    """A complete feature store of random fp16 features (ids 0..num_images-1), for benchmarks."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    feats = np.lib.format.open_memmap(path / "features.npy", mode="w+", dtype=np.float16,
                                      shape=(num_images, grid[0] * grid[1], dim))
    for lo in range(0, num_images, 256):
        hi = min(lo + 256, num_images)
        feats[lo:hi] = rng.random((hi - lo, grid[0] * grid[1], dim), dtype=np.float32).astype(np.float16)
    feats.flush()
    del feats
    np.save(path / "ids.npy", np.arange(num_images, dtype=np.int64))
    write_json_atomic(path / "meta.json", {
        "backbone": "random", "layer": "none", "weights_sha256": "random", "image_size": 0, "grid": list(grid),
        "dim": dim, "dtype": "float16", "preprocessing": {}, "num_images": num_images, "skipped": [],
        "num_skipped": 0, "fingerprint": "benchmark"})
    return FeatureStore(path)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainStep:
    """One training step of the paper's r-DAN/m-DAN setting (SGD with momentum and weight decay, clipping) on
    ``device``, and a fixed batch for it (regions already on the device): what the benchmark and the step profiler
    time. The loss is training's own :class:`dan.step.StepLoss` (m-DAN with the hardest in-batch negatives);
    ``compile`` wraps it in ``torch.compile(mode=compile_mode)``; ``fused`` uses the fused SGD kernel (None: as
    :func:`dan.step.build_optimizer` does, i.e. on CUDA only);
    ``foreach`` (None: PyTorch's choice, multi-tensor on CUDA) sets the SGD and clipping implementation."""

    def __init__(self, task: str = "vqa", device: str = "cpu", amp: bool = False, compile: bool = False,
                 compile_mode: str = "default", fused: bool | None = None, batch_size: int = 128,
                 grid: tuple[int, int] = (14, 14), dim: int = 2048, hidden: int = 512, num_answers: int = 2000,
                 vocab_size: int = 10000, steps: int = 2, seq_len: int = 14, seed: int = 0,
                 foreach: bool | None = None) -> None:
        self.task, self.dev, self.amp, self.batch_size = task, torch.device(device), amp, batch_size
        self.fused = fused = self.dev.type == "cuda" if fused is None else fused  # None: as dan.train does
        self.foreach = None if fused else foreach
        configure_device(self.dev)  # the precision settings of dan.train (TF32 on a GPU)
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = build_model(task, vocab_size, dim, num_answers=num_answers if task == "vqa" else None,
                                 hidden_dim=hidden, steps=steps, dropout=0.5).to(self.dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4,
                                   **({"fused": True} if fused else {"foreach": self.foreach}))
        lengths = self.rng.integers(max(2, seq_len // 2), seq_len + 1, size=4096)
        tokens = self.rng.integers(2, vocab_size, size=(4096, seq_len))
        tokens[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0
        self.tokens, self.lengths = tokens, lengths
        self.targets = self.rng.integers(0, num_answers, size=4096)
        cfg = TrainConfig(task=task, margin=100.0, negatives="hardest")
        loss = StepLoss(self.model, cfg, amp=amp)
        self.loss_fn = torch.compile(loss, mode=compile_mode) if compile else loss
        idx0 = np.arange(batch_size)
        self.fixed = (torch.randn(batch_size, grid[0] * grid[1], dim, device=self.dev),  # [B, N, D]
                      *batch_text(tokens, lengths, idx0, self.dev),
                      torch.as_tensor(self.targets[idx0], device=self.dev))

    def __call__(self, regions, tokens, lengths, targets) -> None:  # noqa: ANN001
        loss = self.loss_fn(regions, tokens, lengths, targets, None)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.1, foreach=self.foreach)
        self.opt.step()


def train_throughput(task: str = "vqa", device: str = "cpu", iters: int = 30, warmup: int = 5,
                     store_images: int = 1024, resident: bool = False, amp: bool = False, compile: bool = False,
                     compile_mode: str = "default", fused: bool | None = None, batch_size: int = 128,
                     grid: tuple[int, int] = (14, 14), dim: int = 2048, hidden: int = 512, num_answers: int = 2000,
                     vocab_size: int = 10000, steps: int = 2, seq_len: int = 14, seed: int = 0) -> dict:
    """Samples/s of the model-only training step (ceiling: the faster of a pass before and one after the fed steps)
    and of the step fed from a feature store; their ratio."""
    step = TrainStep(task, device, amp, compile, compile_mode, fused, batch_size, grid, dim, hidden, num_answers,
                     vocab_size, steps, seq_len, seed)
    dev, rng = step.dev, step.rng

    def timed(make_batch) -> float:  # noqa: ANN001
        for i in range(warmup):
            step(*make_batch(i))
        _sync(dev)
        start = time.perf_counter()
        for i in range(iters):
            step(*make_batch(warmup + i))
        _sync(dev)
        return iters * batch_size / (time.perf_counter() - start)

    ceiling = timed(lambda i: step.fixed)
    with tempfile.TemporaryDirectory() as tmp:
        bank = FeatureBank({"bench": write_random_store(Path(tmp) / "bench", store_images, grid, dim, seed)},
                           device=dev, resident=resident)
        order = rng.permutation(np.arange(4096) % store_images)

        def fed_batch(i: int):  # noqa: ANN202
            idx = np.roll(order, -i * batch_size)[:batch_size]
            q = idx % 4096
            tokens, lengths = batch_text(step.tokens, step.lengths, q, dev)
            return bank.fetch(idx), tokens, lengths, host_to_device(torch.from_numpy(step.targets[q]), dev)

        fed = timed(fed_batch)
    # the ceiling again after the fed steps: the first pass can still pay warm-up costs (allocator growth, clocks),
    # which once made a fed rate look faster than its ceiling; the faster pass is the ceiling
    ceiling_after = timed(lambda i: step.fixed)
    ceiling_passes = [ceiling, ceiling_after]
    ceiling = max(ceiling_passes)
    n_regions = grid[0] * grid[1]
    return {"task": task, "device": device_label(dev), "batch_size": batch_size, "regions": n_regions, "dim": dim,
            "hidden": hidden, "num_answers": num_answers, "steps": steps, "amp_bf16": amp, "compile": compile,
            "compile_mode": compile_mode if compile else None, "fused_sgd": step.fused,
            "resident_features": resident, "ceiling_samples_per_s": ceiling, "ceiling_passes": ceiling_passes,
            "fed_samples_per_s": fed, "ratio": fed / ceiling}


def profile_step(step: TrainStep, iters: int = 20, warmup: int = 5, top: int = 8) -> dict:
    """Where a training step's time goes: ``iters`` timed steps on ``step.fixed`` after ``warmup``, then ``iters``
    more under torch.profiler. Reports the wall ms per step (timed without the profiler); the aten ops per step, all
    and those called directly rather than from another op (each costs host time to dispatch; ``top_ops_per_step``
    names the ``top`` most frequent), and the autograd nodes the backward pass runs; and on CUDA the kernels per
    step, their summed device time per step, and ``device_busy`` = kernel time / wall time. A step that keeps the
    GPU busy has ``device_busy`` near 1; a low value means the host (op dispatch, launches) sets the pace.
    """
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        step(*step.fixed)
    _sync(step.dev)
    start = time.perf_counter()  # wall time without the profiler's own overhead
    for _ in range(iters):
        step(*step.fixed)
    _sync(step.dev)
    wall = time.perf_counter() - start
    cuda = step.dev.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(iters):
            step(*step.fixed)
        _sync(step.dev)
    events = prof.events()
    ops = [e for e in events if e.name.startswith("aten::") and e.device_type.name == "CPU"]
    top_ops = [e for e in ops if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    out = {"task": step.task, "device": device_label(step.dev), "iters": iters,
           "wall_ms_per_step": 1e3 * wall / iters, "aten_ops_per_step": len(ops) / iters,
           "top_level_ops_per_step": len(top_ops) / iters,
           "backward_nodes_per_step": sum(e.name.startswith("autograd::engine::evaluate_function")
                                          for e in events) / iters,
           "top_ops_per_step": {k: v / iters for k, v in Counter(e.name for e in top_ops).most_common(top)}}
    if cuda:
        kernels = [e for e in events if e.device_type.name == "CUDA"]
        busy_us = sum(e.time_range.elapsed_us() for e in kernels)  # a device event's range is its run on the GPU
        by_name: dict[str, float] = {}
        for e in kernels:
            by_name[e.name] = by_name.get(e.name, 0.0) + e.time_range.elapsed_us()
        out.update(kernels_per_step=len(kernels) / iters, kernel_ms_per_step=busy_us / 1e3 / iters,
                   device_busy=busy_us / 1e6 / wall,
                   top_kernels_ms_per_step={k[:80]: v / 1e3 / iters for k, v in
                                            sorted(by_name.items(), key=lambda kv: -kv[1])[:top]})
    return out


def retrieval_throughput(n_images: int = 1000, per_image: int = 5, dim: int = 1536, device: str = "cpu",
                         repeats: int = 5, seed: int = 0) -> dict:
    """Seconds to score ``n_images`` x ``per_image * n_images`` retrieval from embeddings (S + R@K + median rank)."""
    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    img = torch.randn(n_images, dim, generator=g).to(dev)
    txt = torch.randn(n_images * per_image, dim, generator=g).to(dev)
    times = []
    for _ in range(repeats):
        _sync(dev)
        start = time.perf_counter()
        retrieval_metrics(img @ txt.T, captions_per_image=per_image)
        _sync(dev)
        times.append(time.perf_counter() - start)
    return {"device": device_label(dev), "n_images": n_images, "n_captions": n_images * per_image, "dim": dim,
            "seconds_median": float(np.median(times)), "seconds_min": float(min(times))}


def device_label(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _run_script(name: str, out: Path, args: list[str], what: str) -> dict:
    """Run ``benchmarks/<name>`` with ``args --out out`` in a subprocess and return its JSON result. A script that
    fails is a :class:`~dan.io.DanError` with its last line of output (its own error, or its exception's line):
    ``check=True`` gave a CalledProcessError naming the exit status only, the cause captured and dropped."""
    import subprocess
    import sys

    from dan.io import DanError, read_json, repo_root

    cmd = [sys.executable, str(repo_root() / "benchmarks" / name), *args, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        raise DanError(f"benchmarks/{name} failed (exit status {done.returncode}): "
                       f"{lines[-1] if lines else 'no output'}; the command: {' '.join(cmd)}")
    return read_json(out, what)


def extract_benchmark(out: Path, num_images: int = 64, device: str = "cpu", extra: list[str] | None = None) -> dict:
    """Run ``benchmarks/extract.py`` (default backbone) in a subprocess and return its JSON result."""
    return _run_script("extract.py", out, ["--num-images", str(num_images), "--device", device, *(extra or [])],
                       "extraction benchmark result")


def host_ops_benchmark(out: Path, top: int = 8) -> dict:
    """Run ``benchmarks/host_ops.py`` (a GPU-like training step's host ops, counted on the CPU) in a subprocess."""
    return _run_script("host_ops.py", out, ["--top", str(top)], "host-ops count")


def steady_rate(commits: list[tuple[float, int]]) -> float | None:
    """Images/s between the first and the last intermediate commit ``(seconds, images durable)``: the pipeline's
    rate once full, without start-up (workers, first batch) and the final flush and publish. None with fewer than
    three commits (the last one is the final flush, so it is left out)."""
    if len(commits) < 3 or commits[-2][0] <= commits[0][0]:
        return None
    (t_a, n_a), (t_b, n_b) = commits[0], commits[-2]
    return (n_b - n_a) / (t_b - t_a)


def extraction_rates(num_images: int, seconds: float, ceiling: float, batch_size: int,
                     commits: list[tuple[float, int]]) -> dict[str, float | None]:
    """The rate fields of an extraction benchmark's result, rounded as recorded: ``num_images`` JPEGs to a
    finished store in ``seconds`` against the model-only ``ceiling`` (img/s at ``batch_size``), and the steady
    rate between commits (:func:`steady_rate`). ``fixed_overhead_s`` is what the run took beyond the images at the
    steady rate (start-up, fill, final flush); the steady fields are None where no steady rate exists."""
    e2e = num_images / seconds
    steady = steady_rate(commits)
    return {"model_only_img_s": round(ceiling, 1), "model_only_batch_s": round(batch_size / ceiling, 4),
            "end_to_end_img_s": round(e2e, 1), "ratio": round(e2e / ceiling, 3), "end_to_end_s": round(seconds, 2),
            "steady_img_s": round(steady, 1) if steady else None,
            "steady_ratio": round(steady / ceiling, 3) if steady else None,
            "fixed_overhead_s": round(seconds - num_images / steady, 2) if steady else None}


def copy_consistency(store: FeatureStore, distinct: int, samples: int = 512, kinds: np.ndarray | None = None) -> dict:
    """Integrity check of an extraction benchmark's store, whose image ``k`` (k = 0, 1, ... in id order) is a byte
    copy of image ``k % distinct``: compares up to ``samples`` copies, spread over the whole store, with their
    originals.

    ``kinds`` (int ``[n]``, optional): which decoder made each image, where one store mixes two (a split extraction:
    :func:`dan.feature_config.cpu_decoded_per_batch`). A copy is then compared with the first image of its own kind
    that copies the same original, since two decoders' pixels differ by more than rounding (nvJPEG against PIL's).

    ``rel_diff`` is the largest ``||copy - original||`` (L2 over all N x D values) divided by how far images lie
    from each other: the mean ``||original_j - mean||`` over the ``distinct`` originals. Measured on the CPU with
    random-weight ResNet-152 on the benchmark's synthetic JPEGs: a row from another image gives 1.0-1.6, a zero
    row about 11; a copy differs by rounding only (bf16 on a GPU, another batch position), 0 on the CPU. Also
    returns the largest absolute difference."""
    n = len(store)
    if n <= distinct:
        raise ValueError(f"the store has {n} images, no copies of its {distinct} distinct ones to compare")
    originals = store.gather(np.arange(distinct)).astype(np.float64).reshape(distinct, -1)  # [distinct, N * D]
    spread = float(np.linalg.norm(originals - originals.mean(axis=0), axis=1).mean())
    copies = np.unique(np.linspace(distinct, n - 1, num=min(samples, n - distinct)).astype(np.int64))
    refs = copies % distinct
    if kinds is not None:  # the first image of each (original, kind): np.unique keeps first occurrences
        kinds = np.asarray(kinds, dtype=np.int64)
        if kinds.shape != (n,):
            raise ValueError(f"kinds must have one entry per image ({n}), got shape {kinds.shape}")
        keys = np.arange(n) % distinct + distinct * kinds
        uniq, first = np.unique(keys, return_index=True)
        refs = first[np.searchsorted(uniq, keys[copies])]
        copies, refs = copies[refs != copies], refs[refs != copies]
    diff = err = 0.0
    for lo in range(0, len(copies), 64):
        k, r = copies[lo: lo + 64], refs[lo: lo + 64]
        ref = originals[r] if kinds is None else store.gather(r).astype(np.float64).reshape(len(r), -1)
        delta = store.gather(k).astype(np.float64).reshape(len(k), -1) - ref
        diff = max(diff, float(np.abs(delta).max()))
        err = max(err, float(np.linalg.norm(delta, axis=1).max()))
    rel = err / spread if spread > 0 else (0.0 if err == 0 else float("inf"))
    return {"compared": int(len(copies)), "max_abs_diff": diff, "rel_diff": rel}
