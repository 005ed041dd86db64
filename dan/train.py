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
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from dan.checkpoint import (  # noqa: F401 (load_checkpoint, CHECKPOINT: re-exported)
    CHECKPOINT,
    INPUTS,
    OTHER_RUN,
    check_recorded_inputs,
    check_resumable,
    feature_summary,
    input_digests,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    saved_config,
)
from dan.config import TrainConfig, deviations, preset
from dan.evaluate import evaluate_vqa
from dan.host import keep_freed_memory, resolve_device
from dan.io import (
    ConfigError,
    DanError,
    DataError,
    exclusive_flock,
    read_json,
    remove_stale_temps_in,
    study_paths,
    write_json_atomic,
)
from dan.prepare import Prepared, prepare
from dan.retrieval import evaluate_matching
from dan.step import (  # noqa: F401 (seed_everything, the optimiser's and the step's pieces: re-exported)
    StepLoss,
    build_optimizer,
    configure_device,
    epoch_batches,
    load_optimizer_state,
    seed_everything,
    use_amp,
)


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


def run_label(run_dir: Path, cfg: TrainConfig) -> str:
    """The run's name in its progress bar and messages: the name of its folder ``run_dir`` (:func:`run_dir_for`),
    e.g. ``vqa-dual-K2-s0-63b46a19`` for a run with ``-p epochs 2``, where ``cfg.run_name()`` names the preset's
    run, another configuration; ``cfg.run_name()`` only for a folder without a name (``--out /``)."""
    return Path(run_dir).absolute().name or cfg.run_name()


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
        raise ConfigError(f"the run folder (--out) {run_dir} is a file, not a folder; choose another run folder")
    _check_run_folder(run_dir)
    done = run_dir / "metrics.json"
    if finished_metrics(cfg, advice=f"choose {OTHER_RUN} or delete that folder") is not None:
        return load_result(run_dir)  # finished, of this config, on these inputs: reused
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
        check_resumable(state, ckpt_path, cfg, prep)
        check_recorded_inputs(run_dir, cfg)  # every store, not only the first one's meta; and the data's content
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"], device)
        scheduler.load_state_dict(state["scheduler"])
        history, start = state["history"], state["epoch"] + 1
    need = (1 if cfg.task == "vqa" else 2) * world  # a (matching: two-pair) share for every rank
    if start < cfg.epochs and not any(b.shape[-1] >= need for b in epoch_batches(len(prep.train), cfg, start, prep)):
        raise ConfigError(f"no training step possible: {len(prep.train)} training "
                          f"{'questions' if cfg.task == 'vqa' else 'images'} in batches of {cfg.batch_size} give no "
                          f"batch of at least {need}; raise --batch-size or --max-train")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(run_lock(run_dir))  # held until train() returns
        remove_stale_temps_in(run_dir)  # temp files of killed writers (a live dan.evaluate's are kept)
        _write_config_once(run_dir / "config.json", cfg.identity())
        write_json_atomic(run_dir / INPUTS, {**input_digests(cfg, list(prep.bank.stores)),
                                             "features": {name: feature_summary(store.meta)
                                                          for name, store in prep.bank.stores.items()}}, indent=1)
        shrunk = deviations(cfg)
        if shrunk and progress and start == 0:
            print(f"[{run_label(run_dir, cfg)}] profile {cfg.profile!r} departs from the paper in: "
                  + ", ".join(f"{k}={a} (paper {b})" for k, (a, b) in sorted(shrunk.items())), file=sys.stderr)
    step = StepLoss(model, cfg, amp=use_amp(cfg, device))
    if world > 1:
        step = torch.nn.parallel.DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda"
                                                         else None)
    if cfg.compile != "off":  # the step's forward and backward; checkpoints keep saving the plain model's weights
        step = torch.compile(step, mode=cfg.compile)
    n_train = len(prep.train)
    epochs = range(start, cfg.epochs)
    bar = tqdm(epochs, desc=run_label(run_dir, cfg), disable=not progress or rank != 0, initial=start, total=cfg.epochs,
               file=sys.stderr, dynamic_ncols=True)
    for epoch in bar:
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        model.train()
        lr = optimizer.param_groups[0]["lr"]  # this epoch's rate: the scheduler steps after the epoch
        # the epoch's summed loss stays on the device (float64, as a Python float would be): no sync per step
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0
        for batch in epoch_batches(n_train, cfg, epoch, prep):
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
        record = {"epoch": epoch + 1, "loss": float(total) / max(count, 1), "lr": lr}
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


def _check_run_folder(run_dir: Path) -> None:
    """Refuse a folder that holds files but is no run folder (no ``config.json``, which a run writes before anything
    else): ``--out data/generated/default`` trained into the data set's folder, beside its files. Temp files of a
    killed writer (``.NAME.*.tmp``) do not count."""
    if not run_dir.is_dir() or (run_dir / "config.json").exists():
        return
    foreign = sorted(p.name for p in run_dir.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(f"the run folder {run_dir} holds {shown} but no config.json, so it is not a run folder of "
                          f"dan.train; choose {OTHER_RUN}: an empty or new folder")


def _write_config_once(path: Path, identity: dict) -> None:
    """Write the run's ``config.json`` unless it already holds ``identity``: a resumed run keeps the file of its
    first start, whose time begins the run's wall time (:func:`dan.record.collect_run`, "a resumed run counts its
    pause too"); rewritten on every resume, the record counted only the last part of the run."""
    try:
        if path.is_file() and read_json(path, "run config") == identity:
            return
    except DanError:  # unreadable: written anew
        pass
    write_json_atomic(path, identity, indent=1)


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
    path = run_dir / "config.json"
    cfg_d = read_json(path, "run config")
    if not isinstance(cfg_d, dict):  # TrainConfig(**...) raised TypeError
        raise DataError(f"{path}: expected a run's configuration (a JSON object), got {type(cfg_d).__name__}")
    try:
        cfg = TrainConfig.from_dict(cfg_d)
    except ConfigError as exc:  # unknown fields: named with the file they are in
        raise DataError(f"{path}: {exc}") from None
    return RunResult(run_dir, cfg, read_json(run_dir / "metrics.json", "run metrics"),
                     read_json(run_dir / "history.json", "run history"))


def finished_metrics(cfg: TrainConfig, advice: str = "delete that folder") -> dict | None:
    """``metrics.json`` of the finished run of exactly ``cfg`` in its folder (:func:`run_dir_for`), read without
    training; None when it has not finished. :class:`ConfigError` when the folder holds a finished run of another
    configuration, :class:`DataError` when it was trained on other data or features than ``cfg`` reads now
    (:func:`dan.checkpoint.check_recorded_inputs`): the checks :func:`train` makes before it reuses a run, for
    readers of finished runs (the ablation sweep, the summary chapter). ``advice`` ends the ConfigError."""
    run_dir = run_dir_for(cfg)
    if not (run_dir / "metrics.json").is_file():
        return None
    saved = read_json(run_dir / "config.json", "run config")
    if not (isinstance(saved, dict) and cfg.same_identity(saved)):
        changes = cfg.identity_changes(saved, where="its config.json")
        raise ConfigError(f"{run_dir} holds a finished run of another configuration than {cfg.run_name()} "
                          f"(profile {cfg.profile!r}{': ' + changes if changes else ''}); {advice}")
    check_recorded_inputs(run_dir, cfg)
    return read_json(run_dir / "metrics.json", "run metrics")


def main(argv: list[str] | None = None) -> int:
    from dan.cli import run_train_cli

    return run_train_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
