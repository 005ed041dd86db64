"""Ablation sweeps: t quantiles and confidence intervals, claim checks, and a tiny sweep that resumes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dan import ablation
from dan.ablation import SweepSpec, mean_ci, run_sweep, summarize, t_quantile
from dan.config import preset
from dan.io import ConfigError, DanError


def t2_quantile(p: float) -> float:
    """Closed form of Student's t quantile with 2 degrees of freedom."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_matches_closed_forms(p: float) -> None:
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx(t2_quantile(p), rel=1e-9)
    assert t_quantile(1 - p, 2) == pytest.approx(-t2_quantile(p), rel=1e-9)
    # many degrees of freedom: the normal quantile; fewer: heavier tails
    assert t_quantile(p, 20000) == pytest.approx(statistics.NormalDist().inv_cdf(p), abs=1e-3)
    assert t_quantile(p, 3) > t_quantile(p, 10) > t_quantile(p, 100)


def test_t_quantile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="0 < p < 1"):
        t_quantile(1.0, 3)
    for df in (math.nan, math.inf, 0.0):  # NaN and inf used to give 4.5e-13 (df = NaN made every t_cdf NaN)
        with pytest.raises(ValueError, match="finite df > 0"):
            t_quantile(0.975, df)
    assert t_quantile(0.975, 0.5) == pytest.approx(-t_quantile(0.025, 0.5)) and t_quantile(0.975, 0.5) > 100


def test_t_quantile_stops_bracketing_when_the_cdf_never_reaches_p(monkeypatch) -> None:
    """The bracket doubled without a cap: a t_cdf that never reaches p (a bug, or float saturation) looped forever."""
    import dan.stats

    monkeypatch.setattr(dan.stats, "t_cdf", lambda t, df: 0.5)
    with pytest.raises(ValueError, match="beyond 1e300"):
        dan.stats.t_quantile(0.975, 3)


def test_mean_ci_hand_made() -> None:
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])  # s = 1, n = 3
    half = t2_quantile(0.975) / math.sqrt(3)
    assert (m, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    m, lo, hi = mean_ci([5.0, np.nan])  # NaN ignored; one value: no interval
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)


def test_mean_ci_clustered() -> None:
    # clusters {1, 2} and {6}: mean 3, residual sums -3 and 3, SE^2 = 2 * 18 / 9 = 4, t with 1 df
    m, lo, hi = mean_ci([1.0, 2.0, 6.0], clusters=["a", "a", "b"])
    assert (m, hi - m) == pytest.approx((3.0, math.tan(math.pi * 0.475) * 2.0))
    x = np.array([1.0, 4.0, 2.0, 8.0])
    assert mean_ci(x, clusters=[3, 1, 2, 0]) == pytest.approx(mean_ci(x))  # one value per cluster: plain t
    assert np.isnan(mean_ci(x, clusters=[7] * 4)[1])  # one cluster: no interval
    m, lo, _ = mean_ci([1.0, np.nan, 3.0, 5.0], clusters=[0, 0, 1, 1])  # the NaN's label goes with it
    assert m == 3.0 and 3.0 - lo == pytest.approx(t_quantile(0.975, 1) * math.sqrt(2 * 8) / 3)
    with pytest.raises(ValueError, match="2 cluster labels for 3 values"):
        mean_ci([1.0, 2.0, 3.0], clusters=[0, 1])


def test_summarize_and_table() -> None:
    df = pd.DataFrame({"steps": [1, 1, 1, 2], "seed": [0, 1, 2, 0], "acc": [1.0, 2.0, 3.0, 7.0],
                       "rsum": [np.nan] * 4})
    s = summarize(df, "steps", ["acc", "rsum"])
    assert list(s.metric) == ["acc", "acc"]  # all-NaN metric dropped
    one = s[s.steps == 1].iloc[0]
    assert one.n == 3 and one["mean"] == pytest.approx(2.0) and one["std"] == pytest.approx(1.0)
    assert one.ci == pytest.approx(t2_quantile(0.975) / math.sqrt(3))
    assert math.isnan(s[s.steps == 2].iloc[0].ci)
    table = ablation.ci_table(s, "steps")
    assert table.loc[1, "acc"] == f"2.0 ± {one.ci:.1f}" and table.loc[2, "acc"] == "7.0"
    ninety = summarize(df, "steps", ["acc"], level=0.9).iloc[0]  # the level is passed on: t(0.95, 2 df)
    assert ninety.ci == pytest.approx(t2_quantile(0.95) / math.sqrt(3))


def test_claim_check_reports_what_the_intervals_allow() -> None:
    rng = np.random.default_rng(0)
    rows = [{"steps": k, "seed": s, "acc": 50 + 10 * (k == 2) + 0.1 * rng.normal() + s}
            for k in (1, 2, 3) for s in range(3)]
    diffs, sentence = ablation.claim_check(pd.DataFrame(rows), "steps", 2, "acc", "K")
    assert (diffs.low > 0).all()
    assert "K = 2 has the highest mean" in sentence
    assert "at 95 % confidence over the 2 comparisons together it beats K = 1, K = 3" in sentence
    noisy = [{"steps": k, "seed": s, "acc": 50 + 0.1 * (k == 3) + 5 * rng.normal()} for k in (1, 2, 3)
             for s in range(3)]
    _, sentence = ablation.claim_check(pd.DataFrame(noisy), "steps", 2, "acc", "K")
    assert "cannot be told apart" in sentence
    _, sentence = ablation.claim_check(pd.DataFrame(noisy), "steps", 5, "acc", "K")
    assert "not part of this sweep" in sentence


def test_claim_check_holds_its_intervals_at_95_percent_together() -> None:
    # claimed K = 2 ahead of each of three others by 1.5, 2.0, 2.5 over seeds 0-2: each interval on its own
    # (t 4.30 at 2 dof) excludes 0, the three together (Bonferroni, t 7.65) do not
    rows = [{"steps": k, "seed": s, "acc": 50.0 + (1.5 + 0.5 * s if k == 2 else 0.0)} for k in (0, 1, 2, 3)
            for s in range(3)]
    df = pd.DataFrame(rows)
    alone = ablation.paired_differences(df, "steps", 2, "acc")
    together = ablation.paired_differences(df, "steps", 2, "acc", family=True)
    assert (alone.low > 0).all() and (together.low < 0).all()
    assert np.allclose(together.high - together.difference, ablation.t_quantile(1 - 0.025 / 3, 2) * 0.5 / 3 ** 0.5)
    diffs, sentence = ablation.claim_check(df, "steps", 2, "acc", "K")
    assert diffs.equals(together) and "cannot be told apart from K = 0, K = 1, K = 3" in sentence
    assert "beats" not in sentence


def test_claim_check_says_which_levels_beat_the_claimed_one() -> None:
    # K = 3 is 10 ahead of K = 2 on every seed, K = 1 is level with K = 2 up to seed noise; per level the three seeds
    # average 50.4 (K = 1), 50.4 (K = 2) and 60.4 (K = 3): the means, not the medians (50.2, 50.1, 60.1)
    noise = {1: [0.0, 0.2, 1.0], 2: [0.1, 0.0, 1.1], 3: [0.0, 0.1, 1.1]}
    rows = [{"steps": k, "seed": s, "acc": 50.0 + 10 * (k == 3) + noise[k][s]} for k in (1, 2, 3) for s in range(3)]
    diffs, sentence = ablation.claim_check(pd.DataFrame(rows), "steps", 2, "acc", "K", digits=2)
    assert sentence.startswith("K = 2 averages 50.40, below the highest mean, K = 3 (60.40); ")
    assert "K = 3 beats it at 95 % confidence over the 2 comparisons together" in sentence
    assert "it cannot be told apart from K = 1 " in sentence and "it beats" not in sentence
    assert diffs.set_index("steps").loc[3, "high"] < 0 < diffs.set_index("steps").loc[1, "high"]


def test_claim_check_of_identical_runs_tells_nothing_apart() -> None:
    # every level scores the same on every seed (e.g. K = 0, where all attention types are one model): the paired
    # differences are exactly 0 with a zero-width interval [0, 0], which is neither a win nor a loss
    rows = [{"attention": a, "seed": s, "acc": 40.0 + s} for a in ("dual", "none", "visual") for s in range(3)]
    diffs, sentence = ablation.claim_check(pd.DataFrame(rows), "attention", "dual", "acc")
    assert (diffs.low == 0).all() and (diffs.high == 0).all()
    assert sentence == ("attention = dual has the highest mean (41.0); it cannot be told apart from attention = none, "
                        "attention = visual (the interval of the paired difference includes 0).")
    rows = [{**r, "acc": r["acc"] + 0.01 * (r["attention"] == "none")} for r in rows]  # none ahead by 0.01
    _, sentence = ablation.claim_check(pd.DataFrame(rows), "attention", "dual", "acc")
    assert sentence.startswith("attention = dual averages 41.0, level (at this precision) with the highest mean, "
                               "attention = none; ")


def test_claim_check_with_two_seeds_has_an_interval() -> None:
    # two paired seeds give an interval (t with 1 degree of freedom): differences 10.0 and 10.2, mean 10.1, SE 0.1,
    # Bonferroni over 2 comparisons: t(1 - 0.025 / 2, 1) = tan(0.4875 pi) = 25.45, so low = 10.1 - 2.55 > 0
    rows = [{"steps": k, "seed": s, "acc": 50.0 + (10.0 + 0.2 * s if k == 2 else 0.0)} for k in (1, 2, 3)
            for s in range(2)]
    diffs, sentence = ablation.claim_check(pd.DataFrame(rows), "steps", 2, "acc", "K")
    assert diffs.low.tolist() == pytest.approx([10.1 - 0.1 * math.tan(0.4875 * math.pi)] * 2)
    assert "it beats K = 1, K = 3" in sentence and "fewer than two paired seeds" not in sentence


def test_claim_check_with_one_seed_gives_no_verdict() -> None:
    rows = [{"steps": k, "seed": 0, "acc": 50.0 + k} for k in (1, 2, 3)]
    diffs, sentence = ablation.claim_check(pd.DataFrame(rows), "steps", 2, "acc", "K")
    assert diffs.low.isna().all() and "cannot be told apart" not in sentence
    assert "against K = 1, K = 3 there are fewer than two paired seeds, so no interval and no verdict" in sentence


def test_configs_are_distinct() -> None:
    spec = SweepSpec(profile="smoke")
    names = [c.run_name() for c in spec.configs()]
    assert len(names) == len(set(names)) == 2 * 7 * 3  # K=2 dual is on both axes, trained once
    with pytest.raises(ConfigError, match="unknown task"):
        SweepSpec(tasks=["caption"]).configs()


def test_tiny_sweep_runs_in_parallel_and_resumes(smoke_data, smoke_features, tmp_path) -> None:
    over = {"data": str(smoke_data), "features": str(smoke_features), "device": "cpu", "epochs": 1}
    spec = SweepSpec(tasks=["vqa"], steps=[1], attentions=["dual"], seeds=[0], profile="smoke", overrides=over,
                     runs_root=str(tmp_path / "runs"), workers=2)
    df = run_sweep(spec, progress=False)  # K=1 dual and K=2 dual, trained side by side
    assert list(df.run) == ["vqa-dual-K1-s0", "vqa-dual-K2-s0"]
    assert not df.reused.any() and (df.seconds > 0).all()
    assert df[ablation.VQA_METRICS].notna().all().all() and df[ablation.RETRIEVAL_METRICS].isna().all().all()
    assert df.overall.between(0, 100).all()
    stamps = {r: (tmp_path / "runs" / r / "checkpoint.pt").stat().st_mtime_ns for r in df.run}

    # a process-pool run gives the same result as an in-process run of the same configuration
    single = SweepSpec(**{**spec.__dict__, "steps": [1], "attentions": [], "workers": 1,
                          "runs_root": str(tmp_path / "single")})
    assert run_sweep(single, progress=False).overall.tolist() == df.overall.tolist()[:1]

    # resume: the finished runs are read back, only the new K=3 run trains
    spec.steps, spec.workers = [1, 3], 1
    again = run_sweep(spec, progress=False)
    assert list(again.run) == ["vqa-dual-K1-s0", "vqa-dual-K2-s0", "vqa-dual-K3-s0"]
    assert again.reused.tolist() == [True, True, False]
    assert again.overall.tolist()[:2] == df.overall.tolist()
    assert {r: (tmp_path / "runs" / r / "checkpoint.pt").stat().st_mtime_ns for r in df.run} == stamps

    spec.overrides = {**over, "epochs": 2}  # same folders, another configuration: refused, nothing trained
    with pytest.raises(ConfigError, match="vqa-dual-K1-s0 holds a finished run of another configuration"):
        run_sweep(spec, progress=False)


def test_a_failing_worker_names_its_run(tmp_path) -> None:
    over = {"data": str(tmp_path / "missing"), "features": str(tmp_path / "missing"), "device": "cpu"}
    spec = SweepSpec(tasks=["vqa"], steps=[1], attentions=["dual"], seeds=[0], profile="smoke", overrides=over,
                     runs_root=str(tmp_path / "runs"), workers=2)
    with pytest.raises(DanError, match=r"sweep run vqa-dual-K[12]-s0: .*missing"):
        run_sweep(spec, progress=False)
    assert not list((tmp_path / "runs").glob("*/metrics.json"))


def test_sweep_defaults_per_profile() -> None:
    assert ablation.sweep_defaults("default") == {"seeds": [0, 1, 2], "workers": 2}
    assert ablation.sweep_defaults("full")["seeds"] == [0]
    d = ablation.sweep_defaults("smoke")
    d["seeds"].append(9)  # a copy: the table is not changed through it
    assert ablation.sweep_defaults("smoke")["seeds"] == [0, 1]
    with pytest.raises(ConfigError, match=r"unknown profile 'huge'; accepted: smoke, default, full, real"):
        ablation.sweep_defaults("huge")


def test_the_family_t_note_gives_the_bonferroni_quantile_beside_the_ordinary_one():
    from dan.ablation import family_t_note, t_quantile

    assert family_t_note(3) == "t = 7.65 instead of 4.30 for 3 comparisons over 3 seeds"
    assert f"{t_quantile(1 - 0.05 / 4, 4):.2f} instead of {t_quantile(0.975, 4):.2f} for 2 comparisons" in \
        family_t_note(5, comparisons=2)
    assert family_t_note(1) == "with one seed there is no interval to widen"


def test_as_list_takes_one_value_as_a_list_of_one() -> None:
    assert ablation.as_list("vqa") == ["vqa"] and ablation.as_list(0) == [0] and ablation.as_list(2.5) == [2.5]
    assert ablation.as_list(["vqa", "matching"]) == ["vqa", "matching"] and ablation.as_list((1, 2)) == [1, 2]
    spec = SweepSpec(tasks=ablation.as_list("vqa"), steps=ablation.as_list(3), attentions=[], seeds=ablation.as_list(0),
                     profile="smoke")
    assert [(c.task, c.steps, c.seed) for c in spec.configs()] == [("vqa", 3, 0)]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("steps", [1.5], r"steps \(K\) must be an integer >= 0, got 1\.5"),  # was K = 1 (int(1.5)), silently
    ("steps", ["two"], r"steps \(K\) must be an integer >= 0, got 'two'"),  # was a bare ValueError from int()
    ("seeds", [0.7], r"seed must be an integer >= 0, got 0\.7"),  # was seed 0, silently
    ("workers", "2", r"workers must be an integer >= 1, got '2'"),  # was a TypeError from '2' < 1
])
def test_sweep_refuses_values_that_are_not_whole_numbers_by_name(field, value, message) -> None:
    kw = {"tasks": ["vqa"], "steps": [1], "attentions": [], "seeds": [0], "profile": "smoke", field: value}
    with pytest.raises(ConfigError, match=message):
        SweepSpec(**kw).configs()
    spec = SweepSpec(tasks=["vqa"], steps=[np.int64(3)], attentions=[], seeds=[np.int64(1)], profile="smoke")
    assert [(c.steps, type(c.steps), c.seed, type(c.seed)) for c in spec.configs()] == [(3, int, 1, int)]


@pytest.mark.parametrize(("field", "value", "message"), [
    # found by fuzzing: each was a TypeError ("'int' object is not iterable", "argument after ** must be a mapping",
    # pathlib's), or None ran as the preset's value: seeds [0, None] trained seed 0 once, reported as two seeds
    ("steps", 3, r"steps must be a list, got 3"),
    ("seeds", None, r"seeds must be a list, got None"),
    ("tasks", {"vqa": 1}, r"tasks must be a list, got \{'vqa': 1\}"),
    ("seeds", [0, None], r"seeds must not hold None \(a sweep value the preset would replace\), got \[0, None\]"),
    ("attentions", [None], r"attentions must not hold None"),
    ("steps_attention", None, r"steps_attention must be set, got None"),
    ("overrides", ["epochs", 1], r"overrides must be a dict of TrainConfig fields, got \['epochs', 1\]"),
    ("runs_root", 3, r"runs_root must be a folder path or unset \(None\), got 3"),
    ("runs_root", "", r"runs_root must be a folder path or unset \(None\), got ''"),
])
def test_sweep_fields_of_the_wrong_type_are_refused_by_name(field, value, message) -> None:
    kw = {"tasks": ["vqa"], "steps": [1], "attentions": [], "seeds": [0], "profile": "smoke", field: value}
    with pytest.raises(ConfigError, match=message):
        SweepSpec(**kw).configs()
    with pytest.raises(ConfigError, match=message):
        SweepSpec(**kw).comparisons()


@pytest.mark.parametrize(("param", "value", "message"), [
    ("steps_list", None, r"steps_list must not hold None"),  # list(None): a TypeError
    ("seeds", np.int64(1), None),  # a NumPy scalar is one value, as an int is (list() of it was a TypeError)
    ("tasks", {"vqa": 1}, r"tasks must be a list or one value, got \{'vqa': 1\}"),  # its keys were taken
    ("attention_list", Path("dual"), r"attention_list must be a list or one value, got PosixPath\('dual'\)"),
    ("profile", ["smoke"], r"unknown profile \['smoke'\]; accepted: smoke"),  # "unhashable type: 'list'"
])
def test_the_ablation_notebooks_parameters_are_refused_by_their_own_names(param, value, message) -> None:
    kw = dict(profile="smoke", tasks=["vqa"], steps_list=[1], attention_list=["dual"], seeds=None, workers=None)
    kw[param] = value
    if message is None:
        assert [c.seed for c in ablation.notebook_spec(**kw).configs()] == [1, 1]
        return
    with pytest.raises(ConfigError, match=message):
        ablation.notebook_spec(**kw)


def test_paired_differences_pair_by_seed_not_by_row_order() -> None:
    # reference K = 2 over seeds 0, 1, 2; K = 1 has seeds 2 and 0 only, listed in that order
    df = pd.DataFrame({"steps": [2, 2, 2, 1, 1], "seed": [0, 1, 2, 2, 0], "acc": [10.0, 20.0, 30.0, 27.0, 9.0]})
    row = ablation.paired_differences(df, "steps", 2, "acc").iloc[0]
    # pairs: seed 0 -> 10 - 9 = 1, seed 2 -> 30 - 27 = 3: mean 2, s = sqrt(2), SE = 1, t(0.975, 1 df) = tan(0.475 pi)
    assert (row.steps, row.n, row.difference) == (1, 2, pytest.approx(2.0))
    assert (row.low, row.high) == pytest.approx((2.0 - math.tan(math.pi * 0.475), 2.0 + math.tan(math.pi * 0.475)))


def test_axis_selects_the_rows_of_each_ablation() -> None:
    df = pd.DataFrame({"steps": [0, 1, 2, 3, 2, 2, 1], "attention": ["dual"] * 4 + ["none", "visual", "none"]})
    assert ablation.axis(df, "steps").steps.tolist() == [0, 1, 2, 3]
    assert ablation.axis(df, "attention").attention.tolist() == ["dual", "none", "visual"]
    spec = SweepSpec(steps_attention="none", attention_steps=1)
    assert ablation.axis(df, "steps", spec).steps.tolist() == [2, 1]
    assert ablation.axis(df, "attention", spec).attention.tolist() == ["dual", "none"]
    with pytest.raises(ConfigError, match="unknown axis"):
        ablation.axis(df, "seeds")


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # (state, ppid, ...) after the command name
                kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sweep_workers_end_when_the_sweep_process_is_killed(smoke_data, smoke_features, tmp_path) -> None:
    """kill -9 of the process running a sweep (dan.study, a notebook's kernel) must not leave its workers behind:
    they used to finish their runs beside the rerun's and then wait forever on the dead pool's queue (~0.7 GB
    each)."""
    runs = tmp_path / "runs"
    code = ("import sys\nfrom dan.ablation import SweepSpec, run_sweep\n"
            f"over = dict(data={str(smoke_data)!r}, features={str(smoke_features)!r}, device='cpu', epochs=40)\n"
            "run_sweep(SweepSpec(tasks=['vqa'], steps=[1], attentions=['dual'], seeds=[0], profile='smoke', "
            f"overrides=over, runs_root={str(runs)!r}, workers=2), progress=False)\n")
    log = tmp_path / "stderr"
    workers: list[int] = []
    with open(log, "wb") as fh:  # a file, not a pipe: the workers inherit it, and a pipe would stay open with them
        proc = subprocess.Popen([sys.executable, "-c", code], stderr=fh,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if all((runs / r / "config.json").is_file() for r in ("vqa-dual-K1-s0", "vqa-dual-K2-s0")):
                break  # both workers are training
            time.sleep(0.05)
        workers = [p for p in _children(proc.pid)
                   if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL and len(workers) == 2, log.read_text()[-2000:]
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), "sweep workers outlived the killed sweep process"
        assert not list(runs.glob("*/metrics.json")), "a worker finished its run after the sweep was killed"
    finally:
        for p in workers:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_interrupted_sweep_leaves_no_worker_training(smoke_data, smoke_features, tmp_path, monkeypatch) -> None:
    """A notebook's sweep cell interrupted (or failed) while its workers train: the cell returned at once but the
    workers went on with the runs in flight and the one already queued to them, so rerunning the cell was refused
    ("another process is training into the run folder") until they had finished. When run_sweep raises, no worker
    of it runs any more and every run folder's lock is free."""
    from dan.train import run_lock

    runs = tmp_path / "runs"
    over = {"data": str(smoke_data), "features": str(smoke_features), "device": "cpu", "epochs": 40}
    spec = SweepSpec(tasks=["vqa"], steps=[1, 3], attentions=["dual"], seeds=[0], profile="smoke", overrides=over,
                     runs_root=str(runs), workers=2)  # 3 runs on 2 workers: one waits in the workers' queue
    before = set(_children(os.getpid()))

    def interrupted(pending, return_when):  # noqa: ANN001, ARG001 - concurrent.futures.wait's
        deadline = time.time() + 120
        while time.time() < deadline and len(list(runs.glob("*/config.json"))) < 2:
            time.sleep(0.05)  # both workers are training (config.json is written under the run's lock)
        raise KeyboardInterrupt

    monkeypatch.setattr(ablation, "wait", interrupted)
    workers = []
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(spec, progress=False)
        workers = [p for p in set(_children(os.getpid())) - before
                   if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
        assert not [p for p in workers if _alive(p)], "sweep workers still run after the sweep raised"
        assert len(list(runs.glob("*/config.json"))) >= 2
        for run_dir in runs.iterdir():
            with run_lock(run_dir):  # DanError "another process is training into the run folder" while one does
                pass
        time.sleep(1.0)
        assert not list(runs.glob("*/metrics.json")) and len(list(runs.iterdir())) <= 3
    finally:
        for p in workers:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)


def test_a_finished_run_is_not_reused_by_the_sweep_on_other_data(smoke_data, smoke_features, tmp_path) -> None:
    """``dan.train`` refuses to reuse a finished run trained on other data; the sweep read such runs back as they
    were, so a sweep over regenerated or edited data reported the old data's results as this data's."""
    import shutil

    data = tmp_path / "data"
    for rel in ("vqa", "captions"):
        shutil.copytree(smoke_data / rel, data / rel)
    over = {"data": str(data), "features": str(smoke_features), "device": "cpu", "epochs": 1}
    spec = SweepSpec(tasks=["vqa"], steps=[2], attentions=[], seeds=[0], profile="smoke", overrides=over,
                     runs_root=str(tmp_path / "runs"), workers=1)
    assert not run_sweep(spec, progress=False).reused.any()
    assert run_sweep(spec, progress=False).reused.all()  # the same data: reused
    questions = next((data / "vqa").glob("*val2014_questions.json"))
    questions.write_text(questions.read_text().replace("?", " ?", 1))  # one question edited
    with pytest.raises(DanError, match=r"vqa-dual-K2-s0 was trained on other data: data file .*val2014_questions"):
        run_sweep(spec, progress=False)


def test_notebook_spec_takes_each_list_parameter_given_alone_as_a_list_of_one() -> None:
    spec = ablation.notebook_spec("smoke", "vqa", 1, "none", seeds=0)
    assert (spec.tasks, spec.steps, spec.attentions, spec.seeds) == (["vqa"], [1], ["none"], [0])
    assert (spec.workers, spec.overrides) == (2, {})  # the smoke sweep's workers; epochs None: the preset's
    default = ablation.notebook_spec("smoke", ["vqa", "matching"], [0, 1, 2, 3], ["none", "dual"])
    assert default.seeds == [0, 1] and default.steps == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match=r"epochs must be an integer > 0, got 0"):  # was dropped (falsy): 6 epochs
        ablation.notebook_spec("smoke", "vqa", 1, [], seeds=0, epochs=0).configs()


def _fake_sweep(spec: SweepSpec, progress: bool = True) -> pd.DataFrame:
    """run_sweep's frame for ``spec`` with made-up metrics, nothing trained."""
    rng = np.random.default_rng(0)
    rows = [{"task": c.task, "steps": c.steps, "attention": c.attention, "seed": c.seed, "run": c.run_name(),
             "reused": True, "seconds": 0.0, **{m: float(rng.uniform(20, 80)) for m in ablation.METRICS[c.task]}}
            for c in spec.configs()]
    return pd.DataFrame(rows, columns=["task", "steps", "attention", "seed", "run", "reused", "seconds",
                                       *ablation.VQA_METRICS, *ablation.RETRIEVAL_METRICS])


def run_notebook_code(name: str, params: dict, namespace: dict | None = None, until=None) -> dict:  # noqa: ANN001
    """Execute the code cells of ``notebooks/<name>`` as papermill would with ``params`` injected after the
    parameters cell (no kernel; figures on Agg); returns the namespace. ``until``: a callable of no argument; the
    cells stop after the first one at whose end it is true."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / name).read_text())
    ns = {} if namespace is None else namespace
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        exec(compile("".join(cell["source"]), name, "exec"), ns)  # noqa: S102
        plt.close("all")  # a kernel shows and drops each cell's figures; here they would pile up
        if "parameters" in cell["metadata"].get("tags", []):
            ns.update(params)
        if until is not None and until():
            break
    return ns


@pytest.mark.parametrize("params", [
    {"tasks": "vqa", "seeds": 0, "steps_list": 1, "attention_list": ["none", "dual"]},  # was: int has no len()
    {"tasks": "vqa", "seeds": [0, 1], "steps_list": [1, 2], "attention_list": "none"},  # was: letters of "none"
])
def test_the_ablation_notebook_takes_list_parameters_given_as_one_value(params, monkeypatch, tmp_path) -> None:
    """papermill's -p seeds 0 or -p attention_list none pass one value, not a list: the notebook used len(seeds)
    (TypeError) and iterated attention_list (the letters of "none": an empty table, then a crash in the figure)."""
    from dan import notebook

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    monkeypatch.setattr(ablation, "run_sweep", _fake_sweep)
    ns = run_notebook_code("05_ablations.ipynb", {"profile": "smoke", **params})
    attentions = ablation.as_list(params["attention_list"])
    assert ns["spec"].attentions == attentions and ns["spec"].seeds == ablation.as_list(params["seeds"])
    assert list(ns["vqa_a"].attention.unique()) and set(ns["summaries"][-1].attention) >= set(attentions)
    written = tmp_path / "results" / "smoke" / ns["spec"].output_name("ablation_summary")
    assert written.is_file() and written.name != "ablation_summary.csv"  # not the profile's sweep: its own name


@pytest.mark.parametrize(("seeds", "runs", "per_setting"), [(0, "2 distinct runs", "1 seed"),
                                                            ([0, 1], "4 distinct runs", "2 seeds")])
def test_the_ablation_page_glues_its_counts_in_their_number_and_prints_no_finding_twice(
        seeds, runs, per_setting, monkeypatch, tmp_path, capsys) -> None:
    """With one seed the page read "1 seeds per setting"; and the findings cell printed the six sentences that the
    list under it shows again through glue."""
    import myst_nb

    from dan import notebook

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display=True: glued.__setitem__(key, value))
    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    monkeypatch.setattr(ablation, "run_sweep", _fake_sweep)
    run_notebook_code("05_ablations.ipynb", {"profile": "smoke", "tasks": "vqa", "seeds": seeds, "steps_list": [1, 2],
                                             "attention_list": []})
    assert glued["abl_runs"] == runs and glued["abl_seeds"] == per_setting
    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "05_ablations.ipynb").read_text())
    prose = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "{glue:text}`abl_seeds` per setting" in prose and "seeds per setting" not in prose
    out = capsys.readouterr().out
    sentence = glued["abl_vqa_overall_steps"]
    assert sentence and sentence not in out  # glued for the list, not printed as well


def test_claim_check_of_the_only_level_on_an_axis_says_so() -> None:
    df = pd.DataFrame({"attention": ["dual", "dual"], "seed": [0, 1], "acc": [50.0, 52.0]})
    diffs, sentence = ablation.claim_check(df, "attention", "dual", "acc")  # was: AttributeError (no column "low")
    assert diffs.empty and list(diffs.columns) == ["attention", "n", "difference", "low", "high"]
    assert sentence == "attention = dual is the only attention of this sweep, so there is nothing to compare it with."


@pytest.mark.parametrize("params", [
    {"tasks": "vqa", "steps_list": [1, 2, 3], "attention_list": ["dual"]},  # one attention type: claim_check crashed
    {"tasks": "vqa", "steps_list": [1], "attention_list": ["none"]},  # neither K = 2 nor dual: pd.concat([]) crashed
])
def test_the_ablation_findings_take_sweeps_without_a_comparison_of_a_claim(params, monkeypatch, tmp_path) -> None:
    from dan import notebook

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    monkeypatch.setattr(ablation, "run_sweep", _fake_sweep)
    ns = run_notebook_code("05_ablations.ipynb", {"profile": "smoke", "seeds": [0, 1], **params})
    assert "tables" in ns  # the findings cell ran to its end


@pytest.mark.parametrize(("steps", "attentions", "expected"), [
    ([0, 1, 2, 3], ["none", "visual", "textual", "dual"], 3),  # the default sweep
    ([1, 3], ["none", "dual"], 2),  # K = 2 dual is on the K axis too: K = 2 against 1 and 3 (was counted as 1)
    ([1, 2], ["none"], 1),
    ([0, 1, 2, 3], ["dual"], 3),
])
def test_the_family_note_counts_the_comparisons_the_findings_make(steps, attentions, expected, monkeypatch,
                                                                   tmp_path) -> None:
    from dan import notebook

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    monkeypatch.setattr(ablation, "run_sweep", _fake_sweep)
    ns = run_notebook_code("05_ablations.ipynb", {"profile": "smoke", "tasks": "vqa", "seeds": [0, 1],
                                                  "steps_list": steps, "attention_list": attentions})
    made = max(len(t) // len(set(t.metric)) for t in ns["tables"])  # per claim: its rows of one metric
    assert ns["comparisons"] == made == expected
    assert SweepSpec(tasks=["vqa"], steps=steps, attentions=attentions, profile="smoke").comparisons() == expected


@pytest.mark.parametrize("params", [
    {"tasks": "vqa", "steps_list": [0, 1, 2, 3], "attention_list": []},  # K axis only: the attention figure crashed
    {"tasks": "matching", "steps_list": [0, 1], "attention_list": []},  # no run at K = 2: KeyError 'mean'
    {"tasks": "vqa", "steps_list": [], "attention_list": ["none"]},  # attention axis without dual: KeyError 'mean'
])
def test_the_ablation_notebook_takes_a_sweep_of_one_axis(params, monkeypatch, tmp_path) -> None:
    from dan import notebook

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    monkeypatch.setattr(ablation, "run_sweep", _fake_sweep)
    ns = run_notebook_code("05_ablations.ipynb", {"profile": "smoke", "seeds": [0, 1], **params})
    shown = {(s.task.iloc[0], s.axis.iloc[0]) for s in ns["summaries"]}
    task = params["tasks"]
    assert shown == {(task, "steps")} if params["steps_list"] else shown == {(task, "attention")}


def test_a_sweep_without_runs_is_refused_by_name() -> None:
    for kw in ({"steps": [], "attentions": []}, {"tasks": []}, {"seeds": []}):  # was a KeyError in the notebook
        with pytest.raises(ConfigError, match="the sweep has no run"):
            SweepSpec(**{"tasks": ["vqa"], "steps": [1], "attentions": [], "seeds": [0], "profile": "smoke",
                         **kw}).configs()


def test_a_sweep_takes_numpy_arrays_as_axes() -> None:
    """check_axis accepts NumPy arrays, yet the no-run check took their truth value: seeds np.array([0]) was refused
    as "the sweep has no run" and np.arange(2) (or tasks as an array) was NumPy's ambiguous-truth ValueError."""
    spec = SweepSpec(tasks=np.array(["vqa", "matching"]), steps=np.arange(1, 2), attentions=[], seeds=np.array([0]),
                     profile="smoke")
    assert [c.run_name() for c in spec.configs()] == ["vqa-dual-K1-s0", "matching-dual-K1-s0"]
    assert len(SweepSpec(tasks=["vqa"], steps=[1], attentions=[], seeds=np.arange(2), profile="smoke").configs()) == 2
    with pytest.raises(ConfigError, match="the sweep has no run"):
        SweepSpec(tasks=["vqa"], steps=[1], attentions=[], seeds=np.array([], dtype=int), profile="smoke").configs()

def test_another_sweeps_tables_get_their_own_file_names() -> None:
    """The ablation notebook wrote ablation_runs.csv / ablation_summary.csv whatever sweep its parameters gave, so
    ``-p epochs 1`` (or fewer seeds) replaced the profile's tables, which dan.record collects into the full-profile
    record. The profile's own sweep keeps the plain names (in any axis order, any number of workers)."""
    from dan.ablation import notebook_spec

    axes = (["vqa", "matching"], [0, 1, 2, 3], ["none", "visual", "textual", "dual"])
    for profile in ("smoke", "default"):
        assert notebook_spec(profile, *axes).output_name("ablation_summary") == "ablation_summary.csv"
    same = notebook_spec("default", ["matching", "vqa"], [3, 2, 1, 0], ["dual", "none", "visual", "textual"],
                         workers=1)
    assert same.output_name("ablation_runs") == "ablation_runs.csv"
    others = [notebook_spec("default", *axes, epochs=1), notebook_spec("default", *axes, seeds=[0]),
              notebook_spec("default", ["vqa"], *axes[1:]), notebook_spec("default", axes[0], [1, 2], axes[2]),
              notebook_spec("smoke", *axes, seeds=[0, 1, 2])]
    names = [s.output_name("ablation_summary") for s in others]
    assert all(re.fullmatch(r"ablation_summary-[0-9a-f]{8}\.csv", n) for n in names) and len(set(names)) == 5
    assert notebook_spec("default", *axes, epochs=1).output_name("ablation_summary") == names[0]  # stable


def test_flatten_metrics_puts_each_metric_in_its_own_column() -> None:
    """A run's metrics.json as the sweep's row: the answer types, each family's overall accuracy (a family's
    entry is a table of its own, or a bare number), and for matching each recall, median rank and rsum."""
    vqa = {"overall": 50.0, "yes/no": 70.0, "number": 30.0, "other": 40.0, "n": 99,
           "groups": {"single-hop": {"overall": 55.0, "n": 60, "yes/no": 1.0}, "multi-hop": 41.0}}
    assert ablation.flatten_metrics("vqa", vqa) == {"overall": 50.0, "yes/no": 70.0, "number": 30.0, "other": 40.0,
                                                    "single-hop": 55.0, "multi-hop": 41.0}
    assert ablation.flatten_metrics("vqa", {"overall": 1.0})["single-hop"] is None  # no families: empty
    matching = {"i2t": {"r1": 1.0, "r5": 2.0, "r10": 3.0, "medr": 4.0}, "t2i": {"r1": 5.0, "r5": 6.0, "r10": 7.0,
                                                                               "medr": 8.0}, "rsum": 24.0}
    row = ablation.flatten_metrics("matching", matching)
    assert row == {"i2t_r1": 1.0, "i2t_r5": 2.0, "i2t_r10": 3.0, "i2t_medr": 4.0, "t2i_r1": 5.0, "t2i_r5": 6.0,
                   "t2i_r10": 7.0, "t2i_medr": 8.0, "rsum": 24.0}
    assert list(row) == ablation.RETRIEVAL_METRICS


def test_the_attention_axis_runs_at_the_k_it_is_given() -> None:
    """``attention_steps`` (default 2) is the K of the attention axis and ``steps_attention`` (default dual) the
    attention of the K axis: a sweep that sets them trains those runs, not the defaults'."""
    spec = SweepSpec(tasks=["vqa"], steps=[1], attentions=["visual", "textual"], seeds=[0], profile="smoke",
                     attention_steps=3, steps_attention="visual")
    assert [c.run_name() for c in spec.configs()] == ["vqa-visual-K1-s0", "vqa-visual-K3-s0", "vqa-textual-K3-s0"]


def test_an_override_only_one_task_reads_goes_to_that_tasks_runs_in_a_sweep_of_both() -> None:
    """margin (m-DAN) and soft_targets (r-DAN) over both tasks: each run gets the one its task reads, and the preset's
    value of the other; a sweep of the one task that would ignore the override refuses it."""
    spec = SweepSpec(steps=[1], attentions=[], seeds=[0], profile="smoke",
                     overrides={"margin": 0.35, "soft_targets": False, "epochs": 1})
    runs = {c.task: c for c in spec.configs()}
    vqa, matching = preset("smoke", "vqa"), preset("smoke", "matching")
    assert (runs["matching"].margin, runs["matching"].soft_targets) == (0.35, matching.soft_targets)
    assert (runs["vqa"].soft_targets, runs["vqa"].margin) == (False, vqa.margin)
    assert runs["vqa"].epochs == runs["matching"].epochs == 1  # a field both read goes to both
    with pytest.raises(ConfigError, match=r"task 'vqa' takes no margin 0\.35: it is for task 'matching'"):
        SweepSpec(tasks=["vqa"], steps=[1], attentions=[], seeds=[0], profile="smoke",
                  overrides={"margin": 0.35}).configs()


@pytest.mark.parametrize("overrides, named", [({"steps": 3}, "steps: .* give SweepSpec.steps instead"),
                                              ({"seed": 1, "task": "vqa"}, "seed, task: .* SweepSpec.seeds, "
                                                                           "SweepSpec.tasks instead"),
                                              ({"out": "/tmp/one"}, "out: .* SweepSpec.runs_root")])
def test_overrides_of_what_the_sweep_sets_per_run_are_refused_by_name(overrides, named) -> None:
    """A swept field given as an override was preset()'s TypeError ("multiple values"); ``out`` put every run into
    one folder."""
    with pytest.raises(ConfigError, match=rf"^overrides cannot set {named}"):
        SweepSpec(profile="smoke", overrides=overrides).configs()


def test_the_run_column_names_the_folder_each_run_is_in(monkeypatch, tmp_path) -> None:
    """A sweep with an override (the ablation notebook's ``-p epochs 2``) trains each run in a folder of its own,
    ``vqa-dual-K1-s0-<8 hex>`` (:func:`dan.train.run_dir_for`); the table's ``run`` named ``vqa-dual-K1-s0``, the
    preset's run: another configuration, whose folder the reader then opened."""
    from dan.train import run_dir_for

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(ablation, "_finished", lambda cfg: {"overall": 50.0})  # every run finished: nothing trains
    spec = ablation.notebook_spec("smoke", "vqa", 1, "dual", seeds=0, workers=1, epochs=2)
    df = run_sweep(spec, progress=False)
    folders = [run_dir_for(c).name for c in spec.configs()]
    assert all(re.fullmatch(r"vqa-dual-K[12]-s0-[0-9a-f]{8}", f) for f in folders), folders
    assert sorted(df.run) == sorted(folders)
    spec.runs_root = str(tmp_path / "runs")  # folders named by the sweep: the run's name
    assert sorted(run_sweep(spec, progress=False).run) == ["vqa-dual-K1-s0", "vqa-dual-K2-s0"]


def test_the_sweep_bar_names_the_folder_each_run_is_in(monkeypatch, tmp_path) -> None:
    """With an override (05_ablations.ipynb -p epochs 2) the sweep's bar showed each run as vqa-dual-K1-s0, the
    preset run's name, while it trained in vqa-dual-K1-s0-<8 hex> (as the table's run column now says)."""
    from dan.train import run_dir_for

    shown = []

    class Bar:
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            pass

        def set_postfix_str(self, text: str) -> None:
            shown.append(text)

        def update(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(ablation, "tqdm", Bar)
    monkeypatch.setattr(ablation, "_finished", lambda cfg: None)  # nothing finished: every run "trains"
    monkeypatch.setattr(ablation, "_train_one", lambda cfg_dict: ({"overall": 50.0}, 0.0))
    spec = ablation.notebook_spec("smoke", "vqa", 1, "dual", seeds=0, workers=1, epochs=2)
    df = run_sweep(spec)
    folders = sorted(run_dir_for(c).name for c in spec.configs())
    assert all(re.fullmatch(r"vqa-dual-K[12]-s0-[0-9a-f]{8}", f) for f in folders), folders
    assert sorted(shown) == folders == sorted(df.run)
