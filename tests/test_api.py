"""What a researcher's own script relies on beyond ``dan.train``: the package's documented building blocks
(models from a config, batches from the encoded splits, feature stores in a DataLoader, evaluation of a chosen
subset), each used as the README and the docstrings describe it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dan.config import MODEL_FIELDS
from dan.models import MODEL_OPTIONS
from dan.prepare import prepare

CPU = torch.device("cpu")


def test_a_config_builds_its_model(make_cfg, tmp_path) -> None:
    """``prep.build_model(cfg)``: the model ``dan.train`` would train for any K / attention / hidden size, without
    copying the mapping of config fields onto ``build_model``'s arguments."""
    assert set(MODEL_FIELDS) == set(MODEL_OPTIONS)
    for task in ("vqa", "matching"):
        cfg = make_cfg(task, tmp_path / task, steps=3, attention="visual", hidden_dim=24, embed_dim=16)
        assert cfg.model_options() == dict(hidden_dim=24, steps=3, attention="visual", dropout=cfg.dropout,
                                           embed_dim=16)
        prep = prepare(cfg, CPU)
        model = prep.build_model(cfg)
        assert model.config == {"vocab_size": len(prep.vocab), "visual_dim": prep.bank.dim,
                                **({"num_answers": len(prep.answers)} if task == "vqa" else {}),
                                **cfg.model_options()}


def test_a_finished_run_rebuilds_the_model_it_trained(vqa_run, make_cfg) -> None:
    from dan.evaluate import load_trained_run

    cfg = make_cfg("vqa", vqa_run.run_dir)  # the reference run's config
    assert load_trained_run(vqa_run.run_dir).model.config == prepare(cfg, CPU).build_model(cfg).config


def test_train_returns_the_config_it_was_given(make_cfg, vqa_run) -> None:
    """``train(cfg).config`` is ``cfg``, data and feature folders included (it used to be the run's identity read
    back from config.json, so ``prepare(result.config)`` looked for the profile's default data instead)."""
    from dan.train import load_result, train

    cfg = make_cfg("vqa", vqa_run.run_dir)  # finished: reused
    result = train(cfg, progress=False)
    assert result.config == cfg and result.config.data == cfg.data and result.config.features == cfg.features
    assert prepare(result.config, CPU).build_model(result.config).config["vocab_size"] > 2
    assert load_result(vqa_run.run_dir).config.identity() == cfg.identity()  # on its own: the identity only


def test_a_missing_data_root_says_how_to_make_it(make_cfg, vqa_run, tmp_path, monkeypatch) -> None:
    """No data at the profile's default root (a script that forgot data=...): the error names the command that
    generates it, not the four VQA file names it looked for."""
    import dataclasses

    import dan.prepare
    from dan.evaluate import evaluate_run
    from dan.io import DataError, study_paths

    gone = tmp_path / "nothing"
    paths = dataclasses.replace(study_paths("smoke"), data=gone)
    monkeypatch.setattr(dan.prepare, "study_paths", lambda profile: paths)
    for task in ("vqa", "matching"):
        cfg = make_cfg(task, tmp_path / task, data=None)
        with pytest.raises(DataError, match=r"no data set at .*nothing .*python -m dan\.data generate --profile smoke"):
            prepare(cfg, CPU)
    with pytest.raises(DataError, match=r"no data set at .*elsewhere .*generate --profile smoke --out .*elsewhere"):
        evaluate_run(vqa_run.run_dir, "val", data=tmp_path / "elsewhere", device="cpu")


def test_a_batch_from_the_encoded_splits(make_cfg, tmp_path) -> None:
    """``prep.train.batch(idx, bank)``: a step's inputs in one call, as ``dan.train`` reads them, for a loop of one's
    own (it had to copy the fetch / trim / targets lines of the private training loop)."""
    import numpy as np

    from dan.io import DataError
    from dan.losses import matching_loss, vqa_loss

    cfg = make_cfg("vqa", tmp_path / "vqa", steps=3)
    prep = prepare(cfg, CPU)
    idx = np.array([5, 0, 7])
    regions, tokens, lengths, targets = prep.train.batch(idx, prep.bank)
    assert regions.shape == (3, prep.bank.num_regions, prep.bank.dim) and regions.dtype == torch.float32
    assert tokens.shape == (3, int(prep.train.lengths[idx].max()))
    assert lengths.tolist() == prep.train.lengths[idx].tolist() and targets.tolist() == prep.train.targets[idx].tolist()
    first = prep.bank.stores[cfg.train_split].gather([prep.train.rows[0]])[0]
    assert torch.equal(regions[1], torch.from_numpy(first).float())
    on_meta = prep.train.batch(idx, prep.bank, "meta")  # every tensor on the device asked for, lengths on the CPU
    assert [t.device.type for t in on_meta] == ["meta", "meta", "cpu", "meta"]  # (the bank is on the CPU)
    out = prep.build_model(cfg)(regions, tokens, lengths)
    assert out.visual_attention.shape == (3, 3, prep.bank.num_regions)
    vqa_loss(out.logits, targets).backward()

    cfg = make_cfg("matching", tmp_path / "matching")
    prep = prepare(cfg, CPU)
    per = prep.train.per_image
    regions, tokens, lengths = prep.train.batch(idx, prep.bank)  # first captions
    assert tokens[0, : lengths[0]].tolist() == prep.train.tokens[5 * per, : lengths[0]].tolist()
    regions, tokens, lengths = prep.train.batch(idx, prep.bank, captions=idx * per + 2)
    assert lengths.tolist() == prep.train.lengths[idx * per + 2].tolist()
    assert [t.device.type for t in prep.train.batch(idx, prep.bank, "meta")] == ["meta", "meta", "cpu"]
    S = prep.build_model(cfg)(regions, tokens, lengths).similarity
    assert S.shape == (3, 3)
    matching_loss(S, margin=cfg.margin).backward()
    with pytest.raises(DataError, match="one caption row per image, of that image"):
        prep.train.batch(idx, prep.bank, captions=idx)  # image 5's captions are rows 5 * per ...


def test_a_store_in_a_dataloader_with_workers(smoke_features) -> None:
    """The store docstring's DataLoader recipe works with workers; ``store[i]`` with a position instead of an id
    (what ``DataLoader(store)`` asks for) and a features root opened as a store say what to do instead."""
    import numpy as np
    from torch.utils.data import DataLoader

    from dan.io import DataError
    from dan.store import FeatureStore

    store = FeatureStore(smoke_features / "val2014")
    loader = DataLoader(range(len(store)), batch_size=10, num_workers=2, collate_fn=store.gather)
    rows = np.concatenate(list(loader))
    assert rows.shape == (len(store), store.num_regions, store.dim) and rows.dtype == np.float16
    assert np.array_equal(rows[3], store[int(store.ids[3])])
    assert 0 not in store.ids
    with pytest.raises(DataError, match=r"takes an image id \(store\.ids: .*not a row position.*store\.gather"):
        next(iter(DataLoader(store, batch_size=4)))
    with pytest.raises(DataError, match=r"is a features root, not a store: .*train2014, .*val2014"):
        FeatureStore(smoke_features)


def test_evaluate_a_chosen_subset_of_questions(vqa_run, matching_run, tmp_path, capsys) -> None:
    """``evaluate_run(..., question_ids=...)`` / ``--questions FILE``: the run's own answers and scores on those
    questions only, into a results file of their own (the whole split's file is left alone)."""
    import csv
    import json

    from dan.evaluate import evaluate_run, main
    from dan.io import ConfigError, DataError

    with open(vqa_run.run_dir / "predictions.csv", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["answer_type"] == "number"]
    ids = [int(r["question_id"]) for r in rows][::-1]
    result = evaluate_run(vqa_run.run_dir, "val", question_ids=ids, device="cpu")
    assert result["questions"] == len(ids) and result["metrics"]["n"] == len(ids)
    assert result["metrics"]["number"] == pytest.approx(100 * sum(float(r["score"]) for r in rows) / len(rows))
    assert result["metrics"]["yes/no"] is None and result["metrics"]["other"] is None
    path = Path(result["results_file"])
    assert "_subset-" in path.name and path.parent == vqa_run.run_dir
    answers = {a["question_id"]: a["answer"] for a in json.loads(path.read_text(encoding="utf-8"))}
    assert answers == {int(r["question_id"]): r["predicted"] for r in rows}
    path.unlink()  # the run folder is shared by the session's tests
    (tmp_path / "ids.txt").write_text("\n".join(map(str, ids[:3])) + "\n", encoding="utf-8")
    out = tmp_path / "three.json"
    argv = [str(vqa_run.run_dir), "--split", "val2014", "--questions", str(tmp_path / "ids.txt"), "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == 3 and len(json.loads(out.read_text())) == 3
    with pytest.raises(DataError, match=r"question ids not in split 'val2014' .*: 12345"):
        evaluate_run(vqa_run.run_dir, "val", question_ids=[ids[0], 12345], device="cpu")
    with pytest.raises(ConfigError, match="matching run"):
        evaluate_run(matching_run.run_dir, "test", question_ids=[1], device="cpu")


def test_train_help_says_what_every_flag_means(capsys) -> None:
    """``python -m dan.train --help`` gave only the flags' names: not what --attention or --negatives accept, nor
    what --steps or --margin are. Every flag now has its field's comment and, where it has a few, its values."""
    import argparse
    import dataclasses
    import re

    from dan.cli import add_dataclass_args
    from dan.config import CHOICES, TrainConfig
    from dan.train import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for phrase in ("(one of: dual, visual, textual, none)", "(one of: sampled, hardest)", "K, attention steps",
                   "m-DAN hinge margin"):
        assert phrase in text, phrase
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, TrainConfig, CHOICES)
    helps = {a.dest: a.help or "" for a in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        assert helps[f.name].strip(), f"--{f.name} has no help"
    for name, accepted in CHOICES.items():
        assert helps[name].endswith(f"(one of: {', '.join(accepted)})"), name


def test_a_sweep_from_a_script_without_a_main_guard_says_so(smoke_data, smoke_features, tmp_path) -> None:
    """``run_sweep`` with workers from a script whose code is not under ``if __name__ == "__main__":``: every
    spawned worker imports the script and starts the sweep again. It ended in 'sweep run ... failed:
    BrokenProcessPool(...)' after a page of the workers' tracebacks; now the workers say it in one line each and
    the error the script ends with says what to do."""
    import os
    import subprocess
    import sys

    script = tmp_path / "my_sweep.py"
    overrides = {"data": str(smoke_data), "features": str(smoke_features), "epochs": 1}
    script.write_text(
        "from dan.ablation import SweepSpec, run_sweep\n"
        f"spec = SweepSpec(tasks=['vqa'], steps=[1, 2], attentions=[], seeds=[0], profile='smoke', workers=2,\n"
        f"                 overrides={overrides!r}, runs_root={str(tmp_path / 'runs')!r})\n"
        "print(run_sweep(spec, progress=False))\n", encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert 'if __name__ == "__main__":' in last and "BrokenProcessPool" not in last, done.stderr[-2000:]
    assert "bootstrapping phase" not in done.stderr, done.stderr[-2000:]  # the workers: one line each
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.json"))
