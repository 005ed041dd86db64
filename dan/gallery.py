"""Attention galleries like the paper's figures: per-step visual attention over the image, words shaded by
textual attention, for chosen correct and failed examples of a finished r-DAN or m-DAN run."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from dan.analysis import MDANOutputs, VQAOutputs
from dan.data.grounding import Grounding
from dan.data.text import tokenize
from dan.data.vqa import vqa_image_path
from dan.io import ConfigError, DataError
from dan.viz import attention_overlay, shaded_words


def _is_count(value: object) -> bool:
    """An integer >= 1 (a NumPy one too), not a bool."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer)) and value >= 1


def check_examples_per_group(examples_per_group: object) -> None:
    """:class:`ConfigError` naming the attention notebook's ``examples_per_group`` unless it is an integer >= 1:
    called in its first cells, before its two trainings and the analysis (:func:`pick_examples` refused it only in
    the gallery cells, after all that had run)."""
    if not _is_count(examples_per_group):
        raise ConfigError(f"examples_per_group must be an integer >= 1 (examples per question family in the "
                          f"galleries), got {examples_per_group!r}")


def pick_examples(table: pd.DataFrame, id_column: str, group: str | None = None, per_group: int = 1,
                  seed: int = 0) -> pd.DataFrame:
    """``per_group`` correct and ``per_group`` failed rows of ``table`` (column ``correct``) for every value of
    ``group`` (or overall), drawn with a fixed seed; one row per id with columns [id_column, group, correct]. A
    ``per_group`` that is not an integer >= 1 is a :class:`ConfigError` naming the attention notebook's
    ``examples_per_group`` (it was NumPy's error, or an empty gallery's, after both runs had trained; the notebook
    now checks it first, :func:`check_examples_per_group`)."""
    if not _is_count(per_group):
        raise ConfigError(f"per_group (the attention notebook's examples_per_group) must be an integer >= 1, got "
                          f"{per_group!r}")
    rng = np.random.default_rng(seed)
    ids = table.drop_duplicates(id_column).sort_values(id_column)
    parts = []
    for _, grp in (ids.groupby(group, sort=True) if group else [(None, ids)]):
        for ok in (True, False):
            cand = grp[grp.correct == ok]
            if len(cand):
                parts.append(cand.iloc[np.sort(rng.choice(len(cand), min(per_group, len(cand)), replace=False))])
    cols = [id_column, *([group] if group else []), "correct"]
    return pd.concat(parts)[cols].reset_index(drop=True) if parts else pd.DataFrame(columns=cols)


def _boxes(image, ids: Sequence[int]) -> list[list[float]]:
    return [image.object(i).bbox for i in ids]


def _row(fig: plt.Figure, spec, r: int, img: Image.Image, grid, vis: np.ndarray, words: list[str],
         txt: np.ndarray, boxes: list, extra_boxes: list, label: str, caption: str, cells: dict) -> None:
    """One example: the image with boxes, then one column per step (overlay above, shaded words below).
    vis [K, N], txt [K, len(words)]; ``cells``: the feature grid's stride and input size, as the scores take them
    (:func:`_cells`)."""
    ax = fig.add_subplot(spec[2 * r, 0])
    ax.imshow(img)
    for x, y, w, h in boxes:
        ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, edgecolor="cyan", linewidth=1.5))
    for x, y, w, h in extra_boxes:
        ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, edgecolor="lime", linewidth=1.5, linestyle="--"))
    ax.set_title(label, fontsize=8)
    ax.axis("off")
    info = fig.add_subplot(spec[2 * r + 1, 0])
    info.axis("off")
    text = "\n".join(textwrap.fill(line, 40) for line in caption.split("\n"))
    info.text(0, 0.95, text, fontsize=7.5, va="top", transform=info.transAxes)
    for k in range(vis.shape[0]):
        ax = fig.add_subplot(spec[2 * r, k + 1])
        attention_overlay(ax, img, vis[k], grid, title=f"step {k + 1}", boxes=boxes, **cells)
        for x, y, w, h in extra_boxes:
            ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, edgecolor="lime", linewidth=1.5, linestyle="--"))
        shaded_words(fig.add_subplot(spec[2 * r + 1, k + 1]), words, txt[k])


def _check_ids(ids: Sequence[int], known: dict[int, int], need: str) -> None:
    """A :class:`DataError` (``need``, then what is wrong) unless ``ids`` is non-empty and all in ``known``."""
    unknown = [int(i) for i in ids if int(i) not in known]
    if not len(ids) or unknown:
        raise DataError(f"{need}; " + (f"these are not among them: {unknown[:5]}" if unknown else "got none"))


def _cells(out: VQAOutputs | MDANOutputs) -> dict:
    """The outputs' ``stride`` and ``image_size`` (from the run's inputs.json) for :func:`attention_overlay`: the
    cells the grounding scores use; ``{}`` (equal cells) where the run recorded none."""
    if out.stride is None and out.image_size is None:
        return {}
    return {"stride": out.stride, "image_size": out.image_size}


def _figure(rows: int, steps: int) -> tuple[plt.Figure, object]:
    fig = plt.figure(figsize=(2.7 * (steps + 1), 3.3 * rows))
    spec = fig.add_gridspec(2 * rows, steps + 1, height_ratios=[4, 1.5] * rows, hspace=0.3, wspace=0.06)
    return fig, spec


def vqa_gallery(out: VQAOutputs, grounding: Grounding, question_ids: Sequence[int]) -> plt.Figure:
    """r-DAN gallery: per question, the image with the referred objects (cyan; multi-hop: target cyan, anchor
    dashed lime), the visual attention of each step, and the question shaded by each step's textual attention."""
    pos = {int(q): i for i, q in enumerate(out.predictions.question_id)}
    _check_ids(question_ids, pos, f"vqa_gallery needs question ids of {out.run_dir} ({len(pos)} questions)")
    steps = out.visual.shape[1]
    fig, spec = _figure(len(question_ids), steps)
    for r, qid in enumerate(question_ids):
        i = pos[int(qid)]
        row = out.predictions.iloc[i]
        q = grounding.questions[int(qid)]
        image = grounding.images[int(row.image_id)]
        img = Image.open(vqa_image_path(out.data_root, out.split, int(row.image_id))).convert("RGB")
        words = tokenize(row.question)
        main = q.target_ids if q.anchor_ids else q.object_ids
        mark = "✓" if row.correct else "✗"
        caption = f"{row.question}\npredicted: {row.predicted} {mark}\nanswer: {row.multiple_choice_answer}"
        _row(fig, spec, r, img, out.grid, out.visual[i], words, out.text[i, :, : len(words)],
             _boxes(image, main), _boxes(image, q.anchor_ids), f"{q.family} ({row.answer_type})", caption,
             _cells(out))
    return fig


def mdan_gallery(out: MDANOutputs, grounding: Grounding, image_ids: Sequence[int], caption: int = 0) -> plt.Figure:
    """m-DAN gallery: per test image, the objects its captions name (cyan), the image attention of each step,
    and its ``caption``-th caption shaded by that caption's textual attention at each step."""
    if not 0 <= caption < out.per_image:  # another row would be another image's caption
        raise DataError(f"caption must be in [0, {out.per_image}) (each test image has {out.per_image}), "
                        f"got {caption}")
    pos = {int(i): n for n, i in enumerate(out.image_ids)}
    _check_ids(image_ids, pos, f"mdan_gallery needs test image ids of {out.run_dir} ({len(pos)} images)")
    steps = out.image_attention.shape[1]
    fig, spec = _figure(len(image_ids), steps)
    top = out.similarity.argmax(axis=1)  # [I] best caption row per image
    for r, image_id in enumerate(image_ids):
        n = pos[int(image_id)]
        cap_row = n * out.per_image + caption
        sid = int(out.sentence_ids[cap_row])
        sids = out.sentence_ids[n * out.per_image: (n + 1) * out.per_image].tolist()
        named = sorted({o for s in sids if s in grounding.captions for o in grounding.captions[s].object_ids})
        image = grounding.images[int(image_id)]
        img = Image.open(out.image_files[int(image_id)]).convert("RGB")
        words = tokenize(out.sentences[sid])
        best = out.sentences[int(out.sentence_ids[top[n]])]
        ok = top[n] // out.per_image == n
        text = f"top-ranked caption {'✓' if ok else '✗'}:\n{best}"
        _row(fig, spec, r, img, out.grid, out.image_attention[n], words,
             out.text_attention[cap_row, :, : len(words)], _boxes(image, named), [], f"image {image_id}", text,
             _cells(out))
    return fig
