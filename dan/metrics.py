"""Evaluation metrics: the official VQA accuracy and image-text retrieval recall.

VQA accuracy follows the official evaluation's scoring: a prediction scores ``min(1, #matching annotators / 3)``
averaged over the ten leave-one-annotator-out subsets, after the official normalisation (punctuation, periods
not inside numbers, lower case, number words to digits, articles dropped, common contractions restored). Here
the prediction and all ten human answers are always normalised. The published versions of the official script
(GT-Vision-Lab's ``vqaEval.py``) do less, and differ between themselves: the older one normalises the prediction
fully but the human answers only for punctuation, and only when the ten are not all the same; the current one
normalises both sides fully, but only when the ten are not all the same. So this scorer is more lenient in rare
cases: a prediction "dog" matches a human "the dog", and "2" matches ten "two"s, where a version of the script
would not count them. On the released VQA annotations, which are mostly normalised already, such cases are rare.
The embedded data's human answers include unnormalised forms ("Yes", "two") on purpose, but no question has ten
identical answers that normalisation changes, so the current script would score it as this one does (the book's
deviations page says so).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dan.data.vqa import ANSWER_TYPES, VQAExample
from dan.io import DataError

# Characters the official evaluation treats as punctuation (apostrophes are kept: "don't" stays one word).
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
          "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_IN_NUMBER = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern: a period not before a digit
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
# The official scorer's contraction table, as it acts: it looks each lowercased word up, so only its lowercase
# keys ever match (its "Im", "Ive", "Id've", "I'dve" never do; "let's" and "she's" map to themselves and are left
# out here). Mostly apostrophe-less spellings mapped to the apostrophe ones, plus its one oddity, kept for equal
# scores: "somebody'd" -> "somebodyd". Real words such as "shed", "wed", "ill" or "lets" are not keys there.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}


def _strip_punctuation(text: str) -> str:
    keep_together = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in _PUNCT:
        # Punctuation touching a space (or any text with "1,000"-style numbers) is deleted; inside a word
        # ("black-and-white") it becomes a space, as in the official evaluation.
        if keep_together or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_IN_NUMBER.sub("", out)


@functools.lru_cache(maxsize=1 << 16)  # answers repeat a lot; the function is pure
def normalize_answer(answer: str) -> str:
    """Official VQA answer normalisation.

    ``"Two"`` -> ``"2"``, ``"2."`` -> ``"2"``, ``"the dog"`` -> ``"dog"``, ``"dont"`` -> ``"don't"``,
    ``"yes!"`` -> ``"yes"``.
    """
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    text = _strip_punctuation(text)
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def _score_from_count(matches: int, total: int) -> float:
    """Leave-one-out VQA score when ``matches`` of ``total`` normalised human answers equal the prediction."""
    if total <= 0:
        return 0.0
    if total == 1:  # degenerate: no annotator left after leaving one out; fall back to exact match
        return float(matches)
    hit = matches * min(1.0, (matches - 1) / 3.0)  # subsets that leave out a matching annotator
    miss = (total - matches) * min(1.0, matches / 3.0)  # subsets that leave out a non-matching one
    return (hit + miss) / total


def vqa_score(predicted: str, human_answers: Sequence[str]) -> float:
    """Official per-question VQA accuracy in [0, 1]: ``min(1, n/3)`` averaged over leave-one-out subsets.

    With 10 answers and k of them matching: k=1 -> 0.3, k=2 -> 0.6, k=3 -> 0.9, k>=4 -> 1.0.
    """
    if not human_answers:
        raise ValueError("vqa_score needs at least one human answer")
    pred = normalize_answer(predicted)
    matches = sum(1 for a in human_answers if normalize_answer(a) == pred)
    return _score_from_count(matches, len(human_answers))


def soft_scores(human_answers: Sequence[str]) -> dict[str, float]:
    """VQA score of every distinct normalised answer in ``human_answers`` (the soft training target)."""
    counts = Counter(normalize_answer(a) for a in human_answers)
    return {a: _score_from_count(n, len(human_answers)) for a, n in counts.items()}


def _accuracy_table(scores: list[float], types: list[str | None]) -> dict[str, Any]:
    out: dict[str, Any] = {"overall": 100.0 * float(np.mean(scores)) if scores else None, "n": len(scores)}
    counts = {}
    for t in ANSWER_TYPES:
        sel = [s for s, ty in zip(scores, types, strict=True) if ty == t]
        out[t] = 100.0 * float(np.mean(sel)) if sel else None
        counts[t] = len(sel)
    out["counts"] = counts
    return out


def vqa_accuracy(predictions: Mapping[int, str], examples: Sequence[VQAExample],
                 group_by: Mapping[int, str] | None = None) -> dict[str, Any]:
    """VQA accuracy in percent over ``examples`` that carry human answers.

    Returns ``{"overall", "yes/no", "number", "other", "n", "counts"}`` (a type with no question is None);
    with ``group_by`` (question_id -> group name, e.g. "single-hop") also ``"groups": {name: <same table>}``.
    A question without a prediction is a :class:`DataError` naming the first missing ids.
    """
    scored = [ex for ex in examples if ex.answers]
    missing = [ex.question_id for ex in scored if ex.question_id not in predictions]
    if missing:
        raise DataError(f"vqa_accuracy: no prediction for {len(missing)} question(s), e.g. ids {missing[:5]}")
    scores = [vqa_score(predictions[ex.question_id], ex.answers) for ex in scored]
    types = [ex.answer_type for ex in scored]
    result = _accuracy_table(scores, types)
    if group_by is not None:
        groups: dict[str, tuple[list[float], list[str | None]]] = {}
        for ex, s in zip(scored, scores, strict=True):
            name = group_by.get(ex.question_id)
            if name is None:
                continue
            g = groups.setdefault(name, ([], []))
            g[0].append(s)
            g[1].append(ex.answer_type)
        result["groups"] = {name: _accuracy_table(*groups[name]) for name in sorted(groups)}
    return result


def _as_numpy(similarity: Any) -> np.ndarray:
    if hasattr(similarity, "detach"):  # torch tensor, without importing torch here
        similarity = similarity.detach().float().cpu().numpy()
    return np.asarray(similarity, dtype=np.float64)


def _recalls(ranks: np.ndarray) -> dict[str, float]:
    """``ranks`` are 1-based; median rank = floor(median of 0-based ranks) + 1, as usual retrieval code."""
    out = {f"r{k}": 100.0 * float(np.mean(ranks <= k)) for k in (1, 5, 10)}
    out["medr"] = float(np.floor(np.median(ranks - 1)) + 1)
    return out


def retrieval_metrics(similarity: Any, captions_per_image: int = 5) -> dict[str, dict[str, float]]:
    """Recall@1/5/10 (percent) and median rank for image->text ("i2t") and text->image ("t2i").

    ``similarity``: [n_images, captions_per_image * n_images] (numpy or torch); caption j belongs to image
    ``j // captions_per_image``. Image->text ranks the best of an image's captions. Ties count against the
    model (a wrong item with the same score ranks first), so a constant matrix gets the worst possible ranks
    (R@1 = 0 with two or more images), not 100 % and not chance.
    """
    sim = _as_numpy(similarity)
    if sim.ndim != 2 or sim.shape[1] != captions_per_image * sim.shape[0] or sim.shape[0] == 0:
        raise ValueError(f"similarity must be [n_images, {captions_per_image} * n_images], got {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity contains NaN or infinite values")
    n_img, n_cap = sim.shape
    owner = np.arange(n_cap) // captions_per_image  # [n_cap] image of each caption
    own = owner[None, :] == np.arange(n_img)[:, None]  # [n_img, n_cap] True where caption belongs to image
    best_gt = np.where(own, sim, -np.inf).max(axis=1)  # [n_img]
    i2t_ranks = 1 + ((sim >= best_gt[:, None]) & ~own).sum(axis=1)  # wrong captions scoring at least as high
    gt_t = sim[owner, np.arange(n_cap)]  # [n_cap] score of each caption with its own image
    t2i_ranks = 1 + ((sim >= gt_t[None, :]) & ~own).sum(axis=0)
    return {"i2t": _recalls(i2t_ranks), "t2i": _recalls(t2i_ranks)}
