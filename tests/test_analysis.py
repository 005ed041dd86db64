"""Grounding scores on hand-made maps and boxes, and on the saved outputs of the smoke runs; galleries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dan import analysis, gallery, viz  # noqa: E402
from dan.ablation import mean_ci  # noqa: E402
from dan.data.grounding import ImageGT, ObjectGT, load_grounding, object_mask  # noqa: E402
from dan.io import ConfigError, DataError  # noqa: E402
from tests.test_ablation import run_notebook_code  # noqa: E402


def test_peaked_map_scores_one_uniform_scores_area_fraction() -> None:
    image = ImageGT(100, 100, [ObjectGT(0, "circle", "red", "small", [10.0, 10.0, 30.0, 30.0])])
    cover = object_mask(image, [0], (4, 4))  # [16], cells of 25 x 25 px
    peaked = np.full(16, 0.01)
    peaked[5] = 1.0  # cell (1, 1) overlaps the box
    assert analysis.pointing_hit(peaked, cover) == 1.0
    assert analysis.pointing_hit(np.roll(peaked, 10), cover) == 0.0  # cell (3, 3) does not
    inside = cover > 0
    only_inside = inside / inside.sum()
    assert analysis.attention_mass(only_inside, cover) == pytest.approx(cover[inside].mean())
    uniform = np.full(16, 1 / 16)
    area = 30 * 30 / (100 * 100)
    assert analysis.attention_mass(uniform, cover) == pytest.approx(area)
    assert analysis.chance_scores(cover) == pytest.approx((inside.mean(), area))
    # a map that does not sum to 1 is normalised: 3 of its 4 units on the object
    assert analysis.attention_mass(np.array([3.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(0.75)



def test_referred_objects_cover_their_union_of_cells():
    """Two objects in one cell add up; overlaps count once (checked against a count of pixel centres, exact for
    boxes on whole pixels)."""
    from dan.analysis import attention_mass, chance_scores

    halves = ImageGT(320, 240, [ObjectGT(0, "circle", "red", "small", [0, 0, 16, 24]),
                                ObjectGT(1, "circle", "red", "small", [16, 0, 16, 24])])
    cover = object_mask(halves, [0, 1], (10, 10))  # the two halves of cell 0
    assert cover[0] == pytest.approx(1.0) and cover[1:].sum() == 0
    top = np.zeros(100)
    top[0] = 1.0
    assert attention_mass(top, cover) == pytest.approx(1.0) and chance_scores(cover) == pytest.approx((0.01, 0.01))
    rng = np.random.default_rng(0)
    for _ in range(5):
        boxes = [[int(v) for v in (rng.integers(0, 280), rng.integers(0, 200), rng.integers(5, 140),
                                   rng.integers(5, 100))] for _ in range(3)]
        image = ImageGT(320, 240, [ObjectGT(k, "circle", "red", "small", b) for k, b in enumerate(boxes)])
        px, py = np.meshgrid(np.arange(320) + 0.5, np.arange(240) + 0.5)
        inside = np.zeros((240, 320), dtype=bool)
        for x, y, w, h in boxes:
            inside |= (px > x) & (px < x + w) & (py > y) & (py < y + h)
        counted = inside.reshape(6, 40, 8, 40).mean(axis=(1, 3)).reshape(-1)  # 6 x 8 cells of 40 x 40 px
        assert np.allclose(object_mask(image, [0, 1, 2], (6, 8)), counted, atol=1e-6)
        assert np.allclose(object_mask(image, [0, 0], (6, 8)), object_mask(image, [0], (6, 8)))

def test_text_rows_on_key_words() -> None:
    tokens = ["what", "color", "is", "the", "red", "circle"]
    att = np.zeros((2, 8))  # [K, T] with padding
    att[0, 5] = 1.0  # step 1 on "circle"
    att[1, :6] = 1 / 6  # step 2 uniform
    rows = analysis._text_rows(att, tokens, ["red", "circle"], {"question_id": 1})
    assert [r["hit"] for r in rows] == [1.0, pytest.approx(2 / 6)]  # uniform: every word ties, 2 of 6 are key words
    assert rows[0]["mass"] == pytest.approx(1.0) and rows[1]["mass"] == pytest.approx(2 / 6)
    assert rows[1]["chance_mass"] == pytest.approx(2 / 6)
    assert analysis._text_rows(att, tokens, ["blue"], {}) == []


def test_a_tie_for_the_largest_weight_scores_the_share_of_tied_regions_that_hit() -> None:
    """A uniform map, or maps whose largest values are equal after the float16 they are saved in: np.argmax took
    the first tied region, so a uniform map scored 0 or 1 by where region 0 lies instead of its chance value."""
    cover = np.array([0.0, 0.0, 0.5, 1.0, 0.0])
    uniform = np.full(5, 0.2)
    assert analysis.pointing_hit(uniform, cover) == pytest.approx(analysis.chance_scores(cover)[0]) == 0.4
    assert analysis.pointing_hit(np.array([0.3, 0.1, 0.3, 0.2, 0.1]), cover) == 0.5  # regions 0 and 2 tie
    assert analysis.pointing_hit(np.array([0.1, 0.1, 0.1, 0.6, 0.1]), cover) == 1.0  # no tie: the argmax
    saved = np.array([0.13720, 0.13725, 0.05, 0.05, 0.05], dtype=np.float32).astype(np.float16)  # equal in float16
    assert analysis.pointing_hit(saved, np.array([0.0, 1.0, 0.0, 0.0, 0.0])) == 0.5
    # text: a uniform map over "what color is the red circle" hits a key word 2 times in 6, its chance value
    rows = analysis._text_rows(np.full((1, 6), 1 / 6), ["what", "color", "is", "the", "red", "circle"],
                               ["red", "circle"], {})
    assert rows[0]["hit"] == pytest.approx(rows[0]["chance_hit"]) == pytest.approx(2 / 6)


def test_hop_analysis_detects_anchor_then_target() -> None:
    rows = []
    for q in range(6):
        for step, (a_mass, t_mass) in ((1, (0.6 + 0.02 * q, 0.1)), (2, (0.1, 0.5 + 0.03 * q))):
            for obj, mass in (("anchor", a_mass), ("target", t_mass)):
                rows.append({"question_id": q, "image_id": 100 + q, "family": "multi-hop", "step": step, "objects": obj,
                             "hit": float(mass > 0.3), "mass": mass, "chance_mass": 0.05, "chance_hit": 0.1})
    hop = analysis.hop_analysis(pd.DataFrame(rows))
    assert list(hop.index) == ["1", "2", "1 − 2"]
    assert hop.loc["1", "anchor share"] > 75 > 25 > hop.loc["2", "anchor share"]
    assert hop.loc["1", "chance share"] == pytest.approx(50)
    assert hop.loc["1 − 2", "anchor share"] - hop.loc["1 − 2", "anchor share ± ci"] > 0
    assert "step 1 puts a larger share on the anchor than step 2" in analysis.hop_verdict(hop)
    assert analysis.hop_analysis(pd.DataFrame(rows).assign(family="single-hop")).empty
    # the same questions about two images (three each): fewer independent units, a wider interval (1 df)
    paired = analysis.hop_analysis(pd.DataFrame(rows).assign(image_id=lambda d: d.question_id // 3))
    assert paired.loc["1 − 2", "anchor share"] == pytest.approx(hop.loc["1 − 2", "anchor share"])
    assert paired.loc["1 − 2", "anchor share ± ci"] > 2 * hop.loc["1 − 2", "anchor share ± ci"]


def test_grounding_summary_intervals_are_over_images() -> None:
    rng = np.random.default_rng(0)
    per_image = rng.uniform(size=20)  # 20 images, 4 examples each with the image's value: 20 units, not 80
    df = pd.DataFrame({"image_id": np.repeat(np.arange(20), 4), "step": 1, "hit": np.repeat(per_image > 0.5, 4),
                       "mass": np.repeat(per_image, 4), "chance_mass": 0.1, "chance_hit": 0.2})
    row = analysis.grounding_summary(df, ["step"]).loc[1]
    m, lo, _ = mean_ci(per_image)  # the interval of the 20 image values
    assert (row["n"], row["images"]) == (80, 20)
    assert row["mass %"] == pytest.approx(100 * m, abs=0.01)
    assert row["± ci "] == pytest.approx(100 * (m - lo), abs=0.01)


def test_each_half_width_of_the_grounding_table_follows_the_value_it_belongs_to() -> None:
    """The column "pointing − chance ± ci" held the half width alone, with no difference beside it: it read as the
    difference. Each "± ci" column now follows its value, the differences from chance included (in points)."""
    df = pd.DataFrame({"image_id": np.arange(6), "step": 1, "hit": [1.0, 1, 1, 0, 0, 1], "chance_hit": 0.25,
                       "mass": [0.3, 0.4, 0.5, 0.2, 0.3, 0.4], "chance_mass": 0.1})
    table = analysis.grounding_summary(df, ["step"])
    columns = list(table.columns)
    for value, half in [("pointing %", "± ci"), ("mass %", "± ci "), ("pointing − chance", "pointing − chance ± ci"),
                        ("mass − chance", "mass − chance ± ci")]:
        assert columns.index(half) == columns.index(value) + 1, (value, columns)
    row = table.loc[1]
    assert row["pointing − chance"] == pytest.approx(row["pointing %"] - row["chance pointing %"], abs=0.01)
    assert row["mass − chance"] == pytest.approx(100 * (0.35 - 0.1), abs=0.01)


def test_grounding_bars_draw_the_summary_tables_intervals_over_images() -> None:
    """The figure's error bars are the table's (cluster-robust over images), not t intervals over examples,
    which would be narrower when several examples share an image."""
    rng = np.random.default_rng(1)
    per_image = rng.uniform(size=(30, 2))  # 30 images x 2 families, 5 examples each with the image's value
    df = pd.DataFrame({"image_id": np.repeat(np.arange(30), 10), "step": 1,
                       "family": np.tile(np.repeat(["multi-hop", "single-hop"], 5), 30),
                       "mass": np.repeat(per_image.ravel(), 5), "chance_mass": 0.1, "chance_hit": 0.2})
    df["hit"] = df["mass"] > 0.5
    table = analysis.grounding_summary(df, ["family", "step"])
    fig = viz.grounding_bars(df, x="step", hue="family")
    mass_ax = fig.axes[1]
    bars = sorted(mass_ax.patches, key=lambda p: p.get_x())
    assert [round(b.get_height(), 2) for b in bars] == list(table["mass %"])
    from matplotlib.container import ErrorbarContainer

    segments = [c.lines[2][0].get_segments()[0] for c in mass_ax.containers if isinstance(c, ErrorbarContainer)]
    got = [(seg[1][1] - seg[0][1]) / 2 for seg in sorted(segments, key=lambda seg: seg[0][0])]
    assert got == pytest.approx(list(table["± ci "]), abs=0.01)
    naive = [100 * (m - lo) for m, lo, _ in (mean_ci(g["mass"].to_numpy()) for _, g in df.groupby("family"))]
    assert all(h > 1.5 * n for h, n in zip(got, naive, strict=True))  # 5 examples per image: about sqrt(5) wider
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["multi-hop", "single-hop",
                                                                  "uniform attention (chance)"]
    plt.close(fig)


def test_vqa_grounding_scores_anchor_and_target_objects_separately(tmp_path) -> None:
    from dan.data.grounding import Grounding, QuestionGT

    # 2 x 2 grid of 50 px cells: the anchor fills cell 0, the target cell 3; all attention on cell 0
    image = ImageGT(100, 100, [ObjectGT(0, "circle", "red", "small", [0.0, 0.0, 50.0, 50.0]),
                               ObjectGT(1, "square", "blue", "small", [50.0, 50.0, 50.0, 50.0])])
    g = Grounding({5: image}, {1: QuestionGT("multi-hop", [0, 1], [0], [1], ["red"], 5)}, {})
    preds = pd.DataFrame({"question_id": [1], "image_id": [5], "answer_type": ["other"], "correct": [True],
                          "question": ["what is right of the red circle"]})
    visual = np.array([[[1.0, 0.0, 0.0, 0.0]]], dtype=np.float32)  # [Q, K, N]
    text = np.zeros((1, 1, 7), dtype=np.float32)
    text[0, 0, 5] = 1.0  # on "red" (tokens: what is right of the red circle)
    out = analysis.VQAOutputs(tmp_path, preds, visual, text, np.array([7]), (2, 2), tmp_path, "val2014")
    vis, txt = analysis.vqa_grounding(out, g)
    got = vis.set_index("objects")[["hit", "mass", "chance_hit", "chance_mass"]].T.to_dict()
    assert got == {"referred": {"hit": 1.0, "mass": 1.0, "chance_hit": 0.5, "chance_mass": 0.5},
                   "anchor": {"hit": 1.0, "mass": 1.0, "chance_hit": 0.25, "chance_mass": 0.25},
                   "target": {"hit": 0.0, "mass": 0.0, "chance_hit": 0.25, "chance_mass": 0.25}}
    assert txt[["hit", "mass", "chance_mass"]].iloc[0].tolist() == pytest.approx([1.0, 1.0, 1 / 7])


def test_vqa_grounding_on_saved_outputs(vqa_run) -> None:
    out = analysis.load_vqa_outputs(vqa_run.run_dir)
    grounding = load_grounding(out.data_root / "grounding.json")
    K = vqa_run.config.steps
    vis, txt = analysis.vqa_grounding(out, grounding)
    assert set(vis.step) == set(txt.step) == set(range(1, K + 1))
    assert set(vis.objects) <= {"referred", "anchor", "target"}
    assert set(vis[vis.objects == "anchor"].family) == {"multi-hop"}
    for col in ("hit", "chance_hit", "mass", "chance_mass"):
        assert vis[col].between(0, 1).all() and txt[col].between(0, 1).all()
    # uniform attention scores exactly its chance mass; attention on the objects' cells always points inside
    out.visual[:] = 1.0 / out.visual.shape[-1]
    uni, _ = analysis.vqa_grounding(out, grounding)
    assert np.allclose(uni.mass, uni.chance_mass, atol=1e-6)
    pos = {q: i for i, q in enumerate(out.predictions.question_id)}
    for qid in vis.question_id.unique()[:20]:
        q = grounding.questions[int(qid)]
        cover = object_mask(grounding.images[q.image_id], q.object_ids, out.grid)
        out.visual[pos[qid]] = cover / cover.sum()
    on, _ = analysis.vqa_grounding(out, grounding)
    first = on[on.question_id.isin(vis.question_id.unique()[:20]) & (on.objects == "referred")]
    assert (first.hit == 1).all() and (first.mass > first.chance_mass).all()


def test_the_analysis_scores_the_cells_of_the_backbone_the_run_was_trained_on(tmp_path, vqa_run,
                                                                            matching_run) -> None:
    """A run's outputs carry the stride and input size of its features (from its inputs.json), and the scores use
    the backbone's cells: at 200 px and stride 16 the 13th cell covers only pixels 192..199. With the equal split a
    box on cell 11 (176..192) also covered half of cell 12, so attention on cell 12 pointed "inside" it."""
    from dan.analysis_outputs import feature_cells
    from dan.backbones import BACKBONES
    from dan.data.grounding import Grounding, QuestionGT

    for out in (analysis.load_vqa_outputs(vqa_run.run_dir), analysis.load_mdan_outputs(matching_run.run_dir)):
        stores = json.loads((out.run_dir / "inputs.json").read_text())["features"]
        meta = next(iter(stores.values()))
        assert (out.stride, out.image_size) == (BACKBONES[meta["backbone"]].layers[meta["layer"]], meta["image_size"])
    image = ImageGT(200, 200, [ObjectGT(0, "circle", "red", "small", [176.0, 0.0, 16.0, 16.0])])
    g = Grounding({5: image}, {1: QuestionGT("single-hop", [0], [], [], ["red"], 5)}, {})
    preds = pd.DataFrame({"question_id": [1, 2], "image_id": [5, 5], "answer_type": ["other"] * 2,
                          "correct": [True] * 2, "question": ["what is the red circle"] * 2})
    visual = np.zeros((2, 1, 169), dtype=np.float32)
    visual[0, 0, 11], visual[1, 0, 12] = 1.0, 1.0  # all attention on cell (0, 11), then on cell (0, 12)
    text = np.zeros((2, 1, 5), dtype=np.float32)
    g.questions[2] = g.questions[1]
    out = analysis.VQAOutputs(tmp_path, preds, visual, text, np.array([5, 5]), (13, 13), tmp_path, "val2014",
                              stride=16, image_size=200)
    vis, _ = analysis.vqa_grounding(out, g)
    assert vis[["hit", "mass"]].to_numpy().tolist() == [[1.0, 1.0], [0.0, 0.0]]  # was [1, 0.56], [1, 0.48]
    # what a run records: none (equal cells), stores that disagree (unless the analysed one is named), a backbone
    # this version does not know; an input size that is no size is an error naming the file
    summary = {"backbone": "efficientnet-lite0", "layer": "stride32", "image_size": 200, "grid": [7, 7]}
    for stores, prefer, cells in [(None, None, {}), ({"a": summary}, None, {"stride": 32, "image_size": 200}),
                                  ({"a": summary, "b": {**summary, "image_size": 224}}, None, {}),
                                  ({"a": summary, "b": {**summary, "image_size": 224}}, "b",
                                   {"stride": 32, "image_size": 224}),
                                  ({"a": {**summary, "backbone": "random"}}, None, {}),
                                  ({"a": {**summary, "layer": ["x"]}}, None, {})]:
        (tmp_path / "inputs.json").write_text(json.dumps({} if stores is None else {"features": stores}))
        assert feature_cells(tmp_path, prefer) == cells
    (tmp_path / "inputs.json").write_text(json.dumps({"features": {"a": {**summary, "image_size": "200"}}}))
    with pytest.raises(DataError, match=r"inputs\.json: the features' image_size must be an integer > 0, got '200'"):
        feature_cells(tmp_path)


def test_mdan_grounding_on_saved_outputs(matching_run) -> None:
    out = analysis.load_mdan_outputs(matching_run.run_dir)
    vis, txt = analysis.mdan_grounding(out)
    K, n_img = matching_run.config.steps, len(out.image_ids)
    assert len(vis[vis.objects == "all"]) == n_img * K
    assert (vis[vis.objects == "named"].chance_mass <= vis[vis.objects == "all"].chance_mass.to_numpy() + 1e-6).all()
    # "correct" is image->text recall at 1 of the run's own metrics
    per_image = vis.drop_duplicates("image_id")
    assert 100 * per_image.correct.mean() == pytest.approx(matching_run.metrics["i2t"]["r1"], abs=1e-6)
    assert txt.sentence_id.isin(out.sentence_ids).all() and txt.mass.between(0, 1).all()


def test_galleries_draw_the_chosen_examples(vqa_run, matching_run) -> None:
    out = analysis.load_vqa_outputs(vqa_run.run_dir)
    grounding = load_grounding(out.data_root / "grounding.json")
    vis, _ = analysis.vqa_grounding(out, grounding)
    picked = gallery.pick_examples(vis[vis.objects == "referred"], "question_id", "family", seed=0)
    assert picked.groupby("family").correct.nunique().max() <= 2 and len(picked) <= 4
    assert picked.equals(gallery.pick_examples(vis[vis.objects == "referred"], "question_id", "family", seed=0))
    K = out.visual.shape[1]
    fig = gallery.vqa_gallery(out, grounding, picked.question_id.tolist()[:2])
    assert len(fig.axes) == 2 * 2 * (K + 1)  # per example: image row and text row, each 1 + K panels
    plt.close(fig)
    mout = analysis.load_mdan_outputs(matching_run.run_dir)
    fig = gallery.mdan_gallery(mout, grounding, mout.image_ids[:1].tolist())
    assert len(fig.axes) == 2 * (mout.image_attention.shape[1] + 1)
    plt.close(fig)
    assert out.predictions.correct.equals(out.predictions.score >= 1.0 - 1e-6)  # ✓ = full credit, as scored


def test_galleries_draw_the_cells_the_scores_use(vqa_run, matching_run) -> None:
    """The overlays take the outputs' stride and input size (the run's inputs.json), as the grounding scores do:
    on a 150 px input at stride 16 the 10 cells are padded past the image (160 input px), on the study's 160 px
    they are equal cells over the whole image."""
    import dataclasses

    out = analysis.load_vqa_outputs(vqa_run.run_dir)
    mout = analysis.load_mdan_outputs(matching_run.run_dir)
    grounding = load_grounding(out.data_root / "grounding.json")
    assert out.grid == mout.grid == (10, 10) and (out.stride, out.image_size) == (16, 160)
    qid = int(out.predictions.question_id.iloc[0])
    for image_size, share in ((150, 160 / 150), (160, 1.0)):
        for fig in (gallery.vqa_gallery(dataclasses.replace(out, image_size=image_size), grounding, [qid]),
                    gallery.mdan_gallery(dataclasses.replace(mout, image_size=image_size), grounding,
                                         mout.image_ids[:1].tolist())):
            overlays = [ax for ax in fig.axes if len(ax.images) == 2]
            assert overlays
            for ax in overlays:
                w, h = ax.images[0].get_size()[::-1]
                assert tuple(ax.images[1].get_extent()) == pytest.approx((0, w * share, h * share, 0))
                assert tuple(ax.get_xlim()) == (0, w) and tuple(ax.get_ylim()) == (h, 0)
            plt.close(fig)


def test_galleries_refuse_what_is_not_in_the_run(vqa_run, matching_run) -> None:
    out = analysis.load_vqa_outputs(vqa_run.run_dir)
    grounding = load_grounding(out.data_root / "grounding.json")
    with pytest.raises(DataError, match=r"vqa_gallery needs question ids of .* questions\); these are not among "
                                        r"them: \[7\]"):
        gallery.vqa_gallery(out, grounding, [7])
    with pytest.raises(DataError, match="got none"):
        gallery.vqa_gallery(out, grounding, [])
    mout = analysis.load_mdan_outputs(matching_run.run_dir)
    first = mout.image_ids[:1].tolist()
    for caption in (-1, mout.per_image):  # another image's caption would be drawn as this one's
        with pytest.raises(DataError, match=rf"caption must be in \[0, {mout.per_image}\)"):
            gallery.mdan_gallery(mout, grounding, first, caption=caption)
    with pytest.raises(DataError, match="mdan_gallery needs test image ids"):
        gallery.mdan_gallery(mout, grounding, [-5])


def _summary(groups: list[str] | None, steps: list[int], base: float) -> pd.DataFrame:
    """A grounding_summary-shaped table: per (group, step) pointing/mass rising by 10 per step, fixed chance."""
    rows = []
    for g in groups or [None]:
        for s in steps:
            rows.append({**({"group": g} if g else {}), "step": s, "pointing %": base + 10 * s,
                         "chance pointing %": 5.0, "mass %": base + s, "chance mass %": 2.0})
    return pd.DataFrame(rows).set_index(["group", "step"] if groups else ["step"])


@pytest.mark.parametrize("steps", [[1], [1, 2, 3]])
def test_attention_findings_follow_the_number_of_steps(steps) -> None:
    from dan import report

    text = report.attention_findings(_summary(["multi-hop", "single-hop"], steps, 20.0),
                                     _summary(["single-hop"], steps, 30.0), _summary(["all", "named"], steps, 40.0),
                                     _summary(None, steps, 50.0), "no split.")
    where = "step 1" if len(steps) == 1 else "steps 1/2/3"
    assert text.startswith(f"Per-step values are for {where}.")
    pointing = " / ".join(f"{20 + 10 * s:.1f}" for s in steps)
    assert f"touches one of them in {pointing} % of single-hop questions (uniform 5.0 %)" in text
    assert text.index("single-hop questions (uniform") < text.index("multi-hop questions (uniform")
    assert "**Multi-hop steps**: no split." in text
    assert f"puts {' / '.join(f'{40 + s:.1f}' for s in steps)} % of its mass on the objects" in text


def test_a_run_without_attention_maps_is_refused_by_name(make_cfg, tmp_path) -> None:
    from dan.io import DataError
    from dan.train import train

    run = train(make_cfg("vqa", tmp_path / "none", epochs=1, attention="none"), progress=False)
    with pytest.raises(DataError, match=r"none ran with K = 2, attention 'none': the attention analysis needs"):
        analysis.load_vqa_outputs(run.run_dir)


def test_attention_findings_give_each_value_its_interval_where_the_table_has_one() -> None:
    from dan import report

    vis = _summary(["single-hop"], [1, 2], 20.0).assign(**{"± ci": 1.25, "± ci ": 0.5})
    text = report.attention_findings(vis, _summary(["single-hop"], [1, 2], 30.0), _summary(["named"], [1, 2], 40.0),
                                     _summary(None, [1, 2], 50.0), "no split.")
    assert "touches one of them in 30.0 ± 1.2 / 40.0 ± 1.2 % of single-hop questions (uniform 5.0 %; above it at " \
           "every step)" in text
    assert "mass on these objects is 21.0 ± 0.5 / 22.0 ± 0.5 % on single-hop questions" in text
    assert "key words receive 31.0 / 32.0 % on single-hop questions (uniform 2.0 %)" in text  # no intervals: values
    low = vis.assign(**{"mass %": [1.0, 2.2], "chance mass %": 2.0})  # below, then across its chance value
    text = report.attention_findings(low, _summary(["single-hop"], [1, 2], 30.0), _summary(["named"], [1, 2], 40.0),
                                     _summary(None, [1, 2], 50.0), "no split.")
    assert "1.0 ± 0.5 / 2.2 ± 0.5 % on single-hop questions (area fraction 2.0 %; below / not distinguishable " \
           "from it)" in text


def test_above_or_below_chance_is_read_from_the_paired_difference_from_each_examples_chance() -> None:
    """The chance value is each example's own (its objects' area, its key words' share), so whether a score lies
    above it is the interval of score - chance, not the score's interval set against the mean chance as a constant.
    10 images, one question each: (a) a constant mass of 12 % against chances of 2 % and 20 % in turn (mean 11 %):
    the score's interval has no width and lay "above" 11 %, while the differences (+10, -8 in turn) do not tell it
    from 0; (b) a mass of 1.5 x each question's chance (0.01 .. 0.5): always above it, but the spread of the chances
    made the score's interval reach below their mean."""
    from dan import report

    def findings(mass, chance) -> str:
        df = pd.DataFrame({"image_id": np.arange(10), "family": "single-hop", "step": 1, "hit": chance,
                           "chance_hit": chance, "mass": mass, "chance_mass": chance})
        vis = analysis.grounding_summary(df, ["family", "step"])
        d = 100 * (df.mass - df.chance_mass)
        m, lo, _ = mean_ci(d.to_numpy())
        assert vis.loc[("single-hop", 1), "mass − chance"] == pytest.approx(m, abs=0.01)
        assert vis.loc[("single-hop", 1), "mass − chance ± ci"] == pytest.approx(m - lo, abs=0.01)
        return report.attention_findings(vis, _summary(["single-hop"], [1], 30.0), _summary(["named"], [1], 40.0),
                                         _summary(None, [1], 50.0), "no split.")

    alternating = np.tile([0.02, 0.20], 5)
    text = findings(np.full(10, 0.12), alternating)
    assert "12.0 ± 0.0 % on single-hop questions (area fraction 11.0 %; not distinguishable from it)" in text
    spread = np.linspace(0.01, 0.5, 10)
    text = findings(1.5 * spread, spread)
    assert "% on single-hop questions (area fraction 25.5 %; above it)" in text
    # the pointing rate equal to each question's chance: a difference of exactly 0, not distinguishable
    assert "% of single-hop questions (uniform 25.5 %; not distinguishable from it)" in text


def test_plot_history_draws_one_curve_per_run_and_one_legend_below():
    a = [{"epoch": e, "loss": 1.0 / e, "acc": 10.0 * e} for e in (1, 2, 3)]
    b = [{"epoch": e, "loss": 2.0 / e, "acc": 5.0 * e} for e in (1, 2)]
    fig = viz.plot_history({"run a": a, "run b": b}, ["loss", "acc"], {"acc": "accuracy"})
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["loss", "accuracy"]
    assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["run a", "run b"]
    assert [len(line.get_xdata()) for line in axes[1].get_lines()[:2]] == [3, 2]
    plt.close(fig)
    single = viz.plot_history(a, ["loss"])
    assert not single.legends and single.axes[0].get_legend() is None
    plt.close(single)
    with pytest.raises(DataError, match=r"no history record has the metric\(s\) \['val_rsum'\]; the records have "
                                        r"\['acc', 'loss'\]"):
        viz.plot_history(a, ["val_rsum"])


def test_the_reproduction_table_shows_an_answer_type_without_questions_as_empty():
    from dan import report

    ours = {"r-DAN": {"yes/no": 70.0, "number": None, "other": 40.123, "overall": 55.555, "n": 10}}
    row = report.reproduction_vqa(ours).iloc[-1]
    assert pd.isna(row["number"]) and row["other"] == 40.12 and row["overall"] in (55.55, 55.56)


def test_show_images_titles_stay_within_their_column(tmp_path) -> None:
    """Long question/caption titles are wrapped to their image's width: no title's box overlaps a neighbour's."""
    from PIL import Image

    path = tmp_path / "im.png"
    Image.new("RGB", (64, 48), "gray").save(path)
    long = ("Q: what color is the object right of the large orange cross? [green]\n"
            "C: there is a small star right of a purple star and a large orange cross above the brown cross")
    fig = viz.show_images([path] * 8, [long] * 8, ncols=4)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    assert len(boxes) == 8
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)


def test_retrieval_tables_keep_each_direction_in_its_own_columns():
    from dan import report

    m = {"i2t": {"r1": 1.0, "r5": 2.0, "r10": 3.0, "medr": 4.0}, "t2i": {"r1": 10.0, "r5": 20.0, "r10": 30.0,
                                                                           "medr": 40.0}}
    row = report.retrieval_table({"run": m}).loc["run"]
    assert [row[f"image→text {k}"] for k in ("R1", "R5", "R10", "MR")] == [1.0, 2.0, 3.0, 4.0]
    assert [row[f"text→image {k}"] for k in ("R1", "R5", "R10", "MR")] == [10.0, 20.0, 30.0, 40.0]
    ours = report.reproduction_retrieval({"m-DAN": m}).iloc[-1]
    assert (ours["i2t R1"], ours["i2t MR"], ours["t2i R1"], ours["t2i MR"]) == (1.0, 4.0, 10.0, 40.0)


def test_the_reproduction_table_shows_a_zero_accuracy_as_zero_not_empty():
    from dan import report

    row = report.reproduction_vqa({"r-DAN": {"yes/no": 0.0, "number": 0.0, "other": 0.0, "overall": 0.0}}).iloc[-1]
    assert [row[c] for c in report.VQA_COLUMNS] == [0.0, 0.0, 0.0, 0.0]


def test_answer_distribution_shares_are_percent_of_the_split(smoke_data):
    from collections import Counter

    from dan import report
    from dan.data.vqa import load_vqa_split

    ex = load_vqa_split(smoke_data, "train2014")
    counts = Counter(e.multiple_choice_answer for e in ex)
    table = report.answer_distribution(smoke_data, top=3)
    assert len(table) == 3 and list(table.questions) == sorted(table.questions, reverse=True)
    for _, r in table.iterrows():
        assert r["questions"] == counts[r["answer"]]
        assert r["share %"] == pytest.approx(100 * r["questions"] / len(ex), abs=0.05)
    assert table["share %"].sum() <= 100


def test_pick_examples_gives_each_id_once_correct_and_failed_per_group():
    table = pd.DataFrame({"question_id": [1, 1, 2, 3, 4, 5, 6], "family": ["a", "a", "a", "a", "b", "b", "b"],
                          "correct": [True, True, False, True, True, False, False]})
    every = gallery.pick_examples(table, "question_id", "family", per_group=5)
    assert list(every.itertuples(index=False, name=None)) == [(1, "a", True), (3, "a", True), (2, "a", False),
                                                              (4, "b", True), (5, "b", False), (6, "b", False)]
    one = gallery.pick_examples(table, "question_id", "family", per_group=1, seed=3)
    assert list(one.family) == ["a", "a", "b", "b"] and list(one.correct) == [True, False, True, False]
    assert one.question_id.is_unique


@pytest.mark.parametrize("per_group", [0, -1, 1.5, "2", True, None])
def test_pick_examples_refuses_a_per_group_that_is_no_count_by_the_notebooks_name(per_group):
    """The attention notebook's examples_per_group reached NumPy (or an empty gallery: 0) only after both runs had
    trained: "negative dimensions are not allowed", "'<' not supported between 'int' and 'str'"."""
    table = pd.DataFrame({"question_id": [1, 2], "family": ["a", "a"], "correct": [True, False]})
    with pytest.raises(ConfigError, match=rf"per_group \(the attention notebook's examples_per_group\) must be an "
                                          rf"integer >= 1, got {re.escape(repr(per_group))}"):
        gallery.pick_examples(table, "question_id", "family", per_group=per_group)
    assert len(gallery.pick_examples(table, "question_id", "family", per_group=np.int64(1))) == 2


@pytest.mark.parametrize("name", ["03_rdan.ipynb", "04_mdan.ipynb", "06_attention.ipynb"])
@pytest.mark.parametrize("param, accepted", [
    ("steps", r"an integer in \[0, 100\] \(K; the paper's 2\)"),
    ("attention", r"dual, visual, textual, none \('none', a string, is the baseline without attention\)"),
    ("seed", r"an integer in \[0, 2\*\*32\)"),
    ("device", r"'auto', 'cpu', 'cuda', 'cuda:1', \.\.\."),
])
def test_a_run_parameter_without_a_none_meaning_refuses_none_by_name_before_training(name, param, accepted,
                                                                                     monkeypatch, tmp_path) -> None:
    """papermill notebooks/03_rdan.ipynb ... -p steps None trained vqa-dual-K2-s0, the preset's K (preset() drops
    a None override), though the parameters cell gives None no meaning for steps (``# K``); -p attention None
    (the baseline is the string "none") trained dual attention, -p device None ran on "auto". Now a ConfigError
    naming the parameter and what it takes, in the cell that builds the config, before any training; the
    parameters that default to None (epochs, hidden_dim, ...) keep "None: the profile's preset"."""
    from dan import notebook
    from dan import train as train_module

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)  # (its own seed check would come first)
    monkeypatch.setattr(train_module, "train", lambda cfg, **k: pytest.fail(f"trained {cfg.run_name()}"))
    with pytest.raises(ConfigError, match=rf"^{param} must not be None \(it has no preset meaning\); accepted: "
                                          rf"{accepted}$"):
        run_notebook_code(name, {"profile": "smoke", param: None})


@pytest.mark.parametrize("value", [-1, 0, 1.5, "2", True, None])
def test_the_attention_notebook_refuses_a_bad_examples_per_group_before_training(value, monkeypatch,
                                                                                 tmp_path) -> None:
    """papermill notebooks/06_attention.ipynb ... -p examples_per_group -1 trained (or reused) both runs and ran the
    whole analysis, then failed in the first gallery cell (In [16]): "per_group (the attention notebook's
    examples_per_group) must be an integer >= 1, got -1". Now refused in the cell before the trainings."""
    from dan import notebook
    from dan import train as train_module

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    monkeypatch.setattr(train_module, "train", lambda cfg, **k: pytest.fail(f"trained {cfg.run_name()}"))
    with pytest.raises(ConfigError, match=rf"^examples_per_group must be an integer >= 1 \(examples per question "
                                          rf"family in the galleries\), got {re.escape(repr(value))}$"):
        run_notebook_code("06_attention.ipynb", {"profile": "smoke", "examples_per_group": value})
    gallery.check_examples_per_group(np.int64(2))  # a NumPy integer is a count


def _texts(fig) -> list:
    return [t for ax in fig.axes for t in ax.texts]


def test_mdan_gallery_marks_the_top_caption_and_shades_the_chosen_caption(matching_run) -> None:
    import dataclasses

    mout = analysis.load_mdan_outputs(matching_run.run_dir)
    grounding = load_grounding(mout.data_root / "grounding.json")
    per = mout.per_image
    sim = np.zeros_like(mout.similarity)
    sim[0, 1] = sim[1, 1] = 1.0  # image 0's best caption is its own second one; image 1's is image 0's
    txt = np.zeros_like(mout.text_attention)
    n_words = int(mout.lengths[per + 2])
    txt[per + 2, :, n_words - 1] = 1.0  # image 1's third caption: all attention on its last word
    out = dataclasses.replace(mout, similarity=sim, text_attention=txt)
    for n, mark in ((0, "✓"), (1, "✗")):
        assert grounding.captions[int(out.sentence_ids[1])].image_id == int(out.image_ids[0])
        fig = gallery.mdan_gallery(out, grounding, [int(out.image_ids[n])])
        said = [t.get_text().replace("\n", " ") for t in _texts(fig) if t.get_text().startswith("top-ranked")]
        assert said == [f"top-ranked caption {mark}: {out.sentences[int(out.sentence_ids[1])]}"]
        plt.close(fig)
    fig = gallery.mdan_gallery(out, grounding, [int(out.image_ids[1])], caption=2)
    from dan.data.text import tokenize

    white = [t.get_text() for t in _texts(fig) if t.get_color() == "white"]  # the most attended word, per step
    last_word = tokenize(out.sentences[int(out.sentence_ids[per + 2])])[-1]
    assert white == [last_word] * out.image_attention.shape[1]
    plt.close(fig)


@pytest.mark.parametrize(("steps", "attention"), [(2, "visual"), (0, "dual"), (1, "none")])
def test_the_attention_notebook_refuses_runs_without_maps_before_training(steps, attention, monkeypatch,
                                                                         tmp_path) -> None:
    """06 trained its r-DAN and m-DAN runs first and only then found that a visual-only (or K = 0) run has no
    maps on both sides: the error now comes before any training."""
    from dan import notebook
    from dan import train as train_module

    trained = []
    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    monkeypatch.setattr(train_module, "train", lambda cfg, **k: trained.append(cfg) or pytest.fail("trained"))
    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "06_attention.ipynb").read_text())
    ns = {}
    with pytest.raises(ConfigError, match=rf"steps {steps}, attention '{attention}': the attention analysis needs"):
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), "06_attention.ipynb", "exec"), ns)  # noqa: S102
                if "parameters" in cell["metadata"].get("tags", []):
                    ns.update(profile="smoke", steps=steps, attention=attention)
    assert trained == []
    analysis.check_analysable(1, "dual")
    with pytest.raises(ConfigError, match=r"unknown attention 'daul'"):
        analysis.check_analysable(2, "daul")


class _Trained(Exception):
    """Raised by the stubbed train once a notebook cell has trained what it trains."""


def _configs_trained(name: str, params: dict, monkeypatch) -> list:
    """The TrainConfigs that notebook ``name``'s code cells, run with ``params`` injected after the parameters cell,
    hand to dan.train.train (stubbed: nothing is trained), up to the end of the first cell that trains."""
    from types import SimpleNamespace

    from dan import train as train_module

    given = []
    monkeypatch.setattr(train_module, "train", lambda cfg, **k: given.append(cfg) or SimpleNamespace(run_dir=None))
    run_notebook_code(name, params, until=lambda: bool(given))
    assert given, f"{name} trained nothing"
    return given


@pytest.mark.parametrize("params", [{"epochs": 2}, {"hidden_dim": 16, "steps": 1},
                                    {"epochs": 3, "negatives": "hardest", "margin": 0.5}])
def test_the_attention_notebook_analyses_the_runs_the_model_chapters_trained(params, monkeypatch, tmp_path) -> None:
    """06 took steps, attention and seed only: after 03/04 with -p epochs 2 (a run folder of its own), 06 could not
    be pointed at that run (papermill's -p epochs was refused as a parameter 06 does not take) and analysed, or
    trained, the preset's. It takes the run-identity parameters of 03 (and 04's negatives and margin, for its
    m-DAN run) and names the same run folders."""
    from dan import notebook
    from dan.train import run_dir_for

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    both = {"profile": "smoke", **params}
    vqa_only = {k: v for k, v in both.items() if k not in ("negatives", "margin")}
    rdan, mdan = _configs_trained("06_attention.ipynb", both, monkeypatch)
    (chapter_rdan,) = _configs_trained("03_rdan.ipynb", vqa_only, monkeypatch)
    (chapter_mdan,) = _configs_trained("04_mdan.ipynb", both, monkeypatch)
    assert run_dir_for(rdan) == run_dir_for(chapter_rdan) and rdan.identity() == chapter_rdan.identity()
    assert run_dir_for(mdan) == run_dir_for(chapter_mdan) and mdan.identity() == chapter_mdan.identity()
    assert run_dir_for(rdan).name != "vqa-dual-K2-s0"  # not the preset's run


def test_the_attention_notebook_writes_its_tables_into_the_analysed_runs_folders(vqa_run, matching_run, monkeypatch,
                                                                                 tmp_path) -> None:
    """06 wrote attention_{rdan,mdan}_{visual,text}.csv into results/<profile> whatever runs it analysed: a run with
    -p epochs 2 (or -p steps 3) replaced the preset runs' tables there, under the same names and with nothing in
    them saying which run they describe. They go into each analysed run's folder (as 03/04's rebuilt-checkpoint
    results do)."""
    import shutil

    from dan import notebook
    from dan import train as train_module
    from dan.train import RunResult

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    runs = {"vqa": tmp_path / "runs" / "vqa-e2", "matching": tmp_path / "runs" / "matching-e2"}
    for run in (vqa_run, matching_run):
        shutil.copytree(run.run_dir, runs[run.config.task])
    monkeypatch.setattr(train_module, "train", lambda cfg, **k: RunResult(runs[cfg.task], cfg, {}, []))
    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "06_attention.ipynb").read_text())
    ns: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "06_attention.ipynb", "exec"), ns)  # noqa: S102
            if "parameters" in cell["metadata"].get("tags", []):
                ns.update(profile="smoke", epochs=2)
    plt.close("all")
    assert not list((tmp_path / "results" / "smoke").glob("*.csv"))  # the preset runs' tables left alone
    for task, what in (("vqa", "visual"), ("vqa", "text"), ("matching", "visual"), ("matching", "text")):
        table = pd.read_csv(runs[task] / f"attention_grounding_{what}.csv")
        expected = ns[{("vqa", "visual"): "vis", ("vqa", "text"): "txt", ("matching", "visual"): "mvis",
                       ("matching", "text"): "mtxt"}[task, what]]
        assert len(table) == len(expected) > 0 and list(table.columns) == list(expected.columns)


def test_grounding_summary_pointing_interval_is_over_images_too() -> None:
    """The pointing rate's half width ("± ci") is the interval of the per-image hit rates (as the mass's is): 10
    images, 3 examples each with the image's hit, so 10 units, not 30; and it is the hit rate's, not the mass's."""
    per_image_hit = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    df = pd.DataFrame({"image_id": np.repeat(np.arange(10), 3), "step": 1, "hit": np.repeat(per_image_hit, 3),
                       "mass": np.repeat(np.linspace(0.1, 0.5, 10), 3), "chance_mass": 0.1, "chance_hit": 0.2})
    row = analysis.grounding_summary(df, ["step"]).loc[1]
    m, lo, _ = mean_ci(per_image_hit)
    assert row["pointing %"] == pytest.approx(100 * m, abs=0.01)
    assert row["± ci"] == pytest.approx(100 * (m - lo), abs=0.01)


@pytest.mark.parametrize("diff, ci, verdict", [(10.0, 4.0, "step 1 puts a larger share on the anchor than step 2"),
                                               (-10.0, 4.0, "step 2 puts a larger share on the anchor than step 1"),
                                               (3.0, 4.0, "the two steps cannot be told apart"),
                                               (-3.0, 4.0, "the two steps cannot be told apart")])
def test_hop_verdict_says_what_the_interval_of_the_difference_allows(diff, ci, verdict) -> None:
    """Each of the three verdicts from a hand-made hop table: above zero, below zero, or across it."""
    hop = pd.DataFrame({"n": [8, 8, 8], "anchor share": [60.0, 60.0 - diff, diff],
                        "anchor share ± ci": [1.0, 1.0, ci], "chance share": [50.0, 50.0, 0.0]},
                       index=pd.Index(["1", "2", "1 − 2"], name="step"))
    sentence = analysis.hop_verdict(hop)
    assert sentence.endswith(f"so {verdict} at 95 % confidence.")
    assert f"(95 % CI {diff - ci:.1f} to {diff + ci:.1f})" in sentence


def test_attention_overlay_puts_region_n_at_grid_cell_n_over_the_whole_image() -> None:
    """Weights [gh * gw] in row-major order (region n = cell (n // gw, n % gw)), scaled by their maximum, drawn over
    the whole image (extent left, right, bottom, top = 0, w, h, 0: row 0 at the top), boxes as [x, y, w, h]."""
    from PIL import Image

    fig, ax = plt.subplots()
    viz.attention_overlay(ax, Image.new("RGB", (60, 40)), np.arange(6, dtype=np.float32), (2, 3),
                          title="step 1", boxes=[[5, 6, 10, 12]])
    overlay = ax.images[1]
    np.testing.assert_allclose(np.asarray(overlay.get_array()), [[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]], rtol=1e-6)
    assert tuple(overlay.get_extent()) == (0, 60, 40, 0) and ax.get_title() == "step 1"
    (box,) = ax.patches
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (5, 6, 10, 12)
    plt.close(fig)


def test_attention_overlay_draws_the_backbones_cells_given_its_stride_and_input_size() -> None:
    """The overlay's cells are those the grounding scores use (cell_edges): at stride 16 on a 200 px input, 13 cells
    of 16 input px, the last one padded past the image (grid 208 px: only its 8 px in the image show); cropped, 12
    cells end at 192 px, the rest of the image bare. The axes keep the image's own extent."""
    from PIL import Image

    from dan.data.grounding import cell_edges

    image = Image.new("RGB", (300, 100))
    for grid, right, bottom in [((13, 13), 208 * 1.5, 208 / 2), ((12, 12), 192 * 1.5, 192 / 2),
                                ((13, 12), 192 * 1.5, 208 / 2)]:
        fig, ax = plt.subplots()
        viz.attention_overlay(ax, image, np.arange(grid[0] * grid[1], dtype=np.float32), grid, stride=16,
                              image_size=200)
        assert tuple(ax.images[1].get_extent()) == pytest.approx((0, right, bottom, 0))
        assert tuple(ax.get_xlim()) == (0, 300) and tuple(ax.get_ylim()) == (100, 0)
        # every drawn cell is the scores' cell where it lies in the image
        edges = np.arange(grid[1] + 1) * 16 * 1.5
        np.testing.assert_allclose(np.minimum(edges, 300)[: len(cell_edges(300, grid[1], 16, 200))],
                                   cell_edges(300, grid[1], 16, 200))
        plt.close(fig)
    fig, ax = plt.subplots()
    with pytest.raises(DataError, match="a grid of 11 cells does not come from a 200 px input at stride 16"):
        viz.attention_overlay(ax, image, np.zeros(121), (11, 11), stride=16, image_size=200)
    with pytest.raises(DataError, match="need both the backbone's stride and the input size"):
        viz.attention_overlay(ax, image, np.zeros(169), (13, 13), stride=16)
    plt.close(fig)


def _rendered_overlay(image, weights: np.ndarray, grid: tuple[int, int], **cells) -> np.ndarray:
    fig, ax = plt.subplots(figsize=(3, 2), dpi=80)
    viz.attention_overlay(ax, image, weights, grid, title="step 1", boxes=[[5, 6, 40, 30]], **cells)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return pixels


def test_attention_overlay_with_a_stride_that_divides_the_input_size_is_the_same_figure() -> None:
    """The study's sizes (160 px at stride 16, 448 at stride 32): the stride divides the input size, so the figure
    is the equal-cell one pixel for pixel; a stride that does not divide it moves the cells."""
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8))
    for side, stride, size in [(10, 16, 160), (14, 32, 448)]:
        weights = rng.random(side * side).astype(np.float32)
        before = _rendered_overlay(image, weights, (side, side))
        assert np.array_equal(_rendered_overlay(image, weights, (side, side), stride=stride, image_size=size), before)
    weights = rng.random(100).astype(np.float32)
    assert not np.array_equal(_rendered_overlay(image, weights, (10, 10), stride=16, image_size=150),
                              _rendered_overlay(image, weights, (10, 10)))


def test_text_attention_html_shades_each_word_by_its_share_of_the_largest_weight() -> None:
    html = viz.text_attention_html(["a", "red", "cube"], np.array([0.1, 0.4, 0.2]))
    shades = [float(a) for a in re.findall(r"rgba\(255,140,0,([0-9.]+)\)", html)]
    assert shades == [0.25, 1.0, 0.5] and [w for w in ("a", "red", "cube") if f">{w}</span>" in html] == \
        ["a", "red", "cube"]
    assert viz.text_attention_html([], np.array([])) == ""
    unk = viz.text_attention_html(["<unk>", "a&b"], np.array([0.5, 0.5]))  # a tag to the browser, unescaped
    assert ">&lt;unk&gt;</span>" in unk and ">a&amp;b</span>" in unk and "<unk>" not in unk


def test_t_interval_is_the_students_t_interval_and_none_for_one_seed() -> None:
    assert viz._t_interval(np.array([3.0])) == (3.0, 3.0)  # no bar rather than NaN bounds
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n) for [1, 2, 3]
    assert viz._t_interval(np.array([1.0, 2.0, 3.0])) == pytest.approx((2.0 - half, 2.0 + half))


def test_ablation_panels_label_each_panel_and_plot_the_seed_means() -> None:
    df = pd.DataFrame({"K": [1, 1, 1, 2, 2, 2], "acc": [1.0, 2.0, 3.0, 5.0, 6.0, 10.0],
                       "loss": [0.5, 0.5, 0.5, 0.25, 0.25, 0.25]})
    fig = viz.ablation_panels(df, "K", ["acc", "loss"], labels={"acc": "accuracy", "K": "steps K"})
    assert [ax.get_title() for ax in fig.axes] == ["accuracy", "loss"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["steps K", "steps K"]
    means = [line for line in fig.axes[0].get_lines() if len(line.get_ydata()) == 2]
    assert [list(line.get_ydata()) for line in means][0] == [2.0, 7.0]
    plt.close(fig)


def test_plot_history_draws_each_metric_against_the_epoch() -> None:
    a = [{"epoch": e, "loss": 1.0 / e, "acc": 10.0 * e} for e in (1, 2, 3)]
    fig = viz.plot_history(a, ["acc"])
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == [10.0, 20.0, 30.0]
    assert fig.axes[0].get_xlabel() == "epoch"
    plt.close(fig)


def test_grounding_bars_mark_each_scores_own_chance_level_and_name_the_panels() -> None:
    df = pd.DataFrame({"image_id": np.arange(8), "step": np.repeat([1, 2], 4), "family": np.tile(["a", "b"], 4),
                       "hit": [1, 0, 1, 1, 0, 0, 1, 0], "mass": np.linspace(0.1, 0.8, 8),
                       "chance_hit": 0.2, "chance_mass": 0.1})
    fig = viz.grounding_bars(df, x="step", hue="family", what="key words")
    assert [ax.get_title() for ax in fig.axes] == ["most attended word is a key word (%)",
                                                   "attention mass on key words (%)"]
    for ax, chance in zip(fig.axes, (20.0, 10.0), strict=True):
        levels = {round(float(y), 6) for c in ax.collections for seg in c.get_segments() for _, y in seg
                  if len(seg) == 2 and seg[0][0] != seg[1][0]}  # horizontal ticks, not error bars
        assert levels == {chance}
        centres = sorted(round(p.get_x() + p.get_width() / 2, 6) for p in ax.patches)
        assert centres == [-0.2, 0.2, 0.8, 1.2]  # step i: family a at i - 0.2, b at i + 0.2
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    plt.close(fig)


def test_show_images_puts_each_title_under_its_own_image(tmp_path) -> None:
    from PIL import Image

    paths = []
    for k, colour in enumerate(("red", "green", "blue")):
        paths.append(tmp_path / f"{k}.png")
        Image.new("RGB", (8, 8), colour).save(paths[-1])
    fig = viz.show_images(paths, ["first", "second", "third"], ncols=2)
    assert [ax.get_title() for ax in fig.axes] == ["first", "second", "third", ""]
    assert [tuple(ax.images[0].get_array()[0, 0]) for ax in fig.axes[:3]] == [(255, 0, 0), (0, 128, 0),
                                                                              (0, 0, 255)]
    assert not fig.axes[3].images
    plt.close(fig)


def test_pick_examples_depend_on_the_seed_and_not_on_the_tables_row_order() -> None:
    table = pd.DataFrame({"question_id": np.arange(40), "family": "a", "correct": np.arange(40) % 2 == 0})
    picks = {seed: gallery.pick_examples(table, "question_id", "family", per_group=2, seed=seed)
             for seed in range(5)}
    assert len({tuple(p.question_id) for p in picks.values()}) > 1  # another seed, other examples
    shuffled = table.sample(frac=1.0, random_state=7)
    for seed, picked in picks.items():
        assert gallery.pick_examples(shuffled, "question_id", "family", per_group=2, seed=seed).equals(picked)


def _panels(fig) -> dict[tuple[int, int], plt.Axes]:
    """The gallery's axes by their (row, column) in its grid; no two axes share a cell."""
    panels = {}
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        panels[spec.rowspan.start, spec.colspan.start] = ax
    assert len(panels) == len(fig.axes)
    return panels


def _drawn_boxes(ax: plt.Axes) -> list[tuple]:
    """The rectangles on ``ax``: (x, y, w, h, colour, dashed)."""
    from matplotlib.colors import to_rgba

    names = {to_rgba("cyan"): "cyan", to_rgba("lime"): "lime"}
    return [(p.get_x(), p.get_y(), p.get_width(), p.get_height(), names[tuple(p.get_edgecolor())],
             p.get_linestyle() not in ("-", "solid")) for p in ax.patches]


def _white_words(ax: plt.Axes) -> list[str]:
    """The words shaded darkest (written in white): the most attended word of a step."""
    return [t.get_text() for t in ax.texts if t.get_color() == "white"]


def _overlay(ax: plt.Axes) -> np.ndarray:
    """The attention map drawn over the image (the second image on a step's axes), as [gh, gw]."""
    return np.asarray(ax.images[1].get_array())


def _image(path: Path, colour: str) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (100, 100), colour).save(path)
    return path


def _colour(ax: plt.Axes) -> str:
    """The colour (red, green or blue) of the image drawn first on ``ax``."""
    return ("red", "green", "blue")[int(np.argmax(np.asarray(ax.images[0].get_array())[50, 50]))]


def test_vqa_gallery_draws_each_questions_own_image_boxes_maps_and_words(tmp_path) -> None:
    """Each row shows the asked question's own prediction row (not its neighbour's), its family and answer type,
    its question, prediction (✓/✗) and answer on their own lines, the target boxes in cyan and the anchor dashed in
    lime on the image and on every step, step k's own visual map titled "step k", and step k's most attended word."""
    from dan.data.grounding import Grounding, QuestionGT
    from dan.data.vqa import vqa_image_path

    for image_id, colour in ((5, "red"), (6, "blue")):  # in the run's own image folder, whichever it is
        _image(vqa_image_path(tmp_path, "train2014", image_id), colour)
    images = {5: ImageGT(100, 100, [ObjectGT(0, "circle", "red", "small", [0.0, 0.0, 50.0, 50.0]),
                                    ObjectGT(1, "square", "blue", "small", [50.0, 50.0, 50.0, 50.0])]),
              6: ImageGT(100, 100, [ObjectGT(3, "star", "red", "small", [60.0, 10.0, 30.0, 30.0]),
                                    ObjectGT(2, "square", "green", "small", [10.0, 60.0, 20.0, 20.0])])}
    questions = {1: QuestionGT("multi-hop", [0, 1], [0], [1], ["red"], 5),
                 2: QuestionGT("single-hop", [2], [], [], ["green"], 6)}
    preds = pd.DataFrame({"question_id": [2, 1], "image_id": [6, 5], "answer_type": ["yes/no", "other"],
                          "correct": [True, False],
                          "question": ["is there a green square", "what is right of the red circle"],
                          "predicted": ["yes", "blue"], "multiple_choice_answer": ["yes", "square"]})
    visual = np.zeros((2, 2, 4), dtype=np.float32)  # [Q, K, N]: row i, step k all on cell 2 i + k
    for i in range(2):
        for k in range(2):
            visual[i, k, 2 * i + k] = 1.0
    text = np.zeros((2, 2, 8), dtype=np.float32)
    text[0, 0, 3] = text[0, 1, 4] = 1.0  # "green", then "square"
    text[1, 0, 5] = text[1, 1, 6] = 1.0  # "red", then "circle"
    text[:, :, 7] = 0.5  # beyond the shorter question: padding, never shown as a word
    out = analysis.VQAOutputs(tmp_path, preds, visual, text, np.array([5, 7]), (2, 2), tmp_path, "train2014")
    fig = gallery.vqa_gallery(out, Grounding(images, questions, {}), [1, 2])
    panels = _panels(fig)
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (4, 3)  # 2 rows x (image + K steps)
    expected = [  # (title, caption, boxes, prediction row, most attended words, image)
        ("multi-hop (other)", "what is right of the red circle\npredicted: blue ✗\nanswer: square",
         [(50.0, 50.0, 50.0, 50.0, "cyan", False), (0.0, 0.0, 50.0, 50.0, "lime", True)], 1, ["red", "circle"], "red"),
        ("single-hop (yes/no)", "is there a green square\npredicted: yes ✓\nanswer: yes",
         [(10.0, 60.0, 20.0, 20.0, "cyan", False)], 0, ["green", "square"], "blue"),
    ]
    for r, (title, caption, boxes, i, words, colour) in enumerate(expected):
        assert panels[2 * r, 0].get_title() == title
        assert _colour(panels[2 * r, 0]) == _colour(panels[2 * r, 1]) == colour
        assert _drawn_boxes(panels[2 * r, 0]) == boxes
        assert [t.get_text() for t in panels[2 * r + 1, 0].texts] == [caption]
        for k in range(2):
            step = panels[2 * r, k + 1]
            assert step.get_title() == f"step {k + 1}"
            assert np.array_equal(_overlay(step), visual[i, k].reshape(2, 2))
            assert _drawn_boxes(step) == boxes
            assert _white_words(panels[2 * r + 1, k + 1]) == [words[k]]
    assert [t.get_text() for t in panels[3, 1].texts] == ["is", "there", "a", "green", "square"]
    plt.close(fig)
    with pytest.raises(DataError, match=r"these are not among them: \[7, 8, 9, 10, 11\]$"):
        gallery.vqa_gallery(out, Grounding(images, questions, {}), [1, 7, 8, 9, 10, 11, 12])


def test_mdan_gallery_draws_each_images_own_maps_the_objects_all_its_captions_name_and_the_chosen_caption(
        tmp_path) -> None:
    """Each row is the asked image's: titled with its id, its own image attention at step k, cyan boxes on every
    object any of its captions names (captions without grounding skipped), its ``caption``-th caption shaded by
    that caption's attention, and its top-ranked caption marked ✓ only when it is one of its own."""
    from dan.data.grounding import CaptionGT, Grounding

    images = {10: ImageGT(100, 100, [ObjectGT(0, "circle", "red", "small", [0.0, 0.0, 40.0, 40.0]),
                                     ObjectGT(1, "square", "blue", "small", [50.0, 50.0, 40.0, 40.0]),
                                     ObjectGT(2, "star", "green", "small", [10.0, 60.0, 20.0, 20.0])]),
              11: ImageGT(100, 100, [ObjectGT(0, "circle", "red", "small", [60.0, 0.0, 30.0, 30.0]),
                                     ObjectGT(1, "star", "yellow", "small", [0.0, 60.0, 30.0, 30.0])])}
    captions = {100: CaptionGT([0], ["red"], 10), 101: CaptionGT([1], ["blue"], 10), 110: CaptionGT([1], ["star"], 11)}
    sentences = {100: "a red circle", 101: "a blue square above it", 110: "a star", 111: "the yellow star"}
    image_att = np.zeros((2, 2, 4), dtype=np.float32)  # image n, step k all on cell 2 n + k
    for n in range(2):
        for k in range(2):
            image_att[n, k, 2 * n + k] = 1.0
    text_att = np.zeros((4, 2, 6), dtype=np.float32)
    text_att[1, 0, 1] = text_att[1, 1, 3] = 1.0  # caption 101: "blue", then "above"
    text_att[3, 0, 1] = text_att[3, 1, 2] = 1.0  # caption 111: "yellow", then "star"
    text_att[0, :, 0] = text_att[2, :, 0] = 1.0  # the other captions: their first word
    similarity = np.zeros((2, 4), dtype=np.float32)
    similarity[0, 1] = similarity[1, 0] = 1.0  # image 10's best: its own 101; image 11's: image 10's 100
    files = {i: _image(tmp_path / f"{i}.png", colour) for i, colour in ((10, "green"), (11, "blue"))}
    out = analysis.MDANOutputs(tmp_path, np.array([10, 11]), np.array([100, 101, 110, 111]), np.array([3, 5, 2, 3]),
                               (2, 2), image_att, text_att, similarity, sentences, files, 2, tmp_path)
    fig = gallery.mdan_gallery(out, Grounding(images, {}, captions), [11, 10], caption=1)
    panels = _panels(fig)
    expected = [  # (title, top caption, boxes, row n, most attended words, image)
        ("image 11", "top-ranked caption ✗: a red circle", [(0.0, 60.0, 30.0, 30.0, "cyan", False)], 1,
         ["yellow", "star"], "blue"),
        ("image 10", "top-ranked caption ✓: a blue square above it",
         [(0.0, 0.0, 40.0, 40.0, "cyan", False), (50.0, 50.0, 40.0, 40.0, "cyan", False)], 0, ["blue", "above"],
         "green"),
    ]
    for r, (title, top, boxes, n, words, colour) in enumerate(expected):
        assert panels[2 * r, 0].get_title() == title
        assert _colour(panels[2 * r, 0]) == _colour(panels[2 * r, 1]) == colour
        assert _drawn_boxes(panels[2 * r, 0]) == boxes
        assert [t.get_text().replace("\n", " ") for t in panels[2 * r + 1, 0].texts] == [top]
        for k in range(2):
            assert panels[2 * r, k + 1].get_title() == f"step {k + 1}"
            assert np.array_equal(_overlay(panels[2 * r, k + 1]), image_att[n, k].reshape(2, 2))
            assert _drawn_boxes(panels[2 * r, k + 1]) == boxes
            assert _white_words(panels[2 * r + 1, k + 1]) == [words[k]]
    plt.close(fig)


def test_pick_examples_orders_groups_keeps_its_columns_and_handles_no_group_and_no_rows() -> None:
    """Rows come group by group in sorted order (not the order of the groups' first ids), with exactly the
    columns [id, group, correct]; without a group each id still appears once; an empty table gives an empty
    table with those columns."""
    table = pd.DataFrame({"question_id": [1, 1, 2, 3, 4], "family": ["b", "b", "a", "b", "a"],
                          "correct": [True, True, False, False, True], "mass": [0.1, 0.2, 0.3, 0.4, 0.5]})
    picked = gallery.pick_examples(table, "question_id", "family", per_group=3)
    assert list(picked.columns) == ["question_id", "family", "correct"]
    assert list(picked.itertuples(index=False, name=None)) == [(4, "a", True), (2, "a", False), (1, "b", True),
                                                              (3, "b", False)]
    overall = gallery.pick_examples(table, "question_id", per_group=3)
    assert list(overall.columns) == ["question_id", "correct"]
    assert list(overall.itertuples(index=False, name=None)) == [(1, True), (4, True), (2, False), (3, False)]
    for group, cols in ((None, ["question_id", "correct"]), ("family", ["question_id", "family", "correct"])):
        empty = gallery.pick_examples(table.iloc[:0], "question_id", group)
        assert empty.empty and list(empty.columns) == cols


@pytest.mark.parametrize("which", ["vqa", "matching"])
def test_maps_whose_grid_the_recorded_features_cannot_give_are_refused_naming_the_files(which, vqa_run, matching_run,
                                                                                       tmp_path) -> None:
    """A run whose inputs.json records features of another input size than the grid of its saved maps: the
    analysis failed in the first example's scoring with cell_edges' message, which named neither the run nor a
    file ("a grid of 10 cells does not come from a 224 px input at stride 16 ..."). Now refused as the outputs are
    read, naming the maps' file and inputs.json."""
    import shutil

    run = shutil.copytree((vqa_run if which == "vqa" else matching_run).run_dir, tmp_path / "run")
    inputs = json.loads((run / "inputs.json").read_text())
    for summary in inputs["features"].values():
        summary["image_size"] += 3 * 32  # 3 more cells at any stride up to 32 (and a size no stride divides alike)
    (run / "inputs.json").write_text(json.dumps(inputs))
    load, name = ((analysis.load_vqa_outputs, "attention.npz") if which == "vqa" else
                  (analysis.load_mdan_outputs, "embeddings.npz"))
    with pytest.raises(DataError, match=rf"^{re.escape(str(run / name))}: its grid \(\d+, \d+\) is not that of the "
                                        rf"features in {re.escape(str(run / 'inputs.json'))}: a grid of \d+ cells"):
        out = load(run)
        (analysis.vqa_grounding if which == "vqa" else analysis.mdan_grounding)(out)
