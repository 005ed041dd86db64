"""Questions (with ten human-style answers) and captions of the embedded benchmark, from a scene's ground truth.

Every question is answerable from the scene without doubt: an object is only named by an expression that no
other object matches, and a spatial relation is only used when no object lies within the tolerance band
where "left of"/"above" would be a matter of opinion. Human answers then add realistic disagreement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dan.data.render import COLORS, SHAPES, Scene, SceneObject, relation_sets
from dan.metrics import normalize_answer

PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
          "star": "stars", "cross": "crosses"}
NUM_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
REL_PHRASES = {"left": ("left of", "to the left of"), "right": ("right of", "to the right of"),
               "above": ("above",), "below": ("below", "under")}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
ANCHOR_REFS = (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"))


@dataclass
class Question:
    question: str
    answer: str  # canonical, already normalised
    kind: str  # "yesno" | "number" | "color" | "shape" | "size": how annotators err
    question_type: str
    family: str  # "single-hop" | "multi-hop"
    anchor_ids: list[int] = field(default_factory=list)
    target_ids: list[int] = field(default_factory=list)
    key_words: list[str] = field(default_factory=list)

    @property
    def answer_type(self) -> str:
        return {"yesno": "yes/no", "number": "number"}.get(self.kind, "other")


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


def _unique_refs(scene: Scene, obj: SceneObject, options: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [attrs for attrs in options
            if not any(o.id != obj.id and all(getattr(o, a) == getattr(obj, a) for a in attrs)
                       for o in scene.objects)]


def _named(scene: Scene, rng: np.random.Generator, options: Sequence[tuple[str, ...]],
           exclude: SceneObject | None = None) -> list[tuple[SceneObject, tuple[str, ...]]]:
    """All (object, referring attributes) pairs with a unique expression, in random order."""
    out = []
    for o in shuffled(rng, scene.objects):
        refs = _unique_refs(scene, o, options)
        if refs and (exclude is None or o.id != exclude.id):
            out.append((o, pick(rng, refs)))
    return out


GENERIC_NOUNS = frozenset({"object", "objects", "shape", "shapes", "thing", "things"})


def _kw(words: list[str]) -> list[str]:
    """Key words: the attribute words that name objects (generic nouns such as "object" name none)."""
    return list(dict.fromkeys(w for w in words if w not in GENERIC_NOUNS))


def _q(text: str, answer: str, kind: str, qtype: str, family: str, anchors=(), targets=(), words=()) -> Question:
    return Question(text, answer, kind, qtype, family, sorted(o.id for o in anchors), sorted(o.id for o in targets),
                    _kw(list(words)))


# ---- single-hop -------------------------------------------------------------------------------------------
def q_color(scene: Scene, rng: np.random.Generator) -> Question | None:
    for o, ref in _named(scene, rng, (("shape",), ("size", "shape"))):
        w = object_words(o, ref)
        text, qt = pick(rng, (("what color is the {}?", "what color is the"),
                               ("what is the color of the {}?", "what is the color of the")))
        return _q(text.format(" ".join(w)), o.color, "color", qt, "single-hop", targets=[o], words=w)
    return None


def q_shape(scene: Scene, rng: np.random.Generator) -> Question | None:
    for o, ref in _named(scene, rng, (("color",), ("size", "color"))):
        w = object_words(o, ref, pick(rng, ("object", "shape", "thing")))
        text, qt = pick(rng, (("what shape is the {}?", "what shape is the"),
                               ("what is the shape of the {}?", "what is the shape of the")))
        return _q(text.format(" ".join(w)), o.shape, "shape", qt, "single-hop", targets=[o], words=w)
    return None


def q_size(scene: Scene, rng: np.random.Generator) -> Question | None:
    for o, ref in _named(scene, rng, (("shape",), ("color", "shape"))):
        w = object_words(o, ref)
        return _q(f"what size is the {' '.join(w)}?", o.size, "size", "what size is the", "single-hop",
                  targets=[o], words=w)
    return None


def q_exists(scene: Scene, rng: np.random.Generator) -> Question | None:
    want = bool(rng.random() < 0.5)
    colors = sorted({o.color for o in scene.objects})
    shapes = sorted({o.shape for o in scene.objects})
    if want:
        o = pick(rng, scene.objects)
        color, shape = o.color, o.shape
    else:  # a hard negative: colour and shape both occur, but not together
        combos = [(c, s) for c in colors for s in shapes
                  if not any(o.color == c and o.shape == s for o in scene.objects)]
        if not combos:
            return None
        color, shape = pick(rng, combos)
    targets = [o for o in scene.objects if o.color == color and o.shape == shape]
    if rng.random() < 0.7:
        phrase = article(f"{color} {shape}")
        text, qt, words = f"is there {phrase}?", f"is there {phrase.split()[0]}", [color, shape]
    else:
        text, qt, words = f"are there any {color} {PLURAL[shape]}?", "are there any", [color, PLURAL[shape]]
    return _q(text, "yes" if targets else "no", "yesno", qt, "single-hop", targets=targets, words=words)


_COUNT_P = np.array([0.14, 0.3, 0.28, 0.17, 0.11])  # wanted answers 0..4


def _count_answer(rng, groups: list[tuple[list[str], list[SceneObject]]]):
    """Choose among (words, objects) groups one whose size is a randomly wanted count (else the closest)."""
    want = int(rng.choice(len(_COUNT_P), p=_COUNT_P))
    best = min(abs(len(g[1]) - want) for g in groups)
    return pick(rng, [g for g in groups if abs(len(g[1]) - want) == best])


def q_count(scene: Scene, rng: np.random.Generator) -> Question | None:
    mode = pick(rng, ("shape", "shape", "color", "color+shape", "size"))
    objs = scene.objects
    if mode == "shape":
        groups = [([PLURAL[s]], [o for o in objs if o.shape == s]) for s in SHAPES]
    elif mode == "color":
        groups = [([c, "objects"], [o for o in objs if o.color == c]) for c in COLORS]
    elif mode == "size":
        noun = pick(rng, ("objects", "shapes"))
        groups = [([z, noun], [o for o in objs if o.size == z]) for z in ("small", "large")]
    else:  # zero only for a colour and a shape that both occur
        present_c, present_s = {o.color for o in objs}, {o.shape for o in objs}
        groups = [([c, PLURAL[s]], [o for o in objs if o.color == c and o.shape == s])
                  for c in sorted(present_c) for s in sorted(present_s)]
    words, targets = _count_answer(rng, groups)
    tail = pick(rng, ("are there", "are in the image", "can you see", "are in the picture"))
    return _q(f"how many {' '.join(words)} {tail}?", str(len(targets)), "number", "how many", "single-hop",
              targets=targets, words=words)


# ---- multi-hop ---------------------------------------------------------------------------------------------
def rel_phrase(rng: np.random.Generator, rel: str) -> str:
    return pick(rng, REL_PHRASES[rel])


def q_rel_attr(scene: Scene, rng: np.random.Generator) -> Question | None:
    """What shape / colour is the one object in relation to the anchor."""
    attr = pick(rng, ("shape", "color"))
    for a, ref in _named(scene, rng, ANCHOR_REFS):
        for rel in shuffled(rng, list(REL_PHRASES)):
            clear, unsure = relation_sets(scene, a, rel)
            if len(clear) != 1 or unsure:
                continue
            t, w, rp = clear[0], object_words(a, ref), rel_phrase(rng, rel)
            if attr == "shape":
                text, qt = f"what shape is {rp} the {' '.join(w)}?", "what shape is"
            else:
                text, qt = f"what color is the {pick(rng, ('object', 'shape'))} {rp} the {' '.join(w)}?", \
                    "what color is the"
            return _q(text, getattr(t, attr), attr, qt, "multi-hop", anchors=[a], targets=[t], words=w)
    return None


def q_rel_count(scene: Scene, rng: np.random.Generator) -> Question | None:
    for a, ref in _named(scene, rng, ANCHOR_REFS):
        rel = pick(rng, list(REL_PHRASES))
        clear, unsure = relation_sets(scene, a, rel)
        shape = pick(rng, [None, None, *sorted({o.shape for o in scene.objects})])
        if shape is not None:
            clear = [o for o in clear if o.shape == shape]
            unsure = [o for o in unsure if o.shape == shape]
        if unsure:
            continue
        w, noun = object_words(a, ref), PLURAL[shape] if shape else "objects"
        text = f"how many {noun} are {rel_phrase(rng, rel)} the {' '.join(w)}?"
        return _q(text, str(len(clear)), "number", "how many", "multi-hop", anchors=[a], targets=clear,
                  words=[noun, *w])
    return None


def q_same_count(scene: Scene, rng: np.random.Generator) -> Question | None:
    attr = pick(rng, ("color", "shape"))
    refs = (("shape",), ("size", "shape")) if attr == "color" else (("color",), ("size", "color"))
    for a, ref in _named(scene, rng, refs):
        w = object_words(a, ref)
        others = [o for o in scene.objects if o.id != a.id and getattr(o, attr) == getattr(a, attr)]
        text = pick(rng, ("how many objects are the same {} as the {}?",
                           "how many other objects have the same {} as the {}?"))
        return _q(text.format(attr, " ".join(w)), str(len(others)), "number", "how many", "multi-hop",
                  anchors=[a], targets=others, words=w)
    return None


def q_rel_exists(scene: Scene, rng: np.random.Generator) -> Question | None:
    want = bool(rng.random() < 0.5)
    attr = pick(rng, ("shape", "color"))
    for a, ref in _named(scene, rng, ANCHOR_REFS):
        rel = pick(rng, list(REL_PHRASES))
        clear, unsure = relation_sets(scene, a, rel)
        present = sorted({getattr(o, attr) for o in clear})
        absent = sorted({getattr(o, attr) for o in scene.objects if o.id != a.id} - set(present))
        values = [v for v in (present if want else absent) if not any(getattr(o, attr) == v for o in unsure)]
        if not values:
            continue
        v, w, rp = pick(rng, values), object_words(a, ref), rel_phrase(rng, rel)
        what = [v] if attr == "shape" else [v, "object"]
        text = f"is there {article(' '.join(what))} {rp} the {' '.join(w)}?"
        targets = [o for o in clear if getattr(o, attr) == v]
        return _q(text, "yes" if targets else "no", "yesno", f"is there {article(v).split()[0]}",
                  "multi-hop", anchors=[a], targets=targets, words=[*what, *w])
    return None


def q_is_rel(scene: Scene, rng: np.random.Generator) -> Question | None:
    want = bool(rng.random() < 0.5)
    named = _named(scene, rng, ANCHOR_REFS)
    for b, ref_b in named:
        rel = pick(rng, list(REL_PHRASES))
        clear, _ = relation_sets(scene, b, rel if want else OPPOSITE[rel])
        for t in clear:
            ref_t = next((r for o, r in named if o.id == t.id), None)
            if ref_t is None:
                continue
            wt, wb = object_words(t, ref_t), object_words(b, ref_b)
            text = f"is the {' '.join(wt)} {rel_phrase(rng, rel)} the {' '.join(wb)}?"
            return _q(text, "yes" if want else "no", "yesno", "is the", "multi-hop", anchors=[b], targets=[t],
                      words=[*wt, *wb])
    return None


def q_same_attr(scene: Scene, rng: np.random.Generator) -> Question | None:
    want = bool(rng.random() < 0.5)
    attr = pick(rng, ("color", "shape"))
    refs = (("shape",), ("size", "shape")) if attr == "color" else (("color",), ("size", "color"))
    named = _named(scene, rng, refs)
    for b, ref_b in named:
        for t, ref_t in named:
            if t.id == b.id or (getattr(t, attr) == getattr(b, attr)) != want:
                continue
            wt, wb = object_words(t, ref_t), object_words(b, ref_b)
            if attr == "color":
                text, qt = f"is the {' '.join(wt)} the same color as the {' '.join(wb)}?", "is the"
            else:
                text, qt = f"does the {' '.join(wt)} have the same shape as the {' '.join(wb)}?", "does the"
            return _q(text, "yes" if want else "no", "yesno", qt, "multi-hop", anchors=[b], targets=[t],
                      words=[*wt, *wb])
    return None


FAMILIES: list[tuple[Callable, float]] = [
    (q_color, 1.0), (q_shape, 0.8), (q_size, 0.35), (q_exists, 1.0), (q_count, 1.0),
    (q_rel_attr, 1.1), (q_rel_count, 0.8), (q_same_count, 0.8), (q_rel_exists, 0.8), (q_is_rel, 0.6),
    (q_same_attr, 0.6),
]
_W = np.array([w for _, w in FAMILIES]) / sum(w for _, w in FAMILIES)


def make_questions(scene: Scene, rng: np.random.Generator, n: int) -> list[Question]:
    """Up to ``n`` distinct questions about ``scene`` (families drawn by weight)."""
    out: list[Question] = []
    seen: set[str] = set()
    for _ in range(8 * n):
        if len(out) >= n:
            break
        q = FAMILIES[int(rng.choice(len(FAMILIES), p=_W))][0](scene, rng)
        if q is not None and q.question not in seen:
            seen.add(q.question)
            out.append(q)
    return out


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
