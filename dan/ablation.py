"""Ablation sweeps over the number of attention steps K and the attention type, with t-based confidence intervals.

Two axes, as in the paper's claims: K in ``steps`` with ``steps_attention`` (dual) attention, and the attention
type in ``attentions`` at K = ``attention_steps`` (2). The configuration shared by both axes (K = 2, dual) is
trained once. Every run goes through :func:`dan.train.train` into its default run folder (or under
``runs_root``), so finished runs are reused and an interrupted sweep resumes where it stopped.

``run_sweep`` trains ``workers`` runs side by side in separate processes (spawn context; each run uses the
preset's ``threads``, 1 in ``smoke`` and ``default``, else the CPU count divided by ``workers``) and returns one
row per run with its metrics flattened. Spawned workers import the script that started them, so a script calls
it under ``if __name__ == "__main__":`` (as any multiprocessing script must).
The tables and claim checks over its rows (``summarize``, ``ci_table``, ``paired_differences``, ``claim_check``:
mean and 95 % t intervals over seeds) live in :mod:`dan.claims` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dan.claims import ci_table, claim_check, paired_differences, summarize  # noqa: F401 (re-exported)
from dan.config import TASK_ONLY, TASKS, TrainConfig, preset
from dan.io import ConfigError, DanError
from dan.stats import betainc, family_t_note, mean_ci, t_cdf, t_quantile  # noqa: F401 (re-exported)
from dan.train import finished_metrics, run_dir_for, train

VQA_METRICS = ["overall", "yes/no", "number", "other", "single-hop", "multi-hop"]
RETRIEVAL_METRICS = [f"{d}_{k}" for d in ("i2t", "t2i") for k in ("r1", "r5", "r10", "medr")] + ["rsum"]
METRICS = {"vqa": VQA_METRICS, "matching": RETRIEVAL_METRICS}


@dataclass
class SweepSpec:
    """What to sweep. ``overrides`` go to :func:`dan.config.preset` for every run (e.g. ``epochs``); one that only
    one task reads (``margin``, ``soft_targets``: :data:`dan.config.TASK_ONLY`) goes to that task's runs only when
    the sweep has both tasks, and is refused (:func:`dan.config.check_ignored`) when the sweep has only the task
    that would ignore it."""

    tasks: list[str] = field(default_factory=lambda: ["vqa", "matching"])
    steps: list[int] = field(default_factory=lambda: [0, 1, 2, 3])  # K axis, with ``steps_attention``
    attentions: list[str] = field(default_factory=lambda: ["none", "visual", "textual", "dual"])  # at K=2
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    profile: str = "default"
    overrides: dict = field(default_factory=dict)
    workers: int = 2
    runs_root: str | None = None  # None: the profile's runs folder (dan.io.study_paths)
    steps_attention: str = "dual"
    attention_steps: int = 2

    def check_types(self) -> None:
        """:class:`ConfigError` naming the field when an axis is no list (``steps=3`` was "'int' object is not
        iterable"), holds None (which :func:`dan.config.preset` reads as the preset's value: ``seeds=[0, None]`` ran
        seed 0 twice, once under the name of another), or when ``overrides`` is no dict or ``runs_root`` no path."""
        if isinstance(self.tasks, str):
            self.tasks = [self.tasks]
        for name in ("tasks", "steps", "attentions", "seeds"):
            check_axis(name, getattr(self, name))
        for name in ("steps_attention", "attention_steps"):
            if getattr(self, name) is None:
                raise ConfigError(f"{name} must be set, got None")
        if not isinstance(self.overrides, dict):
            raise ConfigError(f"overrides must be a dict of TrainConfig fields, got {self.overrides!r}")
        # set per run by the sweep (as overrides: preset()'s TypeError, or with out every run in one folder)
        axes = {"task": "tasks", "steps": "steps", "attention": "attentions", "seed": "seeds", "profile": "profile",
                "out": "runs_root (the folder of all the runs' folders)"}
        if swept := [k for k in self.overrides if k in axes]:
            raise ConfigError(f"overrides cannot set {', '.join(swept)}: the sweep sets "
                              f"{'them' if len(swept) > 1 else 'it'} per run; give "
                              f"{', '.join(f'SweepSpec.{axes[k]}' for k in swept)} instead")
        root = self.runs_root
        if root is not None and not (isinstance(root, os.PathLike) or isinstance(root, str) and root.strip()):
            raise ConfigError(f"runs_root must be a folder path or unset (None), got {root!r}")

    def configs(self) -> list[TrainConfig]:
        """The distinct run configurations of the sweep (task, then K axis, then attention axis, then seed)."""
        self.check_types()
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"unknown task(s) {bad}; accepted: {', '.join(TASKS)}")
        if type(self.workers) is not int or self.workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {self.workers!r}")
        settings = [(k, self.steps_attention) for k in self.steps]  # NumPy ints: TrainConfig converts
        settings += [(self.attention_steps, a) for a in self.attentions]
        if not (len(self.tasks) and settings and len(self.seeds)):  # len: a NumPy array [0] is falsy, [0, 1] ambiguous
            raise ConfigError(f"the sweep has no run: tasks {list(self.tasks)}, steps {list(self.steps)} and attention "
                              f"types {list(self.attentions)} (one of the two at least), seeds {list(self.seeds)}")
        out: list[TrainConfig] = []
        seen: set[str] = set()
        for task in self.tasks:
            # a field only the other task reads, where the sweep also has that task, is for that task's runs
            other = [t for t in TASKS if t != task and t in self.tasks]
            own = {name: v for name, v in self.overrides.items() if not any(name in TASK_ONLY[t] for t in other)}
            for k, att in settings:
                for seed in self.seeds:
                    cfg = preset(self.profile, task, steps=k, attention=att, seed=seed, **own)
                    if self.runs_root is not None:
                        cfg.out = str(Path(self.runs_root) / cfg.run_name())
                    if cfg.run_name() not in seen:
                        seen.add(cfg.run_name())
                        out.append(cfg)
        return out

    def comparisons(self) -> int:
        """Comparisons behind one claim (its other levels, as :func:`claim_check` counts them) on the larger of the
        two axes, at least 1. The K axis also holds K = ``attention_steps`` when ``steps_attention`` is among the
        attention types, and the attention axis ``steps_attention`` when ``attention_steps`` is among the Ks."""
        self.check_types()
        steps = set(self.steps) | ({self.attention_steps} if self.steps_attention in self.attentions
                                                   else set())
        types = set(self.attentions) | ({self.steps_attention} if self.attention_steps in steps else set())
        return max(len(steps) - 1, len(types) - 1, 1)

    def _identities(self) -> list[str]:
        return sorted(json.dumps(c.identity(), sort_keys=True) for c in self.configs())

    def output_name(self, stem: str) -> str:
        """``<stem>.csv`` for the profile's own sweep (:class:`SweepSpec`'s axes with the profile's seeds, any
        workers: the tables the book and ``dan.record`` read), ``<stem>-<8 hex>.csv`` for any other (the ablation
        notebook run with ``-p epochs 1`` or fewer seeds), so another sweep's tables do not replace the profile's."""
        base = SweepSpec(profile=self.profile, seeds=sweep_defaults(self.profile)["seeds"])
        mine = self._identities()
        if mine == base._identities():
            return f"{stem}.csv"
        return f"{stem}-{hashlib.sha256('|'.join(mine).encode()).hexdigest()[:8]}.csv"


def check_axis(name: str, value) -> None:  # noqa: ANN001 - a sweep axis as given
    """:class:`ConfigError` naming ``name`` unless ``value`` is a list (tuple, NumPy array) without None."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ConfigError(f"{name} must be a list, got {value!r}")
    if any(v is None for v in value):
        raise ConfigError(f"{name} must not hold None (a sweep value the preset would replace), got {list(value)!r}")


def as_list(value, name: str = "value") -> list:  # noqa: ANN001 - a notebook parameter: a list, or one value
    """A notebook's list parameter ``name`` as a list: papermill's ``-p tasks vqa`` or ``-p seeds 0`` pass one
    value, not a list of one (``list("vqa")`` would be three letters); so is a NumPy scalar or None (which
    :func:`check_axis` then refuses). Anything else that is no list (tuple, NumPy array, range) is a
    :class:`ConfigError` naming ``name`` (``list(None)`` was a TypeError, a dict's keys were taken)."""
    if value is None or isinstance(value, (str, bytes, int, float, np.generic)):
        return [value]
    if not isinstance(value, (list, tuple, np.ndarray, range)):
        raise ConfigError(f"{name} must be a list or one value, got {value!r}")
    return list(value)


# Seeds and parallel runs of each profile's sweep. smoke: notebook CI. default: 2 single-threaded CPU runs side by
# side (the 30-minute CPU budget). full: one seed and 4 runs sharing one GPU, so that the whole full study fits
# its 10-minute GPU budget; its ablation intervals are therefore not computed (one seed). real: 3 seeds, 1 run.
SWEEP_DEFAULTS = {"smoke": {"seeds": [0, 1], "workers": 2}, "default": {"seeds": [0, 1, 2], "workers": 2},
                  "full": {"seeds": [0], "workers": 4}, "real": {"seeds": [0, 1, 2], "workers": 1}}


def sweep_defaults(profile: str) -> dict:
    """``{"seeds": [...], "workers": n}`` of ``profile``'s sweep (:data:`SWEEP_DEFAULTS`)."""
    if not isinstance(profile, str) or profile not in SWEEP_DEFAULTS:  # a list was "unhashable type: 'list'"
        raise ConfigError(f"unknown profile {profile!r}; accepted: {', '.join(SWEEP_DEFAULTS)}")
    d = SWEEP_DEFAULTS[profile]
    return {"seeds": list(d["seeds"]), "workers": d["workers"]}


def notebook_spec(profile: str, tasks, steps_list, attention_list, seeds=None, workers=None,  # noqa: ANN001
                  epochs=None) -> SweepSpec:  # noqa: ANN001
    """The ablation notebook's parameters as a :class:`SweepSpec`: each list parameter given as one value
    (papermill's ``-p seeds 0``, ``-p attention_list dual``) is a list of one (:func:`as_list`), ``seeds`` and
    ``workers`` left None are the profile's (:func:`sweep_defaults`), and ``epochs`` None is the preset's (0 is
    refused by the run's validation, not dropped). The notebook reads the lists back from the spec, so its tables,
    figures and counts follow what the sweep ran."""
    defaults = sweep_defaults(profile)
    axes = {"tasks": tasks, "steps_list": steps_list, "attention_list": attention_list,
            "seeds": defaults["seeds"] if seeds is None else seeds}
    for name, value in axes.items():  # named as the notebook's parameters, not SweepSpec's fields
        axes[name] = as_list(value, name)
        check_axis(name, axes[name])
    return SweepSpec(tasks=axes["tasks"], steps=axes["steps_list"], attentions=axes["attention_list"],
                     seeds=axes["seeds"], profile=profile,
                     workers=defaults["workers"] if workers is None else workers,
                     overrides={} if epochs is None else {"epochs": epochs})


def save_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV atomically (no index); returns the path."""
    from dan.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def flatten_metrics(task: str, metrics: dict) -> dict[str, float]:
    """The sweep's columns from a run's ``metrics.json`` (VQA accuracy in %; recalls in %; median rank)."""
    if task == "vqa":
        row = {c: metrics.get(c) for c in ("overall", "yes/no", "number", "other")}
        for fam in ("single-hop", "multi-hop"):
            g = (metrics.get("groups") or {}).get(fam)
            row[fam] = g.get("overall") if isinstance(g, dict) else g
        return row
    row = {f"{d}_{k}": metrics[d][k] for d in ("i2t", "t2i") for k in ("r1", "r5", "r10", "medr")}
    row["rsum"] = metrics["rsum"]
    return row


def _finished(cfg: TrainConfig) -> dict | None:
    """Metrics of a finished run of exactly ``cfg``; None if unfinished; ConfigError if another config is there,
    DataError if it was trained on other data or features than ``cfg`` reads now (:func:`dan.train.finished_metrics`,
    the checks :func:`dan.train.train` makes before it reuses a run)."""
    return finished_metrics(cfg, advice="delete it or set runs_root")


def _train_one(cfg_dict: dict) -> tuple[dict, float]:
    """Worker: train one run (no progress bar) and return (metrics, seconds)."""
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        result = train(TrainConfig.from_dict(cfg_dict), progress=False)
    finally:
        torch.set_num_threads(threads)  # in-process runs must not change the caller's thread count
    return result.metrics, time.perf_counter() - t0


def _exit_with_parent(parent: int) -> None:
    """Sweep worker initializer: end this worker as soon as ``parent`` (the process that started the sweep) is gone.

    A parent killed with -9 (``dan.study`` or a script running the sweep) cleans nothing up: its workers
    went on training their runs, beside the runs of a rerun that resumes them, then waited forever on the dead
    pool's queue, each holding its memory (~0.7 GB on the smoke profile). A worker ended here is a run killed
    mid-epoch: the rerun resumes it from its last checkpoint."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _cost(cfg: TrainConfig) -> float:
    """Rough relative cost, to start the longest runs first (shorter total time with parallel workers)."""
    return (1.3 if cfg.task == "vqa" else 1.0) * (1 + 0.25 * cfg.steps)


def _row(cfg: TrainConfig, metrics: dict, seconds: float, reused: bool) -> dict:
    """``run``: the name of the run's folder (with an override, e.g. ``epochs``, ``vqa-dual-K1-s0-<8 hex>``;
    ``cfg.run_name()`` is the preset run's folder, another configuration)."""
    return {"task": cfg.task, "steps": cfg.steps, "attention": cfg.attention, "seed": cfg.seed,
            "run": run_dir_for(cfg).name, "reused": reused, "seconds": round(seconds, 2),
            **flatten_metrics(cfg.task, metrics)}


def _run_parallel(todo: list[TrainConfig], workers: int, rows: dict[str, dict], bar: tqdm) -> None:
    """Train ``todo`` in ``workers`` spawned processes, filling ``rows``. On an error or an interrupt the runs not
    yet started are cancelled and the workers are ended before it reaches the caller (:func:`_stop_workers`): the
    runs they were training resume from their last checkpoint when the sweep is run again."""
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    share = max(1, (os.cpu_count() or 1) // workers)  # CPU threads per run when its config leaves them open
    try:
        pending = {pool.submit(_train_one, {**cfg.to_dict(), "threads": cfg.threads or share}): cfg for cfg in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                cfg = pending.pop(fut)
                name = run_dir_for(cfg).name  # the run's folder, as _row's run (run_name() is the preset's run)
                try:
                    metrics, secs = fut.result()
                except DanError as exc:
                    raise type(exc)(f"sweep run {name}: {exc}") from exc
                except BrokenProcessPool:
                    raise DanError(f"sweep run {name}: a worker process ended abruptly (killed, e.g. out of memory; "
                                   f"or {MAIN_GUARD})") from None
                except Exception as exc:
                    raise RuntimeError(f"sweep run {name} failed: {exc!r}") from exc
                rows[cfg.run_name()] = _row(cfg, metrics, secs, False)
                bar.set_postfix_str(name)
                bar.update()
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's runs not yet started and end its workers now (SIGTERM, then SIGKILL after 10 s), waiting
    until they are gone. ``shutdown(wait=False, cancel_futures=True)`` alone left them training: the runs in flight,
    and those already handed to the workers' queue (one more than the workers), went on in the background after
    a notebook's interrupted (or failed) sweep cell had returned, and rerunning the cell was refused ("another
    process is training into the run folder") until they had finished. A worker ended mid-epoch leaves its last
    checkpoint (written atomically); the run resumes from it, and its folder's lock ends with the process."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # terminate_workers() only from 3.14 on
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(OSError, ValueError):
            proc.terminate()
    for proc in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


MAIN_GUARD = ('a script that calls run_sweep with workers > 1 must call it under if __name__ == "__main__": '
              '(its spawned workers import the script)')


def run_sweep(spec: SweepSpec, progress: bool = True) -> pd.DataFrame:
    """Train (or reuse) every configuration of ``spec``; one row per run.

    Columns: task, steps, attention, seed, run, reused (finished before this call), seconds (training time of
    this call, 0 when reused), then the metrics of both tasks (:data:`METRICS`; NaN for the other task).
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # a spawned worker importing the script
        raise SystemExit(f"sweep worker: {MAIN_GUARD}")  # one line, not the sweep started again in every worker
    cfgs = spec.configs()
    rows: dict[str, dict] = {}
    todo = []
    for cfg in cfgs:
        done = _finished(cfg)
        if done is not None:
            rows[cfg.run_name()] = _row(cfg, done, 0.0, True)
        else:
            todo.append(cfg)
    todo.sort(key=_cost, reverse=True)
    bar = tqdm(total=len(cfgs), initial=len(cfgs) - len(todo), desc=f"sweep {spec.profile}", disable=not progress,
               dynamic_ncols=True)
    if spec.workers == 1 or len(todo) <= 1:
        for cfg in todo:
            bar.set_postfix_str(run_dir_for(cfg).name)  # the run's folder, as _row's run
            metrics, secs = _train_one(cfg.to_dict())
            rows[cfg.run_name()] = _row(cfg, metrics, secs, False)
            bar.update()
    else:
        _run_parallel(todo, spec.workers, rows, bar)
    bar.close()
    columns = ["task", "steps", "attention", "seed", "run", "reused", "seconds", *VQA_METRICS, *RETRIEVAL_METRICS]
    df = pd.DataFrame([rows[c.run_name()] for c in cfgs], columns=columns)
    return df.sort_values(["task", "steps", "attention", "seed"], kind="stable").reset_index(drop=True)


def shown(df: pd.DataFrame, which: str, spec: SweepSpec) -> bool:
    """Whether the ablation notebook has a table and a figure for axis ``which`` of ``df`` (one task's rows): the
    axis has runs, and for the attention axis at least one of them is of a type the sweep was asked for (its
    tables list those only; with ``attentions`` empty the K = 2 dual run alone is no attention ablation)."""
    rows = axis(df, which, spec)
    return bool(len(rows)) and (which == "steps" or bool(set(rows.attention) & set(spec.attentions)))


def axis(df: pd.DataFrame, which: str, spec: SweepSpec | None = None) -> pd.DataFrame:
    """The rows of one ablation axis: ``"steps"`` (dual attention, any K) or ``"attention"`` (K = 2, any type)."""
    spec = spec or SweepSpec()
    if which == "steps":
        return df[df.attention == spec.steps_attention]
    if which == "attention":
        return df[df.steps == spec.attention_steps]
    raise ConfigError(f"unknown axis {which!r}; accepted: steps, attention")
