"""The embedded benchmark: determinism, official schemas, ground truth against pixels and text, CLI errors."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dan.data import synth
from dan.data.__main__ import main
from dan.data.captions import image_file, load_karpathy
from dan.data.grounding import load_grounding
from dan.data.render import PALETTE, RADIUS
from dan.data.text import tokenize
from dan.data.vqa import load_vqa_split
from dan.io import ConfigError, DanError
from dan.metrics import normalize_answer, vqa_score

# Key sets of the official files (VQA v2 questions/annotations, Karpathy's dataset_coco.json).
VQA_QUESTIONS_KEYS = {"info", "task_type", "data_type", "data_subtype", "questions", "license"}
VQA_QUESTION_KEYS = {"image_id", "question", "question_id"}
VQA_ANNOTATIONS_KEYS = {"info", "license", "data_subtype", "annotations", "data_type"}
VQA_ANNOTATION_KEYS = {"question_type", "multiple_choice_answer", "answers", "image_id", "answer_type",
                       "question_id"}
VQA_ANSWER_KEYS = {"answer", "answer_confidence", "answer_id"}
KARPATHY_KEYS = {"images", "dataset"}
KARPATHY_IMAGE_KEYS = {"filepath", "sentids", "filename", "imgid", "split", "sentences", "cocoid"}
KARPATHY_SENTENCE_KEYS = {"tokens", "raw", "imgid", "sentid"}


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    return synth.generate("smoke", out=tmp_path_factory.mktemp("gen") / "smoke", seed=0, progress=False)


def _json(root: Path, rel: str):
    return json.loads((root / rel).read_text())


def test_same_seed_same_bytes(smoke, tmp_path):
    again = synth.generate("smoke", out=tmp_path / "again", seed=0, progress=False, workers=2)
    assert _tree_hash(again) == _tree_hash(smoke)
    manifest = _json(smoke, "manifest.json")
    for rel, info in manifest["files"].items():
        assert hashlib.sha256((smoke / rel).read_bytes()).hexdigest() == info["sha256"], rel
    assert len(manifest["files"]) == 72 + 4 + 2  # images, VQA files, captions + grounding
    other = synth.generate("smoke", out=tmp_path / "seed1", seed=1, progress=False)
    assert _json(other, "manifest.json")["files"] != manifest["files"]


def test_reuse_force_and_interrupted_runs(smoke, tmp_path, monkeypatch):
    out = synth.generate("smoke", out=tmp_path / "d", progress=False)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert synth.generate("smoke", out=out, progress=False) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # complete: nothing redone

    calls, make_image = [], synth._make_image

    def killed_midway(task):
        calls.append(1)
        if len(calls) % 10 == 0:
            raise KeyboardInterrupt
        return make_image(task)

    monkeypatch.setattr(synth, "_make_image", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        synth.generate("smoke", out=out, force=True, progress=False)
    with pytest.raises(KeyboardInterrupt):
        synth.generate("smoke", out=tmp_path / "new", progress=False)
    assert _tree_hash(out) == _tree_hash(smoke)  # the previous data set is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no staging folder, no half-written "new"
    stale = tmp_path / ".d.tmp-999999999"  # left by a run killed with -9 (no such process)
    stale.mkdir()
    monkeypatch.setattr(synth, "_make_image", make_image)
    synth.generate("smoke", out=out, force=True, progress=False)
    assert not stale.exists() and _tree_hash(out) == _tree_hash(smoke)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to replace"):
        synth.generate("smoke", out=tmp_path / "mine", force=True)
    (tmp_path / "mine" / "manifest.json").write_text('{"name": "another program\'s manifest"}')
    with pytest.raises(ConfigError, match="refusing to replace"):
        synth.generate("smoke", out=tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="accepted: smoke, default, full"):
        synth.generate("tiny", out=tmp_path / "x")
    (tmp_path / "afile").write_text("")
    with pytest.raises(DanError, match=r"cannot write the generated data set to .*afile"):
        synth.generate("smoke", out=tmp_path / "afile" / "x", progress=False)


def test_schemas_match_the_official_files(smoke):
    for split in ("train2014", "val2014"):
        q = _json(smoke, f"vqa/v2_OpenEnded_mscoco_{split}_questions.json")
        a = _json(smoke, f"vqa/v2_mscoco_{split}_annotations.json")
        assert set(q) == VQA_QUESTIONS_KEYS and set(a) == VQA_ANNOTATIONS_KEYS
        assert q["data_subtype"] == split and q["task_type"] == "Open-Ended"
        assert all(set(x) == VQA_QUESTION_KEYS for x in q["questions"])
        assert all(set(x) == VQA_ANNOTATION_KEYS for x in a["annotations"])
        assert all(len(x["answers"]) == 10 and all(set(y) == VQA_ANSWER_KEYS for y in x["answers"])
                   for x in a["annotations"])
    k = _json(smoke, "captions/dataset_synth.json")
    assert set(k) == KARPATHY_KEYS
    assert all(set(im) == KARPATHY_IMAGE_KEYS for im in k["images"])
    assert all(set(s) == KARPATHY_SENTENCE_KEYS for im in k["images"] for s in im["sentences"])


def test_loaders_read_it_and_splits_are_consistent(smoke):
    cfg = synth.PROFILES["smoke"]
    train, val = load_vqa_split(smoke, "train2014", check_images=True), load_vqa_split(smoke, "val2014")
    train_imgs, val_imgs = {e.image_id for e in train}, {e.image_id for e in val}
    assert (len(train_imgs), len(val_imgs)) == (cfg.n_train, cfg.n_val) and not train_imgs & val_imgs
    assert len({e.question_id for e in train + val}) == len(train + val)
    for e in train + val:
        norm = Counter(normalize_answer(a) for a in e.answers).most_common(2)
        assert norm[0][0] == e.multiple_choice_answer and (len(norm) == 1 or norm[0][1] > norm[1][1])
        assert e.answer_type in ("yes/no", "number", "other") and e.question_type
    caps = load_karpathy(smoke / "captions" / "dataset_synth.json")
    by_split = {s: {c.image_id for c in caps if c.split == s} for s in ("train", "val", "test")}
    assert by_split["train"] == train_imgs
    assert by_split["val"] | by_split["test"] <= val_imgs and not by_split["val"] & by_split["test"]
    assert (len(by_split["val"]), len(by_split["test"])) == (cfg.n_caption_val, cfg.n_caption_test)
    assert all(len(c.sentences) == 5 and len(set(c.sentences)) == 5 for c in caps)
    for c in caps:
        assert image_file(smoke / "images", c, check=True).name.startswith(f"COCO_{c.filepath}_")


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    """A few images at the full profile's resolution (640x480)."""
    cfg = synth.SynthConfig(n_train=12, n_val=6, n_caption_val=2, n_caption_test=2, width=640, height=480)
    return synth.generate("full", out=tmp_path_factory.mktemp("gen") / "full", config=cfg, progress=False)


@pytest.mark.parametrize("root", ["smoke", "large"])
def test_ground_truth_agrees_with_pixels(root, request):
    smoke = request.getfixturevalue(root)
    g = load_grounding(smoke / "grounding.json")
    names, colors = list(PALETTE), np.array(list(PALETTE.values()), dtype=float)
    checked = 0
    for split in ("train2014", "val2014"):
        for path in sorted((smoke / "images" / split).glob("*.jpg")):
            image_id = int(path.stem.split("_")[-1])
            img, gt = np.asarray(Image.open(path).convert("RGB"), dtype=float), g.images[image_id]
            assert img.shape == (gt.height, gt.width, 3) and len(gt.objects) >= 2
            side = min(gt.width, gt.height)
            for o in gt.objects:
                x, y, w, h = o.bbox
                assert 0 <= x and 0 <= y and x + w <= gt.width and y + h <= gt.height
                cx, cy = int(x + w / 2), int(y + h / 2)
                patch = np.median(img[cy - 2: cy + 3, cx - 2: cx + 3].reshape(-1, 3), axis=0)
                assert np.abs(patch - PALETTE[o.color]).max() < 40, (path.name, o)
                assert names[int(np.argmin(((colors - patch) ** 2).sum(1)))] == o.color, (path.name, o)
                longest = max(w, h)
                if o.size == "small":
                    assert longest <= 2 * RADIUS["small"][1] * side + 2
                else:
                    assert longest >= 1.6 * RADIUS["large"][0] * side - 1
                checked += 1
    assert checked > 2 * len(g.images)


def _center(o):
    return o.bbox[0] + o.bbox[2] / 2, o.bbox[1] + o.bbox[3] / 2


def test_answers_agree_with_grounding(smoke):
    g = load_grounding(smoke / "grounding.json")
    rels = {" left of the ": (0, -1), " right of the ": (0, 1), " above the ": (1, -1), " below the ": (1, 1),
            " under the ": (1, 1)}
    seen_rel = 0
    for e in load_vqa_split(smoke, "train2014") + load_vqa_split(smoke, "val2014"):
        q, img = g.questions[e.question_id], g.images[e.image_id]
        assert q.image_id == e.image_id and set(q.object_ids) == set(q.anchor_ids) | set(q.target_ids)
        assert (q.family == "multi-hop") == bool(q.anchor_ids)
        tokens = tokenize(e.question)
        assert q.key_words and all(w in tokens for w in q.key_words), (e.question, q.key_words)
        targets = [img.object(i) for i in q.target_ids]
        if e.question.startswith("how many"):
            assert e.multiple_choice_answer == str(len(targets))
        elif e.question.startswith(("is there", "are there")):
            assert e.multiple_choice_answer == ("yes" if targets else "no")
        elif e.question.startswith(("what color", "what is the color")):
            assert [e.multiple_choice_answer] == [t.color for t in targets]
        elif e.question.startswith(("what shape", "what is the shape")):
            assert [e.multiple_choice_answer] == [t.shape for t in targets]
        for phrase, (axis, sign) in rels.items():
            if phrase in e.question and not e.question.startswith("is the"):
                anchor = _center(img.object(q.anchor_ids[0]))
                assert all(sign * (_center(t)[axis] - anchor[axis]) > 0 for t in targets), e.question
                seen_rel += 1
    assert seen_rel > 20


def test_captions_grounding_and_distribution(smoke):
    g = load_grounding(smoke / "grounding.json")
    k = _json(smoke, "captions/dataset_synth.json")
    for im in k["images"]:
        for s in im["sentences"]:
            cg = g.captions[s["sentid"]]
            assert cg.image_id == im["cocoid"] and cg.object_ids
            assert all(w in s["tokens"] for w in cg.key_words) and s["tokens"] == tokenize(s["raw"])
    m = _json(smoke, "manifest.json")
    train = load_vqa_split(smoke, "train2014")
    val = load_vqa_split(smoke, "val2014")
    top, n_top = Counter(e.multiple_choice_answer for e in train).most_common(1)[0]
    assert n_top / len(train) < 0.3  # no answer dominates
    types = Counter(e.answer_type for e in train)
    assert all(types[t] > 0.2 * len(train) for t in ("yes/no", "number", "other"))
    families = Counter(q.family for q in g.questions.values())
    assert min(families.values()) > 0.3 * len(g.questions)
    base = 100 * np.mean([vqa_score(top, e.answers) for e in val])
    assert m["majority_baseline"]["answer"] == top
    assert m["majority_baseline"]["val_accuracy"] == pytest.approx(base, abs=1e-3)
    assert m["counts"]["questions"] == {"train2014": len(train), "val2014": len(val)}


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["generate", "--profile", "huge", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown profile 'huge'" in err and "smoke, default, full" in err
    assert main(["info", "--root", str(tmp_path / "nothing")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "dan.data", "generate", "--profile", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfigError):
        main(["generate", "--profile", "nope", "--debug"])


@pytest.mark.parametrize("files", [["vqa/x.json"], {"grounding.json": 123}, 5])
def test_a_manifest_damaged_in_its_files_is_regenerated_and_named_by_info(smoke, tmp_path, capsys, files):
    """A manifest.json whose 'files' is not an object of objects raised AttributeError when generate checked
    whether the data set was complete, and `info` raised TypeError on a number (found by fuzzing): generate now
    makes the data set anew, and info names the file and field."""
    out = tmp_path / "d"
    shutil.copytree(smoke, out)
    manifest = _json(out, "manifest.json")
    (out / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
    if not isinstance(files, dict | list):
        assert main(["info", "--root", str(out)]) != 0
        assert f"{out / 'manifest.json'}: field 'files' must be an object" in capsys.readouterr().err
    assert synth.generate("smoke", out=out, progress=False) == out
    assert _json(out, "manifest.json") == manifest and _tree_hash(out) == _tree_hash(smoke)


def test_cli_generate_info_check(smoke, capsys, tmp_path):
    assert main(["generate", "--profile", "smoke", "--out", str(smoke), "--no-progress"]) == 0  # reused
    assert capsys.readouterr().out.strip() == str(smoke)
    assert main(["info", "--root", str(smoke)]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["images"] == {"train2014": 48, "val2014": 24}
    assert main(["check", "--root", str(smoke), "--verify-images"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vqa"]["val2014"]["images"] == 24 and report["captions"]["dataset_synth.json"]["test"] == 16


def test_a_bbox_is_the_whole_pixels_around_the_drawing_and_relations_leave_a_band_undecided():
    """``_bbox``: the pixels PIL fills, from the floor of the smallest to the floor of the largest coordinate (a
    circle at (10.5, 20.5) with r = 3.2 spans 7.3..13.7 x 17.3..23.7 -> [7, 17, 7, 7]; one at (10, 20) with r = 3
    spans 7..13, and PIL fills column 13 too -> [7, 17, 7, 7]). ``relation_sets``: with a 200 px wide scene the
    tolerance is 7 px: an object 20 px to the anchor's left is clearly left of it, one 3 px to its left or 3 px to
    its right is too close to call, one 20 px to its right is neither."""
    from dan.data.render import Scene, SceneObject, _bbox, relation_sets

    assert _bbox("circle", 10.5, 20.5, 3.2) == [7, 17, 7, 7]
    assert _bbox("circle", 10.0, 20.0, 3.0) == [7, 17, 7, 7]  # on whole pixels: the last one is drawn too

    def obj(k: int, cx: float) -> SceneObject:
        return SceneObject(k, "circle", "red", "small", cx, 50.0, 5.0, (255, 0, 0), _bbox("circle", cx, 50.0, 5.0))

    anchor = obj(0, 100.0)
    scene = Scene(200, 100, [anchor, obj(1, 80.0), obj(2, 97.0), obj(3, 103.0), obj(4, 120.0)])
    assert scene.tol_x == pytest.approx(7.0)
    clear, unsure = relation_sets(scene, anchor, "left")
    assert [o.id for o in clear] == [1] and [o.id for o in unsure] == [2, 3]
    clear, unsure = relation_sets(scene, anchor, "right")
    assert [o.id for o in clear] == [4] and [o.id for o in unsure] == [2, 3]


def test_each_bbox_is_exactly_the_pixels_its_object_is_drawn_on():
    """Generator version 1 put 1 px of 107 of the default data's 6,776 objects outside their box, or a column
    that holds none of the object inside it: the box came from the centre and radius before they were rounded to
    the 0.01 px that render_scene draws, and ceil() of a largest coordinate on a whole pixel left out the pixel
    that PIL fills there. Each object drawn alone, as render_scene draws it, fills exactly its box's pixels' extent."""
    from PIL import ImageDraw

    from dan.data.render import polygon, sample_scene

    checked = 0
    for seed in range(150):
        scene = sample_scene(np.random.default_rng([seed, 1, seed, 0]), 320, 240)
        for o in scene.objects:
            mask = Image.new("L", (scene.width, scene.height), 0)
            if o.shape == "circle":
                ImageDraw.Draw(mask).ellipse([o.cx - o.r, o.cy - o.r, o.cx + o.r, o.cy + o.r], fill=255)
            else:
                ImageDraw.Draw(mask).polygon(polygon(o.shape, o.cx, o.cy, o.r), fill=255)
            ys, xs = np.nonzero(np.asarray(mask))
            drawn = [int(xs.min()), int(ys.min()), int(xs.max()) + 1 - int(xs.min()), int(ys.max()) + 1 - int(ys.min())]
            assert drawn == o.bbox, (seed, o)
            checked += 1
    assert checked > 500


def _obj(i: int, shape: str, color: str, cx: float, cy: float):
    from dan.data.render import SceneObject

    return SceneObject(i, shape, color, "small", cx, cy, 30.0, PALETTE[color], [int(cx) - 30, int(cy) - 30, 60, 60])


def test_caption_positions_use_the_image_width_for_columns_and_height_for_rows():
    from dan.data.render import Scene
    from dan.data.synth_captions import _where

    scene = Scene(640, 480, [])
    # column = which third of 640 px, row = which third of 480 px
    assert _where(scene, _obj(0, "circle", "red", 400, 50)) == "at the top"
    assert _where(scene, _obj(0, "circle", "red", 50, 400)) == "in the bottom left corner"
    assert _where(scene, _obj(0, "circle", "red", 500, 300)) == "on the right"
    assert _where(scene, _obj(0, "circle", "red", 320, 240)) == "in the center"


def test_relation_captions_state_true_relations_and_ground_every_object_they_name():
    from dan.data.render import Scene, relation_sets
    from dan.data.synth_captions import c_chain, c_relation

    # a row, left to right: red circle, green square, blue star (same height: only left/right hold)
    objs = [_obj(0, "circle", "red", 100, 240), _obj(1, "square", "green", 320, 240),
            _obj(2, "star", "blue", 540, 240)]
    scene = Scene(640, 480, objs)
    phrases = [("to the left of", "left"), ("to the right of", "right"), ("left of", "left"),
               ("right of", "right")]

    def rel_of(text: str) -> str:
        return next(rel for p, rel in phrases if text.startswith(p))

    for seed in range(20):
        cap = c_relation(scene, np.random.default_rng(seed))
        assert len(cap.object_ids) == 2 and len(set(cap.object_ids)) == 2
        chain = c_chain(scene, np.random.default_rng(seed))
        a, b, c = (objs[i] for i in chain.object_ids)
        first, second = chain.raw.split(", which is ")
        rel1 = rel_of(first.split(" is ", 1)[1])
        rel2 = rel_of(second)
        assert a in relation_sets(scene, b, rel1)[0], chain.raw  # "the a is rel1 the b"
        assert b in relation_sets(scene, c, rel2)[0], chain.raw  # "the b, which is rel2 the c"


def test_count_captions_only_count_what_appears_at_least_twice():
    from dan.data.render import Scene
    from dan.data.synth_captions import c_count

    distinct = Scene(640, 480, [_obj(0, "circle", "red", 100, 240), _obj(1, "square", "green", 320, 240)])
    assert all(c_count(distinct, np.random.default_rng(seed)) is None for seed in range(10))
    pair = Scene(640, 480, [_obj(0, "circle", "red", 100, 240), _obj(1, "circle", "green", 320, 240)])
    assert all(c_count(pair, np.random.default_rng(seed)).raw.startswith("two circles") for seed in range(10))


_MAKE_IMAGE = synth._make_image


def _first_chunk_last(task: tuple) -> dict:
    """synth._make_image, slowed for the first chunk of tasks (run in a worker): later chunks finish first."""
    import time

    if task[1] == "train2014" and task[2] < 16:
        time.sleep(1.0)
    return _MAKE_IMAGE(task)


def test_workers_finishing_out_of_order_give_the_same_bytes(smoke, tmp_path, monkeypatch):
    """The output does not depend on the number of worker processes nor on which finishes first (the pool is
    forked, so the workers run this module's slowed copy of the image task)."""
    monkeypatch.setattr(synth, "_make_image", _first_chunk_last)
    again = synth.generate("smoke", out=tmp_path / "again", seed=0, progress=False, workers=2)
    assert _tree_hash(again) == _tree_hash(smoke)


def test_every_image_has_its_own_scene(smoke):
    """Each image draws from streams of its own (seed, split, index): train image k and val image k are not the same
    scene under two ids."""
    images = _json(smoke, "grounding.json")["images"]
    scenes = {json.dumps(rec["objects"], sort_keys=True) for rec in images.values()}
    assert len(images) == 72 and len(scenes) == len(images)


def _manifest(root: Path, text: str, profile: str = "smoke") -> None:
    folder = root / "data" / "generated" / profile
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(text)


def test_the_results_of_another_draw_of_the_data_have_a_folder_of_their_own(tmp_path):
    """``01_data -p seed k`` regenerated data/generated/<profile> in place, and every store and run in
    results/<profile> (made from the previous draw) was then refused by the later notebooks: the results are keyed
    by the manifest's seed, draw 0's in results/<profile> as before, draw k's in results/<profile>-seed<k>."""
    from dan.io import study_paths

    ours = {"generator": synth.GENERATOR, "generator_version": synth.GENERATOR_VERSION, "profile": "smoke"}
    _manifest(tmp_path, json.dumps({**ours, "seed": 3}))
    paths = study_paths("smoke", tmp_path)
    assert paths.results == tmp_path / "results" / "smoke-seed3"
    assert (paths.features, paths.runs) == (paths.results / "features", paths.results / "runs")
    assert paths.data == tmp_path / "data" / "generated" / "smoke" and paths.profile == "smoke"
    assert synth.generated_seed(paths.data) == 3 and synth.generated_seed(paths.data, "default") is None
    for text in (json.dumps({**ours, "seed": 0}),  # draw 0 and anything not a draw of this profile: results/smoke
                 "{", "[]", '{"name": "another program\'s manifest", "seed": 3}',
                 json.dumps({**ours, "seed": 3, "generator": "elsewhere"}),
                 json.dumps({**ours, "seed": 3, "profile": "default"}),
                 *(json.dumps({**ours, "seed": seed}) for seed in (True, "3", -1, 2.5, None))):
        _manifest(tmp_path, text)
        assert study_paths("smoke", tmp_path).results == tmp_path / "results" / "smoke", text
    (tmp_path / "data" / "generated" / "smoke" / "manifest.json").unlink()
    assert study_paths("smoke", tmp_path).results == tmp_path / "results" / "smoke"
    (tmp_path / "data" / "generated" / "smoke" / "manifest.json").mkdir()
    assert study_paths("smoke", tmp_path).results == tmp_path / "results" / "smoke"
    real = tmp_path / "data" / "real"  # the real data sets have no draw, whatever lies there
    real.mkdir(parents=True)
    (real / "manifest.json").write_text(json.dumps({**ours, "profile": "real", "seed": 3}))
    assert study_paths("real", tmp_path).results == tmp_path / "results" / "real"
    _manifest(tmp_path, json.dumps({**ours, "profile": "default", "seed": 2}), profile="default")
    assert study_paths("default", tmp_path).runs == tmp_path / "results" / "default-seed2" / "runs"


def test_generating_another_draw_moves_the_studys_folders_and_draw_0_finds_its_own_again(tmp_path, monkeypatch):
    """The default folders as the notebooks use them (DAN_ROOT): generating seed 1 into data/generated/smoke gives
    results/smoke-seed1 (made by ensure), draw 0's results/smoke is left as it was and is the folder again once seed
    0 is generated again."""
    from dan.io import study_paths

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    tiny = synth.SynthConfig(n_train=2, n_val=2, n_caption_val=1, n_caption_test=1)
    synth.generate("smoke", seed=0, config=tiny, progress=False)
    draw0 = study_paths("smoke").ensure()
    assert draw0.results == tmp_path / "results" / "smoke"
    (draw0.runs / "vqa-dual-K2-s0").mkdir()
    assert synth.generate("smoke", seed=1, config=tiny, progress=False) == tmp_path / "data" / "generated" / "smoke"
    draw1 = study_paths("smoke").ensure()
    assert draw1.results == tmp_path / "results" / "smoke-seed1" and draw1.runs.is_dir()
    assert draw1.data == draw0.data and list(draw1.runs.iterdir()) == []
    assert (draw0.runs / "vqa-dual-K2-s0").is_dir()  # draw 0's study untouched
    synth.generate("smoke", seed=0, config=tiny, progress=False)
    assert study_paths("smoke") == draw0
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["smoke", "smoke-seed1"]
