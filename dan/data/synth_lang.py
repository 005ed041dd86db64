"""The benchmark's English, shared by its questions (:mod:`dan.data.synth_questions`) and captions
(:mod:`dan.data.synth_captions`): plural nouns, number words, relation phrases, how an object's attributes are
worded, and the ten answers human annotators give to a question (their spellings, synonyms and mistakes).

Human answers add realistic disagreement: each is right with a per-question probability (relational questions
more often wrong, yes/no ones less), sometimes in another wording ("grey", "yeah", "two"); a wrong one is a
confusable colour or shape, a nearby count or the other yes/no. The canonical answer stays the most frequent one
after normalisation, so it is the ground truth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dan.data.render import COLORS, SHAPES, SceneObject
from dan.metrics import normalize_answer

if TYPE_CHECKING:
    from dan.data.synth_questions import Question

PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
          "star": "stars", "cross": "crosses"}
NUM_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
REL_PHRASES = {"left": ("left of", "to the left of"), "right": ("right of", "to the right of"),
               "above": ("above",), "below": ("below", "under")}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def pick(rng: np.random.Generator, seq: Sequence) -> Any:
    return seq[int(rng.integers(len(seq)))]


def shuffled(rng: np.random.Generator, seq: Sequence) -> list:
    return [seq[i] for i in rng.permutation(len(seq))]


def object_words(obj: SceneObject, attrs: Sequence[str], noun: str = "object") -> list[str]:
    """Attribute words in English order (size, colour, shape); "object" stands in when shape is not named."""
    out = [getattr(obj, a) for a in ("size", "color", "shape") if a in attrs]
    return out if "shape" in attrs else [*out, noun]


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def rel_phrase(rng: np.random.Generator, rel: str) -> str:
    return pick(rng, REL_PHRASES[rel])


# ---- human answers -----------------------------------------------------------------------------------------
_VARIANTS = {"gray": ("grey", "Gray", "grey"), "purple": ("violet", "Purple"), "square": ("box", "a square"),
             "circle": ("round", "a circle"), "diamond": ("rhombus", "a diamond"), "cross": ("plus", "a cross"),
             "star": ("a star", "stars"), "triangle": ("a triangle", "triangles"), "yes": ("Yes", "yes.", "yeah"),
             "no": ("No", "no.", "nope"), "small": ("little", "tiny", "Small"), "large": ("big", "Large")}
_CONFUSE = {"red": ("orange", "brown"), "orange": ("red", "yellow", "brown"), "yellow": ("orange", "green"),
            "green": ("blue", "yellow"), "blue": ("purple", "green"), "purple": ("blue", "red"),
            "gray": ("brown", "blue"), "brown": ("orange", "red", "gray"), "square": ("diamond",),
            "diamond": ("square", "triangle"), "triangle": ("diamond",), "star": ("cross",),
            "cross": ("star",), "circle": ("square",)}


def _variant(rng, answer: str, kind: str) -> str:
    if kind == "number":
        n = int(answer)
        return pick(rng, (NUM_WORDS[n] if n < len(NUM_WORDS) else answer, f"{answer}.", "none" if n == 0 else answer))
    return pick(rng, _VARIANTS.get(answer, (answer.capitalize(), f"{answer}.")))


def _wrong(rng, answer: str, kind: str) -> str:
    if kind == "number":
        n = int(answer) + pick(rng, (-1, 1, 1, 2))
        return str(max(n, 0) if n != int(answer) else n + 1)
    if kind in ("yesno", "size"):
        return {"yes": "no", "no": "yes", "small": "large", "large": "small"}[answer]
    pool = COLORS if kind == "color" else SHAPES
    if answer in _CONFUSE and rng.random() < 0.7:
        return pick(rng, _CONFUSE[answer])
    return pick(rng, [a for a in pool if a != answer])


def human_answers(rng: np.random.Generator, q: Question, n: int = 10) -> list[tuple[str, str]]:
    """``n`` (answer, answer_confidence) pairs; after normalisation the canonical answer is always the most
    frequent one, strictly more frequent than any other (a plurality, not necessarily more than n/2; re-drawn
    until it is), so ``multiple_choice_answer`` is the ground truth."""
    # Per-question error rate of an annotator: mostly easy (mean ~0.16), a tail of hard questions; relational
    # questions are harder, yes/no ones easier.
    err = float(rng.beta(1.3, 7.0)) * (1.3 if q.family == "multi-hop" else 1.0) * (0.5 if q.kind == "yesno" else 1.0)
    p_right = 1.0 - min(err, 0.55)
    for _ in range(20):
        out = []
        for _k in range(n):
            if rng.random() < p_right:
                ans = q.answer if rng.random() > 0.12 else _variant(rng, q.answer, q.kind)
                out.append((ans, "yes" if rng.random() < 0.9 else "maybe"))
            else:
                out.append((_wrong(rng, q.answer, q.kind), pick(rng, ("maybe", "maybe", "no", "yes"))))
        top = Counter(normalize_answer(a) for a, _ in out).most_common(2)
        if top[0][0] == q.answer and (len(top) == 1 or top[0][1] > top[1][1]):
            return out
    return [(q.answer, "yes")] * n
