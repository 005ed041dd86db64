"""Settings a run would ignore (:func:`dan.config.check_ignored`, called by ``TrainConfig.validate``): the other
task's fields, ``momentum`` beside Adam, ``clip_mode`` without clipping and ``lr_decay`` without decay epochs are
refused at every entry point (``TrainConfig(...)``, ``preset``, ``dan.train.train``), not only by
``python -m dan.train``; what a preset, a profile, a notebook or the dataclass defaults set is never refused.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from dan.ablation import SweepSpec
from dan.config import PROFILES, TASK_ONLY, TASKS, TrainConfig, check_ignored, preset
from dan.io import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# (fields, message): each was ignored by the run, yet gave it a run folder of its own (dan.train.run_dir_for)
IGNORED = [
    (dict(task="vqa", negatives="hardest"), r"task 'vqa' takes no negatives 'hardest': it is for task 'matching' "
                                            r"\(a vqa run ignores it\); leave it unset \(default negatives 'sampled'\) "
                                            r"or set task 'matching'"),
    (dict(task="vqa", margin=5.0, captions_per_image=2),
     r"task 'vqa' takes no margin 5\.0, captions_per_image 2: they are for task 'matching' \(a vqa run ignores "
     r"them\); leave them unset \(defaults margin 100\.0, captions_per_image 5\) or set task 'matching'"),
    # margin 1.0 is the m-DAN preset's on the CPU profiles, not r-DAN's: it would still be ignored
    (dict(task="vqa", profile="smoke", margin=1.0), r"task 'vqa' takes no margin 1\.0: .*\(default margin 100\.0\)"),
    (dict(task="vqa", profile="real", captions_file="captions/dataset_flickr30k.json"),
     r"task 'vqa' takes no captions_file 'captions/dataset_flickr30k\.json'"),
    (dict(task="vqa", caption_image_folder="imgs"), r"task 'vqa' takes no caption_image_folder 'imgs'"),
    (dict(task="matching", soft_targets=True), r"task 'matching' takes no soft_targets True: it is for task 'vqa' "
                                               r"\(a matching run ignores it\); leave it unset \(default "
                                               r"soft_targets False\) or set task 'vqa'"),
    (dict(task="matching", val_split="test2015"), r"task 'matching' takes no val_split 'test2015'"),
    (dict(task="matching", train_split="val2014", num_answers=3000),
     r"task 'matching' takes no train_split 'val2014', num_answers 3000: they are for task 'vqa'"),
    (dict(optimizer="adam", momentum=0.5), r"momentum 0\.5 is SGD's; the optimizer of this run is 'adam', which "
                                           r"would ignore it: leave momentum unset \(default 0\.9\) or set optimizer "
                                           r"'sgd'"),
    (dict(task="matching", profile="smoke", momentum=0.0), r"momentum 0\.0 is SGD's; the optimizer of this run is "
                                                           r"'adam'"),  # the smoke preset's optimizer
    (dict(grad_clip=0.0, clip_mode="value"), r"^clip_mode 'value' is ignored without grad_clip > 0; leave clip_mode "
                                             r"unset \(default 'norm'\) or set grad_clip > 0$"),
    (dict(lr_decay_epochs=[], lr_decay=0.5), r"^lr_decay 0\.5 is ignored without lr_decay_epochs; leave lr_decay "
                                             r"unset \(default 0\.1\) or set lr_decay_epochs$"),
]


@pytest.mark.parametrize("fields, message", IGNORED)
def test_a_setting_the_run_would_ignore_is_refused_by_validate(fields, message):
    """Only the CLI refused these: a notebook or script building the config trained as if they were unset. With a
    profile, the config is the preset's (which sets the optimizer: Adam on smoke), changed or given overrides."""
    kwargs = dict(fields)
    if "profile" in kwargs:
        profile, task = kwargs.pop("profile"), kwargs.pop("task")
        cfg = dataclasses.replace(preset(profile, task), **kwargs)
        with pytest.raises(ConfigError, match=message):
            preset(profile, task, **kwargs)
    else:
        cfg = TrainConfig(**kwargs)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_train_refuses_an_ignored_setting_before_it_writes(tmp_path):
    from dan.train import train

    cfg = dataclasses.replace(preset("smoke", "vqa"), out=str(tmp_path / "run"), negatives="hardest")
    with pytest.raises(ConfigError, match=r"task 'vqa' takes no negatives 'hardest'"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_bad_value_is_named_as_such_before_the_task_it_belongs_to():
    with pytest.raises(ConfigError, match=r"margin must be a finite number in \(0, inf\), got -1\.0"):
        TrainConfig(task="vqa", margin=-1.0).validate()
    with pytest.raises(ConfigError, match=r"unknown negatives 'semi-hard'"):
        TrainConfig(task="vqa", negatives="semi-hard").validate()


@pytest.mark.parametrize("fields", [
    dict(task="matching", negatives="hardest", margin=0.2, captions_per_image=3, captions_file="c.json"),
    dict(task="vqa", soft_targets=True, num_answers=3000, train_split="val2014", val_split="test2015"),
    dict(task="vqa", margin=100.0, negatives="sampled"),  # the other task's fields at their defaults
    dict(task="matching", profile="smoke", margin=1.0),  # the m-DAN preset's margin on its own task
    dict(optimizer="sgd", momentum=0.5), dict(optimizer="adam", momentum=0.9), dict(optimizer="adam"),
    dict(clip_mode="value"), dict(grad_clip=0.0), dict(lr_decay=0.5), dict(lr_decay_epochs=[]),
])
def test_a_setting_the_run_reads_or_leaves_at_its_default_is_accepted(fields):
    cfg = TrainConfig(**fields)
    assert cfg.validate() is cfg


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("profile", [*PROFILES, "paper"])
def test_every_preset_and_the_dataclass_defaults_of_every_profile_are_accepted(profile, task):
    """A field set by the preset, the profile or the dataclass default never counts as set by the user: the m-DAN
    presets' margin 1.0 and Flickr30K captions, the CPU profiles' Adam beside the paper's momentum 0.9."""
    cfg = preset(profile, task)
    assert cfg.validate() is cfg
    plain = TrainConfig(task=task, profile=cfg.profile)
    assert plain.validate() is plain
    swapped = dataclasses.replace(cfg, optimizer="sgd" if cfg.optimizer == "adam" else "adam")
    assert swapped.validate() is swapped  # the preset's momentum beside either optimizer


def _notebook_configs(name: str, profile: str) -> list[TrainConfig]:
    """The configs notebook ``name`` builds with its own parameters and ``profile``: its parameters cell, then each
    statement of its code cells that calls ``preset``, ``notebook_preset``, ``notebook_spec`` or ``analysed_configs``
    (with the imports), run as the notebook runs them; every TrainConfig they leave (a sweep spec's runs too)."""
    nb = json.loads((ROOT / "notebooks" / name).read_text())
    ns: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if "parameters" in cell["metadata"].get("tags", []):
            exec(compile(source, name, "exec"), ns)  # noqa: S102
            ns["profile"] = profile
            continue
        for node in ast.parse(source).body:
            calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None)
                     for n in ast.walk(node) if isinstance(n, ast.Call)}
            if isinstance(node, (ast.Import, ast.ImportFrom)) or calls & {"preset", "notebook_preset", "notebook_spec",
                                                                          "analysed_configs"}:
                exec(compile(ast.Module([node], []), name, "exec"), ns)  # noqa: S102
    found = []
    for value in ns.values():
        values = value if isinstance(value, tuple) else (value,)
        found += [v for v in values if isinstance(v, TrainConfig)]
        found += [c for v in values if isinstance(v, SweepSpec) for c in v.configs()]
    return found


@pytest.mark.parametrize("profile", PROFILES)
def test_the_notebooks_configs_are_accepted(profile):
    """03_rdan, 04_mdan, the ablation sweep of 05 and the two runs 06 analyses, built from each notebook's own
    parameters for every profile, pass validate (``preset`` validates each): none sets a field its run ignores."""
    built = {name: _notebook_configs(name, profile) for name in ("03_rdan.ipynb", "04_mdan.ipynb",
                                                                  "05_ablations.ipynb", "06_attention.ipynb")}
    assert [c.task for c in built["03_rdan.ipynb"]] == ["vqa"] and [c.task for c in built["04_mdan.ipynb"]] == [
        "matching"]
    assert {c.task for c in built["05_ablations.ipynb"]} == {"vqa", "matching"}
    assert sorted(c.task for c in built["06_attention.ipynb"]) == ["matching", "vqa"]
    for cfg in (c for configs in built.values() for c in configs):
        assert cfg.profile == profile and cfg.validate() is cfg


@pytest.mark.parametrize("task", TASKS)
def test_a_flag_given_for_the_other_task_is_refused_even_at_its_default(task):
    """``python -m dan.train`` passes the flags it was given: ``--task vqa --margin 100`` is refused though 100 is
    the default, as the CLI always did; validate alone (no ``given``) cannot tell it from an unset margin."""
    other = next(t for t in TASKS if t != task)
    cfg = preset("smoke", task)
    check_ignored(cfg, given=TASK_ONLY[task])  # the run's own fields
    for name in TASK_ONLY[other]:
        with pytest.raises(ConfigError, match=re.escape(f"task '{task}' takes no {name} {getattr(cfg, name)!r}: it "
                                                        f"is for task '{other}'")):
            check_ignored(cfg, given=[name])
    with pytest.raises(ConfigError, match=r"momentum 0\.9 is SGD's; the optimizer of this run is 'adam'"):
        check_ignored(cfg, given=["momentum"])
    check_ignored(preset("full", task), given=["momentum"])  # SGD reads it


def test_what_a_not_none_parameter_accepts_is_what_validate_accepts(monkeypatch):
    """check_not_none's "accepted: ..." for steps and seed came from literals ("[0, 100]", "2**32") beside the
    bounds validate() applies (LIMITS, the seed's): now derived from them, so a changed bound changes both."""
    from dan import config, notebook

    said = {name: config.not_none_accepts(name) for name in config.NOT_NONE}
    assert said == {"steps": "an integer in [0, 100] (K; the paper's 2)",
                    "attention": "dual, visual, textual, none ('none', a string, is the baseline without attention)",
                    "seed": "an integer in [0, 2**32)", "device": "'auto', 'cpu', 'cuda', 'cuda:1', ..."}
    with pytest.raises(ConfigError, match=r"^seed must not be None \(it has no preset meaning\); accepted: an integer "
                                          r"in \[0, 2\*\*32\)$"):
        config.check_not_none(steps=2, seed=None)
    monkeypatch.setattr(config, "LIMITS", tuple((n, 7 if n == "steps" else limit, why)
                                                for n, limit, why in config.LIMITS))
    monkeypatch.setattr(config, "SEED_BITS", 8)
    monkeypatch.setitem(config.PAPER, "steps", 3)
    for name, accepted in [("steps", r"an integer in \[0, 7\] \(K; the paper's 3\)"),
                           ("seed", r"an integer in \[0, 2\*\*8\)")]:
        with pytest.raises(ConfigError, match=rf"accepted: {accepted}$"):
            config.check_not_none(**{name: None})
    base = preset("smoke", "vqa")
    with pytest.raises(ConfigError, match=r"steps must be at most 7 "):
        dataclasses.replace(base, steps=8).validate()
    with pytest.raises(ConfigError, match=r"seed must be below 2\*\*8, got 256"):
        dataclasses.replace(base, seed=256).validate()
    dataclasses.replace(base, steps=7, seed=255).validate()
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*8\), got 256"):
        notebook.setup(256)
