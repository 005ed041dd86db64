"""Does attention look where it should? Grounding scores from the per-example outputs of finished runs.

Nothing here retrains: r-DAN runs are read from ``predictions.csv`` + ``attention.npz``, m-DAN runs from
``embeddings.npz``, and the ground truth from the data set's ``grounding.json`` (object boxes, the objects each
question/caption names, and its key words).

Definitions (per example and attention step k = 1..K; region n is a cell of the feature grid):

* coverage c_n: the fraction of cell n covered by one of the objects (:func:`dan.data.grounding.object_mask`);
  cell n is the part of the image the backbone's grid cell n covers (its stride and input size, recorded with
  the run: :func:`dan.analysis_outputs.feature_cells`; a stride that does not divide the size leaves a partial
  last cell).
* pointing game: a *hit* when the most attended region touches an object, i.e. ``c[argmax a] > 0`` (a region
  is "inside" when the object covers any part of it). Chance: the fraction of regions with c_n > 0 (the hit
  rate of a region drawn uniformly at random). When several regions share the largest weight (a uniform map, or
  values equal after the float16 the maps are saved in), each is the most attended one with the same right: the
  hit is the share of them that touch an object (the expected hit of a random pick among them), so a uniform map
  scores its chance value, not whatever region 0 holds.
* attention mass: ``sum_n a_n c_n`` (the share of attention inside the object boxes when each cell's weight is
  spread evenly over the cell). Chance, i.e. uniform attention a_n = 1/N: ``mean_n c_n``, the objects' area
  fraction.
* textual attention: mass on the key words (tokens of the question/caption that are in ``key_words``), and
  whether the most attended word is one; chance (uniform over the words): the key words' share of the words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dan.analysis_outputs import (  # noqa: F401 - re-exported: the notebooks call them as dan.analysis's
    NEEDS,
    MDANOutputs,
    VQAOutputs,
    analysable,
    analysed_configs,
    check_analysable,
    load_mdan_outputs,
    load_vqa_outputs,
    save_grounding_tables,
)
from dan.data.grounding import Grounding, load_grounding, object_mask
from dan.data.text import tokenize
from dan.io import DataError
from dan.stats import mean_ci

INSIDE = "coverage > 0"  # definition of "the argmax region falls inside an object", see the module docstring


def pointing_hit(att: np.ndarray, cover: np.ndarray) -> float:
    """1.0 if the most attended region of ``att`` [N] has coverage ``cover`` [N] > 0, else 0.0; with a tie for the
    largest weight, the share of the tied regions that have coverage > 0 (np.argmax took the first of them, so a
    uniform map scored cover[0] > 0: 0 or 1 by where region 0 lies, not its chance value)."""
    att = np.asarray(att)
    top = att == att.max()
    return float((np.asarray(cover)[top] > 0).mean())


def attention_mass(att: np.ndarray, cover: np.ndarray) -> float:
    """Attention inside the objects: sum_n a_n c_n / sum_n a_n (att [N] >= 0, cover [N] in [0, 1])."""
    att = np.asarray(att, dtype=np.float64)
    return float(att @ np.asarray(cover, dtype=np.float64) / max(att.sum(), 1e-12))


def chance_scores(cover: np.ndarray) -> tuple[float, float]:
    """(pointing hit rate, mass) of uniform attention: (fraction of regions with c_n > 0, mean c_n)."""
    cover = np.asarray(cover, dtype=np.float64)
    return float((cover > 0).mean()), float(cover.mean())


def _visual_rows(att: np.ndarray, image, sets: dict[str, list[int]], out: VQAOutputs | MDANOutputs,
                 base: dict) -> list:
    """Rows for one example: att [K, N]; ``sets`` maps an object-set name to object ids (empty sets skipped);
    ``out``'s grid, stride and input size give the cells."""
    rows = []
    for name, ids in sets.items():
        if not ids:
            continue
        cover = object_mask(image, ids, out.grid, stride=out.stride, image_size=out.image_size)  # [N]
        chance_hit, chance_mass = chance_scores(cover)
        for k in range(att.shape[0]):
            rows.append({**base, "step": k + 1, "objects": name, "hit": pointing_hit(att[k], cover),
                         "chance_hit": chance_hit, "mass": attention_mass(att[k], cover),
                         "chance_mass": chance_mass})
    return rows


def _text_rows(att: np.ndarray, tokens: list[str], key_words: list[str], base: dict) -> list:
    """Rows for one text: att [K, T >= len(tokens)]; skipped when no token is a key word."""
    key = np.isin(np.array(tokens, dtype=object), list(key_words)).astype(np.float64)  # [L]
    if not key.any():
        return []
    chance = float(key.mean())
    rows = []
    for k in range(att.shape[0]):
        a = att[k, : len(tokens)].astype(np.float64)
        rows.append({**base, "step": k + 1, "hit": pointing_hit(a, key), "chance_hit": chance,
                     "mass": float(a @ key / max(a.sum(), 1e-12)), "chance_mass": chance})
    return rows


def _tokens(text: str, length: int, where: str) -> list[str]:
    toks = tokenize(text)
    if len(toks) != int(length):
        raise DataError(f"{where}: {len(toks)} tokens in {text!r} but the saved attention has length {length}")
    return toks


def _grounding(out: VQAOutputs | MDANOutputs, grounding: Grounding | None) -> Grounding:
    if grounding is not None:
        return grounding
    path = Path(out.data_root) / "grounding.json"
    if not path.is_file():
        raise DataError(f"no grounding.json at {path}: grounding needs the embedded data set's boxes")
    return load_grounding(path)


def vqa_grounding(out: VQAOutputs, grounding: Grounding | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(visual, textual) tidy tables of r-DAN grounding, one row per question x step (x object set).

    Visual object sets: "referred" (all objects the question names), "anchor" and "target" (multi-hop
    relations). Columns: question_id, image_id, family, answer_type, correct, step, [objects], hit,
    chance_hit, mass, chance_mass. Questions without grounding (or naming no object) are left out.
    """
    g = _grounding(out, grounding)
    vis, txt = [], []
    for i, row in enumerate(out.predictions.itertuples(index=False)):
        q = g.questions.get(int(row.question_id))
        if q is None:
            continue
        base = {"question_id": int(row.question_id), "image_id": int(row.image_id), "family": q.family,
                "answer_type": row.answer_type, "correct": bool(row.correct)}
        image = g.images.get(int(row.image_id))
        if image is None:
            raise DataError(f"grounding has question {row.question_id} but no image {row.image_id}")
        sets = {"referred": q.object_ids}
        if q.anchor_ids:  # relational question: score the anchor and the target objects separately too
            sets.update(anchor=q.anchor_ids, target=q.target_ids)
        vis += _visual_rows(out.visual[i], image, sets, out, base)
        toks = _tokens(row.question, out.lengths[i], f"{out.run_dir} question {row.question_id}")
        txt += _text_rows(out.text[i], toks, q.key_words, base)
    return pd.DataFrame(vis), pd.DataFrame(txt)


def mdan_grounding(out: MDANOutputs, grounding: Grounding | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(visual, textual) tidy tables of m-DAN grounding on the test split.

    The image encoder never sees a caption, so image attention is scored against two object sets: "named"
    (the union of the objects that the image's captions name) and "all" (every object in the image).
    Columns: image_id, correct (i2t: a caption of the image is ranked first), step, objects, hit, chance_hit,
    mass, chance_mass; textual: sentence_id, image_id, step, hit, chance_hit, mass, chance_mass.
    """
    g = _grounding(out, grounding)
    top = out.similarity.argmax(axis=1) // out.per_image  # [I] image index of the top-ranked caption
    vis, txt = [], []
    for i, image_id in enumerate(out.image_ids.tolist()):
        image = g.images.get(image_id)
        if image is None:
            raise DataError(f"grounding has no image {image_id} (test image of {out.run_dir})")
        sids = out.sentence_ids[i * out.per_image: (i + 1) * out.per_image].tolist()
        named = sorted({o for s in sids if s in g.captions for o in g.captions[s].object_ids})
        base = {"image_id": image_id, "correct": bool(top[i] == i)}
        vis += _visual_rows(out.image_attention[i], image, {"named": named, "all": [o.id for o in image.objects]},
                            out, base)
        for j, sid in enumerate(sids):
            cap = g.captions.get(sid)
            if cap is None:
                continue
            row = i * out.per_image + j
            toks = _tokens(out.sentences[sid], out.lengths[row], f"{out.run_dir} caption {sid}")
            txt += _text_rows(out.text_attention[row], toks, cap.key_words, {"sentence_id": sid, **base})
    return pd.DataFrame(vis), pd.DataFrame(txt)


def grounding_summary(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: n (examples), images, pointing hit rate (%) with 95 % CI half width and its chance, mass (%)
    with CI and chance, lift = mass / chance mass, and the paired differences from chance (``pointing − chance``,
    ``mass − chance``: the mean of each example's score minus that example's chance value, in points), each
    followed by its 95 % half width (``pointing − chance ± ci``, ``mass − chance ± ci``), as every ``± ci`` column
    of the table follows the value it is the half width of (and as :func:`hop_analysis` names its columns).

    Examples about one image share its features (and, in m-DAN, its visual attention), so they are not
    independent: the intervals are cluster-robust over images (:func:`dan.stats.mean_ci` with
    ``clusters=image_id``; G - 1 degrees of freedom for G images).

    The chance value differs from example to example (each has its own objects, its own words) and its mean over
    the group is an estimate from the same examples as the score's: whether a score lies above or below chance
    is read from the interval of the paired difference (:func:`dan.report.attention_findings`), not from the
    score's interval set against the mean chance as if that were a known constant."""
    rows = []
    for key, grp in df.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        images = grp["image_id"].to_numpy()
        hit, hlo, _ = mean_ci(grp["hit"].to_numpy(), clusters=images)
        mass, mlo, _ = mean_ci(grp["mass"].to_numpy(), clusters=images)
        dhit, dhlo, _ = mean_ci((grp["hit"] - grp["chance_hit"]).to_numpy(), clusters=images)
        dmass, dmlo, _ = mean_ci((grp["mass"] - grp["chance_mass"]).to_numpy(), clusters=images)
        chance_mass = float(grp["chance_mass"].mean())
        rows.append({**dict(zip(by, key, strict=True)), "n": len(grp), "images": len(np.unique(images)),
                     "pointing %": 100 * hit,
                     "± ci": 100 * (hit - hlo), "chance pointing %": 100 * float(grp["chance_hit"].mean()),
                     "mass %": 100 * mass, "± ci ": 100 * (mass - mlo), "chance mass %": 100 * chance_mass,
                     "lift": mass / max(chance_mass, 1e-12),
                     "pointing − chance": 100 * dhit, "pointing − chance ± ci": 100 * (dhit - dhlo),
                     "mass − chance": 100 * dmass, "mass − chance ± ci": 100 * (dmass - dmlo)})
    return pd.DataFrame(rows).set_index(by).round(2)


def hop_analysis(visual: pd.DataFrame) -> pd.DataFrame:
    """Multi-hop questions: anchor vs target at each step, and the paired step-1 minus step-2 difference.

    Per question and step, the anchor share is mass(anchor) / (mass(anchor) + mass(target)); its chance value
    uses the area fractions. Rows: step 1, step 2, ..., "1 − 2" (paired differences, mean with 95 % CI);
    the intervals are cluster-robust over images, as in :func:`grounding_summary`.
    Columns: anchor/target mass (%), anchor/target pointing (%), anchor share (%) and chance share (%).
    """
    mh = visual[(visual.family == "multi-hop") & visual.objects.isin(["anchor", "target"])]
    if mh.empty:
        return pd.DataFrame()
    wide = mh.pivot_table(index=["image_id", "question_id", "step"], columns="objects",
                          values=["mass", "hit", "chance_mass"]).dropna()
    share = wide[("mass", "anchor")] / (wide[("mass", "anchor")] + wide[("mass", "target")]).clip(lower=1e-12)
    chance = wide[("chance_mass", "anchor")] / (wide[("chance_mass", "anchor")] + wide[("chance_mass", "target")])
    flat = pd.DataFrame({"anchor mass": wide[("mass", "anchor")], "target mass": wide[("mass", "target")],
                         "anchor pointing": wide[("hit", "anchor")], "target pointing": wide[("hit", "target")],
                         "anchor share": share, "chance share": chance}) * 100
    rows = []
    for step, grp in flat.groupby(level="step"):
        row = {"step": str(step), "n": len(grp), "images": grp.index.get_level_values("image_id").nunique()}
        for col in flat.columns:
            m, lo, _ = mean_ci(grp[col].to_numpy(), clusters=grp.index.get_level_values("image_id"))
            row[col], row[f"{col} ± ci"] = m, m - lo
        rows.append(row)
    steps = sorted(flat.index.get_level_values("step").unique())
    if len(steps) >= 2:
        a = flat.xs(steps[0], level="step")
        b = flat.xs(steps[1], level="step").reindex(a.index)
        diff = (a - b).dropna()
        row = {"step": f"{steps[0]} − {steps[1]}", "n": len(diff),
               "images": diff.index.get_level_values("image_id").nunique()}
        for col in flat.columns:
            m, lo, _ = mean_ci(diff[col].to_numpy(), clusters=diff.index.get_level_values("image_id"))
            row[col], row[f"{col} ± ci"] = m, m - lo
        rows.append(row)
    return pd.DataFrame(rows).set_index("step").round(2)


def hop_verdict(hop: pd.DataFrame) -> str:
    """One sentence from :func:`hop_analysis`: the anchor share at the first two steps, its chance value and
    the paired difference with its 95 % interval, and what the interval allows to say."""
    if len(hop) < 3:
        return "No multi-hop question with both anchor and target objects could be scored at two steps."
    s1, s2, d = hop.iloc[0], hop.iloc[1], hop.iloc[-1]
    lo, hi = d["anchor share"] - d["anchor share ± ci"], d["anchor share"] + d["anchor share ± ci"]
    verdict = ("step 1 puts a larger share on the anchor than step 2" if lo > 0 else
               "step 2 puts a larger share on the anchor than step 1" if hi < 0 else
               "the two steps cannot be told apart")
    return (f"Of the attention mass on the anchor and target objects of {int(d['n'])} multi-hop questions, the "
            f"anchor gets {s1['anchor share']:.1f} % at step {hop.index[0]} and {s2['anchor share']:.1f} % at step "
            f"{hop.index[1]} (uniform attention: {s1['chance share']:.1f} %); the paired difference is "
            f"{d['anchor share']:.1f} points (95 % CI {lo:.1f} to {hi:.1f}), so {verdict} at 95 % confidence.")
