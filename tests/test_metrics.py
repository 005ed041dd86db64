"""Metric cases worked out by hand: VQA normalisation and leave-one-out accuracy, retrieval recall/median rank."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from dan.data.vqa import VQAExample
from dan.io import DataError
from dan.metrics import normalize_answer, retrieval_metrics, soft_scores, vqa_accuracy, vqa_score


@pytest.mark.parametrize("raw, norm", [
    ("Two", "2"), ("2.", "2"), ("the dog", "dog"), ("dont", "don't"), ("yes!", "yes"), ("Yes", "yes"),
    ("A Dog.", "dog"), ("an apple", "apple"), ("none", "0"), ("ten", "10"), ("2.5", "2.5"), ("1,000", "1000"),
    ("black-and-white", "black and white"), ("red, white", "red white"),
    # a mark touching a space on either side is deleted everywhere, also inside words (official rule): " -" here
    ("x-ray -", "xray"), ("x-ray -left", "xray left"), ("  yes \n", "yes"),
    ("x-ray\t-", "xray"),  # a tab or newline is a space first, so "\t-" is a mark touching a space
    ("isnt", "isn't"), ("don't", "don't"), ("what?", "what"), ("(left)", "left"), ("shed", "shed"),
    # the official table as it acts on lowercased words: these keys match ...
    ("hed", "he'd"), ("twas", "'twas"), ("whyre", "why're"), ("somebodys", "somebody's"), ("Whereve", "where've"),
    ("somebody'd", "somebodyd"),
    # ... these do not: its "Im"/"Ive" keys are capitalised, "let's"/"she's" map to themselves, "lets" is no key
    ("Im", "im"), ("ive", "ive"), ("lets", "lets"), ("shes", "shes"), ("wed", "wed"),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def _answers(k: int, hit: str = "2", miss: str = "3", n: int = 10) -> list[str]:
    return [hit] * k + [miss] * (n - k)


@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_score_leave_one_out(k, expected):
    # k annotators agree: leaving one of them out leaves k-1 matches, leaving another out leaves k, e.g.
    # k=2: (2 * min(1, 1/3) + 8 * min(1, 2/3)) / 10 = 0.6; k=3: (3 * 2/3 + 7 * 1) / 10 = 0.9.
    assert vqa_score("2", _answers(k)) == pytest.approx(expected)


def test_vqa_score_normalises_both_sides():
    humans = ["Two", "2.", "two", "3", "3", "3", "3", "4", "4", "4"]
    assert vqa_score("2", humans) == pytest.approx(0.9)  # three matches after normalisation
    assert vqa_score("the 4", humans) == pytest.approx(0.9)
    assert vqa_score("Yes!", ["yes"] * 10) == 1.0
    assert vqa_score("grey", ["gray"] * 10) == 0.0  # synonyms are not folded, as in the official code


def test_vqa_score_fewer_answers_and_errors():
    assert vqa_score("a", ["a", "a", "a"]) == pytest.approx(2 / 3)  # each subset keeps 2 matches of 3 needed
    with pytest.raises(ValueError):
        vqa_score("a", [])


def test_vqa_score_with_one_human_answer_is_an_exact_match():
    # no annotator is left after leaving one out: the score falls back to 1 for a (normalised) match, else 0
    assert vqa_score("Dog", ["the dog"]) == 1.0 and vqa_score("cat", ["dog"]) == 0.0
    assert soft_scores(["dog"]) == {"dog": 1.0}


def _ex(qid, answers, atype):
    return VQAExample(qid, 1, "q?", answers, answers[0] if answers else None, atype, None)


def test_vqa_accuracy_by_type_and_group():
    exs = [_ex(1, _answers(4, "yes", "no"), "yes/no"), _ex(2, _answers(2, "2", "3"), "number"),
           _ex(3, _answers(1, "red", "blue"), "other"), _ex(4, [], "other")]  # no answers: not scored
    preds = {1: "yes", 2: "two", 3: "red", 4: "anything"}
    acc = vqa_accuracy(preds, exs, group_by={1: "single-hop", 2: "multi-hop", 3: "multi-hop"})
    assert acc["n"] == 3
    assert acc["yes/no"] == pytest.approx(100.0)
    assert acc["number"] == pytest.approx(60.0)
    assert acc["other"] == pytest.approx(30.0)
    assert acc["overall"] == pytest.approx((100 + 60 + 30) / 3)
    assert acc["groups"]["multi-hop"]["overall"] == pytest.approx(45.0)
    assert acc["groups"]["single-hop"]["n"] == 1 and acc["groups"]["single-hop"]["number"] is None
    with pytest.raises(DataError, match="no prediction .*3"):
        vqa_accuracy({1: "yes", 2: "2"}, exs)


def test_vqa_overall_is_the_mean_over_questions_not_over_answer_types():
    # three yes/no questions answered right (1.0 each) and one "other" answered wrong (0.0): the official overall
    # accuracy is 3 / 4 = 75 %, where a mean of the two type accuracies would give 50 %
    exs = [_ex(q, _answers(10, "yes", "no"), "yes/no") for q in (1, 2, 3)] + [_ex(4, _answers(10, "red"), "other")]
    acc = vqa_accuracy({1: "yes", 2: "yes", 3: "yes", 4: "blue"}, exs, group_by={1: "g", 4: "g"})
    assert acc["overall"] == pytest.approx(75.0) and acc["number"] is None
    assert acc["counts"] == {"yes/no": 3, "number": 0, "other": 1}
    # questions 2 and 3 belong to no group: the one group holds questions 1 and 4 only
    assert list(acc["groups"]) == ["g"] and acc["groups"]["g"]["n"] == 2
    assert acc["groups"]["g"]["overall"] == pytest.approx(50.0)


def _reference_ranks(sim: np.ndarray, per: int) -> tuple[np.ndarray, np.ndarray]:
    """Slow, obviously correct ranks (no ties in the input)."""
    n_img = sim.shape[0]
    i2t, t2i = [], []
    for i in range(n_img):
        order = list(np.argsort(-sim[i]))
        i2t.append(1 + min(order.index(j) for j in range(i * per, (i + 1) * per)))
    for j in range(sim.shape[1]):
        order = list(np.argsort(-sim[:, j]))
        t2i.append(1 + order.index(j // per))
    return np.array(i2t), np.array(t2i)


def test_retrieval_by_hand():
    # 2 images x 2 captions each. Image 0: own captions 0,1 score 0.1, 0.5; caption 2 scores 0.9 -> rank 2.
    sim = np.array([[0.1, 0.5, 0.9, 0.0],
                    [0.2, 0.3, 0.8, 0.7]])
    m = retrieval_metrics(sim, captions_per_image=2)
    assert m["i2t"] == {"r1": 50.0, "r5": 100.0, "r10": 100.0, "medr": 1.0}  # ranks [2, 1] -> floor(0.5) + 1
    # captions: 0 -> image 1 wins (0.2 > 0.1): rank 2; 1 -> rank 1; 2 -> image 0 wins: rank 2; 3 -> rank 1
    assert m["t2i"]["r1"] == 50.0 and m["t2i"]["medr"] == 1.0


def test_retrieval_matches_reference_and_torch():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((20, 100))
    sim[np.arange(20)[:, None], np.arange(100).reshape(20, 5)] += 1.5  # own captions score higher
    i2t, t2i = _reference_ranks(sim, 5)
    m = retrieval_metrics(sim)
    for key, ranks in (("i2t", i2t), ("t2i", t2i)):
        assert m[key]["r1"] == pytest.approx(100 * np.mean(ranks <= 1))
        assert m[key]["r5"] == pytest.approx(100 * np.mean(ranks <= 5))
        assert m[key]["r10"] == pytest.approx(100 * np.mean(ranks <= 10))
        assert m[key]["medr"] == np.floor(np.median(ranks - 1)) + 1
    assert retrieval_metrics(torch.from_numpy(sim).float()) == retrieval_metrics(sim.astype(np.float32))


def test_retrieval_ties_count_against_the_model():
    m = retrieval_metrics(np.zeros((3, 15)))
    assert m["i2t"] == {"r1": 0.0, "r5": 0.0, "r10": 0.0, "medr": 11.0}  # 10 wrong captions tie with the best
    assert m["t2i"] == {"r1": 0.0, "r5": 100.0, "r10": 100.0, "medr": 3.0}


def test_retrieval_bad_input():
    with pytest.raises(ValueError, match="n_images"):
        retrieval_metrics(np.zeros((3, 14)))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((1, 5), np.nan))


def test_retrieval_is_fast():
    sim = np.random.default_rng(1).standard_normal((1000, 5000)).astype(np.float32)
    t0 = time.perf_counter()
    retrieval_metrics(sim)
    assert time.perf_counter() - t0 < 1.0


def test_the_embedded_data_has_no_unanimous_answers_that_normalisation_changes(smoke_data):
    """dan.metrics normalises both sides always; the current official script compares ten identical human answers
    as they are. On the embedded data the two agree because of this property (the deviations page says so)."""
    from dan.data.vqa import load_vqa_split
    from dan.metrics import normalize_answer

    for split in ("train2014", "val2014"):
        examples = load_vqa_split(smoke_data, split)
        unanimous = [e for e in examples if len({a.strip() for a in e.answers}) == 1]
        assert unanimous and all(normalize_answer(e.answers[0]) == e.answers[0].strip() for e in unanimous)
        assert any(normalize_answer(a) != a.strip() for e in examples for a in e.answers)  # noisy forms exist
