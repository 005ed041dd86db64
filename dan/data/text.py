"""Tokenisation and vocabularies for questions, captions and answers (all saved as JSON).

``tokenize`` does the usual VQA preprocessing: lower case, possessive ``'s`` split off, every other
punctuation mark dropped (``"t-shirt"`` -> ``t shirt``), digit groups ``1,000`` joined, decimals kept. Text is
put in Unicode NFC first, so a letter typed with a combining accent is the same token as the precomposed one.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dan.io import ConfigError, DataError, read_json, write_json_atomic
from dan.metrics import normalize_answer, soft_scores

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "`": "'"})
_DIGIT_GROUP = re.compile(r"(?<=\d),(?=\d{3})")
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-case word tokens: ``"What's the man's T-shirt?"`` ->
    ``["what's", "the", "man", "'s", "t", "shirt"]``."""
    text = _DIGIT_GROUP.sub("", unicodedata.normalize("NFC", text).lower().translate(_QUOTES))
    tokens: list[str] = []
    for tok in _TOKEN.findall(text):
        if tok.endswith("'s") and len(tok) > 2 and tok not in ("it's", "what's", "that's", "there's", "who's",
                                                                 "he's", "she's", "where's", "let's"):
            tokens.extend((tok[:-2], "'s"))
        else:
            tokens.append(tok)
    return tokens


class Vocab:
    """Word vocabulary: ``<pad>`` = 0, ``<unk>`` = 1, then words by decreasing count, ties alphabetically."""

    PAD = 0
    UNK = 1
    SPECIALS = ("<pad>", "<unk>")

    def __init__(self, itos: Sequence[str], min_count: int = 1) -> None:
        itos = list(itos)
        if tuple(itos[:2]) != self.SPECIALS:
            raise DataError(f"vocabulary must start with {list(self.SPECIALS)}, got {itos[:2]}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {}
        for i, word in enumerate(itos):
            if not isinstance(word, str) or word in self.stoi:
                raise DataError(f"vocabulary entry {i} ({word!r}) is not a new string")
            self.stoi[word] = i
        self.min_count = int(min_count)

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_count: int = 1) -> Vocab:
        """Words seen at least ``min_count`` times in ``token_lists`` (deterministic order)."""
        counts = Counter(tok for toks in token_lists for tok in toks)
        words = sorted((w for w, c in counts.items() if c >= min_count and w not in cls.SPECIALS),
                       key=lambda w: (-counts[w], w))
        return cls([*cls.SPECIALS, *words], min_count=min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token ids; unknown words map to ``UNK``."""
        return [self.stoi.get(t, self.UNK) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of ``ids`` (padding dropped)."""
        return [self.itos[i] for i in ids if i != self.PAD]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Vocab", "itos": list(self.itos), "min_count": self.min_count}

    @classmethod
    def from_dict(cls, d: Any, where: str = "vocabulary") -> Vocab:
        if not isinstance(d, dict) or d.get("type") != "Vocab" or not isinstance(d.get("itos"), list):
            raise DataError(f"{where}: not a saved Vocab (expected keys 'type': 'Vocab' and 'itos')")
        min_count = d.get("min_count", 1)
        if type(min_count) is not int or min_count < 1:  # int() raised TypeError/ValueError on "x", None, NaN
            raise DataError(f"{where}: field 'min_count' must be an integer >= 1, got {min_count!r}")
        try:
            return cls(d["itos"], min_count=min_count)
        except DataError as exc:  # an entry that is no new string: named with the file
            raise DataError(f"{where}: {exc}") from None

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_dict(read_json(path, "vocabulary file"), where=str(path))


def _majority(answers: Sequence[str]) -> str:
    """Most frequent normalised answer; ties go to the answer given first."""
    norm = [normalize_answer(a) for a in answers]
    counts = Counter(norm)
    return max(counts, key=lambda a: (counts[a], -norm.index(a)))


class AnswerVocab:
    """The top-C training answers (normalised), most frequent first, ties broken alphabetically."""

    def __init__(self, answers: Sequence[str], top: int | None = None) -> None:
        self.answers: list[str] = list(answers)
        self.top = top if top is not None else len(self.answers)
        self._index: dict[str, int] = {}
        for i, a in enumerate(self.answers):
            if not isinstance(a, str) or a in self._index:
                raise DataError(f"answer vocabulary entry {i} ({a!r}) is not a new string")
            self._index[a] = i

    @classmethod
    def build(cls, examples_answers: Iterable[Any], top: int = 2000) -> AnswerVocab:
        """From one item per training question: its ``multiple_choice_answer`` (str), its human answers
        (list of str; the majority answer is used) or a :class:`~dan.data.vqa.VQAExample`."""
        counts: Counter[str] = Counter()
        for item in examples_answers:
            if isinstance(item, str):
                answer = normalize_answer(item)
            elif isinstance(item, (list, tuple)):
                if not item:
                    continue
                answer = _majority(item)
            else:  # a VQAExample
                mc = getattr(item, "multiple_choice_answer", None)
                if mc:
                    answer = normalize_answer(mc)
                elif getattr(item, "answers", None):
                    answer = _majority(item.answers)
                else:
                    continue
            if answer:
                counts[answer] += 1
        if top <= 0:
            raise ConfigError(f"the answer vocabulary size (top) must be a positive integer, got {top!r}")
        ranked = sorted(counts, key=lambda a: (-counts[a], a))[:top]
        return cls(ranked, top=top)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return self.index(answer) is not None

    def index(self, answer: str) -> int | None:
        """Class index of ``answer`` after normalisation, or None when it is outside the vocabulary."""
        return self._index.get(normalize_answer(answer))

    def soft_target(self, human_answers: Sequence[str]) -> dict[int, float]:
        """Class index -> official VQA score (leave-one-out ``min(1, n/3)``) of each in-vocabulary answer."""
        out = {}
        for answer, score in soft_scores(human_answers).items():
            i = self._index.get(answer)
            if i is not None and score > 0:
                out[i] = score
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "AnswerVocab", "answers": list(self.answers), "top": self.top}

    @classmethod
    def from_dict(cls, d: Any, where: str = "answer vocabulary") -> AnswerVocab:
        ok = isinstance(d, dict) and d.get("type") == "AnswerVocab" and isinstance(d.get("answers"), list)
        if not ok:
            raise DataError(f"{where}: not a saved AnswerVocab (expected keys 'type' and 'answers')")
        top = d.get("top")
        if top is not None and (type(top) is not int or top < 0):
            raise DataError(f"{where}: field 'top' must be an integer >= 0 or null, got {top!r}")
        try:
            return cls(d["answers"], top=top)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> AnswerVocab:
        return cls.from_dict(read_json(path, "answer vocabulary file"), where=str(path))
