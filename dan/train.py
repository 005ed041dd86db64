"""Train r-DAN (VQA) and m-DAN (image-text matching) from the loaders and the feature stores.

``train(cfg)`` runs one configuration end to end: it builds vocabularies, trains with a checkpoint after
every epoch (atomic; model, optimiser, scheduler, epoch, RNG states, config, vocabularies, answers), resumes
from the last checkpoint of the same configuration, evaluates on the validation/test split and writes
``metrics.json``, ``history.json`` and per-example predictions with attention maps beside the checkpoint.
Under ``torchrun`` it trains data-parallel (DDP; NCCL on GPUs, gloo on CPU); rank 0 evaluates and writes.

CLI: ``python -m dan.train --task vqa --profile default --steps 2 --attention dual`` (see ``--help``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from dan.checkpoint import (  # noqa: F401 (load_checkpoint, CHECKPOINT: re-exported)
    CHECKPOINT,
    INPUTS,
    check_recorded_inputs,
    check_same_features,
    feature_summary,
    input_digests,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    saved_config,
)
from dan.config import TrainConfig, deviations, preset
from dan.evaluate import evaluate_vqa
from dan.extract import keep_freed_memory, resolve_device
from dan.io import ConfigError, DanError, DataError, exclusive_flock, read_json, study_paths, write_json_atomic
from dan.losses import matching_loss, vqa_loss
from dan.prepare import Prepared, data_root, features_root, prepare
from dan.retrieval import evaluate_matching


@dataclass
class RunResult:
    """What a finished run left: its folder, final metrics and per-epoch history; from :func:`train`, ``config``
    is the config it was given (see :func:`load_result` for a run read back from its folder)."""

    run_dir: Path
    config: TrainConfig
    metrics: dict
    history: list[dict]


def run_dir_for(cfg: TrainConfig) -> Path:
    """``cfg.out``, or the profile's run folder ``<task>-<attention>-K<steps>-s<seed>``, with ``-<8 hex>`` added
    when other fields of the run's identity differ from the profile's preset (e.g. a notebook run with
    ``-p epochs 1``): such a run gets a folder of its own instead of taking, or being refused, the preset's."""
    if cfg.out:
        return Path(cfg.out)
    return study_paths(cfg.profile).runs / (cfg.run_name() + _override_suffix(cfg))


def _override_suffix(cfg: TrainConfig) -> str:
    try:
        base = preset(cfg.profile, cfg.task, steps=cfg.steps, attention=cfg.attention, seed=cfg.seed).identity()
    except ConfigError:
        return ""
    mine = cfg.identity()
    changed = {k: mine[k] for k in sorted(mine) if base.get(k) != mine[k]}
    if not changed:
        return ""
    return "-" + hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]


def seed_everything(seed: int) -> None:
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


def _epoch_batches(n: int, cfg: TrainConfig, epoch: int, prep: Prepared) -> list[np.ndarray]:
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


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(cfg: TrainConfig, progress: bool = True, stop_after_epoch: int | None = None) -> RunResult:
    """Train (or resume, or reuse a finished) run of ``cfg``; see the module docstring.

    ``stop_after_epoch`` ends the process's work after that epoch's checkpoint (used to test resuming).
    """
    cfg.validate()
    joined = _join_process_group(cfg)
    try:
        with keep_freed_memory(), contextlib.ExitStack() as held:  # glibc would page-fault every batch's buffers
            result = _train(cfg, progress, stop_after_epoch, held)  # back in on CPU; held: the run folder's lock
        # the config given, not config.json's identity (which lacks data, features, out, device, threads): a
        # script goes on from result.config (prepare, evaluate) on the same folders
        return dataclasses.replace(result, config=cfg)
    finally:
        if joined:
            dist.destroy_process_group()


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive ``flock`` on the run folder itself while a process trains into it: a second process on the
    same folder (the same command twice, a rerun beside a run still going) fails at once with a clear error. It
    used to go ahead, delete the first one's checkpoint being written as a stale temp file, and so end the first
    run in "cannot write checkpoint.pt: No such file or directory". The kernel releases the lock when its process
    ends, kill -9 included, and it leaves no file behind."""
    busy = DanError(f"another process is training into the run folder {run_dir} right now; wait for it to end (or "
                    f"stop it), then rerun: the run resumes from its last checkpoint, or is reused when finished")
    with exclusive_flock(os.open(run_dir, os.O_RDONLY), busy):  # the folder itself: no lock file left behind
        yield


def _join_process_group(cfg: TrainConfig) -> bool:
    """Under ``torchrun`` (WORLD_SIZE > 1), join its process group: NCCL on GPUs, gloo on CPU.

    Returns True when this call created the group (and so must destroy it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    cuda = resolve_device(cfg.device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


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


def _train(cfg: TrainConfig, progress: bool, stop_after_epoch: int | None, held: contextlib.ExitStack) -> RunResult:
    rank, world = _dist()
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    configure_device(device)
    for flag, given in (("--data", cfg.data), ("--features", cfg.features)):
        if given and not Path(given).is_dir():  # checked before a finished run is reused, too
            raise DataError(f"{flag} folder not found: {given}")
    run_dir = run_dir_for(cfg)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"the run folder (--out) {run_dir} is a file, not a folder; choose another --out")
    done = run_dir / "metrics.json"
    if done.is_file():
        saved = read_json(run_dir / "config.json", "run config")
        if isinstance(saved, dict) and cfg.same_identity(saved):
            check_recorded_inputs(run_dir, cfg)
            return load_result(run_dir)
        raise ConfigError(f"{run_dir} holds a finished run of another configuration; choose another --out "
                          f"or delete that folder")
    seed_everything(cfg.seed)
    prep = prepare(cfg, device)
    model = prep.build_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg, params, device)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_decay_epochs),
                                                     gamma=cfg.lr_decay)
    history: list[dict] = []
    start = 0
    ckpt_path = run_dir / CHECKPOINT
    if ckpt_path.is_file():
        state = read_checkpoint(ckpt_path, device)
        try:
            same = cfg.same_identity(saved_config(state, ckpt_path).identity())
        except DataError:  # a config another version wrote is another configuration, not a mistake in the flags
            same = False
        if not same:
            raise ConfigError(f"{ckpt_path} is a checkpoint of another configuration; choose another --out or "
                              f"delete it")
        if state["visual_dim"] != prep.bank.dim:
            raise DataError(f"feature dimension mismatch: {ckpt_path} expects {state['visual_dim']}-d regions "
                            f"({(state.get('feature_meta') or {}).get('backbone')}), the feature stores in "
                            f"{features_root(cfg)} have {prep.bank.dim}-d ({prep.bank.meta.get('backbone')}); "
                            f"use the features it was trained on or another --out")
        check_same_features(state["feature_meta"] or {}, prep.bank.meta, ckpt_path, features_root(cfg))
        for what, saved, now in (("vocabulary", state["vocab"], prep.vocab.to_dict()),
                                 ("answer list", state["answers"],
                                  prep.answers.to_dict() if prep.answers is not None else None)):
            if saved != now:
                raise DataError(f"{ckpt_path} was trained with another {what} than the training data in "
                                f"{data_root(cfg)} gives (the questions/captions or --max-train differ); use the "
                                f"data it was trained on (--data) or another --out")
        check_recorded_inputs(run_dir, cfg)  # every store, not only the first one's meta; and the data's content
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"], device)
        scheduler.load_state_dict(state["scheduler"])
        history, start = state["history"], state["epoch"] + 1
    need = (1 if cfg.task == "vqa" else 2) * world  # a (matching: two-pair) share for every rank
    if start < cfg.epochs and not any(b.shape[-1] >= need for b in _epoch_batches(len(prep.train), cfg, start, prep)):
        raise ConfigError(f"no training step possible: {len(prep.train)} training "
                          f"{'questions' if cfg.task == 'vqa' else 'images'} in batches of {cfg.batch_size} give no "
                          f"batch of at least {need}; raise --batch-size or --max-train")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(run_lock(run_dir))  # held until train() returns
        for stale in run_dir.glob(".*.tmp"):  # temp files of a killed run's atomic writes, never renamed
            stale.unlink(missing_ok=True)
        write_json_atomic(run_dir / "config.json", cfg.identity(), indent=1)
        write_json_atomic(run_dir / INPUTS, {**input_digests(cfg, list(prep.bank.stores)),
                                             "features": {name: feature_summary(store.meta)
                                                          for name, store in prep.bank.stores.items()}}, indent=1)
        shrunk = deviations(cfg)
        if shrunk and progress and start == 0:
            print(f"[{cfg.run_name()}] profile {cfg.profile!r} departs from the paper in: "
                  + ", ".join(f"{k}={a} (paper {b})" for k, (a, b) in sorted(shrunk.items())), file=sys.stderr)
    step = StepLoss(model, cfg, amp=use_amp(cfg, device))
    if world > 1:
        step = torch.nn.parallel.DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda"
                                                         else None)
    if cfg.compile != "off":  # the step's forward and backward; checkpoints keep saving the plain model's weights
        step = torch.compile(step, mode=cfg.compile)
    n_train = len(prep.train)
    epochs = range(start, cfg.epochs)
    bar = tqdm(epochs, desc=cfg.run_name(), disable=not progress or rank != 0, initial=start, total=cfg.epochs,
               file=sys.stderr, dynamic_ncols=True)
    for epoch in bar:
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        model.train()
        # the epoch's summed loss stays on the device (float64, as a Python float would be): no sync per step
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0
        for batch in _epoch_batches(n_train, cfg, epoch, prep):
            if batch.shape[-1] < need:
                continue  # a tail too small to give every rank a (matching: two-pair) share; same on every rank
            if cfg.task == "vqa":
                idx = batch[rank::world]
                regions, tokens, lengths, targets = prep.train.batch(idx, prep.bank, device)
                soft = (prep.train.soft_targets(idx, len(prep.answers)).to(device) if cfg.soft_targets else None)
            else:
                img_idx, cap_idx = batch[0][rank::world], batch[1][rank::world]
                regions, tokens, lengths = prep.train.batch(img_idx, prep.bank, device, captions=cap_idx)
                targets = soft = None
            loss = step(regions, tokens, lengths, targets, soft, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                if cfg.clip_mode == "norm":
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                else:
                    torch.nn.utils.clip_grad_value_(params, cfg.grad_clip)
            optimizer.step()
            total += loss.detach().double() * len(regions)
            count += len(regions)
        scheduler.step()
        record = {"epoch": epoch + 1, "loss": float(total) / max(count, 1), "lr": optimizer.param_groups[0]["lr"]}
        if rank == 0:
            val_metrics = _evaluate(model, cfg, prep, device, save_to=None)
            record.update(_headline(cfg, val_metrics))
            history.append(record)
            bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
            save_checkpoint(ckpt_path, model, optimizer, scheduler, epoch, cfg, prep, history)
        if world > 1:
            dist.barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            return RunResult(run_dir, cfg, {}, history)
    if rank == 0:
        metrics = _evaluate(model, cfg, prep, device, save_to=run_dir)
        metrics["deviations_from_paper"] = {k: list(v) for k, v in deviations(cfg).items()}
        metrics["training_precision"] = "bf16 autocast" if use_amp(cfg, device) else "fp32"
        if cfg.compile != "off":  # a speed setting, not part of the run's identity (config.json)
            metrics["compile"] = cfg.compile
        metrics["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        write_json_atomic(run_dir / "history.json", history, indent=1)
        write_json_atomic(done, metrics, indent=1)  # written last: marks the run finished
    if world > 1:
        dist.barrier()
    return load_result(run_dir) if rank == 0 else RunResult(run_dir, cfg, {}, history)


def _headline(cfg: TrainConfig, m: dict) -> dict:
    if cfg.task == "vqa":
        return {"val_acc": m["overall"]}
    return {"val_rsum": m["rsum"], "val_i2t_r1": m["i2t"]["r1"], "val_t2i_r1": m["t2i"]["r1"]}


def _evaluate(model: torch.nn.Module, cfg: TrainConfig, prep: Prepared, device: torch.device,
              save_to: Path | None) -> dict:
    if cfg.task == "vqa":
        return evaluate_vqa(model, prep, cfg.eval_batch_size, device, save_to=save_to)
    return evaluate_matching(model, prep, cfg.eval_batch_size, device, save_to=save_to)


def load_result(run_dir: str | Path) -> RunResult:
    """Metrics, history and config of a finished run (no model loading). The config is the run's identity
    (``config.json``): where its data and features were, and the device settings, are not in it (None, i.e. the
    profile's defaults); :func:`dan.evaluate.load_trained_run` gives the checkpoint's full config."""
    run_dir = Path(run_dir)
    cfg_d = read_json(run_dir / "config.json", "run config")
    cfg = TrainConfig.from_dict(cfg_d)
    return RunResult(run_dir, cfg, read_json(run_dir / "metrics.json", "run metrics"),
                     read_json(run_dir / "history.json", "run history"))


def main(argv: list[str] | None = None) -> int:
    from dan.cli import run_train_cli

    return run_train_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
