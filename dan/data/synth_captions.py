"""Five captions per image of the embedded benchmark, naming attributes, counts, positions and relations.

Descriptions are deliberately partial (an object is named by its shape plus, often, its colour and size), so
one caption rarely identifies its image alone; the combination of objects and relations does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from dan.data.render import Scene, SceneObject, relation_sets
from dan.data.synth_lang import (
    NUM_WORDS,
    OPPOSITE,
    PLURAL,
    REL_PHRASES,
    article,
    object_words,
    pick,
    rel_phrase,
    shuffled,
)


@dataclass
class Caption:
    raw: str
    object_ids: list[int]
    key_words: list[str]


def _desc(rng: np.random.Generator, o: SceneObject) -> list[str]:
    attrs = ["shape"] + (["color"] if rng.random() < 0.85 else []) + (["size"] if rng.random() < 0.4 else [])
    return object_words(o, attrs)


def _where(scene: Scene, o: SceneObject) -> str:
    col = ("left", "middle", "right")[min(2, int(3 * o.cx / scene.width))]
    row = ("top", "middle", "bottom")[min(2, int(3 * o.cy / scene.height))]
    if row == "middle":
        return "in the center" if col == "middle" else f"on the {col}"
    return f"at the {row}" if col == "middle" else f"in the {row} {col} corner"


def _pairs(scene: Scene, rng: np.random.Generator) -> list:
    """(a, rel, b) with a clearly in relation rel to b, in random order."""
    out = []
    for b in scene.objects:
        for rel in REL_PHRASES:
            out.extend((a, rel, b) for a in relation_sets(scene, b, rel)[0])
    return shuffled(rng, out)


def c_relation(scene: Scene, rng: np.random.Generator) -> Caption | None:
    for a, rel, b in _pairs(scene, rng)[:1]:
        wa, wb = _desc(rng, a), _desc(rng, b)
        pre = pick(rng, ("", "", "there is ", "a picture of ", "an image with "))
        return Caption(f"{pre}{article(' '.join(wa))} {rel_phrase(rng, rel)} {article(' '.join(wb))}",
                       [a.id, b.id], [*wa, *wb])
    return None


def c_chain(scene: Scene, rng: np.random.Generator) -> Caption | None:
    for a, rel1, b in _pairs(scene, rng):
        for c_, rel2, b2 in _pairs(scene, rng):
            if b2.id == b.id and c_.id not in (a.id, b.id):
                w = [_desc(rng, o) for o in (a, b, c_)]
                text = (f"the {' '.join(w[0])} is {rel_phrase(rng, rel1)} the {' '.join(w[1])}, which is "
                        f"{rel_phrase(rng, OPPOSITE[rel2])} the {' '.join(w[2])}")
                return Caption(text, [a.id, b.id, c_.id], [x for ws in w for x in ws])
    return None


def c_list(scene: Scene, rng: np.random.Generator) -> Caption | None:
    objs = sorted(shuffled(rng, scene.objects)[:3], key=lambda o: o.cx)
    w = [_desc(rng, o) for o in objs]
    items = [article(" ".join(x)) for x in w]
    listed = ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]
    n = len(scene.objects)
    head = pick(rng, (f"{NUM_WORDS[n]} shapes including " if n > len(objs) else f"{NUM_WORDS[n]} shapes: ",
                       "a scene with ", "a noisy picture of "))
    return Caption(head + listed, [o.id for o in objs], [x for ws in w for x in ws])


def c_count(scene: Scene, rng: np.random.Generator) -> Caption | None:
    for attr in shuffled(rng, ["shape", "color"]):
        groups = Counter(getattr(o, attr) for o in scene.objects)
        many = [v for v, k in sorted(groups.items()) if k >= 2]
        if not many:
            continue
        v = pick(rng, many)
        members = [o for o in scene.objects if getattr(o, attr) == v]
        rest = [o for o in scene.objects if getattr(o, attr) != v]
        words = [NUM_WORDS[len(members)], PLURAL[v] if attr == "shape" else v]
        text = " ".join(words) + ("" if attr == "shape" else f" {pick(rng, ('shapes', 'objects'))}")
        ids, kw = [o.id for o in members], words[1:]
        if rest:
            o = pick(rng, rest)
            w = _desc(rng, o)
            text += f" and {article(' '.join(w))}"
            ids, kw = [*ids, o.id], [*kw, *w]
        return Caption(text + pick(rng, ("", "", " on a textured background")), ids, kw)
    return None


def c_position(scene: Scene, rng: np.random.Generator) -> Caption | None:
    objs = shuffled(rng, scene.objects)[:2]
    w = [_desc(rng, o) for o in objs]
    parts = [f"{article(' '.join(x))} {_where(scene, o)}" for x, o in zip(w, objs, strict=True)]
    return Caption(" and ".join(parts), [o.id for o in objs], [x for ws in w for x in ws])


CAPTION_TEMPLATES = (c_relation, c_chain, c_list, c_count, c_position)


def make_captions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[Caption]:
    """``n`` distinct captions (templates in random order, repeated with other objects when needed)."""
    out: list[Caption] = []
    seen: set[str] = set()
    order = list(CAPTION_TEMPLATES)
    for i in range(12 * n):
        if len(out) >= n:
            break
        if i % len(order) == 0:
            order = shuffled(rng, CAPTION_TEMPLATES)
        cap = order[i % len(order)](scene, rng)
        if cap is None:
            continue
        raw = cap.raw[0].upper() + cap.raw[1:] if rng.random() < 0.5 else cap.raw
        raw += pick(rng, (".", ".", ""))
        if raw.lower().rstrip(".") not in seen:
            seen.add(raw.lower().rstrip("."))
            out.append(Caption(raw, sorted(set(cap.object_ids)), list(dict.fromkeys(cap.key_words))))
    while len(out) < n:  # very small scenes may not give n distinct sentences: repeat one
        out.append(out[len(out) % max(1, len(out))] if out else Caption("an empty scene", [], []))
    return out
