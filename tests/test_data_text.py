"""Tokenisation, word vocabulary and answer vocabulary (build, encode, soft targets, JSON round trips)."""

from __future__ import annotations

import json

import pytest

from dan.data.text import AnswerVocab, Vocab, tokenize
from dan.io import DataError


@pytest.mark.parametrize("text, tokens", [
    ("What color is the triangle?", ["what", "color", "is", "the", "triangle"]),
    ("Is there a RED circle?!", ["is", "there", "a", "red", "circle"]),
    ("What's on the man's T-shirt?", ["what's", "on", "the", "man", "'s", "t", "shirt"]),
    ("It costs 1,000 dollars, 2.5 each.", ["it", "costs", "1000", "dollars", "2.5", "each"]),
    ("Is it 3,4 or 1,000,000?", ["is", "it", "3", "4", "or", "1000000"]),  # only groups of three digits join
    ("Don\u2019t   stop", ["don't", "stop"]),
    ("", []),
    ("Is the cafe\u0301 open?", ["is", "the", "caf\u00e9", "open"]),  # combining accent -> precomposed (NFC)
])
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_vocab_build_encode_and_round_trip(tmp_path):
    lists = [["a", "b", "c"], ["b", "c"], ["c", "d"]]
    v = Vocab.build(lists, min_count=2)
    assert v.itos == ["<pad>", "<unk>", "c", "b"]  # c (3) before b (2); a and d (1) below min_count
    assert (Vocab.PAD, Vocab.UNK) == (0, 1) and len(v) == 4
    assert v.encode(["b", "zebra", "c"]) == [3, Vocab.UNK, 2]
    assert v.decode([3, 2, 0, 0]) == ["b", "c"]
    ties = Vocab.build([["y", "x"], ["x", "y"]])
    assert ties.itos[2:] == ["x", "y"]  # equal counts: alphabetical, so the order is deterministic
    path = v.save(tmp_path / "vocab.json")
    w = Vocab.load(path)
    assert w.itos == v.itos and w.stoi == v.stoi and w.min_count == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_vocab_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        Vocab.load(bad)
    bad.write_text(json.dumps({"type": "AnswerVocab", "answers": []}))
    with pytest.raises(DataError, match="not a saved Vocab"):
        Vocab.load(bad)
    with pytest.raises(DataError, match="must start with"):
        Vocab(["a", "b"])
    with pytest.raises(DataError, match="not a new string"):
        Vocab(["<pad>", "<unk>", "a", "a"])


@pytest.mark.parametrize("cls, doc, message", [
    (Vocab, {"min_count": "2"}, "field 'min_count' must be an integer >= 1, got '2'"),
    (Vocab, {"min_count": None}, "field 'min_count' must be an integer >= 1, got None"),
    (Vocab, {"min_count": 1.5}, "field 'min_count' must be an integer >= 1, got 1.5"),
    (Vocab, {"itos": ["<pad>", "<unk>", "a", 3]}, "vocabulary entry 3 (3) is not a new string"),
    (AnswerVocab, {"top": "10"}, "field 'top' must be an integer >= 0 or null, got '10'"),
    (AnswerVocab, {"answers": ["yes", "yes"]}, "answer vocabulary entry 1 ('yes') is not a new string")])
def test_a_saved_vocabulary_with_a_bad_field_names_the_file_and_field(tmp_path, cls, doc, message):
    """min_count went through int(): "x", None or NaN raised ValueError/TypeError, 1.5 became 1 (found by
    fuzzing); a bad entry's error did not name the file."""
    path = tmp_path / "v.json"
    base = {"type": "Vocab", "itos": ["<pad>", "<unk>", "a"], "min_count": 1} if cls is Vocab else \
        {"type": "AnswerVocab", "answers": ["yes", "no"], "top": 2}
    path.write_text(json.dumps({**base, **doc}))
    with pytest.raises(DataError) as err:
        cls.load(path)
    assert str(err.value) == f"{path}: {message}"


def test_answer_vocab_build_normalises_and_ranks():
    mc = ["Two", "2", "2.", "yes", "Yes", "no", "the dog", "dog", "cat", "bird"]
    av = AnswerVocab.build(mc, top=3)
    assert av.answers == ["2", "dog", "yes"]  # 3, 2 (dog), 2 (yes): ties alphabetical; "no"/"cat"/"bird" cut
    assert av.index("two") == 0 and av.index("The Dog") == 1 and av.index("no") is None
    assert len(av) == 3 and "YES" in av


def test_answer_vocab_from_human_answers_uses_the_majority():
    humans = [["red"] * 6 + ["orange"] * 4, ["orange"] * 7 + ["red"] * 3, ["orange"] * 10]
    assert AnswerVocab.build(humans).answers == ["orange", "red"]


def test_answer_vocab_majority_ties_go_to_the_answer_given_first():
    # 2 votes each after normalisation; "Blue" comes first in the first list, "red" in the second
    assert AnswerVocab.build([["Blue", "red", "red", "blue"]]).answers == ["blue"]
    assert AnswerVocab.build([["red", "Blue", "blue", "red"]]).answers == ["red"]


def test_answer_vocab_from_examples_prefers_the_multiple_choice_answer():
    from dan.data.vqa import VQAExample

    with_mc = VQAExample(1, 1, "q?", ["cat"] * 10, "Dog", "other", None)  # the annotators' pick wins
    without_mc = VQAExample(2, 1, "q?", ["bird"] * 6 + ["cat"] * 4, None, "other", None)  # else the majority
    assert AnswerVocab.build([with_mc, without_mc]).answers == ["bird", "dog"]


def test_soft_target_leave_one_out():
    av = AnswerVocab(["2", "3", "4", "yes"])
    humans = ["2", "2", "3", "3", "3", "4", "4", "4", "4", "five"]
    soft = av.soft_target(humans)
    # 2 matches -> 0.6, 3 -> 0.9, 4 -> 1.0; "five" normalises to "5", which is not in the vocabulary
    assert soft == {0: pytest.approx(0.6), 1: pytest.approx(0.9), 2: pytest.approx(1.0)}


def test_answer_vocab_round_trip(tmp_path):
    av = AnswerVocab.build(["a1", "b2", "b2"], top=2000)
    path = av.save(tmp_path / "answers.json")
    back = AnswerVocab.load(path)
    assert back.answers == ["b2", "a1"] and back.top == 2000
    path.write_text(json.dumps({"type": "Vocab", "itos": []}))
    with pytest.raises(DataError, match="answers.json"):
        AnswerVocab.load(path)


@pytest.mark.parametrize("top", [0, -3])
def test_answer_vocab_size_must_be_positive_and_is_a_package_error(top):
    from dan.io import ConfigError

    with pytest.raises(ConfigError, match=f"positive integer, got {top}"):
        AnswerVocab.build(["yes", "no"], top=top)
