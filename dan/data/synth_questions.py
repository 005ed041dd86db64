"""Questions of the embedded benchmark, from a scene's ground truth: eleven families, single-hop (an object's
colour, shape or size, existence, counts) and multi-hop (through a relation to an anchor object, or a comparison).

Every question is answerable from the scene without doubt: an object is only named by an expression that no
other object matches, and a spatial relation is only used when no object lies within the tolerance band
where "left of"/"above" would be a matter of opinion. The ten human answers to each question:
:func:`dan.data.synth_lang.human_answers`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dan.data.render import COLORS, SHAPES, Scene, SceneObject, relation_sets
from dan.data.synth_lang import OPPOSITE, PLURAL, REL_PHRASES, article, object_words, pick, rel_phrase, shuffled

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

