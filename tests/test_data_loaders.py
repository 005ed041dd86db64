"""Loaders for the real formats: VQA v1/v2, Karpathy JSON, Flickr8k captions.txt, grounding.json.

Every bad input must give a DataError whose message names the file and the id at fault.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from dan.data.captions import CaptionImage, image_file, load_flickr8k_txt, load_karpathy
from dan.data.grounding import ImageGT, ObjectGT, grid_coverage, load_grounding, object_mask
from dan.data.vqa import DataWarning, check_image_file, load_vqa, load_vqa_split, vqa_files
from dan.io import ConfigError, DataError


def _questions(split="val2014", qs=((1, 10, "What color is it?"), (2, 10, "How many?"), (3, 11, "Is it?"))):
    return {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": split, "license": {},
            "questions": [{"question_id": q, "image_id": i, "question": t} for q, i, t in qs]}


def _annotations(rows=((1, 10, "red", "other"), (2, 10, "2", "number"), (3, 11, "yes", "yes/no"))):
    anns = []
    for q, i, a, t in rows:
        answers = [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]
        anns.append({"question_id": q, "image_id": i, "answers": answers, "multiple_choice_answer": a,
                     "answer_type": t, "question_type": "what"})
    return {"info": {}, "license": {}, "data_type": "mscoco", "data_subtype": "val2014", "annotations": anns}


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.mark.parametrize("version, qname, aname, sub", [
    ("v2", "v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json", "vqa"),
    ("v1", "OpenEnded_mscoco_val2014_questions.json", "mscoco_val2014_annotations.json", "."),
])
def test_vqa_round_trip_v1_v2(tmp_path, version, qname, aname, sub):
    _write(tmp_path / sub / qname, _questions())
    _write(tmp_path / sub / aname, _annotations())
    q, a = vqa_files(tmp_path, "val", version="auto")
    assert (q.name, a.name) == (qname, aname)
    ex = load_vqa_split(tmp_path, "val2014")
    assert [e.question_id for e in ex] == [1, 2, 3]
    assert ex[1].image_id == 10 and ex[1].question == "How many?" and ex[1].answers == ["2"] * 10
    assert (ex[1].multiple_choice_answer, ex[1].answer_type, ex[1].question_type) == ("2", "number", "what")


def test_vqa_prefers_v2_and_test_split_without_annotations(tmp_path):
    _write(tmp_path / "vqa" / "OpenEnded_mscoco_test2015_questions.json", _questions("test2015"))
    _write(tmp_path / "vqa" / "v2_OpenEnded_mscoco_test2015_questions.json", _questions("test2015", ((7, 1, "Q?"),)))
    q, a = vqa_files(tmp_path, "test2015")
    assert q.name.startswith("v2_") and a is None
    assert vqa_files(tmp_path, "test2015", version="v1")[0].name.startswith("OpenEnded")
    ex = load_vqa_split(tmp_path, "test")
    assert len(ex) == 1 and ex[0].answers == [] and ex[0].multiple_choice_answer is None


def test_vqa_records_as_released_load(tmp_path):
    """Records in the released files' own structure and key order (v2 val: info/license of "v2.0 of the VQA
    dataset", question_type "none of the above", answers with URLs and per-answer confidence; v1: the
    MultipleChoice questions file, with its num_choices and 18 multiple_choices, unpacks beside the OpenEnded one
    from Questions_Val_mscoco.zip) load as they are, and v1's OpenEnded file is the one read."""
    info = {"description": "This is v2.0 of the VQA dataset.", "url": "http://visualqa.org", "version": "2.0",
            "year": 2017, "contributor": "VQA Team", "date_created": "2017-04-26 17:07:13"}
    lic = {"url": "http://creativecommons.org/licenses/by/4.0/",
           "name": "Creative Commons Attribution 4.0 International License"}
    answers = ["foodiebakercom", "foodiebakercom", "foodiebaker", "foodiebakercom", "foodiebakercom",
               "http://foodiebakercom", "foodiebakercom", "foodiebakercom", "foodiebakercom", "foodiebaker"]
    _write(tmp_path / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json", {
        "info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": lic, "data_subtype": "val2014",
        "questions": [{"image_id": 393225, "question": "What website copyrighted the picture?",
                       "question_id": 393225001}]})
    _write(tmp_path / "vqa" / "v2_mscoco_val2014_annotations.json", {
        "info": info, "license": lic, "data_subtype": "val2014", "annotations": [{
            "question_type": "what", "multiple_choice_answer": "foodiebakercom",
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)],
            "image_id": 393225, "answer_type": "other", "question_id": 393225001}], "data_type": "mscoco"})
    (ex,) = load_vqa_split(tmp_path, "val2014")
    assert (ex.question_id, ex.image_id, ex.answers[5], ex.question_type) == (393225001, 393225,
                                                                            "http://foodiebakercom", "what")
    mc = _questions()
    mc["num_choices"] = 18
    for q in mc["questions"]:
        q["multiple_choices"] = ["yes", "no", "red", "2"] + [f"choice {k}" for k in range(14)]
    v1 = tmp_path / "v1"
    _write(v1 / "vqa" / "MultipleChoice_mscoco_val2014_questions.json", mc)
    _write(v1 / "vqa" / "OpenEnded_mscoco_val2014_questions.json", _questions())
    _write(v1 / "vqa" / "mscoco_val2014_annotations.json", _annotations())
    assert vqa_files(v1, "val2014")[0].name == "OpenEnded_mscoco_val2014_questions.json"
    assert [e.question_id for e in load_vqa_split(v1, "val2014")] == [1, 2, 3]


def test_vqa_files_missing_lists_what_it_looked_for(tmp_path):
    with pytest.raises(DataError) as err:
        vqa_files(tmp_path, "train2014")
    msg = str(err.value)
    assert "v2_OpenEnded_mscoco_train2014_questions.json" in msg and "OpenEnded_mscoco_train2014_questions" in msg
    with pytest.raises(ConfigError, match="accepted"):
        vqa_files(tmp_path, "train2014", version="v3")


def _bad_question_file(tmp_path, case):
    qs = _questions()
    if case == "missing keys":
        del qs["questions"][1]["question"]
    elif case == "duplicate id":
        qs["questions"][2]["question_id"] = 2
    elif case == "empty question":
        qs["questions"][1]["question"] = "   "
    elif case == "unknown image":
        qs["questions"][1]["image_id"] = 999
    elif case == "bad id":  # past int64: read, then OverflowError where ids became int64 arrays (found by fuzzing)
        qs["questions"][1]["image_id"] = 2**63
    return _write(tmp_path / "q.json", qs)


@pytest.mark.parametrize("case, pattern", [
    ("missing keys", r"q\.json: question #1: missing key\(s\) 'question'"),
    ("duplicate id", r"q\.json: duplicate question_id 2"),
    ("empty question", r"q\.json: question 2 has an empty question"),
    ("unknown image", r"q\.json: question 2 references image 999"),
    ("bad id", r"q\.json: question #1: question_id/image_id must be integers in \[0, 2\*\*63\), got "
               r"2/9223372036854775808"),
])
def test_vqa_bad_questions_name_file_and_id(tmp_path, case, pattern):
    path = _bad_question_file(tmp_path, case)
    with pytest.raises(DataError, match=pattern):
        load_vqa(path, image_ids={10, 11})
    stats: dict = {}
    with pytest.warns(DataWarning, match="skipped 1 of 3"):
        ex = load_vqa(path, image_ids={10, 11}, on_error="skip", stats=stats)
    assert len(ex) == 2 and stats["skipped"] == 1 and stats["reasons"] == {case: 1}


def test_vqa_bad_files_and_annotations(tmp_path):
    bad = _write(tmp_path / "broken.json", '{"questions": [')
    with pytest.raises(DataError, match=r"broken\.json is not valid JSON"):
        load_vqa(bad)
    with pytest.raises(DataError, match=r"nothere\.json"):
        load_vqa(tmp_path / "nothere.json")
    with pytest.raises(DataError, match=r"'questions'"):
        load_vqa(_write(tmp_path / "nokey.json", {"info": {}}))
    q = _write(tmp_path / "q.json", _questions())
    anns = _annotations()
    anns["annotations"].append(dict(anns["annotations"][0]))
    with pytest.raises(DataError, match=r"a\.json: duplicate annotation for question_id 1"):
        load_vqa(q, _write(tmp_path / "a.json", anns))
    anns = _annotations()
    del anns["annotations"][2]
    with pytest.raises(DataError, match=r"no annotation for question_id 3"):
        load_vqa(q, _write(tmp_path / "a.json", anns))
    anns = _annotations()
    anns["annotations"][0]["answers"] = []
    with pytest.raises(DataError, match=r"a\.json: annotation of question 1: 'answers' must be a non-empty"):
        load_vqa(q, _write(tmp_path / "a.json", anns))
    for key, value, message in (("multiple_choice_answer", 3, "'multiple_choice_answer' must be a non-empty "
                                                               "string, got 3"),
                                ("multiple_choice_answer", None, "'multiple_choice_answer' must be a non-empty"),
                                ("answer_type", 5, "'answer_type' must be a string, got 5")):
        anns = _annotations()
        anns["annotations"][1][key] = value
        with pytest.raises(DataError, match=rf"a\.json: annotation of question 2: {message}"):
            load_vqa(q, _write(tmp_path / "a.json", anns))
    anns = _annotations()
    anns["annotations"][1]["image_id"] = 11  # question 2 is about image 10
    with pytest.raises(DataError, match=r"a\.json: question 2 has image_id 11 here"):
        load_vqa(q, _write(tmp_path / "a.json", anns))
    with pytest.raises(ConfigError, match="on_error"):
        load_vqa(q, on_error="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped -> no warning
        assert len(load_vqa(q, on_error="skip")) == 3


@pytest.mark.parametrize("key, value, message", [
    ("answers", 9, r"'answers' has 9 entries, expected 10"),
    ("answers", 11, r"'answers' has 11 entries, expected 10"),
    ("answers", 1, r"'answers' has 1 entries, expected 10"),
    ("answer_type", "Yes/No", r"'answer_type' must be one of 'yes/no', 'number', 'other', got 'Yes/No'"),
    ("answer_type", "unanswerable", r"'answer_type' must be one of .*, got 'unanswerable'"),
])
def test_vqa_annotations_need_ten_answers_and_a_known_answer_type(tmp_path, key, value, message):
    """The official accuracy averages min(#matching/3, 1) over the ten leave-one-out subsets of ten human answers
    (every VQA v1/v2 annotation has ten): another count changes what the score means (3 answers cap a perfect
    prediction at 2/3), and an unknown answer type would drop out of the per-type tables. Both are errors naming
    the file, the question and the value; on_error="skip" drops and counts them."""
    q = _write(tmp_path / "q.json", _questions())
    anns = _annotations()
    ann = anns["annotations"][1]
    ann[key] = ann["answers"][:1] * value if key == "answers" else value
    a = _write(tmp_path / "a.json", anns)
    with pytest.raises(DataError, match=rf"a\.json: annotation of question 2: {message}"):
        load_vqa(q, a)
    stats: dict = {}
    with pytest.warns(DataWarning, match=r"skipped 2 of 6 record\(s\): 1 bad annotation, 1 question without"):
        ex = load_vqa(q, a, on_error="skip", stats=stats)
    assert [e.question_id for e in ex] == [1, 3] and stats["reasons"]["bad annotation"] == 1


def test_vqa_boolean_ids_and_a_blank_majority_answer_are_errors_and_questions_are_trimmed(tmp_path):
    """JSON ``true`` is no question id (Python would take it for 1); a blank ``multiple_choice_answer`` is no answer
    (it would be the training target of the question); a question's surrounding blanks are not part of its text."""
    qs = _questions()
    qs["questions"][0]["question_id"] = True
    with pytest.raises(DataError, match=r"q\.json: question #0: question_id/image_id must be integers in "
                                        r"\[0, 2\*\*63\), got True/10"):
        load_vqa(_write(tmp_path / "q.json", qs))
    q = _write(tmp_path / "q.json", _questions(qs=((1, 10, "  What color is it? \n"), (2, 10, "How many?"))))
    anns = _annotations(rows=((1, 10, "red", "other"), (2, 10, "2", "number")))
    assert [e.question for e in load_vqa(q, _write(tmp_path / "a.json", anns))] == ["What color is it?", "How many?"]
    anns["annotations"][1]["multiple_choice_answer"] = "  "
    with pytest.raises(DataError, match=r"a\.json: annotation of question 2: 'multiple_choice_answer' must be a "
                                        r"non-empty string, got '  '"):
        load_vqa(q, _write(tmp_path / "a.json", anns))


def test_vqa_skip_counts_every_bad_record_and_keeps_five_examples_naming_the_file(tmp_path):
    qs = _questions(qs=[(k, 10, "What?" if k > 7 else " ") for k in range(1, 10)])  # questions 1-7 are blank
    stats: dict = {}
    with pytest.warns(DataWarning, match=r"q\.json: skipped 7 of 9 record\(s\): 7 empty question"):
        ex = load_vqa(_write(tmp_path / "q.json", qs), on_error="skip", stats=stats)
    assert [e.question_id for e in ex] == [8, 9]
    assert (stats["skipped"], stats["total"], stats["reasons"]) == (7, 9, {"empty question": 7})
    assert len(stats["examples"]) == 5
    assert all(m.startswith(f"{tmp_path / 'q.json'}: question {k} has an empty question")
               for k, m in zip(range(1, 6), stats["examples"], strict=True))

def test_vqa_skip_drops_mismatched_and_unannotated_questions(tmp_path):
    q = _write(tmp_path / "q.json", _questions())
    anns = _annotations()
    anns["annotations"][1]["image_id"] = 11  # question 2 is about image 10
    del anns["annotations"][2]  # question 3 has no annotation
    stats: dict = {}
    with pytest.warns(DataWarning, match="skipped 2 of 5"):
        ex = load_vqa(q, _write(tmp_path / "a.json", anns), on_error="skip", stats=stats)
    assert [e.question_id for e in ex] == [1] and ex[0].answers == ["red"] * 10
    assert stats["reasons"] == {"image mismatch": 1, "question without annotation": 1}


def test_image_file_checks(tmp_path):
    _write(tmp_path / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json", _questions())
    img_dir = tmp_path / "images" / "val2014"
    img_dir.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 0, 0)).save(img_dir / "COCO_val2014_000000000010.jpg")
    (img_dir / "COCO_val2014_000000000011.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"image id 11 is empty .*COCO_val2014_000000000011\.jpg"):
        load_vqa_split(tmp_path, "val2014", check_images=True)
    (img_dir / "COCO_val2014_000000000011.jpg").unlink()
    with pytest.raises(DataError, match=r"question 3 references image 11"):
        load_vqa_split(tmp_path, "val2014", check_images=True)
    with pytest.warns(DataWarning):
        assert len(load_vqa_split(tmp_path, "val2014", check_images=True, on_error="skip")) == 2
    good = (img_dir / "COCO_val2014_000000000010.jpg").read_bytes()
    cut = img_dir / "COCO_val2014_000000000014.jpg"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"image id 14 is not a readable image: .*000000000014\.jpg"):
        check_image_file(cut, 14, verify=True)  # truncated JPEG
    junk = _write(img_dir / "COCO_val2014_000000000012.jpg", "not an image")
    assert check_image_file(junk, 12) == junk
    with pytest.raises(DataError, match=r"image id 12 is not a readable image"):
        check_image_file(junk, 12, verify=True)
    with pytest.raises(DataError, match=r"image id 13 not found"):
        check_image_file(img_dir / "missing.jpg", 13)


def _karpathy():
    return {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "imgid": 0, "cocoid": 42,
         "split": "test", "sentids": [0, 1], "sentences": [
             {"tokens": ["a", "dog"], "raw": "A dog.", "imgid": 0, "sentid": 0},
             {"tokens": ["a", "cat"], "raw": "A cat.", "imgid": 0, "sentid": 1}]},
        {"filename": "1000092795.jpg", "imgid": 1, "split": "train", "sentids": [2],
         "sentences": [{"tokens": ["two", "men"], "raw": "Two men.", "imgid": 1, "sentid": 2}]},
        {"filename": "img_b.jpg", "imgid": 7, "split": "restval", "sentids": [3],
         "sentences": [{"tokens": ["a", "bird"], "imgid": 7, "sentid": 3}]},
    ]}


def test_karpathy_round_trip(tmp_path):
    path = _write(tmp_path / "dataset_coco.json", _karpathy())
    imgs = load_karpathy(path)
    assert [i.image_id for i in imgs] == [42, 1000092795, 7]  # cocoid, number in file name, imgid
    assert imgs[0] == CaptionImage(42, "COCO_val2014_000000000042.jpg", "val2014", "test", ["A dog.", "A cat."],
                                   [0, 1])
    assert imgs[2].sentences == ["a bird"] and imgs[1].filepath == ""
    assert [i.sentence_ids for i in imgs] == [[0, 1], [2], [3]]
    data = _karpathy()
    for s in data["images"][0]["sentences"]:
        del s["sentid"]  # no id on the sentences: the image's "sentids" list gives them
    data["images"][0]["sentids"] = [10, 11]
    assert load_karpathy(_write(tmp_path / "sentids.json", data))[0].sentence_ids == [10, 11]
    assert [i.image_id for i in load_karpathy(path, splits={"train", "restval"})] == [1000092795, 7]
    assert image_file(tmp_path, imgs[0]) == tmp_path / "val2014" / "COCO_val2014_000000000042.jpg"
    assert image_file(tmp_path, imgs[1]) == tmp_path / "1000092795.jpg"
    with pytest.raises(DataError, match=r"image id 42 not found"):
        image_file(tmp_path, imgs[0], check=True)


def test_karpathy_records_as_released_load(tmp_path):
    """dataset_coco.json and dataset_flickr30k.json records in their own structure and key order: COCO's raw
    sentences end in spaces, Flickr's entries have no filepath and no cocoid, and an image may have more than five
    sentences (VSE++ takes sentids[:5])."""
    coco = {"images": [{"filepath": "val2014", "sentids": [770337, 771687, 772707, 776154, 781998, 790000],
                        "filename": "COCO_val2014_000000391895.jpg", "imgid": 0, "split": "test", "sentences": [
                            {"tokens": ["a", "man", "with", "a", "red", "helmet", "on", "a", "small", "moped", "on",
                                        "a", "dirt", "road"],
                             "raw": "A man with a red helmet on a small moped on a dirt road. ", "imgid": 0,
                             "sentid": sid} for sid in (770337, 771687, 772707, 776154, 781998, 790000)],
                        "cocoid": 391895}], "dataset": "coco"}
    (img,) = load_karpathy(_write(tmp_path / "dataset_coco.json", coco))
    assert (img.image_id, img.filepath, img.split, len(img.sentences)) == (391895, "val2014", "test", 6)
    assert img.sentences[0] == "A man with a red helmet on a small moped on a dirt road."
    f30k = {"images": [{"sentids": [0, 1], "imgid": 0, "sentences": [
        {"tokens": ["two", "young", "guys"], "raw": "Two young guys with shaggy hair look at their hands.", "imgid": 0,
         "sentid": 0},
        {"tokens": ["two", "men", "in", "green", "shirts"], "raw": "Two men in green shirts are standing in a yard.",
         "imgid": 0, "sentid": 1}], "split": "train", "filename": "1000092795.jpg"}], "dataset": "flickr30k"}
    (img,) = load_karpathy(_write(tmp_path / "dataset_flickr30k.json", f30k))
    assert (img.image_id, img.filepath, img.sentence_ids) == (1000092795, "", [0, 1])


@pytest.mark.parametrize("mutate, pattern", [
    (lambda d: d["images"][1].update(cocoid=42), r"dataset_coco\.json: duplicate image id 42"),
    (lambda d: d["images"][1]["sentences"][0].update(sentid=1), r"image 1000092795 .*duplicate sentence id 1"),
    (lambda d: d["images"][0].update(sentences=[]), r"image 42 .*no sentences"),
    (lambda d: d["images"][0]["sentences"][1].update(raw=" "), r"image 42 .*sentence #1: empty sentence"),
    (lambda d: d["images"][2].pop("split"), r"image #2: missing key\(s\) 'split'"),
    (lambda d: d["images"][2].update(split="tarin"), r"image #2: field 'split' must be one of train, val, test, "
                                                     r"restval, got 'tarin'"),
    (lambda d: d["images"][0].update(filename=5), r"image #0: field 'filename' must be a non-empty string, got 5"),
    (lambda d: d["images"][0].update(filename=None), r"field 'filename' must be a non-empty string, got None"),
    (lambda d: d["images"][0].update(filepath=3), r"field 'filepath' must be a string, got 3"),
    (lambda d: d["images"][0].update(cocoid=True), r"field 'cocoid' must be an integer in \[0, 2\*\*63\), got True"),
    (lambda d: d["images"][0]["sentences"][0].update(raw=None, tokens=[1, 2]),
     r"image 42 .*sentence #0: 'tokens' must be a list of strings, got \[1, 2\]"),
    (lambda d: d["images"][0]["sentences"][0].update(raw=None, tokens="a dog"), r"'tokens' must be a list"),
    (lambda d: d["images"][0]["sentences"][0].update(raw=5), r"sentence #0: 'raw' must be a string, got 5"),
    (lambda d: d["images"][0]["sentences"][1].update(sentid=True), r"sentence #1: 'sentid' must be an integer in "
                                                                   r"the int64 range, got True"),  # was sentence 1
    (lambda d: d["images"][0]["sentences"][0].update(sentid="0"), r"sentence #0: 'sentid' must be an integer in "
                                                                  r"the int64 range, got '0'"),
    # found by fuzzing: ids past int64 were read, then raised OverflowError where they became int64 arrays
    (lambda d: d["images"][0]["sentences"][0].update(sentid=2**63), r"'sentid' must be an integer in the int64 range"),
    (lambda d: d["images"][0].update(cocoid=2**63), r"field 'cocoid' must be an integer in \[0, 2\*\*63\), got "
                                                    r"9223372036854775808"),
    (lambda d: d["images"][0].update(sentences={"raw": "A dog."}), r"image 42 .*'sentences' must be a list, got dict"),
    (lambda d: (d.pop("dataset"), d.update(annotations=[{"image_id": 42, "id": 1, "caption": "A dog."}])),
     r"COCO's own captions file .*Karpathy's split files"),
])
def test_karpathy_bad_input(tmp_path, mutate, pattern):
    data = _karpathy()
    mutate(data)
    with pytest.raises(DataError, match=pattern):
        load_karpathy(_write(tmp_path / "dataset_coco.json", data))


def test_flickr8k_txt(tmp_path):
    text = ("image,caption\n"
            "1000268201_693b08cb0e.jpg,A child in a pink dress , climbing stairs .\n"
            '1000268201_693b08cb0e.jpg,"A girl, going into a building."\n'
            '1000268201_693b08cb0e.jpg,"A sign reads ""stop"" ."\n'
            "1001773457_577c3a7d70.jpg,Two dogs playing .\n")
    imgs = load_flickr8k_txt(_write(tmp_path / "captions.txt", text), split_map={1001773457: "test"})
    assert [(i.image_id, i.split, i.sentence_ids) for i in imgs] == [(1000268201, "train", [0, 1, 2]),
                                                                     (1001773457, "test", [3])]
    assert imgs[0].sentences[1] == "A girl, going into a building."
    assert imgs[0].sentences[2] == 'A sign reads "stop" .'  # CSV quoting: "" inside quotes is one "
    tokens = load_flickr8k_txt(_write(tmp_path / "Flickr8k.token.txt", "1001773457_577c3a7d70.jpg#0\tA dog .\n"))
    assert tokens[0].sentences == ["A dog ."] and tokens[0].filename == "1001773457_577c3a7d70.jpg"
    bom = load_flickr8k_txt(_write(tmp_path / "bom.txt",
                                   "\ufeff\nimage,caption\r\n1001773457_577c3a7d70.jpg,A dog .\r\n"))
    assert [(i.image_id, i.sentences) for i in bom] == [(1001773457, ["A dog ."])]  # BOM, blank line, CRLF
    with pytest.raises(DataError, match=r"bad\.txt, line 4: expected"):  # line numbers count the blank line
        load_flickr8k_txt(_write(tmp_path / "bad.txt", "\nimage,caption\n1.jpg,ok\n2.jpg,\n"))
    with pytest.raises(DataError, match=r"bad\.txt: expected the header"):
        load_flickr8k_txt(_write(tmp_path / "bad.txt", "img,text\na.jpg,x\n"))
    with pytest.raises(DataError, match=r"bad\.txt, line 3: expected"):
        load_flickr8k_txt(_write(tmp_path / "bad.txt", "image,caption\n1.jpg,ok\n2.jpg,\n"))
    with pytest.raises(DataError, match=r"bad\.txt, line 2: cannot read an image id"):
        load_flickr8k_txt(_write(tmp_path / "bad.txt", "image,caption\nnoid.jpg,A caption\n"))


def test_flickr8k_token_file_as_released_skips_its_caption_lines_of_a_non_image_name(tmp_path):
    """The official Flickr8k.token.txt gives five captions to "2258277193_586949ec62.jpg.1", a name that is no
    image file (public loaders drop these lines: the Flicker8k_Dataset folder has no such image); the file used to
    be refused as a whole. Those lines are skipped with a warning; any other unreadable name is still an error."""
    text = ("1000268201_693b08cb0e.jpg#0\tA child in a pink dress is climbing up a set of stairs in an entry way .\n"
            "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
            "2258277193_586949ec62.jpg.1#0\tPeople waiting for the subway .\n"
            "2258277193_586949ec62.jpg.1#1\tA group of people stand on a train platform .\n"
            "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\n")
    with pytest.warns(DataWarning, match=r"Flickr8k\.token\.txt: skipped 2 caption line\(s\) of "
                                         r"'2258277193_586949ec62\.jpg\.1' \(lines 3-4\): not an image file name"):
        imgs = load_flickr8k_txt(_write(tmp_path / "Flickr8k.token.txt", text))
    assert [(i.filename, i.sentence_ids) for i in imgs] == [("1000268201_693b08cb0e.jpg", [0, 1]),
                                                            ("1001773457_577c3a7d70.jpg", [2])]
    with pytest.raises(DataError, match=r"bad\.txt, line 1: cannot read an image id from file name 'x\.jpg\.b'"):
        load_flickr8k_txt(_write(tmp_path / "bad.txt", "x.jpg.b#0\tA caption .\n"))


def _grounding():
    return {"images": {"5": {"width": 100, "height": 50, "objects": [
        {"id": 0, "shape": "circle", "color": "red", "size": "small", "bbox": [0, 0, 50, 25]},
        {"id": 1, "shape": "square", "color": "blue", "size": "large", "bbox": [50, 25, 25, 25]}]}},
        "questions": {"5000": {"family": "multi-hop", "object_ids": [0, 1], "anchor_ids": [0], "target_ids": [1],
                               "key_words": ["red", "circle"], "image_id": 5}},
        "captions": {"0": {"object_ids": [1], "key_words": ["square"], "image_id": 5}}}


def test_grounding_round_trip_and_masks(tmp_path):
    g = load_grounding(_write(tmp_path / "grounding.json", _grounding()))
    assert g.images[5].object(1).bbox == [50.0, 25.0, 25.0, 25.0]
    assert g.questions[5000].target_ids == [1] and g.questions[5000].family == "multi-hop"
    assert g.captions[0].key_words == ["square"]
    # 2x2 grid on 100x50: object 0 fills cell (0, 0); object 1 fills half of cell (1, 1)
    assert np.allclose(grid_coverage(g.images[5].object(0).bbox, 100, 50, (2, 2)), [1, 0, 0, 0])
    assert np.allclose(object_mask(g.images[5], [0, 1], (2, 2)), [1, 0, 0, 0.5])


def _image_of_boxes(boxes: list[list[float]]):
    """An ImageGT of 300 x 200 pixels with one object per box (ids 0, 1, ...)."""
    from dan.data.grounding import ImageGT, ObjectGT

    objects = [ObjectGT(k, "square", "red", "small", [float(v) for v in b]) for k, b in enumerate(boxes)]
    return ImageGT(300, 200, objects)


def test_grid_coverage_is_row_major_on_a_grid_of_other_height_and_width():
    """Region n is cell (n // gw, n % gw): on a 2 x 3 grid of a 300 x 200 image each cell is 100 x 100 pixels."""
    assert grid_coverage([0, 0, 100, 100], 300, 200, (2, 3)).tolist() == [1, 0, 0, 0, 0, 0]
    assert grid_coverage([250, 0, 50, 100], 300, 200, (2, 3)).tolist() == [0, 0, 0.5, 0, 0, 0]
    assert grid_coverage([150, 100, 150, 100], 300, 200, (2, 3)).tolist() == [0, 0, 0, 0, 0.5, 1]
    image = _image_of_boxes([[0, 0, 100, 100], [50, 50, 100, 100], [200, 150, 100, 50]])
    # overlapping boxes 0 and 1 count their shared quarter of cell (0, 0) once; box 2 fills half of cell (1, 2)
    assert object_mask(image, [0, 1, 2], (2, 3)).tolist() == [1, 0.25, 0, 0.25, 0.25, 0.5]


def test_grid_cells_are_the_backbones_own_where_its_stride_does_not_divide_the_input_size():
    """A 200 px input at stride 16 gives 13 cells (padded convolutions: ceil), cell i covering the input's pixels
    [16 i, min(16 (i + 1), 200)): the last one 192..199. The equal split (13 cells of 15.4 px) put the box of
    cell 11 (176..192) over cells 11 and 12 (covering 0.56 and 0.48 of them) and counted the last 8 pixels as
    half of a cell."""
    from dan.data.grounding import cell_edges

    last = grid_coverage([192, 0, 8, 16], 200, 200, (13, 13), stride=16, image_size=200).reshape(13, 13)
    assert last[0].tolist() == [0] * 12 + [1] and last[1:].sum() == 0  # the last cell is whole, the only one
    eleventh = grid_coverage([176, 0, 16, 16], 200, 200, (13, 13), stride=16, image_size=200).reshape(13, 13)
    assert eleventh[0].tolist() == [0] * 11 + [1, 0]  # was [..., 0.56, 0.48]: in two cells
    # in the image's own pixels: a 300 x 200 image resized to 200 x 200 has cells of 24 x 16 px, the last 12 x 8
    assert cell_edges(300, 13, 16, 200)[-3:].tolist() == [264, 288, 300]
    mask = object_mask(_image_of_boxes([[284, 0, 16, 16]]), [0], (13, 13), stride=16, image_size=200)
    assert mask.reshape(13, 13)[0, 11:].tolist() == pytest.approx([1 / 6, 1]) and mask.sum() == pytest.approx(7 / 6)
    # a cropping backbone (VGG's pools: floor) has 12 cells; the pixels past 192 are in none
    crop = grid_coverage([192, 0, 8, 16], 200, 200, (12, 12), stride=16, image_size=200)
    assert crop.sum() == 0
    both = _image_of_boxes([[0, 0, 300, 200], [0, 0, 10, 10]])
    assert object_mask(both, [0, 1], (12, 12), stride=16, image_size=200).tolist() == [1.0] * 144
    with pytest.raises(DataError, match="a grid of 10 cells does not come from a 200 px input at stride 16"):
        grid_coverage([0, 0, 8, 8], 200, 200, (10, 10), stride=16, image_size=200)
    with pytest.raises(DataError, match="both the backbone's stride and the input size"):
        grid_coverage([0, 0, 8, 8], 200, 200, (10, 10), stride=16)


@pytest.mark.parametrize("size, stride, grid", [(160, 16, (10, 10)), (448, 32, (14, 14)), (224, 16, (14, 14))])
def test_grid_cells_where_the_stride_divides_the_size_are_the_equal_split_bit_for_bit(size, stride, grid):
    """The study's sizes (160 px at stride 16, 448 at stride 32): the backbone's cells are the equal cells the
    analysis used before it knew the stride, to the last bit, so its tables do not move."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        width, height = int(rng.integers(20, 700)), int(rng.integers(20, 700))
        boxes = [[float(rng.uniform(0, width - 5)), float(rng.uniform(0, height - 5)), float(rng.uniform(1, width)),
                  float(rng.uniform(1, height))] for _ in range(3)]
        image = ImageGT(width, height, [ObjectGT(k, "square", "red", "small", b) for k, b in enumerate(boxes)])
        assert np.array_equal(grid_coverage(boxes[0], width, height, grid, stride=stride, image_size=size),
                              grid_coverage(boxes[0], width, height, grid))
        assert np.array_equal(object_mask(image, [0, 1, 2], grid, stride=stride, image_size=size),
                              object_mask(image, [0, 1, 2], grid))


@pytest.mark.parametrize("mutate, pattern", [
    (lambda d: d.pop("captions"), r"grounding\.json: missing key\(s\) 'captions'"),
    (lambda d: d["images"]["5"]["objects"][1].update(bbox=[1, 2, 0, 3]), r"image 5, object 1: bbox"),
    (lambda d: d["images"]["5"]["objects"][1].update(bbox=[1, 2, 3, 0]), r"image 5, object 1: bbox"),
    (lambda d: d["questions"]["5000"].update(target_ids=[7]), r"question 5000: object ids \[7\]"),
    (lambda d: d["captions"]["0"].update(image_id=6), r"caption 0: refers to image 6"),
    (lambda d: d["questions"]["5000"].pop("family"), r"question 5000: missing key\(s\) 'family'"),
    (lambda d: d["images"]["5"].update(width="100"), r"image 5: width must be an integer > 0, got '100'"),
    (lambda d: d["images"]["5"].update(height=0), r"image 5: height must be an integer > 0, got 0"),
    (lambda d: d["images"]["5"].update(objects=None), r"image 5: 'objects' must be a list, got None"),
    (lambda d: d["images"]["5"]["objects"][0].update(id="0"), r"image 5, object #0: id must be an integer"),
    (lambda d: d["questions"]["5000"].update(key_words="red"), r"question 5000, key_words: expected a list of words"),
    (lambda d: d["captions"]["0"].update(key_words=[1]), r"caption 0, key_words: expected a list of words"),
    (lambda d: d["questions"]["5000"].update(family="2-hop"), r"question 5000: family must be one of single-hop"),
    (lambda d: d["images"]["5"]["objects"][1].update(id=0), r"image 5: duplicate object ids"),
    # "05" beside "5" would have replaced image 5's entry silently; a non-plain spelling is refused whatever else
    (lambda d: d["images"].update({"05": d["images"]["5"]}), r"image 05: id '05' is not written as a plain integer; "
                                                             r"write it as \"5\""),
    (lambda d: d["questions"].update({" 7": d["questions"].pop("5000")}), r"question  7: id ' 7' is not written as"),
    (lambda d: d["captions"].update({"x": d["captions"].pop("0")}), r"caption x: id 'x' is not an integer"),
    # found by fuzzing: a NaN or infinite corner passed (NaN <= 0 is false) and made the masks NaN; an image_id
    # that is a list raised TypeError (unhashable), one written 5.0 or true stood for image 5 or 1
    (lambda d: d["images"]["5"]["objects"][1].update(bbox=[1, 2, float("nan"), 3]), r"image 5, object 1: bbox"),
    (lambda d: d["images"]["5"]["objects"][1].update(bbox=[float("-inf"), 2, 3, 3]), r"image 5, object 1: bbox"),
    (lambda d: d["images"]["5"]["objects"][1].update(bbox=[True, 2, 3, 3]), r"image 5, object 1: bbox"),
    (lambda d: d["captions"]["0"].update(image_id=[5]), r"caption 0: image_id must be an integer, got \[5\]"),
    (lambda d: d["questions"]["5000"].update(image_id=5.0), r"question 5000: image_id must be an integer, got 5\.0"),
])
def test_grounding_bad_input(tmp_path, mutate, pattern):
    data = _grounding()
    mutate(data)
    with pytest.raises(DataError, match=pattern):
        load_grounding(_write(tmp_path / "grounding.json", data))


def test_check_verifies_real_layouts_and_lists_folders_not_downloaded(tmp_path, capsys):
    """`python -m dan.data check --verify-images` on the real layout: test-dev2015's questions are about
    images/test2015/COCO_test2015_*.jpg, Flickr30K entries (no filepath) lie in images/flickr30k-images/; an image
    folder that was not downloaded is listed as not verified, a missing file in a folder that is there is an error."""
    from dan.data.__main__ import main
    from dan.data.vqa import image_folder, vqa_image_path

    root = tmp_path / "real"
    _write(root / "vqa" / "v2_OpenEnded_mscoco_test-dev2015_questions.json", _questions("test-dev2015"))
    _write(root / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json", _questions())
    _write(root / "vqa" / "v2_mscoco_val2014_annotations.json", _annotations())
    for image_id in (10, 11):
        _write(root / "images" / "test2015" / f"COCO_test2015_{image_id:012d}.jpg", "jpeg bytes")
    karpathy = _karpathy()
    karpathy["images"] = karpathy["images"][1:]  # the two Flickr-style entries, without filepath
    _write(root / "captions" / "dataset_flickr30k.json", karpathy)
    for name in ("1000092795.jpg", "img_b.jpg"):
        _write(root / "images" / "flickr30k-images" / name, "jpeg bytes")
    assert image_folder("test-dev") == "test2015"
    assert vqa_image_path(root, "test-dev2015", 10) == root / "images/test2015/COCO_test2015_000000000010.jpg"
    assert main(["check", "--root", str(root), "--verify-images"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["vqa"]["test-dev2015"]["questions"] == 3 and report["captions"]["dataset_flickr30k.json"]
    assert report["images_not_verified"] == [f"{root / 'images' / 'val2014'} (VQA val2014)"]
    assert "no image folder" in captured.err and "val2014" in captured.err
    (root / "images" / "flickr30k-images" / "img_b.jpg").unlink()
    assert main(["check", "--root", str(root), "--verify-images"]) == 2
    err = capsys.readouterr().err
    assert "image id 7 not found" in err and "flickr30k-images/img_b.jpg" in err


def test_check_reads_flickr8k_entries_from_their_own_image_folder(tmp_path, capsys):
    """Karpathy's caption_datasets.zip holds dataset_flickr8k.json beside dataset_flickr30k.json, and download.py
    puts both in captions/. Their entries have no filepath; Flickr8k's images unpack to Flicker8k_Dataset/ (sic, the
    folder in Flickr8k_Dataset.zip), Flickr30K's to flickr30k-images/. check --verify-images used to look for both
    in flickr30k-images/ and failed on the first Flickr8k image; --caption-image-folder still names one folder for
    every file."""
    from dan.data.__main__ import main

    root = tmp_path / "real"
    f30k = {"images": [{"sentids": [0], "imgid": 0, "sentences": [{"tokens": ["two", "young", "guys"], "raw":
            "Two young guys with shaggy hair look at their hands while hanging out in the yard.", "imgid": 0,
            "sentid": 0}], "split": "train", "filename": "1000092795.jpg"}], "dataset": "flickr30k"}
    f8k = {"images": [{"sentids": [0], "imgid": 0, "sentences": [{"tokens": ["a", "black", "dog"], "raw":
           "A black dog is running after a white dog in the snow .", "imgid": 0, "sentid": 0}], "split": "train",
           "filename": "2513260012_03d33305cf.jpg"}], "dataset": "flickr8k"}
    _write(root / "captions" / "dataset_flickr30k.json", f30k)
    _write(root / "captions" / "dataset_flickr8k.json", f8k)
    _write(root / "images" / "flickr30k-images" / "1000092795.jpg", "jpeg bytes")
    _write(root / "images" / "Flicker8k_Dataset" / "2513260012_03d33305cf.jpg", "jpeg bytes")
    assert main(["check", "--root", str(root), "--verify-images"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["captions"] == {"dataset_flickr30k.json": {"train": 1}, "dataset_flickr8k.json": {"train": 1}}
    assert "images_not_verified" not in report
    (root / "images" / "Flicker8k_Dataset" / "2513260012_03d33305cf.jpg").unlink()
    assert main(["check", "--root", str(root), "--verify-images"]) == 2
    assert "Flicker8k_Dataset/2513260012_03d33305cf.jpg" in capsys.readouterr().err
    assert main(["check", "--root", str(root), "--verify-images", "--caption-image-folder", "flickr30k-images"]) == 2
    assert "flickr30k-images/2513260012_03d33305cf.jpg" in capsys.readouterr().err


def test_check_decode_images_finds_truncated_and_fake_jpegs(tmp_path, capsys):
    """`--verify-images` only requires the files; `--decode-images` decodes each one the data refers to and names
    those that do not decode (a truncated JPEG, bytes that are no image), with their count."""
    import io

    from PIL import Image

    from dan.data.__main__ import main

    root = tmp_path / "real"
    _write(root / "vqa" / "v2_OpenEnded_mscoco_test-dev2015_questions.json", _questions("test-dev2015"))
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="JPEG")
    good = buf.getvalue()
    folder = root / "images" / "test2015"
    folder.mkdir(parents=True)
    (folder / "COCO_test2015_000000000010.jpg").write_bytes(good)
    (folder / "COCO_test2015_000000000011.jpg").write_bytes(good[: len(good) // 2])  # truncated
    assert main(["check", "--root", str(root), "--verify-images"]) == 0  # present and non-empty: passes
    capsys.readouterr()
    assert main(["check", "--root", str(root), "--decode-images"]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 images do not decode" in err and "COCO_test2015_000000000011.jpg" in err and "image id 11" in err
    (folder / "COCO_test2015_000000000011.jpg").write_bytes(good)
    assert main(["check", "--root", str(root), "--decode-images"]) == 0
    assert json.loads(capsys.readouterr().out)["images_decoded"] == 2


def test_check_decode_images_lists_an_image_whose_header_claims_too_many_pixels(tmp_path, capsys):
    """A PNG whose header claims 20000 x 20000 pixels (a damaged file, or a decompression bomb): Pillow refuses it
    with its own DecompressionBombError, not an OSError. --decode-images used to stop there with a traceback; it is
    an image that does not decode, listed with the others (as the extraction's read_image reports it)."""
    import struct
    import zlib

    from dan.data.__main__ import main

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    root = tmp_path / "real"
    _write(root / "vqa" / "v2_OpenEnded_mscoco_test-dev2015_questions.json", _questions("test-dev2015"))
    folder = root / "images" / "test2015"
    folder.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "COCO_test2015_000000000010.png")
    bomb = folder / "COCO_test2015_000000000011.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    with pytest.raises(DataError, match=r"image id 11 is not a readable image: .*000000000011\.png \(.*pixels"):
        check_image_file(bomb, 11, verify=True)
    assert main(["check", "--root", str(root), "--decode-images"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 of 2 images do not decode" in err and "image id 11" in err

def test_check_decode_images_decodes_the_files_verify_found(tmp_path, capsys):
    """VQA images named otherwise than COCO_<split>_<id>.jpg (``<id>.jpg``, ``.png``) pass --verify-images and
    dan.features (both read ids with list_images); --decode-images decodes those files, not missing COCO names."""
    from PIL import Image

    from dan.data.__main__ import main

    root = tmp_path / "real"
    _write(root / "vqa" / "v2_OpenEnded_mscoco_test-dev2015_questions.json", _questions("test-dev2015"))
    folder = root / "images" / "test2015"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "000000000010.jpg")
    Image.new("RGB", (64, 48), (20, 30, 200)).save(folder / "COCO_test2015_000000000011.png")
    assert main(["check", "--root", str(root), "--verify-images"]) == 0
    capsys.readouterr()
    assert main(["check", "--root", str(root), "--decode-images"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["images_decoded"] == 2


def test_check_decode_images_lists_each_image_folder_once(tmp_path, capsys, monkeypatch):
    """The check lists a VQA image folder once, for the files it requires and decodes alike (a COCO folder holds
    ~80,000 files), also when two splits share it (test-dev2015's images are test2015's)."""
    from PIL import Image

    import dan.data.images
    import dan.data.vqa
    from dan.data.__main__ import main

    root = tmp_path / "real"
    for split in ("test-dev2015", "test2015"):
        _write(root / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json", _questions(split))
    folder = root / "images" / "test2015"
    folder.mkdir(parents=True)
    for image_id in (10, 11):
        Image.new("RGB", (16, 12), (200, 30, 30)).save(folder / f"COCO_test2015_{image_id:012d}.jpg")
    listed: list[Path] = []
    real = dan.data.images.list_images

    def counting(images_dir):
        listed.append(Path(images_dir))
        return real(images_dir)

    for module in (dan.data.images, dan.data.vqa):
        monkeypatch.setattr(module, "list_images", counting)
    assert main(["check", "--root", str(root), "--decode-images"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["images_decoded"] == 2 and report["vqa"]["test2015"]["images"] == 2
    assert listed == [folder]


def test_a_folder_where_a_json_file_belongs_and_a_bad_image_name_name_their_folder(tmp_path):
    from dan.data.images import list_images
    from dan.io import read_json

    (tmp_path / "vqa.json").mkdir()
    with pytest.raises(DataError, match=r"vqa\.json is a folder, not a file"):
        read_json(tmp_path / "vqa.json")
    images = tmp_path / "images" / "val2014"
    images.mkdir(parents=True)
    (images / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=rf"{images}: cannot read an image id from file name 'holiday\.jpg'"):
        list_images(images)


def test_json_nested_thousands_deep_is_a_data_error_naming_the_file(tmp_path):
    """json's decoder recurses once per [ or {: a file of 100,000 of them raised RecursionError, not the file's fault
    named (found by fuzzing every reader of user files)."""
    from dan.data.grounding import load_grounding

    path = tmp_path / "grounding.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=rf"grounding file {path} is nested too deeply"):
        load_grounding(path)


def test_check_json_names_the_file_the_field_path_and_the_value():
    from dan.io import check_json

    schema = {"runs": {"vqa": {"overall": "number"}}, "calls?": [{"seconds": ("number", None)}],
              "times": {"*": "number"}}
    check_json({"runs": {"vqa": {"overall": 1, "extra": "x"}}, "times": {"a": 1.5}}, schema, "f.json")
    check_json({"runs": {"vqa": {"overall": 1.0}}, "calls": [{"seconds": None}], "times": {}}, schema, "f.json")
    for doc, message in (([], "f.json: the file must be an object, got []"),
                         ({"times": {}}, "f.json: missing field 'runs'"),
                         ({"runs": {"vqa": {}}, "times": {}}, "f.json: missing field 'runs.vqa.overall'"),
                         ({"runs": {"vqa": {"overall": True}}, "times": {}},
                          "f.json: field 'runs.vqa.overall' must be a finite number, got True"),
                         ({"runs": {"vqa": {"overall": float("nan")}}, "times": {}},
                          "f.json: field 'runs.vqa.overall' must be a finite number, got nan"),
                         ({"runs": {"vqa": {"overall": 1}}, "calls": [{}, {"seconds": "2"}], "times": {}},
                          "f.json: missing field 'calls[0].seconds'"),
                         ({"runs": {"vqa": {"overall": 1}}, "calls": [{"seconds": "2"}], "times": {}},
                          "f.json: field 'calls[0].seconds' must be a finite number or null, got '2'"),
                         ({"runs": {"vqa": {"overall": 1}}, "times": {"b": [1]}},
                          "f.json: field 'times.b' must be a finite number, got [1]")):
        with pytest.raises(DataError) as err:
            check_json(doc, schema, "f.json")
        assert str(err.value) == message


def test_an_image_file_name_whose_id_is_past_int64_is_named(tmp_path):
    from dan.data.images import image_id_from_filename, list_images

    assert image_id_from_filename("9223372036854775807.jpg") == 2**63 - 1
    (tmp_path / "9223372036854775808.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=rf"{tmp_path}: image id of file name '9223372036854775808\.jpg' is larger "):
        list_images(tmp_path)


def test_list_images_orders_by_numeric_id_and_refuses_two_files_of_one_id(tmp_path):
    """Names sort as text ("10.jpg" before "9.jpg"); the ids come back in numeric order, as a feature store's rows
    are. Two files giving one id (a COCO name and a Flickr-style name of it) are an error naming both."""
    from dan.data.images import list_images

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("10.jpg", "9.jpg", "COCO_val2014_000000000100.jpg", ".hidden_1.jpg", "notes.txt"):
        (folder / name).write_bytes(b"x")
    assert [(i, p.name) for i, p in list_images(folder)] == [(9, "9.jpg"), (10, "10.jpg"),
                                                             (100, "COCO_val2014_000000000100.jpg")]
    (folder / "000000000009.png").write_bytes(b"x")
    with pytest.raises(DataError, match=rf"duplicate image id 9 in {folder}: 000000000009\.png and 9\.jpg"):
        list_images(folder)


def test_flickr8k_two_file_names_of_one_image_id_are_an_error_naming_both(tmp_path):
    text = "image,caption\n1000268201_693b08cb0e.jpg,A child .\n1000268201_aaaaaaaaaa.jpg,A girl .\n"
    with pytest.raises(DataError, match=r"captions\.txt: files 1000268201_693b08cb0e\.jpg and "
                                        r"1000268201_aaaaaaaaaa\.jpg give the same image id 1000268201"):
        load_flickr8k_txt(_write(tmp_path / "captions.txt", text))


@pytest.mark.parametrize("name, image_id", [("COCO_val2014_000000000042.jpg", 42), ("000000000042.jpg", 42),
                                            ("1000092795.jpg", 1000092795), ("2513260012_03d33305cf.jpg", 2513260012),
                                            ("COCO_test2015_000000000000.png", 0)])
def test_image_ids_are_read_from_coco_and_flickr_file_names(name, image_id):
    from dan.data.images import image_id_from_filename

    assert image_id_from_filename(name) == image_id


@pytest.mark.parametrize("name", ["123abc.jpg", "12_xyz.jpg", "12-3.jpg", "COCO_val2014_12a.jpg", "img_12.jpg"])
def test_a_file_name_with_more_than_an_id_is_no_image_id(name):
    """Only the whole stem counts: '123abc' is not image 123 (two such files would silently share an id)."""
    from dan.data.images import image_id_from_filename

    with pytest.raises(DataError, match=rf"cannot read an image id from file name '{name}'"):
        image_id_from_filename(name)
