"""Training configuration: one dataclass, named presets (the paper's and one per profile), validation.

Papermill parameters and CLI flags map one-to-one onto :class:`TrainConfig` fields.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from dan.io import ConfigError, is_int

TASKS = ("vqa", "matching")
ATTENTIONS = ("dual", "visual", "textual", "none")
PROFILES = ("smoke", "default", "full", "real")
# "off", or a torch.compile mode; "reduce-overhead" adds CUDA graphs (fewer kernel launches per step on a GPU)
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
NEGATIVES = ("sampled", "hardest")
# the accepted values of every field that takes one of a few (validate() checks them; --help lists them)
CHOICES = {"task": TASKS, "attention": ATTENTIONS, "profile": PROFILES, "negatives": NEGATIVES,
           "optimizer": ("sgd", "adam"), "clip_mode": ("norm", "value"), "resident_features": ("auto", "yes", "no"),
           "amp": ("auto", "bf16", "off"), "compile": COMPILE_MODES}
# the fields naming a file, folder, split or device: strings, never empty
TEXT_FIELDS = ("captions_file", "caption_image_folder", "train_split", "val_split", "device")
PATH_FIELDS = ("data", "features", "out")  # folders, or None for the profile's default
# upper bounds of sizes: (field, largest value, why); larger ones failed in torch, not here
LIMITS = (("steps", 100, "each step adds attention layers of its own; the paper takes 2"),
          ("hidden_dim", 65536, "the LSTM's 4H x H weights alone would take 64 GiB"),
          ("embed_dim", 65536, "as hidden_dim"),
          ("threads", 1024, "torch starts that many CPU threads"))
# a run's seed is below 2**SEED_BITS: epoch seeds derive from it (seed * 100_003 + epoch) and must fit 64 bits
SEED_BITS = 32
# the fields that do not change a run's result (where it reads and writes, how fast it runs): not in identity()
NOT_IDENTITY = ("device", "threads", "resident_features", "eval_batch_size", "out", "data", "features", "compile")
MODEL_FIELDS = ("hidden_dim", "steps", "attention", "dropout", "embed_dim")  # the fields that shape a model
# (dan.models.build_model's keyword arguments, its MODEL_OPTIONS)
# the fields that only one task reads (dan.prepare, dan.step): the other task's run ignores them (check_ignored)
TASK_ONLY = {"vqa": ("train_split", "val_split", "num_answers", "soft_targets"),
             "matching": ("captions_file", "caption_image_folder", "margin", "negatives", "captions_per_image")}


def plain_numbers(config: object) -> None:
    """Replace NumPy scalars in a config dataclass's fields (and in its list fields) by the Python numbers they
    hold: ``steps=np.int64(3)`` from ``for k in np.arange(4)`` was refused as no integer, and cannot be written to
    JSON. A NumPy bool stays a bool, which an integer field still refuses."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, np.generic):
            setattr(config, f.name, value.item())
        elif isinstance(value, (list, tuple)) and any(isinstance(v, np.generic) for v in value):
            setattr(config, f.name, [v.item() if isinstance(v, np.generic) else v for v in value])


@dataclass
class TrainConfig:
    """Everything that defines one training run (data locations, model, optimisation, seed)."""

    task: str = "vqa"  # "vqa" (r-DAN) or "matching" (m-DAN)
    profile: str = "default"  # selects default data/feature/run folders (dan.io.study_paths)
    data: str | None = None  # data root (images/, vqa/, captions/); default: data/generated/<profile>, data/real
    features: str | None = None  # feature stores root; default: results/<profile>/features (of the data's draw)
    out: str | None = None  # run folder; default: results/<profile>/runs/<name> (of the data's draw)
    captions_file: str = "captions/dataset_synth.json"  # Karpathy JSON, relative to data
    caption_image_folder: str = "flickr30k-images"  # image folder for Karpathy entries without "filepath"
    train_split: str = "train2014"  # VQA question split (also the image folder) used for training
    val_split: str = "val2014"  # VQA split used for evaluation
    steps: int = 2  # K, attention steps
    attention: str = "dual"  # which sides attend: both (the paper), one, or neither (the ablation baselines)
    hidden_dim: int = 512  # H, every hidden size (LSTM per direction, attention, memory)
    embed_dim: int | None = None  # word embedding size; unset (None) = hidden_dim
    dropout: float = 0.5  # on regions, word embeddings and (r-DAN) m(K), in training only
    epochs: int = 60  # training epochs (a checkpoint after each)
    batch_size: int = 128  # questions (VQA) or image-caption pairs (matching) per step
    optimizer: str = "sgd"  # "sgd" (paper) or "adam"
    lr: float = 0.1  # learning rate
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4  # L2 penalty (SGD and Adam)
    lr_decay_epochs: list[int] = field(default_factory=lambda: [30])  # lr x lr_decay after these epochs
    lr_decay: float = 0.1  # factor of each lr decay
    grad_clip: float = 0.1  # 0 = off
    clip_mode: str = "norm"  # "norm" or "value" (the paper does not say which)
    num_answers: int = 2000  # C, top training answers
    soft_targets: bool = False  # soft VQA-score targets instead of the majority answer
    min_word_count: int = 1  # rarer training words become <unk>
    margin: float = 100.0  # m-DAN hinge margin (S is an unnormalised dot product)
    negatives: str = "sampled"  # "sampled" (paper quadruplets) or "hardest" (VSE++)
    captions_per_image: int = 5  # m-DAN: captions used per image
    seed: int = 0  # initialisation, batch order and sampled negatives
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    threads: int | None = None  # torch CPU threads: the count changes CPU sums in the last digits, so the notebooks fix
    # it, and a CPU run reproduces an interrupted one only when resumed with the same count (not part of identity())
    resident_features: str = "auto"  # "auto" (on GPU if it fits), "yes", "no"
    amp: str = "auto"  # training precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16", "off"
    compile: str = "off"  # torch.compile of the training step: "off", or a mode ("default", "reduce-overhead", ...)
    eval_batch_size: int = 512  # batch size of evaluation (not part of the identity: another size moves logits by
    # float rounding only, ~1e-8 on the CPU: an answer changes only where two logits lie that close)
    max_train: int | None = None  # use only the first N training questions/images (quick runs)

    def __post_init__(self) -> None:
        plain_numbers(self)

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` with the accepted values for any bad field, or naming a field the run would
        ignore (:func:`check_ignored`: the other task's, ``momentum`` without SGD); return self."""
        def one_of(name: str, value: object, allowed: tuple) -> None:
            if not isinstance(value, str) or value not in allowed:  # a NumPy array compared element-wise
                raise ConfigError(f"unknown {name} {value!r}; accepted: {', '.join(map(str, allowed))}")

        for name, allowed in CHOICES.items():
            one_of(name, getattr(self, name), allowed)
        for name in TEXT_FIELDS:  # -p device None (or a number) was accepted here and a TypeError in training
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        for name in PATH_FIELDS:  # "" was taken as unset: --out "$RUN" with RUN unset trained into the default folder
            value = getattr(self, name)
            if value is not None and not (isinstance(value, os.PathLike) or isinstance(value, str) and value.strip()):
                raise ConfigError(f"{name} must be a folder path or unset (None), got {value!r}")
        if not isinstance(self.soft_targets, bool):  # soft_targets="false" is a true string: soft targets ran
            raise ConfigError(f"soft_targets must be True or False, got {self.soft_targets!r}")
        if not is_int(self.steps) or self.steps < 0:
            raise ConfigError(f"steps (K) must be an integer >= 0, got {self.steps!r}")
        for name in ("hidden_dim", "epochs", "batch_size", "num_answers", "captions_per_image", "eval_batch_size"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:  # not int(...): "two" or 2.5 must not pass or crash
                raise ConfigError(f"{name} must be an integer > 0, got {value!r}")
        dropout = self.dropout
        if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1):
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")

        def number(name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
                (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
            if not ok:
                span = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
                raise ConfigError(f"{name} must be a finite number in {span}, got {value!r}")

        number("lr", 0, 100, low_open=True)  # above ~100 no optimiser here does anything but overflow
        number("momentum", 0, 1, high_open=True)
        number("weight_decay", 0, 1)
        number("lr_decay", 0, 1, low_open=True)
        number("grad_clip", 0, math.inf, high_open=True)  # 0 = off
        number("margin", 0, math.inf, low_open=True, high_open=True)
        epochs = self.lr_decay_epochs
        if not isinstance(epochs, (list, tuple)):  # lr_decay_epochs=30 was "'int' object is not iterable"
            raise ConfigError(f"lr_decay_epochs must be a list of epochs >= 1 (e.g. [30]), got {epochs!r}")
        if any(not is_int(e) or e < 1 for e in epochs):
            raise ConfigError(f"lr_decay_epochs must be epochs >= 1, got {list(epochs)!r}")
        if any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)):  # MultiStepLR decays twice at a repeat
            raise ConfigError(f"lr_decay_epochs must be increasing epochs (each decays the lr once), got "
                              f"{list(epochs)!r}")
        for name, low in (("seed", 0), ("min_word_count", 1)):
            if not is_int(getattr(self, name)) or getattr(self, name) < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        if self.seed >= 2**SEED_BITS:
            raise ConfigError(f"seed must be below 2**{SEED_BITS}, got {self.seed}")
        if self.task == "vqa" and self.train_split == self.val_split:  # validation accuracy would be training's
            raise ConfigError(f"val_split must differ from train_split (both {self.train_split!r})")
        for name in ("threads", "max_train", "embed_dim"):  # None = automatic / all / hidden_dim
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1 (or unset), got {value!r}")
        # sizes no machine can hold: a MemoryError or a torch overflow traceback once training started (K = 10**20
        # built attention layers for half a minute first)
        for name, limit, why in LIMITS:
            value = getattr(self, name)
            if value is not None and value > limit:
                raise ConfigError(f"{name} must be at most {limit} ({why}), got {value}")
        check_ignored(self)  # last: a bad value of a field is named as such first
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        return cls(**d)

    def model_options(self) -> dict:
        """The fields that shape the model, as keyword arguments of :func:`dan.models.build_model`:
        ``build_model(cfg.task, vocab_size, visual_dim, num_answers, **cfg.model_options())``
        (:meth:`dan.prepare.Prepared.build_model` fills in the sizes from the data)."""
        return {name: getattr(self, name) for name in MODEL_FIELDS}

    def run_name(self) -> str:
        return f"{self.task}-{self.attention}-K{self.steps}-s{self.seed}"

    def identity(self) -> dict:
        """The fields that define the result (a checkpoint resumes only under the same identity)."""
        d = self.to_dict()
        for k in NOT_IDENTITY:
            d.pop(k)
        return d

    def identity_changes(self, saved: object, where: str = "the run") -> str:
        """The fields in which ``saved`` (a run's ``config.json``, or the config a checkpoint holds) differs from
        this config's identity, as text for an error: ``lr 0.003 in the run, 0.01 now; steps 2 in the run, 3 now``
        (fields this version does not know are named as such); '' when ``saved`` is no object or no field
        differs."""
        if not isinstance(saved, dict):
            return ""
        theirs, mine = _saved_identity(saved), self.identity()
        parts = [f"{k} {theirs[k]!r} in {where}, {mine[k]!r} now" for k in mine if theirs[k] != mine[k]]
        parts += [f"{k} {theirs[k]!r} in {where}, unknown to this version of dan" for k in sorted(theirs)
                  if k not in mine]
        return "; ".join(parts[:5]) + ("; ..." if len(parts) > 5 else "")

    def same_identity(self, saved: dict) -> bool:
        """Whether ``saved`` (a run's ``config.json``) is this config's identity; fields added to
        :class:`TrainConfig` after it was written count as their defaults."""
        return _saved_identity(saved) == self.identity()


def _saved_identity(saved: dict) -> dict:
    """The identity a saved config (``config.json``, or a checkpoint's whole config) stands for: its identity
    fields over the defaults of the fields added to :class:`TrainConfig` after it was written."""
    return {**TrainConfig().identity(), **{k: v for k, v in saved.items() if k not in NOT_IDENTITY}}


# The paper's setting (PAPER.md, "one setting for both models").
PAPER = dict(hidden_dim=512, steps=2, attention="dual", dropout=0.5, epochs=60, batch_size=128, optimizer="sgd",
             lr=0.1, momentum=0.9, weight_decay=5e-4, lr_decay_epochs=[30], lr_decay=0.1, grad_clip=0.1,
             num_answers=2000, margin=100.0)

# CPU profiles shrink the model and the schedule; every shrink is listed in the book's deviations page. Their Adam
# runs without weight decay (as it always did: until 2026-11-27 Adam ignored weight_decay, which still read 5e-4
# and so was missing from the deviations; now Adam applies weight_decay and the profiles say 0).
PROFILE_OVERRIDES: dict[str, dict[str, dict]] = {
    "smoke": {"vqa": dict(hidden_dim=32, epochs=6, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0.0,
                          lr_decay_epochs=[], dropout=0.0, grad_clip=5.0, threads=1),
              "matching": dict(hidden_dim=32, epochs=6, batch_size=16, optimizer="adam", lr=3e-3, weight_decay=0.0,
                               lr_decay_epochs=[], dropout=0.0, grad_clip=5.0, margin=1.0, threads=1)},
    # default: sized so that the ablation sweep (7 settings x 2 models x 3 seeds) fits the 30-minute CPU budget
    # with two single-threaded runs side by side (measured: ~40 s per r-DAN run, ~30 s per m-DAN run)
    "default": {"vqa": dict(hidden_dim=64, epochs=8, batch_size=128, optimizer="adam", lr=2e-3, weight_decay=0.0,
                            lr_decay_epochs=[6], dropout=0.0, grad_clip=5.0, threads=1),
                "matching": dict(hidden_dim=64, epochs=8, batch_size=128, optimizer="adam", lr=2e-3, weight_decay=0.0,
                                 lr_decay_epochs=[6], dropout=0.0, grad_clip=5.0, margin=1.0, threads=1)},
    # full: the paper's sizes and optimiser; 8 epochs so that the whole full study (data, features, both models,
    # a one-seed ablation sweep of 14 runs) fits 10 minutes on one H100/H200 (benchmarks/device_session.sh).
    # Measured on an H100 (records/full_profile.json): 9.5 min in all, ~9 s per r-DAN epoch (training and validation).
    "full": {"vqa": dict(epochs=8, lr_decay_epochs=[6]), "matching": dict(epochs=8, lr_decay_epochs=[6])},
    # real: the paper's setting on data/real (data/download.py); m-DAN on Flickr30K's Karpathy split, as in the paper
    "real": {"vqa": {}, "matching": dict(captions_file="captions/dataset_flickr30k.json")},
}


def preset(profile: str = "default", task: str = "vqa", **overrides) -> TrainConfig:
    """The configuration of ``profile`` for ``task``: the paper's setting, shrunk for CPU profiles, then overrides."""
    if not isinstance(profile, str):  # -y profile: [smoke] was "unhashable type: 'list'"
        raise ConfigError(f"unknown profile {profile!r}; accepted: {', '.join(PROFILES)}, paper")
    if profile == "paper":  # the paper's setting on the real data: the real profile (m-DAN on Flickr30K)
        profile = "real"
    if profile in PROFILE_OVERRIDES:
        if not isinstance(task, str) or task not in PROFILE_OVERRIDES[profile]:
            raise ConfigError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
    else:
        raise ConfigError(f"unknown profile {profile!r}; accepted: {', '.join(PROFILES)}, paper")
    fields = {**preset_fields(profile, task), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig.from_dict({"task": task, "profile": profile, **fields}).validate()


# The notebooks' run parameters that take no None, with what each accepts: their default is a value and their
# comment gives None no meaning, but preset() drops a None override, so -p steps None trained the preset's K = 2
# and -p attention None (the no-attention baseline is the string "none") trained dual attention, both silently.
# The parameters whose default is None (epochs, hidden_dim, negatives, margin) keep "None: the profile's preset".
NOT_NONE = ("steps", "attention", "seed", "device")


def not_none_accepts(name: str) -> str:
    """What the :data:`NOT_NONE` parameter ``name`` accepts, in words, from the bounds :meth:`TrainConfig.validate`
    applies (:data:`LIMITS`, :data:`SEED_BITS`, :data:`ATTENTIONS`, :data:`PAPER`), so that the two cannot part."""
    if name == "steps":
        return f"an integer in [0, {dict((n, limit) for n, limit, _ in LIMITS)['steps']}] (K; the paper's " \
               f"{PAPER['steps']})"
    if name == "attention":
        return f"{', '.join(ATTENTIONS)} ('none', a string, is the baseline without attention)"
    if name == "seed":
        return f"an integer in [0, 2**{SEED_BITS})"
    if name == "device":
        return "'auto', 'cpu', 'cuda', 'cuda:1', ..."
    raise KeyError(name)


def check_not_none(**params: object) -> None:
    """:class:`ConfigError` naming the first of ``params`` (notebook parameters, by name) that is None and one of
    :data:`NOT_NONE`, with the values it accepts (:func:`not_none_accepts`)."""
    for name, value in params.items():
        if value is None and name in NOT_NONE:
            raise ConfigError(f"{name} must not be None (it has no preset meaning); accepted: "
                              f"{not_none_accepts(name)}")


def notebook_preset(profile: str, task: str, **params) -> TrainConfig:
    """:func:`preset` of a notebook's parameters (03_rdan, 04_mdan): None is the profile's preset only for the
    parameters that default to None; one of :data:`NOT_NONE` given None is a :class:`ConfigError`
    (:func:`check_not_none`) before any training, where :func:`preset` took it as unset."""
    check_not_none(**params)
    return preset(profile, task, **params)


def preset_fields(profile: str, task: str) -> dict:
    """The fields the preset of ``profile`` (one of :data:`PROFILES`) and ``task`` sets: the paper's setting, then
    the profile's shrinks; not validated (the others keep their dataclass defaults)."""
    return {**PAPER, **PROFILE_OVERRIDES[profile][task]}


def check_ignored(cfg: TrainConfig, given: Iterable[str] | None = None) -> None:
    """Raise :class:`ConfigError` when ``cfg`` sets a field its run would ignore: one that only the other task
    reads (:data:`TASK_ONLY`: ``negatives`` or ``margin`` in an r-DAN run, ``soft_targets`` in an m-DAN one, ...),
    or ``momentum`` beside an optimizer other than SGD, ``clip_mode`` without clipping (``grad_clip`` 0), or
    ``lr_decay`` without a decay epoch (``lr_decay_epochs`` empty). Such a run trained as if the field were
    unset, yet under a run folder of its own (:func:`dan.train.run_dir_for` names every field that differs from the
    preset).

    A field counts as set when it is in ``given`` (``python -m dan.train``: the flags given, whatever their
    values) or, with ``given`` None (:meth:`TrainConfig.validate`, for every entry point), when its value is
    neither its dataclass default nor the value the preset of ``cfg``'s own profile and task gives it: a config
    built by :func:`preset` or as ``TrainConfig(...)`` is never refused for what it did not set. The preset is
    that of ``cfg``'s task, not the other task's: the m-DAN presets of the CPU profiles take ``margin`` 1.0, the
    r-DAN ones keep the paper's 100, so an r-DAN run with ``margin`` 1.0 is refused (it would ignore the margin,
    and take a folder of its own). Call it on a config whose task, profile and optimizer are valid."""
    other = next(t for t in TASKS if t != cfg.task)
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)
                if f.name in (*TASK_ONLY[other], "momentum", "clip_mode", "lr_decay")}
    unset = {**defaults, **{k: v for k, v in preset_fields(cfg.profile, cfg.task).items() if k in defaults}}
    chosen = (set(given) if given is not None
              else {name for name in defaults if getattr(cfg, name) not in (defaults[name], unset[name])})
    wrong = [name for name in TASK_ONLY[other] if name in chosen]
    if wrong:
        one = len(wrong) == 1
        it, values = ("it" if one else "them"), ", ".join(f"{n} {getattr(cfg, n)!r}" for n in wrong)
        raise ConfigError(f"task {cfg.task!r} takes no {values}: {'it is' if one else 'they are'} for task {other!r} "
                          f"(a {cfg.task} run ignores {it}); leave {it} unset (default{'' if one else 's'} "
                          f"{', '.join(f'{n} {unset[n]!r}' for n in wrong)}) or set task {other!r}")
    if cfg.optimizer != "sgd" and "momentum" in chosen:
        raise ConfigError(f"momentum {cfg.momentum!r} is SGD's; the optimizer of this run is {cfg.optimizer!r}, "
                          f"which would ignore it: leave momentum unset (default {unset['momentum']!r}) or set "
                          f"optimizer 'sgd'")
    for name, idle, needs in (("clip_mode", not cfg.grad_clip, "grad_clip > 0"),
                              ("lr_decay", not cfg.lr_decay_epochs, "lr_decay_epochs")):
        if idle and name in chosen:
            raise ConfigError(f"{name} {getattr(cfg, name)!r} is ignored without {needs}; leave {name} unset "
                              f"(default {unset[name]!r}) or set {needs}")


# What the paper fixes beyond the preset's fields (PAPER.md): 512-d word embeddings, negatives drawn per pair
# (its quadruplets), hard answer targets. Compared by deviations(); not preset fields (embed_dim None follows
# hidden_dim, so the CPU profiles' smaller models keep their embeddings as small).
PAPER_ALSO = dict(embed_dim=512, negatives="sampled", soft_targets=False)


def deviations(cfg: TrainConfig) -> dict[str, tuple]:
    """Fields where ``cfg`` differs from the paper's setting: name -> (ours, paper). ``embed_dim`` counts as it
    runs (unset = ``hidden_dim``); ``negatives`` only for m-DAN and ``soft_targets`` only for r-DAN."""
    d = cfg.to_dict()
    out = {k: (d[k], v) for k, v in PAPER.items() if d[k] != v}
    ours = {"embed_dim": cfg.embed_dim or cfg.hidden_dim, "negatives": cfg.negatives, "soft_targets": cfg.soft_targets}
    applies = {"embed_dim": True, "negatives": cfg.task == "matching", "soft_targets": cfg.task == "vqa"}
    out.update({k: (ours[k], v) for k, v in PAPER_ALSO.items() if applies[k] and ours[k] != v})
    return out
