"""``python -m dan.evaluate``: a trained run's checkpoint evaluated on a split without retraining.

The smoke runs of conftest are the references: evaluating their checkpoint on the split they were validated on
must give back the answers of ``predictions.csv`` and the metrics of ``metrics.json``; an unannotated test-dev
split gives the evaluation server's results file and no score.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from dan.evaluate import evaluate_run, load_trained_run, main
from tests.test_cli import one_line_error


def _predictions(run_dir: Path) -> dict[int, str]:
    with open(run_dir / "predictions.csv", encoding="utf-8") as fh:
        return {int(r["question_id"]): r["predicted"] for r in csv.DictReader(fh)}


def test_vqa_val_reproduces_the_run(vqa_run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "val_results.json"
    assert main([str(vqa_run.run_dir), "--split", "val", "--device", "cpu", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    results = json.loads(out.read_text(encoding="utf-8"))
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["question_id"], int) for r in results)
    assert {r["question_id"]: r["answer"] for r in results} == _predictions(vqa_run.run_dir)
    assert printed["split"] == "val2014" and printed["questions"] == len(results)
    assert printed["epochs_trained"] == printed["epochs"] == vqa_run.config.epochs
    assert printed["metrics"]["overall"] == pytest.approx(vqa_run.metrics["overall"], abs=1e-9)
    assert printed["metrics"]["majority_baseline"] == pytest.approx(vqa_run.metrics["majority_baseline"], abs=1e-9)
    for family, table in vqa_run.metrics["groups"].items():  # single-/multi-hop, as the run's own metrics
        assert printed["metrics"]["groups"][family]["overall"] == pytest.approx(table["overall"], abs=1e-9)


def test_vqa_test_dev_writes_the_server_file(vqa_run, smoke_data: Path, smoke_features: Path,
                                            tmp_path: Path) -> None:
    """A test-dev split (questions only, about images/test2015) is answered, not scored. Its questions and
    features are the val ones under test-dev's names, so the answers must be the run's val predictions."""
    root, feats = tmp_path / "data", tmp_path / "features"
    shutil.copytree(smoke_data / "vqa", root / "vqa")
    for f in (root / "vqa").iterdir():
        if "val2014" not in f.name:
            f.unlink()
    (root / "vqa" / "v2_mscoco_val2014_annotations.json").unlink()
    (root / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").rename(
        root / "vqa" / "v2_OpenEnded_mscoco_test-dev2015_questions.json")
    shutil.copytree(smoke_features / "val2014", feats / "test2015")
    result = evaluate_run(vqa_run.run_dir, "test-dev", data=root, features=feats, device="cpu")
    assert "metrics" not in result and result["split"] == "test-dev2015"
    path = Path(result["results_file"])
    assert path == vqa_run.run_dir / "vqa_OpenEnded_mscoco_test-dev2015_dan_results.json"
    answers = {r["question_id"]: r["answer"] for r in json.loads(path.read_text(encoding="utf-8"))}
    assert answers == _predictions(vqa_run.run_dir)
    path.unlink()  # the run folder is shared by the session's tests


def test_matching_test_reproduces_the_run(matching_run, tmp_path: Path) -> None:
    result = evaluate_run(matching_run.run_dir, "test", device="cpu", out=tmp_path / "eval.json")
    for d in ("i2t", "t2i"):
        for k in ("r1", "r5", "r10", "medr"):
            assert result["metrics"][d][k] == pytest.approx(matching_run.metrics[d][k], abs=1e-9), (d, k)
    assert json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))["metrics"] == result["metrics"]


def test_rebuilt_model_is_in_eval_mode_with_the_run_weights(vqa_run) -> None:
    import torch

    run = load_trained_run(vqa_run.run_dir)
    saved = torch.load(vqa_run.run_dir / "checkpoint.pt", weights_only=False)["model"]
    assert not run.model.training
    assert all(torch.equal(v, saved[k]) for k, v in run.model.state_dict().items())


def test_errors_are_one_line(vqa_run, matching_run, smoke_features: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path), "--split", "val"]) == 2
    assert "no checkpoint at" in one_line_error(capsys, "python -m dan.evaluate")
    assert main([str(matching_run.run_dir), "--split", "val2014", "--device", "cpu"]) == 2
    assert "train, val or test" in one_line_error(capsys, "python -m dan.evaluate")
    assert main([str(vqa_run.run_dir), "--split", "test-dev", "--device", "cpu"]) == 2
    assert "test-dev2015" in one_line_error(capsys, "python -m dan.evaluate")
    feats = tmp_path / "features"  # val2014's store missing
    shutil.copytree(smoke_features / "train2014", feats / "train2014")
    assert main([str(vqa_run.run_dir), "--split", "val", "--device", "cpu", "--features", str(feats)]) == 2
    assert "no complete feature store for image folder 'val2014'" in one_line_error(capsys, "python -m dan.evaluate")
    with pytest.raises(SystemExit) as exit_info:  # a usage error, as argparse's own
        main([str(vqa_run.run_dir), "--split", "val", "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "--batch-size must be a positive integer" in one_line_error(capsys, "python -m dan.evaluate")


@pytest.mark.parametrize("name", ["checkpoint.pt", "metrics.json"])
def test_out_may_not_replace_a_file_of_the_run(vqa_run, name: str, tmp_path: Path, capsys) -> None:
    """--out RUN/checkpoint.pt replaced the trained model with the answers list; --out RUN/metrics.json the run's
    metrics, which dan.train then reused and printed as the run's metrics. Both are refused, the files untouched."""
    run = tmp_path / "run"
    shutil.copytree(vqa_run.run_dir, run)
    before = (run / name).read_bytes()
    for out in (run / name, tmp_path / "." / "run" / name):  # however the path is spelt
        assert main([str(run), "--split", "val", "--device", "cpu", "--out", str(out)]) == 2
        err = one_line_error(capsys, "python -m dan.evaluate")
        assert f"would replace the run's own {name}" in err
    assert (run / name).read_bytes() == before
    assert main([str(run), "--split", "val", "--device", "cpu", "--out", str(run / "val.json")]) == 0  # any other


def test_a_checkpoint_of_another_version_is_named(vqa_run, tmp_path: Path, capsys) -> None:
    import torch

    state = torch.load(vqa_run.run_dir / "checkpoint.pt", weights_only=False)
    state["config"]["warmup_epochs"] = 3  # a field this version does not know
    torch.save(state, tmp_path / "checkpoint.pt")
    assert main([str(tmp_path), "--split", "val", "--device", "cpu"]) == 2
    err = one_line_error(capsys, "python -m dan.evaluate")
    assert f"{tmp_path / 'checkpoint.pt'}: its config is not one this version of dan reads" in err
    assert "warmup_epochs" in err


def test_weights_of_another_model_are_named(vqa_run, tmp_path: Path, capsys) -> None:
    """A checkpoint whose config this version reads but whose weights are another version's model (a renamed or
    reshaped parameter) is one line naming the file, not load_state_dict's RuntimeError traceback."""
    import torch

    state = torch.load(vqa_run.run_dir / "checkpoint.pt", weights_only=False)
    name = next(iter(state["model"]))
    state["model"]["old_" + name] = state["model"].pop(name)
    torch.save(state, tmp_path / "checkpoint.pt")
    assert main([str(tmp_path), "--split", "val", "--device", "cpu"]) == 2
    err = one_line_error(capsys, "python -m dan.evaluate")
    assert f"{tmp_path / 'checkpoint.pt'}: its weights do not fit the model" in err and name in err


def test_an_unfinished_run_is_evaluated_at_its_checkpoint_in_eval_mode(make_cfg, tmp_path: Path) -> None:
    """A run stopped after epoch 1 of 2 (checkpoint, no metrics.json), with dropout: the evaluation reports 1 of 2
    epochs and reproduces that epoch's validation accuracy, which training computed in eval mode."""
    from dan.train import train

    cfg = make_cfg("vqa", tmp_path / "run", epochs=2, dropout=0.5)
    train(cfg, stop_after_epoch=1, progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()
    import torch

    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["history"]
    result = evaluate_run(tmp_path / "run", "val", device="cpu", out=tmp_path / "results.json")
    assert (result["epochs_trained"], result["epochs"]) == (1, 2)
    assert result["metrics"]["overall"] == pytest.approx(saved[0]["val_acc"], abs=1e-9)


def test_matching_other_captions_per_image_and_restval(make_cfg, smoke_data: Path, tmp_path: Path) -> None:
    """A run trained on 3 captions per image is scored on 3 per image (its metrics.json's test numbers); the
    train split is Karpathy's train and restval together, as in training."""
    from dan.train import train

    run = train(make_cfg("matching", tmp_path / "run", epochs=1, captions_per_image=3), progress=False)
    result = evaluate_run(run.run_dir, "test", device="cpu", out=tmp_path / "test.json")
    for d in ("i2t", "t2i"):
        for k in ("r1", "r5", "r10", "medr"):
            assert result["metrics"][d][k] == pytest.approx(run.metrics[d][k], abs=1e-9), (d, k)
    root = tmp_path / "data"
    shutil.copytree(smoke_data, root)
    karpathy = json.loads((root / run.config.captions_file).read_text(encoding="utf-8"))
    train_images = [im for im in karpathy["images"] if im["split"] == "train"]
    for im in train_images[: len(train_images) // 2]:
        im["split"] = "restval"
    (root / run.config.captions_file).write_text(json.dumps(karpathy), encoding="utf-8")
    result = evaluate_run(run.run_dir, "train", data=root, device="cpu", out=tmp_path / "train.json")
    assert result["images"] == len(train_images)


def test_features_of_another_kind_are_refused(vqa_run, smoke_features: Path, tmp_path: Path, capsys) -> None:
    """Stores of another kind than the run's (here another image size in meta.json) are refused, and the advice
    is dan.evaluate's (--features), not training's 'another --out' (dan.evaluate's --out is the results file)."""
    feats = tmp_path / "features"
    shutil.copytree(smoke_features / "val2014", feats / "val2014")
    meta = json.loads((feats / "val2014" / "meta.json").read_text(encoding="utf-8"))
    (feats / "val2014" / "meta.json").write_text(json.dumps({**meta, "image_size": meta["image_size"] + 32}))
    assert main([str(vqa_run.run_dir), "--split", "val", "--device", "cpu", "--features", str(feats)]) == 2
    err = one_line_error(capsys, "python -m dan.evaluate")
    assert "was trained on features with image_size=" in err and "(--features)" in err
    assert "another --out" not in err


def test_features_computed_another_way_are_evaluated_and_the_difference_reported(vqa_run, smoke_features: Path,
                                                                                 tmp_path: Path, capsys) -> None:
    """Stores of the same kind but computed another way (here: bf16 and another decoder, as on a GPU) are allowed;
    the result names each difference and the CLI prints a note, while the same stores report none."""
    same = evaluate_run(vqa_run.run_dir, "val", features=smoke_features, out=tmp_path / "a.json", device="cpu")
    assert "features_computed_differently" not in same
    feats = tmp_path / "features"
    shutil.copytree(smoke_features / "val2014", feats / "val2014")
    meta_path = feats / "val2014" / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    trained = (meta["precision"], meta["decode"])
    meta.update(precision="bfloat16", decode="nvjpeg on cuda")
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    assert main([str(vqa_run.run_dir), "--split", "val", "--device", "cpu", "--features", str(feats),
                 "--out", str(tmp_path / "b.json")]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed["features_computed_differently"] == {
        "precision": {"trained": trained[0], "now": "bfloat16"}, "decode": {"trained": trained[1],
                                                                            "now": "nvjpeg on cuda"}}
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 2 and "precision='bfloat16'" in notes[0] and f"precision={trained[0]!r}" in notes[0]
    assert printed["metrics"]["overall"] == pytest.approx(same["metrics"]["overall"], abs=1e-9)  # same numbers


def test_predict_vqa_defaults_to_the_banks_device(vqa_run) -> None:
    """A script can call predict_vqa without a device: questions and regions go to the bank's device, and the
    answers are those of an explicit device (and of the run's predictions.csv)."""
    import torch

    from dan.batches import vqa_tensors
    from dan.data.vqa import load_vqa_split
    from dan.evaluate import predict_vqa
    from dan.prepare import data_root, open_bank

    run = load_trained_run(vqa_run.run_dir, torch.device("cpu"))
    bank = open_bank(run.cfg, {"val2014"}, torch.device("cpu"))
    tensors = vqa_tensors(load_vqa_split(data_root(run.cfg), "val2014"), run.vocab, run.answers, bank, "val2014",
                          where="val2014")
    implicit, conf, _, _ = predict_vqa(run.model, tensors, bank, run.answers, 17)
    explicit, conf2, _, _ = predict_vqa(run.model, tensors, bank, run.answers, 17, "cpu")
    assert implicit == explicit and (conf == conf2).all()
    assert dict(zip(tensors.question_ids.tolist(), implicit, strict=True)) == _predictions(vqa_run.run_dir)


def test_fold_metrics_rank_each_fold_alone_and_average() -> None:
    import numpy as np

    from dan.io import ConfigError
    from dan.metrics import retrieval_metrics
    from dan.retrieval import fold_metrics

    S = np.random.default_rng(0).normal(size=(6, 18))  # 6 images, 3 captions each
    whole = fold_metrics(S, 3, 1)
    assert "folds" not in whole and whole["i2t"] == retrieval_metrics(S, 3)["i2t"]
    assert whole["rsum"] == pytest.approx(sum(whole[d][k] for d in ("i2t", "t2i") for k in ("r1", "r5", "r10")))
    two = fold_metrics(S, 3, 2)
    blocks = [retrieval_metrics(S[:3, :9], 3), retrieval_metrics(S[3:, 9:], 3)]
    for d in ("i2t", "t2i"):
        for k in ("r1", "r5", "r10", "medr"):
            assert [f[d][k] for f in two["folds"]] == [b[d][k] for b in blocks]
            assert two[d][k] == pytest.approx((blocks[0][d][k] + blocks[1][d][k]) / 2)
    assert two["rsum"] == pytest.approx(np.mean([f["rsum"] for f in two["folds"]]))
    for bad in (0, 4, 2.0):
        with pytest.raises(ConfigError, match="divides the split's 6 images"):
            fold_metrics(S, 3, bad)


def test_matching_runs_on_a_subset_of_images_and_in_folds(matching_run, vqa_run, tmp_path: Path, capsys) -> None:
    """``image_ids`` / ``--images``: only those images and their captions ranked; ``folds`` / ``--folds``: the
    split in consecutive folds (COCO 1K test), each fold the same as the subset of its images, the metrics their
    mean, and never below the whole split's recalls (a smaller gallery only removes competitors)."""
    from dan.data.captions import load_karpathy
    from dan.io import ConfigError, DataError
    from dan.prepare import existing_data_root

    cfg = load_trained_run(matching_run.run_dir).cfg
    ids = [im.image_id for im in load_karpathy(existing_data_root(cfg) / cfg.captions_file) if im.split == "test"]
    assert len(ids) == 16
    whole = evaluate_run(matching_run.run_dir, "test", device="cpu", out=tmp_path / "whole.json")
    four = evaluate_run(matching_run.run_dir, "test", device="cpu", folds=4, out=tmp_path / "four.json")
    assert four["folds"] == 4 and four["images"] == 16 and len(four["metrics"]["folds"]) == 4
    for f in range(4):
        sub = evaluate_run(matching_run.run_dir, "test", device="cpu", image_ids=ids[4 * f: 4 * f + 4][::-1],
                           out=tmp_path / f"sub{f}.json")
        assert sub["images"] == 4 and "folds" not in sub
        for d in ("i2t", "t2i"):
            assert sub["metrics"][d] == pytest.approx(four["metrics"]["folds"][f][d])
    for d in ("i2t", "t2i"):
        for k in ("r1", "r5", "r10"):
            assert four["metrics"][d][k] >= whole["metrics"][d][k] - 1e-9, (d, k)
    assert four["metrics"]["i2t"]["r1"] > whole["metrics"]["i2t"]["r1"]  # this run's 4-image folds are easier
    # default output names: the whole split's file is not overwritten by a subset's or a folded one's
    (tmp_path / "ids.txt").write_text(f"{ids[0]}, {ids[5]}\n{ids[9]}\n", encoding="utf-8")
    assert main([str(matching_run.run_dir), "--split", "test", "--device", "cpu", "--images",
                 str(tmp_path / "ids.txt")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 3 and "_subset-3i-" in Path(printed["results_file"]).name
    assert main([str(matching_run.run_dir), "--split", "test", "--device", "cpu", "--folds", "2"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["results_file"]).name == "eval_test_2folds.json"
    for name in ("eval_test_2folds.json", Path(printed["results_file"]).name):
        (matching_run.run_dir / name).unlink()  # the run folder is shared by the session's tests
    with pytest.raises(ConfigError, match=r"divides the 16 images"):
        evaluate_run(matching_run.run_dir, "test", device="cpu", folds=3)
    with pytest.raises(ConfigError, match=r"divides the 3 images .* \(subset\)"):
        evaluate_run(matching_run.run_dir, "test", device="cpu", folds=2, image_ids=ids[:3])
    with pytest.raises(DataError, match=r"image ids not in .*split 'test' \(16 images\): 424242"):
        evaluate_run(matching_run.run_dir, "test", device="cpu", image_ids=[ids[0], 424242])
    with pytest.raises(ConfigError, match="are for matching runs"):
        evaluate_run(vqa_run.run_dir, "val", device="cpu", folds=2)
    (tmp_path / "bad.txt").write_text("12 x7\n", encoding="utf-8")
    assert main([str(matching_run.run_dir), "--split", "test", "--images", str(tmp_path / "bad.txt")]) == 2
    assert "image ids must be integers, got 'x7'" in one_line_error(capsys, "python -m dan.evaluate")
    assert main([str(matching_run.run_dir), "--split", "test", "--images", str(tmp_path / "none.txt")]) == 2
    assert "cannot read image ids from" in one_line_error(capsys, "python -m dan.evaluate")


def test_each_prediction_row_and_attention_map_belongs_to_its_question(vqa_run, smoke_data: Path) -> None:
    """Every row of ``predictions.csv`` against the validation split's own files: its image, question, majority
    answer and type are that question's; its answer is one of the run's; its confidence a softmax probability (at
    least 1/C, at most 1); its score the official VQA score of its answer; and ``attention.npz`` names the same
    questions and images in the same order, with each question's length."""
    import numpy as np
    import torch

    from dan.data.text import tokenize
    from dan.data.vqa import load_vqa_split
    from dan.metrics import vqa_score

    examples = {e.question_id: e for e in load_vqa_split(smoke_data, "val2014")}
    answers = torch.load(vqa_run.run_dir / "checkpoint.pt", weights_only=False)["answers"]
    n_answers = len(answers["answers"]) if isinstance(answers, dict) else len(answers)
    with open(vqa_run.run_dir / "predictions.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["question_id"]) for r in rows) == sorted(examples)
    confidences = []
    for r in rows:
        e = examples[int(r["question_id"])]
        assert (int(r["image_id"]), r["question"], r["multiple_choice_answer"], r["answer_type"]) == (
            e.image_id, e.question, e.multiple_choice_answer, e.answer_type)
        assert float(r["score"]) == pytest.approx(vqa_score(r["predicted"], e.answers), abs=1e-4)
        confidences.append(float(r["confidence"]))
    assert 1 / n_answers - 1e-4 <= min(confidences) and max(confidences) <= 1.0
    assert len(set(confidences)) > 1  # a probability per question, not one constant
    with np.load(vqa_run.run_dir / "attention.npz") as att:
        assert att["question_ids"].tolist() == [int(r["question_id"]) for r in rows]
        assert att["image_ids"].tolist() == [int(r["image_id"]) for r in rows]
        assert att["lengths"].tolist() == [len(tokenize(r["question"])) for r in rows]
