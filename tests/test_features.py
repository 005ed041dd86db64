"""Feature extraction and stores: shapes, id order, region layout, batch-size invariance, resume, bad images, CLI."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dan.backbones import build_backbone, read_image
from dan.features import FeatureConfig, build_features, extract_features, main
from dan.io import ConfigError, DanError, DataError
from dan.store import FEATURES, META, PARTIAL, PROGRESS, FeatureStore, writer_lock

SIZE = 64  # EfficientNet-Lite0 stride16 at 64 px: a 4 x 4 grid of 112-d features, fast on a CPU
CFG = FeatureConfig(image_size=SIZE, batch_size=4, num_workers=0, device="cpu", commit_every_mb=0.0)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return build_backbone("efficientnet-lite0", None, SIZE)


def make_images(folder: Path, n: int, start_id: int = 1, seed: int = 0, size=(96, 72)) -> list[tuple[int, Path]]:
    """``n`` small deterministic JPEGs (coloured discs) named like COCO files; returns (id, path) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
        x, y = (int(v) for v in rng.integers(0, 40, 2))
        ImageDraw.Draw(im).ellipse([x, y, x + 30, y + 30], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        path = folder / f"COCO_train2014_{start_id + k:012d}.jpg"
        im.save(path, quality=90)
        items.append((start_id + k, path))
    return items


def files_of(store_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store_dir.iterdir()) if p.is_file()}


def test_store_shapes_ids_and_region_layout(tmp_path, model):
    items = make_images(tmp_path / "img", 7, start_id=10)
    shuffled = [items[i] for i in (3, 0, 6, 1, 5, 2, 4)]
    store = extract_features(shuffled, tmp_path / "feat", CFG, backbone=model, progress=False)
    assert FeatureStore.exists(tmp_path / "feat") and not (tmp_path / "feat" / PARTIAL).exists()
    assert store.ids.dtype == np.int64 and store.ids.tolist() == list(range(10, 17))
    assert store.grid == (4, 4) and store.num_regions == 16 and store.dim == 112 and len(store) == 7
    feats = store.load_all()
    assert feats.dtype == np.float16 and feats.shape == (7, 16, 112)
    meta = store.meta
    assert meta["backbone"] == "efficientnet-lite0" and meta["layer"] == "stride16" and meta["dtype"] == "float16"
    assert meta["preprocessing"]["mean"] == [0.5] * 3 and meta["num_images"] == 7 and meta["skipped"] == []
    assert set(meta["software"]) == {"pillow", "torch", "torchvision"}
    assert meta["software"]["torch"] == torch.__version__
    # row n of image 13 is the model's output at grid cell (n // gw, n % gw) of the whole resized image
    x = torch.from_numpy(read_image(items[3][1], SIZE)).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        ref = model((x - 0.5) / 0.5)[0]  # [D, gh, gw]
    got = torch.from_numpy(store[13].astype(np.float32))  # [N, D]
    rows = torch.stack([ref[:, n // 4, n % 4] for n in range(16)])  # [N, D], every cell, off the diagonal too
    torch.testing.assert_close(got, rows, atol=0.05, rtol=0.01)
    transposed = torch.stack([ref[:, n % 4, n // 4] for n in range(16)])  # what a row/column swap would store
    assert (got - transposed).abs().max() > 0.5  # so the comparison above tells the two layouts apart
    np.testing.assert_array_equal(store.gather(store.positions([16, 10])), feats[[6, 0]])
    with pytest.raises(DataError, match=r"2 image id\(s\) not in feature store .*feat.*e\.g\. 9, 99"):
        store.positions([9, 10, 99])
    # one id per question: after 01_data regenerated the data (another seed) without 02_features, training said
    # "384 image id(s) not in feature store ... (e.g. 235, 235, 235, 235, 235)", 384 questions of a few images
    with pytest.raises(DataError, match=r"2 image id\(s\) not in feature store .*feat.*\(e\.g\. 99, 9\)"):
        store.positions([99, 99, 99, 10, 9, 9])


def test_same_features_for_different_batch_sizes(tmp_path, model):
    items = make_images(tmp_path / "img", 9)
    a = extract_features(items, tmp_path / "a", replace(CFG, batch_size=2), backbone=model, progress=False)
    b = extract_features(items, tmp_path / "b", replace(CFG, batch_size=5), backbone=model, progress=False)
    np.testing.assert_allclose(a.load_all().astype(np.float32), b.load_all().astype(np.float32), atol=2e-2, rtol=1e-2)


def test_resume_after_interruption_is_byte_identical(tmp_path, model):
    items = make_images(tmp_path / "img", 10)
    extract_features(items, tmp_path / "clean", CFG, backbone=model, progress=False)

    def stop_after_first_chunk(done: int) -> None:
        raise RuntimeError(f"simulated crash after {done} images")

    with pytest.raises(RuntimeError, match="after 4 images"):
        extract_features(items, tmp_path / "cut", CFG, backbone=model, on_commit=stop_after_first_chunk,
                         progress=False)
    assert json.loads((tmp_path / "cut" / PARTIAL / PROGRESS).read_text())["done"] == 4
    with pytest.raises(DataError, match="stopped before finishing; rerunning it resumes where it stopped"):
        FeatureStore(tmp_path / "cut")
    commits: list[int] = []
    extract_features(items, tmp_path / "cut", CFG, backbone=model, on_commit=commits.append, progress=False)
    assert commits == [8, 10]  # resumed after the committed chunk, not from scratch
    assert files_of(tmp_path / "cut") == files_of(tmp_path / "clean")
    assert not (tmp_path / "cut" / PARTIAL).exists()


def test_the_collector_is_frozen_for_the_run_only_and_a_callers_freeze_is_kept(tmp_path, model):
    items = make_images(tmp_path / "img", 6)
    seen: list[int] = []

    def note(done: int) -> None:
        seen.append(gc.get_freeze_count())

    def crash(done: int) -> None:
        raise RuntimeError(f"simulated crash after {done} images")

    assert gc.get_freeze_count() == 0
    frozen = extract_features(items, tmp_path / "a", CFG, backbone=model, on_commit=note, progress=False)
    assert seen and min(seen) > 0 and gc.get_freeze_count() == 0  # frozen while it ran, unfrozen after
    seen.clear()
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_features(items, tmp_path / "crash", CFG, backbone=model, on_commit=crash, progress=False)
    assert gc.get_freeze_count() == 0  # unfrozen after a failure too
    plain = extract_features(items, tmp_path / "b", replace(CFG, freeze_gc=False), backbone=model, on_commit=note,
                             progress=False)
    assert seen and max(seen) == 0
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")  # same store either way
    assert frozen.meta["fingerprint"] == plain.meta["fingerprint"]
    gc.freeze()  # a caller that froze its own objects keeps exactly its freeze
    try:
        own = gc.get_freeze_count()
        seen.clear()
        extract_features(items, tmp_path / "c", CFG, backbone=model, on_commit=note, progress=False)
        # neither frozen more nor unfrozen; a frozen object whose last reference goes meanwhile (a cache entry
        # replaced) leaves the count, so it may only shrink by a few (measured: 2 after the whole unit suite)
        assert seen and all(own - 100 <= n <= own for n in seen) and own - 100 <= gc.get_freeze_count() <= own
    finally:
        gc.unfreeze()


def test_a_store_is_tied_to_its_decoding_and_precision(tmp_path, model):
    """A store (or a partial one) made one way is neither current nor resumed for another decoding or resize: the
    GPU's bf16 rows with device decoding would otherwise be mixed with the CPU's float32 rows from PIL."""
    from dan.features import processing, store_is_current

    items = make_images(tmp_path / "img", 10)
    device = replace(CFG, gpu_decode=True)
    assert processing(CFG) == {"precision": "float32", "decode": "PIL in DataLoader workers", "inference": "eager"}
    assert processing(device)["decode"] == "torchvision.io.decode_jpeg on the device, pil resize"

    def stop(done: int) -> None:
        raise RuntimeError(f"simulated crash after {done} images")

    with pytest.raises(RuntimeError, match="after 4 images"):
        extract_features(items, tmp_path / "f", CFG, backbone=model, on_commit=stop, progress=False)
    commits: list[int] = []
    store = extract_features(items, tmp_path / "f", device, backbone=model, on_commit=commits.append, progress=False)
    assert commits == [4, 8, 10]  # started afresh, not resumed from the PIL-decoded rows
    assert store.meta["decode"] == processing(device)["decode"] and store_is_current(items, tmp_path / "f", device)
    assert not store_is_current(items, tmp_path / "f", CFG)
    assert not store_is_current(items, tmp_path / "f", replace(device, device_resize="antialias"))


def test_kill_9_during_extraction_then_rerun_gives_identical_store(tmp_path, model):
    items = make_images(tmp_path / "img", 16)
    extract_features(items, tmp_path / "clean", CFG, backbone=model, progress=False)
    script = (
        "import json, sys, time, torch\nfrom pathlib import Path\n"
        "from dan.features import FeatureConfig, extract_features\ntorch.set_num_threads(1)\n"
        "items = [(i, Path(p)) for i, p in json.loads(sys.argv[1])]\n"
        f"cfg = FeatureConfig(image_size={SIZE}, batch_size=4, num_workers=0, device='cpu', commit_every_mb=0.0)\n"
        "extract_features(items, sys.argv[2], cfg, on_commit=lambda n: time.sleep(0.4), progress=False)\n")
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps([[i, str(p)] for i, p in items]), str(out)],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    progress, deadline = out / PARTIAL / PROGRESS, time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if progress.is_file() and json.loads(progress.read_text())["done"] >= 8:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not FeatureStore.exists(out), "the run finished before it could be killed"
    done = json.loads(progress.read_text())["done"]
    assert 8 <= done < 16
    extract_features(items, out, CFG, backbone=model, progress=False)
    assert files_of(out) == files_of(tmp_path / "clean")


def _bad_files(folder: Path) -> dict[str, tuple[int, Path]]:
    good = make_images(folder, 1, start_id=900)[0][1]
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "zero-byte": b"", "not-an-image": b"hello, I am text\n" * 20}
    out = {}
    for k, (name, content) in enumerate(cases.items()):
        path = folder / f"COCO_train2014_{800 + k:012d}.jpg"
        path.write_bytes(content)
        out[name] = (800 + k, path)
    out["missing"] = (850, folder / "COCO_train2014_000000000850.jpg")
    return out


@pytest.mark.parametrize("case", ["truncated", "zero-byte", "not-an-image", "missing"])
def test_bad_image_is_an_error_naming_file_and_id(tmp_path, model, case):
    items = make_images(tmp_path / "img", 2)
    image_id, path = _bad_files(tmp_path / "img")[case]
    with pytest.raises(DataError, match=rf"{path.name} \(image id {image_id}\).*--skip-bad-images"):
        extract_features(items + [(image_id, path)], tmp_path / "feat", CFG, backbone=model, progress=False)
    assert not FeatureStore.exists(tmp_path / "feat")


def test_a_folder_named_like_an_image_is_reported_as_a_folder_in_both_modes(tmp_path, model):
    items = make_images(tmp_path / "img", 2)
    folder = tmp_path / "img" / "COCO_train2014_000000000030.jpg"
    folder.mkdir()
    with pytest.raises(DataError, match=rf"{folder.name} \(image id 30\): is a folder, not an image file"):
        extract_features(items + [(30, folder)], tmp_path / "a", CFG, backbone=model, progress=False)
    store = extract_features(items + [(30, folder)], tmp_path / "b", replace(CFG, on_bad_image="skip"),
                             backbone=model, progress=False)
    assert [s["reason"] for s in store.meta["skipped"]] == ["is a folder, not an image file"]


@pytest.mark.parametrize("gpu_decode, share", [(False, 0.0), (True, 0.0), (True, 1.0)])
def test_bad_images_are_counted_and_reported_when_skipping(tmp_path, model, capsys, gpu_decode, share):
    """Share 1: the workers decode every image, unresized (the device resizes), and report the bad ones alike."""
    items = make_images(tmp_path / "img", 3)
    bad = _bad_files(tmp_path / "img")
    cfg = replace(CFG, on_bad_image="skip", gpu_decode=gpu_decode, cpu_decode_share=share)
    store = extract_features(items + list(bad.values()), tmp_path / "feat", cfg, backbone=model, progress=False)
    assert store.ids.tolist() == [1, 2, 3] and store.load_all().shape == (3, 16, 112)
    assert store.meta["num_skipped"] == 4 and store.meta["num_requested"] == 7
    reasons = {s["image_id"]: s["reason"] for s in store.meta["skipped"]}
    assert set(reasons) == {i for i, _ in bad.values()}
    assert "file not found" in reasons[bad["missing"][0]] and "0 bytes" in reasons[bad["zero-byte"][0]]
    assert "not an image" in reasons[bad["not-an-image"][0]]
    err = capsys.readouterr().err
    assert "skipped 4 unreadable image(s)" in err and bad["truncated"][1].name in err
    ref = extract_features(items, tmp_path / "ref", CFG, backbone=model, progress=False).load_all()
    got, ref = store.load_all().astype(np.float32), ref.astype(np.float32)
    # PIL in workers: the same pixels; torchvision decode + resize: pixels within one level, features within 15 %
    device_decoded = gpu_decode and share < 1
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < (0.15 if device_decoded else 1e-3)
    assert store.meta["decode"].startswith("torchvision" if device_decoded else
                                           "PIL decoding" if gpu_decode else "PIL in")


def test_all_images_unreadable_leaves_no_partial_store(tmp_path, model):
    bad = _bad_files(tmp_path / "img")
    cfg = replace(CFG, on_bad_image="skip")
    with pytest.raises(DataError, match="none of the 4 images"):
        extract_features(list(bad.values()), tmp_path / "feat", cfg, backbone=model, progress=False)
    assert not (tmp_path / "feat" / PARTIAL).exists() and not FeatureStore.exists(tmp_path / "feat")


def test_an_unlistable_image_folder_is_a_one_line_error(tmp_path, monkeypatch):
    from dan.data.images import list_images

    make_images(tmp_path / "img", 2)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(DataError, match=r"cannot list image folder .*img: Permission denied"):
        list_images(tmp_path / "img")


def test_an_open_store_refuses_to_read_a_replaced_file(tmp_path, model):
    items = make_images(tmp_path / "img", 6)
    old = extract_features(items, tmp_path / "feat", CFG, backbone=model, progress=False)
    ahead = extract_features(items, tmp_path / "other", CFG, backbone=model, progress=False)
    ahead.gather([0])  # mapped before the change: keeps its own (unchanged) file
    bigger = build_backbone("efficientnet-lite0", None, 96)
    new = extract_features(items, tmp_path / "feat", replace(CFG, image_size=96), backbone=bigger, progress=False)
    with pytest.raises(DataError, match=r"feat was replaced or changed after it was opened .*open it again"):
        old.gather([0])  # old meta (16 regions) must not read the new rows (36 regions)
    assert new.gather([0]).shape == (1, 36, 112) and FeatureStore(tmp_path / "feat").num_regions == 36
    assert ahead.gather([1]).shape == (1, 16, 112)


@pytest.mark.parametrize("damage", ["truncated features", "meta not an object", "meta not JSON", "truncated ids",
                                    "empty ids", "ids not integers", "ids of another store", "meta grid not a pair"])
def test_a_damaged_store_is_rebuilt_not_reported_up_to_date(tmp_path, model, damage):
    items = make_images(tmp_path / "img", 5)
    clean = files_of(extract_features(items, tmp_path / "clean", CFG, backbone=model, progress=False).path)
    out = tmp_path / "feat"
    extract_features(items, out, CFG, backbone=model, progress=False)
    if damage == "truncated features":
        with open(out / FEATURES, "r+b") as fh:
            fh.truncate((out / FEATURES).stat().st_size - 100)
        with pytest.raises(DataError, match=f"{FEATURES} is truncated"):
            FeatureStore(out)
    elif "ids" in damage:  # an interrupted copy of the store, or another program's file: named, then rebuilt
        ids = out / "ids.npy"
        if damage == "ids not integers":
            np.save(ids, np.load(ids).astype(np.float64) + 0.5)
        elif damage == "ids of another store":  # same length, dtype and order: only the ids' digest tells
            other = make_images(tmp_path / "other", 5, start_id=100)
            ids.write_bytes((extract_features(other, tmp_path / "o", CFG, backbone=model, progress=False).path
                             / "ids.npy").read_bytes())
        else:
            ids.write_bytes(ids.read_bytes()[:100 if damage == "truncated ids" else 0])
        with pytest.raises(DataError, match=f"{out}.*ids.npy"):
            FeatureStore(out)
    elif damage == "meta grid not a pair":
        meta = json.loads((out / META).read_text())
        (out / META).write_text(json.dumps({**meta, "grid": [4]}))
        with pytest.raises(DataError, match="meta.json: grid"):
            FeatureStore(out)
    else:
        (out / META).write_text("[1, 2]" if damage == "meta not an object" else '{"backbone": ')
        with pytest.raises(DataError, match="meta"):
            FeatureStore(out)
    store = extract_features(items, out, CFG, backbone=model, progress=False)
    assert files_of(store.path) == clean


def test_ids_swapped_for_another_stores_are_detected_and_stores_without_a_digest_still_open(tmp_path, model):
    """ids.npy of another store with as many images (valid dtype, shape, sorted) would attach every row to the wrong
    image: meta.json records the ids' sha256 and opening compares it. Stores written before it (no ids_sha256)
    still open."""
    a = extract_features(make_images(tmp_path / "a", 3), tmp_path / "fa", CFG, backbone=model, progress=False)
    b = extract_features(make_images(tmp_path / "b", 3, start_id=50), tmp_path / "fb", CFG, backbone=model,
                         progress=False)
    (a.path / "ids.npy").write_bytes((b.path / "ids.npy").read_bytes())
    with pytest.raises(DataError, match=rf"feature store {a.path}: ids\.npy \(ids 50\.\.52\) does not match "
                                        r"meta\.json's ids_sha256 [0-9a-f]{12}\.\.\.: replaced by another store's"):
        FeatureStore(a.path)
    assert a.meta["ids_sha256"] != b.meta["ids_sha256"] and len(b.meta["ids_sha256"]) == 64
    meta = json.loads((a.path / META).read_text())
    del meta["ids_sha256"]  # a store from before the digest: nothing to compare, it opens as it did
    (a.path / META).write_text(json.dumps(meta))
    assert FeatureStore(a.path).ids.tolist() == [50, 51, 52]


def test_a_second_extraction_into_the_same_folder_is_refused_while_one_runs(tmp_path, model):
    items = make_images(tmp_path / "img", 4)
    out = tmp_path / "feat"
    with writer_lock(out):  # what a running extraction holds (flock: per open file, so this process conflicts too)
        with pytest.raises(DataError, match=r"another extraction is writing feature store .*feat"):
            extract_features(items, out, CFG, backbone=model, progress=False)
        assert not (out / PARTIAL).exists()
    store = extract_features(items, out, CFG, backbone=model, progress=False)  # released: it runs
    assert len(store) == 4
    (out / PARTIAL).mkdir()  # another configuration's extraction, writing right now
    with writer_lock(out):
        assert len(extract_features(items, out, CFG, backbone=model, progress=False)) == 4  # up to date ...
        assert (out / PARTIAL).is_dir()  # ... and the other run's partial store is left alone
    extract_features(items, out, CFG, backbone=model, progress=False)
    assert not (out / PARTIAL).exists()  # nobody writes it: stale, removed


def test_the_lock_of_a_killed_extraction_is_not_held_by_its_forked_loader_workers(tmp_path):
    """An extraction's DataLoader workers are forked while it holds ``.lock``: they inherited its descriptor and so
    held the flock on after ``kill -9`` of the extraction (up to 5 s, until their watchdog saw the parent gone),
    and the rerun right after the kill failed with "another extraction is writing feature store" though none
    was. A process forked under the lock must not hold it."""
    out = tmp_path / "feat"
    script = ("import multiprocessing as mp, sys, time\nfrom pathlib import Path\nfrom dan.store import writer_lock\n"
              "with writer_lock(Path(sys.argv[1])):\n"
              "    worker = mp.get_context('fork').Process(target=time.sleep, args=(60,), daemon=True)\n"
              "    worker.start()  # as DataLoader starts its workers\n"
              "    print(worker.pid, flush=True)\n"
              "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    worker = int(proc.stdout.readline())
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with writer_lock(out):  # the killed extraction's lock is free although its worker still runs
            assert _running(worker)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
        proc.stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_interrupt_sent_to_the_loader_workers_is_left_to_the_extraction(tmp_path, model, monkeypatch):
    """A Jupyter kernel's interrupt (and Ctrl-C in a terminal) is sent to the whole process group, the extraction's
    DataLoader workers included: they ended on it, and the interrupted extraction then waited 5 s for a dead worker's
    batch or failed with "DataLoader worker (pid(s) ...) exited unexpectedly" instead of the interrupt. A worker
    ignores SIGINT; here only the workers get one, and the extraction goes on to the end."""
    import dan.extract_input

    items = make_images(tmp_path / "img", 24)
    read = dan.extract_input.read_image
    monkeypatch.setattr(dan.extract_input, "read_image", lambda *a, **k: (time.sleep(0.05), read(*a, **k))[1])

    def children() -> set[int]:
        kids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    kids.add(int(stat.parent.name))
        return kids

    before, signalled = children(), []

    def interrupt_workers() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and len(children() - before) < 2:
            time.sleep(0.005)
        time.sleep(0.1)  # the workers are reading images
        for pid in children() - before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
                signalled.append(pid)

    import threading

    thread = threading.Thread(target=interrupt_workers, daemon=True)
    thread.start()
    t0 = time.time()
    store = extract_features(items, tmp_path / "feat", replace(CFG, num_workers=2), backbone=model, progress=False)
    thread.join(5)
    assert len(signalled) == 2 and len(store) == 24
    assert time.time() - t0 < 4.5  # no wait on a dead worker (the loader's 5 s status check)


_INTERRUPT_AT_FORK: list[bool] = []  # while it holds True, the next fork in this process is interrupted


def _interrupt_this_fork() -> None:
    if _INTERRUPT_AT_FORK and _INTERRUPT_AT_FORK[0]:
        _INTERRUPT_AT_FORK[0] = False
        os.kill(os.getpid(), signal.SIGINT)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_parent=_interrupt_this_fork)


def test_an_interrupt_that_arrives_while_the_loader_workers_fork_is_not_lost(tmp_path, model):
    """A SIGINT landing during ``fork()`` has its handler run inside an at-fork callback, where CPython only prints
    the KeyboardInterrupt ("Exception ignored in: <function _releaseLock ...>"): a Jupyter interrupt of the
    extraction at that moment was lost and the extraction ran to its end. Here the interrupt arrives in the
    parent's after-fork callback of the first loader worker: the extraction stops with it."""
    items = make_images(tmp_path / "img", 12)
    _INTERRUPT_AT_FORK[:] = [True]
    try:
        with pytest.raises(KeyboardInterrupt):
            extract_features(items, tmp_path / "feat", replace(CFG, num_workers=2), backbone=model, progress=False)
    finally:
        fired = _INTERRUPT_AT_FORK == [False]
        _INTERRUPT_AT_FORK.clear()
    assert fired
    assert not (tmp_path / "feat" / META).exists()  # not finished; the rerun resumes it
    assert len(extract_features(items, tmp_path / "feat", CFG, backbone=model, progress=False)) == 12


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_rows_of_two_library_versions_are_never_mixed_on_resume(tmp_path, model, monkeypatch):
    import dan.features as features

    items = make_images(tmp_path / "img", 10)
    clean = extract_features(items, tmp_path / "clean", CFG, backbone=model, progress=False)

    def crash(done: int) -> None:
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        extract_features(items, tmp_path / "cut", CFG, backbone=model, on_commit=crash, progress=False)
    other = {**features.software_versions(), "pillow": "0.0-other"}
    monkeypatch.setattr(features, "software_versions", lambda: other)
    commits: list[int] = []
    store = extract_features(items, tmp_path / "cut", CFG, backbone=model, on_commit=commits.append, progress=False)
    assert commits == [4, 8, 10]  # started afresh: the committed rows were made by another Pillow
    assert store.meta["software"]["pillow"] == "0.0-other"
    assert (tmp_path / "cut" / FEATURES).read_bytes() == (clean.path / FEATURES).read_bytes()


def test_a_crash_while_publishing_is_finished_by_the_rerun(tmp_path, model, monkeypatch, capsys):
    import dan.store as store_mod

    items = make_images(tmp_path / "img", 5) + list(_bad_files(tmp_path / "img").values())
    cfg = replace(CFG, on_bad_image="skip")
    clean = extract_features(items, tmp_path / "clean", cfg, backbone=model, progress=False)
    real_replace, calls = os.replace, []

    def fail_on_meta(src, dst):
        calls.append(Path(dst).name)
        if Path(src).name == META and Path(src).parent.name == PARTIAL:  # publish's last move (os is shared)
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(store_mod.os, "replace", fail_on_meta)
    with pytest.raises(DanError, match="cannot publish feature store .*Input/output error"):
        extract_features(items, tmp_path / "feat", cfg, backbone=model, progress=False)
    assert not FeatureStore.exists(tmp_path / "feat") and META in calls
    monkeypatch.setattr(store_mod.os, "replace", real_replace)
    capsys.readouterr()
    store = extract_features(items, tmp_path / "feat", cfg, backbone=model, progress=False)
    assert files_of(store.path) == files_of(clean.path) and not (tmp_path / "feat" / PARTIAL).exists()
    assert "skipped 4 unreadable image(s)" in capsys.readouterr().err  # reported again by the run that published


def test_store_in_dataloader_workers_gives_the_same_batches(tmp_path, model):
    items = make_images(tmp_path / "img", 8)
    store = extract_features(items, tmp_path / "feat", CFG, backbone=model, progress=False)
    store.gather([0])  # map it in the parent first: each worker must re-map its own

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(store)

        def __getitem__(self, k):
            return torch.from_numpy(store.gather([k])[0])

    loader = torch.utils.data.DataLoader(Rows(), batch_size=3, num_workers=2)
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, store.load_all())


def test_store_rejects_inconsistent_files_and_other_backbones(tmp_path, model):
    items = make_images(tmp_path / "img", 3)
    store = extract_features(items, tmp_path / "feat", CFG, backbone=model, progress=False)
    with pytest.raises(DataError, match="has dim=112 .* expects dim=2048"):
        store.check_compatible({"dim": 2048, "backbone": "resnet152"}, what="checkpoint run1")
    meta = json.loads((tmp_path / "feat" / "meta.json").read_text())
    (tmp_path / "feat" / "meta.json").write_text(json.dumps({**meta, "num_images": 5}))
    with pytest.raises(DataError, match="inconsistent"):
        FeatureStore(tmp_path / "feat")


def test_unwritable_target_gives_a_clear_error(tmp_path, model):
    items = make_images(tmp_path / "img", 2)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(DanError, match="not_a_folder"):
        extract_features(items, blocker / "feat", CFG, backbone=model, progress=False)
    assert blocker.read_text() == "x"


def test_a_store_is_not_written_into_the_image_folder_it_reads(tmp_path, model):
    """--out DATA/images (the data root's image folders for the features root) wrote each store's features.npy,
    ids.npy, meta.json, .partial/ and .lock beside the JPEGs it read; refused now, before anything is written."""
    root = tmp_path / "data"
    items = make_images(root / "images" / "val2014", 2, start_id=100)
    before = sorted(p.name for p in (root / "images" / "val2014").iterdir())
    with pytest.raises(ConfigError, match=r"feature store .*val2014 would be written into the image folder it "
                                          r"reads \(its 2 images are there\)"):
        build_features(root, root / "images", CFG)
    with pytest.raises(ConfigError, match="would be written into the image folder it reads"):
        extract_features(items, tmp_path / "data" / "images" / "." / "val2014", CFG, backbone=model, progress=False)
    assert sorted(p.name for p in (root / "images" / "val2014").iterdir()) == before


def test_build_features_per_split_reuses_current_stores_and_redoes_changed_config(tmp_path, model, capsys):
    root = tmp_path / "data"
    make_images(root / "images" / "train2014", 3)
    make_images(root / "images" / "val2014", 2, start_id=100)
    stores = build_features(root, tmp_path / "features", CFG)
    assert {k: len(s) for k, s in stores.items()} == {"train2014": 3, "val2014": 2}
    before = (tmp_path / "features" / "val2014" / "features.npy").stat().st_mtime_ns
    build_features(root, tmp_path / "features", CFG, splits=["val2014"])
    assert "up to date" in capsys.readouterr().err
    assert (tmp_path / "features" / "val2014" / "features.npy").stat().st_mtime_ns == before
    bigger = build_features(root, tmp_path / "features", replace(CFG, image_size=96), splits=["val2014"])
    assert bigger["val2014"].grid == (6, 6)
    with pytest.raises(DataError, match=r"\['test2015'\] not in .*found: \['train2014', 'val2014'\]"):
        build_features(root, tmp_path / "features", CFG, splits=["test2015"])


def test_build_features_passes_over_the_macos_folder_of_the_flickr8k_zip(tmp_path, model):
    """Flickr8k_Dataset.zip unpacks to Flicker8k_Dataset/ and __MACOSX/ (resource forks "._<name>.jpg", no
    images); unpacked in images/, the folder made dan.features stop with "no image files" when it did every folder."""
    root = tmp_path / "data"
    make_images(root / "images" / "val2014", 2, start_id=100)
    forks = root / "images" / "__MACOSX" / "Flicker8k_Dataset"
    forks.mkdir(parents=True)
    (forks / "._2513260012_03d33305cf.jpg").write_bytes(b"\0\5\26\7")
    stores = build_features(root, tmp_path / "features", CFG)
    assert list(stores) == ["val2014"] and not (tmp_path / "features" / "__MACOSX").exists()


def test_cli_builds_stores_and_reports_user_mistakes_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached ResNet weights
    root = tmp_path / "data"
    make_images(root / "images" / "val2014", 3)
    args = ["--data", str(root), "--out", str(tmp_path / "f"), "--profile", "smoke", "--image-size", str(SIZE),
            "--device", "cpu", "--num-workers", "0", "--quiet"]
    assert main(args) == 0
    assert "val2014: 3 images, grid 4x4, dim 112" in capsys.readouterr().out
    cases = [(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "f")], "--data folder not found"),
             (args + ["--backbone", "resnet152"], "no ImageNet weights for resnet152"),
             (args + ["--layer", "res5c"], "unknown layer 'res5c' for backbone efficientnet-lite0"),
             (args[:4] + ["--device", "cuda:0" if not torch.cuda.is_available() else "tpu"], "device")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(args[:4] + ["--profile", "huge"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'huge'" in err and "default" in err and len(err.strip().splitlines()) == 1


def test_a_failing_disk_write_is_reported_and_the_rerun_completes(tmp_path, model, monkeypatch):
    items = make_images(tmp_path / "img", 8)
    clean = extract_features(items, tmp_path / "clean", CFG, backbone=model, progress=False)
    real_pwrite, calls = os.pwrite, []

    def full_disk(fd, data, offset):
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(DanError, match=r"cannot write feature store .*full.*No space left on device"):
        extract_features(items, tmp_path / "full", CFG, backbone=model, progress=False)
    assert not FeatureStore.exists(tmp_path / "full")
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    again = extract_features(items, tmp_path / "full", CFG, backbone=model, progress=False)
    assert files_of(again.path) == files_of(clean.path)


class _SlowFlushStore:
    """A PartialStore stand-in whose commit (the fsync) blocks until released; records writes and commits."""

    def __init__(self, fail_commit: bool = False) -> None:
        import threading

        self.written: list[int] = []
        self.commits: list[int] = []
        self.release = threading.Event()
        self.fail_commit = fail_commit

    def write_rows(self, positions, rows) -> None:
        self.written.extend(int(p) for p in positions)

    def commit(self, done: int, skipped: list[dict]) -> None:
        assert self.release.wait(10), "commit never released"
        if self.fail_commit:
            raise DanError("cannot flush feature store: Input/output error")
        self.commits.append(done)


def _rows(n: int) -> np.ndarray:
    return np.zeros((n, 2, 3), dtype=np.float16)


def test_store_writer_keeps_writing_while_a_chunk_is_flushed():
    from dan.store_writer import StoreWriter

    part = _SlowFlushStore()
    writer = StoreWriter(part, 0, [], every_bytes=0.0, every_s=1e9)
    writer.put(2, np.array([0, 1]), _rows(2), None, [])
    writer.put(4, np.array([2, 3]), _rows(2), None, [])
    deadline = time.time() + 10
    while len(part.written) < 4 and time.time() < deadline:
        time.sleep(0.01)
    assert part.written == [0, 1, 2, 3] and part.commits == []  # batch 2 written while chunk 1 is still flushing
    part.release.set()
    assert writer.close() == []
    assert part.commits == [2, 4] and writer.committed == 4


def test_store_writer_reports_a_failed_flush_without_hanging():
    from dan.store_writer import StoreWriter

    part = _SlowFlushStore(fail_commit=True)
    writer = StoreWriter(part, 0, [], every_bytes=0.0, every_s=1e9)
    writer.put(2, np.array([0, 1]), _rows(2), None, [])
    part.release.set()
    with pytest.raises(DanError, match="Input/output error"):
        for k in range(2, 200, 2):  # the error reaches the producer at its next put (or at close)
            writer.put(k + 2, np.array([k, k + 1]), _rows(2), None, [])
        writer.close()
    with pytest.raises(DanError, match="Input/output error"):
        writer.close()
    assert part.commits == [] and writer.committed == 0


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")
@pytest.mark.parametrize("batch_size", [6, 8])
def test_batches_read_in_chunks_by_several_workers_give_the_same_store(tmp_path, model, monkeypatch, batch_size):
    import dan.extract as ex

    assert ex.loader_chunks(256, 4) == 4 and ex.loader_chunks(96, 2) == 2 and ex.loader_chunks(256, 0) == 1
    assert ex.loader_chunks(24, 4) == 1  # chunks of < MIN_CHUNK images are not worth it
    items = make_images(tmp_path / "img", 13)
    bad = _bad_files(tmp_path / "img")
    cfg = replace(CFG, on_bad_image="skip", batch_size=batch_size)
    ref = extract_features(items + list(bad.values()), tmp_path / "ref", cfg, backbone=model, progress=False)
    monkeypatch.setattr(ex, "MIN_CHUNK", 1)
    assert ex.loader_chunks(batch_size, 4) == (2 if batch_size == 6 else 4) and ex.loader_chunks(8, 2) == 2
    seen: list[int] = []
    flush = ex._Stager.flush

    def counting_flush(self):  # noqa: ANN001, ANN202
        out = flush(self)
        if out is not None:
            seen.append(len(out[0]) + len(out[4]))
        return out

    monkeypatch.setattr(ex._Stager, "flush", counting_flush)
    got = extract_features(items + list(bad.values()), tmp_path / "got", replace(cfg, num_workers=4),
                           backbone=model, progress=False)
    assert seen[:-1] == [batch_size] * (len(seen) - 1) and sum(seen) == 17  # whole model batches, then the rest
    assert got.ids.tolist() == ref.ids.tolist() and got.meta["skipped"] == ref.meta["skipped"]
    np.testing.assert_array_equal(got.load_all(), ref.load_all())


def test_a_rewritten_image_or_other_weights_make_the_store_stale(tmp_path, model, capsys):
    """The fingerprint covers each image file (size, mtime) and the weights' checksum: a store is not reused after
    an image was replaced, and its row is extracted again from the new pixels; other weights are another store."""
    from dan.features import store_is_current

    items = make_images(tmp_path / "img", 3)
    out = tmp_path / "f"
    before = extract_features(items, out, CFG, backbone=model, progress=False).load_all()
    assert store_is_current(items, out, CFG)
    replacement = make_images(tmp_path / "other", 1, start_id=2, seed=7)[0][1]
    items[1][1].write_bytes(replacement.read_bytes())  # other pixels, a new mtime (and size)
    os.utime(items[1][1], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not store_is_current(items, out, CFG)
    capsys.readouterr()
    after = extract_features(items, out, CFG, backbone=model, progress=False).load_all()
    assert "up to date" not in capsys.readouterr().err
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    assert np.abs(after[1].astype(np.float32) - before[1].astype(np.float32)).max() > 0.1
    weights = tmp_path / "other_weights.pt"  # the fingerprint reads the file's checksum, not the model
    torch.save({k: v + 1e-3 if v.is_floating_point() else v for k, v in model.state_dict().items()}, weights)
    assert store_is_current(items, out, CFG) and not store_is_current(items, out, replace(CFG, weights=str(weights)))


def test_a_resumed_run_keeps_the_skips_it_committed_before_the_crash(tmp_path, model):
    """Bad images that sort before the crash point (ids 800.., good ones from 1000): the resumed run must still
    leave them out and report them, byte-identical to an uninterrupted run."""
    items = make_images(tmp_path / "img", 6, start_id=1000)
    bad = list(_bad_files(tmp_path / "img").values())
    cfg = replace(CFG, on_bad_image="skip")
    clean = extract_features(items + bad, tmp_path / "clean", cfg, backbone=model, progress=False)
    assert clean.ids.tolist() == list(range(1000, 1006)) and clean.meta["num_skipped"] == 4

    def crash(done: int) -> None:
        raise RuntimeError(f"simulated crash after {done} images")

    with pytest.raises(RuntimeError, match="simulated crash after 4 images"):  # the 4 bad ones: committed, skipped
        extract_features(items + bad, tmp_path / "cut", cfg, backbone=model, on_commit=crash, progress=False)
    resumed = extract_features(items + bad, tmp_path / "cut", cfg, backbone=model, progress=False)
    assert sorted(s["image_id"] for s in resumed.meta["skipped"]) == [800, 801, 802, 850]
    assert files_of(tmp_path / "cut") == files_of(tmp_path / "clean")


def test_store_writer_commits_the_last_rows_at_close():
    from dan.store_writer import StoreWriter

    part = _SlowFlushStore()
    part.release.set()
    writer = StoreWriter(part, 0, [], every_bytes=1e18, every_s=1e9)  # no chunk ever full: only close commits
    writer.put(2, np.array([0, 1]), _rows(2), None, [])
    writer.put(4, np.array([2, 3]), _rows(2), None, [{"image_id": 9, "reason": "x"}])
    assert writer.close() == [{"image_id": 9, "reason": "x"}]
    assert part.written == [0, 1, 2, 3] and part.commits == [4] and writer.committed == 4


def test_partial_store_writes_each_run_of_rows_at_its_own_position(tmp_path):
    from dan.store import PartialStore

    part = PartialStore(tmp_path / "s", "fp", num_images=6, row_shape=(1, 2))
    assert part.open() == (0, [])
    rows = np.arange(10, dtype=np.float16).reshape(5, 1, 2)
    part.write_rows(np.array([0, 1, 3, 4, 5]), rows)  # a gap at 2 (a skipped image): two runs
    part.close()
    data = np.load(tmp_path / "s" / PARTIAL / FEATURES)
    assert data[:, 0].tolist() == [[0, 1], [2, 3], [0, 0], [4, 5], [6, 7], [8, 9]]


def test_a_store_with_repeated_ids_is_refused(tmp_path):
    from dan.bench import write_random_store

    write_random_store(tmp_path / "s", num_images=4, grid=(1, 2), dim=3)
    np.save(tmp_path / "s" / "ids.npy", np.array([0, 1, 1, 3], dtype=np.int64))
    with pytest.raises(DataError, match="not sorted and unique"):
        FeatureStore(tmp_path / "s")


def test_an_open_store_refuses_a_file_rewritten_in_place(tmp_path):
    """``cp other/features.npy`` over a store rewrites the same file (same inode); at the same size only the
    modification time tells."""
    from dan.bench import write_random_store

    write_random_store(tmp_path / "s", num_images=4, grid=(1, 2), dim=3)
    store = FeatureStore(tmp_path / "s")  # not mapped yet
    path = tmp_path / "s" / FEATURES
    with open(path, "r+b") as fh:
        fh.seek(-2, os.SEEK_END)
        fh.write(np.float16(7.0).tobytes())
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="replaced or changed after it was opened"):
        store.gather([3])
    assert FeatureStore(tmp_path / "s").gather([3])[0, -1, -1] == 7.0  # opened again: the new rows


def test_duplicate_image_ids_are_refused_before_any_work(tmp_path, model):
    items = make_images(tmp_path / "img", 3)
    other = make_images(tmp_path / "other", 1, start_id=2, seed=5)[0]  # a second file under id 2
    with pytest.raises(DataError, match="duplicate image id 2 in the image list"):
        extract_features(items + [other], tmp_path / "feat", CFG, backbone=model, progress=False)
    assert not (tmp_path / "feat").exists()


@pytest.mark.parametrize("gpu_decode", [False, True])
def test_pixels_are_normalised_per_channel_with_the_backbones_own_mean_and_std(tmp_path, gpu_decode):
    """Both CPU paths (PIL pixels, decoded-on-the-device JPEGs) feed ``(pixel / 255 - mean[c]) / std[c]`` in RGB
    order. The Lite backbones' mean and std are both 0.5 in every channel, which cannot tell mean from std or one
    channel from another: here the model is given ImageNet's (distinct per channel, mean != std) and its input is
    computed by hand from the decoded pixels."""
    model = build_backbone("efficientnet-lite0", None, SIZE)
    model.mean, model.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    items = make_images(tmp_path / "img", 2)
    store = extract_features(items, tmp_path / "feat", replace(CFG, gpu_decode=gpu_decode), backbone=model,
                             progress=False)
    assert store.meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    for image_id, path in items:
        rgb = torch.from_numpy(read_image(path, SIZE)).permute(2, 0, 1).double()[None] / 255  # [1, 3, S, S]
        mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
        with torch.no_grad():
            ref = model(((rgb - mean) / std).float())[0]  # [D, gh, gw]
        rows = ref.permute(1, 2, 0).reshape(16, -1)
        got = torch.from_numpy(store[image_id].astype(np.float32))
        torch.testing.assert_close(got, rows, atol=0.05, rtol=0.01)


def test_the_fingerprint_covers_the_bad_image_mode_and_each_files_modification_time(tmp_path, model):
    """A store made while skipping unreadable images is not current for a run that asks for an error on them; an
    image rewritten with the same size (only its modification time tells) makes the store stale."""
    from dan.features import store_is_current

    items = make_images(tmp_path / "img", 3)
    bad = (800, tmp_path / "img" / "COCO_train2014_000000000800.jpg")
    bad[1].write_bytes(b"")
    skip = replace(CFG, on_bad_image="skip")
    store = extract_features(items + [bad], tmp_path / "f", skip, backbone=model, progress=False)
    assert store.meta["num_skipped"] == 1 and store_is_current(items + [bad], tmp_path / "f", skip)
    assert not store_is_current(items + [bad], tmp_path / "f", CFG)
    with pytest.raises(DataError, match=r"image id 800\): empty file"):
        extract_features(items + [bad], tmp_path / "f", CFG, backbone=model, progress=False)

    extract_features(items, tmp_path / "g", CFG, backbone=model, progress=False)
    assert store_is_current(items, tmp_path / "g", CFG)
    path = items[0][1]
    size, data = path.stat().st_size, path.read_bytes()
    path.write_bytes(data)  # same bytes, same size: only the modification time changes
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert path.stat().st_size == size and not store_is_current(items, tmp_path / "g", CFG)


@pytest.mark.parametrize("backbone, size, layer", [("resnet152", 448, None), ("vgg19", 448, None),
                                                   ("efficientnet-lite1", 160, None)])
def test_cli_backbone_of_another_family_takes_its_own_input_size_and_default_layer(tmp_path, monkeypatch, backbone,
                                                                                   size, layer):
    """``--backbone`` resnet152 / vgg19 without ``--image-size``: 448 px (the paper's); another Lite keeps the
    profile's 160 px; the layer goes back to the backbone's default either way."""
    import dan.features as features

    seen = {}

    def capture(data_root, features_root, cfg, splits=None, progress=True):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(features, "build_features", capture)
    (tmp_path / "data").mkdir()
    assert main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "f"), "--backbone", backbone]) == 0
    cfg = seen["cfg"]
    assert (cfg.backbone, cfg.image_size, cfg.layer) == (backbone, size, layer)
    assert main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "f"), "--backbone", backbone,
                 "--image-size", "96"]) == 0
    assert seen["cfg"].image_size == 96
    assert main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "f"), "--profile", "full",
                 "--backbone", backbone]) == 0  # full's layer (stride32) is not carried over to another family
    assert (seen["cfg"].layer, seen["cfg"].image_size) == (None, 448)  # (full's own size is 448 too)


def test_a_batch_is_split_into_chunks_while_each_keeps_min_chunk_images():
    from dan.extract import MIN_CHUNK, loader_chunks

    assert MIN_CHUNK == 16
    assert loader_chunks(64, 4) == 4  # 4 chunks of exactly 16: allowed
    assert loader_chunks(60, 4) == 2  # 4 of 15 would be too small; 2 of 30 are not
    assert loader_chunks(32, 2) == 2 and loader_chunks(30, 2) == 1 and loader_chunks(64, 1) == 1


def test_a_cuda_device_without_a_gpu_is_refused_with_the_value_to_use_instead(monkeypatch):
    """The message names the value a notebook's ``device`` parameter takes, not only the CLI flag."""
    from dan.extract import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"'cuda:1' requested but no CUDA GPU is available; use device 'cpu' or "
                                          r"'auto' \(on the command line: --device cpu\)"):
        resolve_device("cuda:1")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unsupported device 'mps'; accepted: auto, cpu, cuda, cuda:N"):
        resolve_device("mps")


def _hand_made_store(folder: Path, ids: list[int], features: np.ndarray, **meta) -> Path:
    """A store written by hand in the documented layout (features.npy, ids.npy, meta.json), not by the extraction."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / FEATURES, features)
    np.save(folder / "ids.npy", np.asarray(ids, dtype=np.int64))
    n, regions, dim = features.shape
    (folder / META).write_text(json.dumps({
        "backbone": "hand", "layer": "none", "weights_sha256": "none", "image_size": 8, "grid": [1, regions],
        "dim": dim, "dtype": "float16", "preprocessing": {}, "num_images": n, "skipped": [], "fingerprint": "x",
        **meta}))
    return folder


def test_a_hand_made_store_gives_each_image_its_own_row_and_refuses_positions_out_of_range(tmp_path):
    rows = np.arange(3 * 2 * 4, dtype=np.float16).reshape(3, 2, 4)  # row k holds 8k .. 8k + 7
    store = FeatureStore(_hand_made_store(tmp_path / "s", [5, 9, 40], rows))
    assert (len(store), store.grid, store.dim) == (3, (1, 2), 4)
    np.testing.assert_array_equal(store[9], rows[1])
    np.testing.assert_array_equal(store.gather([2, 0]), rows[[2, 0]])
    assert store.positions([40, 5]).tolist() == [2, 0]
    for bad in ([-1], [3], [0, -3]):  # -1 would silently read the last image's row
        with pytest.raises(DataError, match=r"row position out of range \[0, 3\)"):
            store.gather(bad)
    with pytest.raises(DataError, match=r"1 image id\(s\) not in feature store .*\(e\.g\. 6\)"):
        store.positions([5, 6])


def test_a_store_whose_features_are_not_float16_or_whose_ids_are_too_few_is_refused(tmp_path):
    """Rows are read as fp16 at the offsets the meta gives: a float32 features.npy of the right shape would be read as
    garbage, and fewer ids than rows would attach rows to the wrong images (stores without an ids_sha256 included)."""
    rows = np.ones((3, 2, 4), dtype=np.float32)
    with pytest.raises(DataError, match=r"inconsistent: features \(3, 2, 4\) float32.*float16"):
        FeatureStore(_hand_made_store(tmp_path / "f32", [1, 2, 3], rows))
    with pytest.raises(DataError, match=r"inconsistent: .*ids \(2,\), meta expects \(3, 2, 4\)"):
        FeatureStore(_hand_made_store(tmp_path / "ids", [1, 2], rows.astype(np.float16)))


@pytest.mark.parametrize("missing", [FEATURES, "ids.npy", META])
def test_a_store_folder_missing_any_of_its_three_files_is_not_a_store(tmp_path, missing):
    folder = _hand_made_store(tmp_path / "s", [1, 2], np.zeros((2, 1, 3), dtype=np.float16))
    assert FeatureStore.exists(folder)
    (folder / missing).unlink()
    assert not FeatureStore.exists(folder)
    with pytest.raises(DataError, match=rf"no complete feature store at {folder}"):
        FeatureStore(folder)


@pytest.mark.parametrize("key, value", [("dim", 5), ("grid", [2, 1]), ("backbone", "resnet152"), ("layer", "res4"),
                                        ("image_size", 448)])
def test_check_compatible_names_each_field_a_model_depends_on(tmp_path, key, value):
    store = FeatureStore(_hand_made_store(tmp_path / "s", [1], np.zeros((1, 2, 4), dtype=np.float16)))
    same = {"dim": 4, "grid": [1, 2], "backbone": "hand", "layer": "none", "image_size": 8}
    store.check_compatible(same)
    with pytest.raises(DataError, match=rf"has {key}=.* but run7 expects {key}={re.escape(str(value))}"):
        store.check_compatible({**same, key: value}, what="run7")


def test_a_pickled_store_carries_no_rows_and_reads_the_same_after_unpickling(tmp_path):
    """What a DataLoader worker gets: the store without its map (a copy of every row would go to each worker)."""
    import pickle

    rows = np.arange(64 * 2 * 256, dtype=np.float32).reshape(64, 2, 256).astype(np.float16)
    store = FeatureStore(_hand_made_store(tmp_path / "s", list(range(64)), rows))
    store.gather([0])  # mapped in this process
    blob = pickle.dumps(store)
    assert len(blob) < rows.nbytes / 4
    np.testing.assert_array_equal(pickle.loads(blob).gather([63, 1]), rows[[63, 1]])


def test_a_store_of_no_images_opens_and_names_any_id_asked_of_it(tmp_path):
    store = FeatureStore(_hand_made_store(tmp_path / "s", [], np.zeros((0, 2, 4), dtype=np.float16)))
    assert len(store) == 0 and store.load_all().shape == (0, 2, 4)
    with pytest.raises(DataError, match=r"1 image id\(s\) not in feature store .*\(e\.g\. 3\); its 0 images"):
        store.positions([3])


def test_a_commit_makes_the_rows_durable_before_progress_json_counts_them(tmp_path, monkeypatch):
    """After a power cut, progress.json must never count rows that did not reach the disk: the resumed run would
    keep zeros (or stale bytes) as those images' features."""
    from dan.store import PartialStore

    part = PartialStore(tmp_path / "s", "fp", num_images=4, row_shape=(1, 2))
    assert part.open() == (0, [])
    part.write_rows(np.array([0, 1]), np.ones((2, 1, 2), dtype=np.float16))
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    part.commit(2, [{"image_id": 7, "reason": "x"}])
    part.close()
    data = str(tmp_path / "s" / PARTIAL / FEATURES)
    assert ("fsync", data) in events and ("replace", PROGRESS) in events
    assert events.index(("fsync", data)) < events.index(("replace", PROGRESS))
    prog = json.loads((tmp_path / "s" / PARTIAL / PROGRESS).read_text())
    assert (prog["done"], prog["skipped"], prog["fingerprint"]) == (2, [{"image_id": 7, "reason": "x"}], "fp")


def test_a_crash_while_replacing_a_store_leaves_no_store_with_the_old_meta(tmp_path, monkeypatch):
    """Re-extraction into a folder holding a store: publishing moves the new rows and ids over the old ones, then the
    new meta.json. Stopped in between, the folder must not pass for a store (old meta.json over new rows: same ids
    and shape would open without a word); the rerun publishes the rest."""
    import dan.store as store_mod
    from dan.store import PartialStore, publish

    out = _hand_made_store(tmp_path / "s", [1, 2], np.zeros((2, 1, 2), dtype=np.float16), backbone="old")
    new_rows = np.array([[[1, 2]], [[3, 4]]], dtype=np.float16)
    part = PartialStore(out, "new", num_images=2, row_shape=(1, 2))
    assert part.open() == (0, [])
    part.write_rows(np.array([0, 1]), new_rows)
    part.commit(2, [])
    meta = {**json.loads((out / META).read_text()), "backbone": "new", "fingerprint": "new"}
    real_replace = os.replace

    def fail_on_meta(src, dst):
        if Path(src).name == META and Path(src).parent.name == PARTIAL:
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(store_mod.os, "replace", fail_on_meta)
    with pytest.raises(DanError, match="cannot publish feature store .*Input/output error"):
        part.finish(np.array([1, 2]), meta)
    assert not FeatureStore.exists(out)
    monkeypatch.setattr(store_mod.os, "replace", real_replace)
    store = publish(out)
    assert store.meta["backbone"] == "new" and store.gather([0, 1]).tolist() == new_rows.tolist()


def test_a_finished_but_unpublished_extraction_of_other_settings_is_not_published_by_a_new_one(tmp_path, monkeypatch):
    """A crash after .partial/meta.json was written and before it was moved into place: a rerun with the same
    settings publishes it; a run with other settings (another fingerprint) starts afresh instead."""
    import dan.store as store_mod
    from dan.store import PartialStore

    out = tmp_path / "s"
    meta = json.loads((_hand_made_store(tmp_path / "ref", [1, 2], np.zeros((2, 1, 2), np.float16)) / META).read_text())
    part = PartialStore(out, "old", num_images=2, row_shape=(1, 2))
    part.open()
    part.write_rows(np.array([0, 1]), np.ones((2, 1, 2), dtype=np.float16))
    part.commit(2, [])
    monkeypatch.setattr(store_mod, "publish", lambda out_dir: None)  # killed before publishing
    part.finish(np.array([1, 2]), {**meta, "fingerprint": "old"})
    monkeypatch.undo()
    assert (out / PARTIAL / META).is_file() and not FeatureStore.exists(out)
    assert PartialStore(out, "old", num_images=2, row_shape=(1, 2)).open() == (2, [])  # the same run: publish it
    fresh = PartialStore(out, "new", num_images=2, row_shape=(1, 2))
    assert fresh.open() == (0, [])
    fresh.close()
    assert not (out / PARTIAL / META).exists()
    assert np.load(out / PARTIAL / FEATURES).tolist() == np.zeros((2, 1, 2)).tolist()


@pytest.mark.parametrize("damage", ["rows file deleted", "rows file of another shape"])
def test_progress_without_its_rows_file_starts_the_extraction_afresh(tmp_path, damage):
    """progress.json counts rows of .partial/features.npy: without that file, or with one of another shape (copied
    in from elsewhere), there is nothing to resume: the run starts from 0 with a new, zeroed file."""
    from dan.store import PartialStore

    part = PartialStore(tmp_path / "s", "fp", num_images=3, row_shape=(1, 2))
    part.open()
    part.write_rows(np.array([0, 1]), np.ones((2, 1, 2), dtype=np.float16))
    part.commit(2, [])
    part.close()
    data = tmp_path / "s" / PARTIAL / FEATURES
    if damage == "rows file deleted":
        data.unlink()
    else:
        np.save(data, np.ones((4, 1, 2), dtype=np.float16))
    again = PartialStore(tmp_path / "s", "fp", num_images=3, row_shape=(1, 2))
    assert again.open() == (0, [])
    again.close()
    assert np.load(data).tolist() == np.zeros((3, 1, 2)).tolist()
    assert json.loads((tmp_path / "s" / PARTIAL / PROGRESS).read_text())["done"] == 0


@pytest.mark.parametrize("progress", [[], {"done": -1}, {"done": 99}, {"done": "2"}, {"done": 1.5}, {"done": True},
                                      {"skipped": None}, {"skipped": "x"}, {"skipped": [7]}, {"skipped": [{}]}])
def test_damaged_progress_starts_the_extraction_afresh(tmp_path, progress):
    """progress.json not an object, rows done not a count in [0, num_images] or skips not records: resumed from
    (done -1, 99, true, 1.5; skips ["x"]) or KeyError/TypeError/ValueError/AttributeError before (found by
    fuzzing); an unreadable file already started afresh, and so does each of these."""
    from dan.store import PartialStore

    part = PartialStore(tmp_path / "s", "fp", num_images=3, row_shape=(1, 2))
    part.open()
    part.write_rows(np.array([0, 1]), np.ones((2, 1, 2), dtype=np.float16))
    part.commit(2, [{"image_id": 9, "file": "9.jpg", "reason": "truncated"}])
    part.close()
    path = tmp_path / "s" / PARTIAL / PROGRESS
    good = json.loads(path.read_text())
    assert PartialStore(tmp_path / "s", "fp", num_images=3, row_shape=(1, 2)).open() == (2, good["skipped"])
    path.write_text(json.dumps({**good, **progress} if isinstance(progress, dict) else progress))
    again = PartialStore(tmp_path / "s", "fp", num_images=3, row_shape=(1, 2))
    assert again.open() == (0, [])
    again.close()
    assert json.loads(path.read_text())["done"] == 0


@pytest.mark.parametrize("meta", ["[1, 2]", "{", '{"fingerprint": "fp"}'])
def test_a_damaged_finished_meta_is_written_anew_not_published(tmp_path, meta):
    """.partial/meta.json (written before publishing) that is not an object raised AttributeError on every rerun,
    an unreadable one a DataError, one without skips a TypeError when published: it is removed and the run goes on
    from its progress, so that finish() writes it anew."""
    from dan.store import PartialStore

    part = PartialStore(tmp_path / "s", "fp", num_images=3, row_shape=(1, 2))
    part.open()
    part.commit(2, [])
    part.close()
    (tmp_path / "s" / PARTIAL / META).write_text(meta)
    again = PartialStore(tmp_path / "s", "fp", num_images=3, row_shape=(1, 2))
    assert again.open() == (2, [])
    again.close()
    assert not (tmp_path / "s" / PARTIAL / META).exists()


def test_store_writer_commits_each_time_a_chunk_of_bytes_is_written():
    """every_bytes: a commit once that many bytes of rows were written since the last one (24 bytes a batch here),
    whatever the clock says; close commits only what is left."""
    from dan.store_writer import StoreWriter

    part = _SlowFlushStore()
    part.release.set()
    writer = StoreWriter(part, 0, [], every_bytes=48, every_s=1e9)
    for k in range(0, 10, 2):
        writer.put(k + 2, np.array([k, k + 1]), _rows(2), None, [])
    assert writer.close() == []
    assert part.commits == [4, 8, 10] and part.written == list(range(10))


def test_a_given_backbone_of_another_layer_size_or_family_than_the_config_is_refused(tmp_path, model):
    """The store's meta and fingerprint come from the config: a built model that computes something else would
    publish its features under the config's name."""
    items = make_images(tmp_path / "img", 1)
    for cfg, theirs in [(replace(CFG, image_size=96), "efficientnet-lite0/stride16@96"),
                        (replace(CFG, layer="stride32"), "efficientnet-lite0/stride32@64"),
                        (replace(CFG, backbone="efficientnet-lite1"), "efficientnet-lite1/stride16@64")]:
        with pytest.raises(ConfigError, match=re.escape(f"backbone efficientnet-lite0/stride16@64 does not match "
                                                        f"the config {theirs}")):
            extract_features(items, tmp_path / "f", cfg, backbone=model, progress=False)
        assert not (tmp_path / "f").exists()


def test_a_cuda_extraction_is_recorded_as_bfloat16_and_its_own_decoding(monkeypatch):
    """On a CUDA device the model runs under bf16 autocast (:func:`dan.extract.forward_padded`), so the store says
    so, and its fingerprint differs from a float32 one; JPEGs are decoded on the device unless asked otherwise."""
    import dan.features as features

    cpu = features.processing(CFG)
    items = [(1, Path("COCO_train2014_000000000001.jpg"))]
    cpu_fingerprint = features.fingerprint(CFG, items, "sha", [None])
    monkeypatch.setattr(features, "resolve_device", lambda device: torch.device("cuda"))
    cuda = replace(CFG, device="cuda")
    assert features.processing(cuda) == {"precision": "bfloat16 autocast",
                                         "decode": "torchvision.io.decode_jpeg on the device, pil resize",
                                         "inference": "eager"}
    assert features.processing(replace(cuda, gpu_decode=False)) == {**cpu, "precision": "bfloat16 autocast"}
    assert features.fingerprint(replace(cuda, gpu_decode=False), items, "sha", [None]) != cpu_fingerprint


def test_an_extraction_leaves_cudnn_benchmark_and_matmul_precision_as_it_found_them(tmp_path, model):
    items = make_images(tmp_path / "img", 2)
    before = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    try:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("medium")
        extract_features(items, tmp_path / "f", CFG, backbone=model, progress=False)
        assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == (True, "medium")
    finally:
        torch.backends.cudnn.benchmark = before[0]
        torch.set_float32_matmul_precision(before[1])


def test_a_store_of_one_layer_is_not_current_for_another_and_is_rebuilt(tmp_path, model):
    """The layer is part of the fingerprint: stride16 and stride32 of the same weights at the same size are
    different features (4 x 4 x 112 and 2 x 2 x 1280 at 64 px)."""
    from dan.features import store_is_current

    items = make_images(tmp_path / "img", 2)
    extract_features(items, tmp_path / "f", CFG, backbone=model, progress=False)
    stride32 = replace(CFG, layer="stride32")
    assert store_is_current(items, tmp_path / "f", CFG) and not store_is_current(items, tmp_path / "f", stride32)
    store = extract_features(items, tmp_path / "f", stride32, progress=False)
    assert (store.meta["layer"], store.grid, store.dim) == ("stride32", (2, 2), 1280)


def test_features_beyond_the_float16_range_are_stored_saturated_not_infinite(tmp_path):
    """Rows are stored in fp16: an activation above 65504 (random weights, an unusual image) is kept as +-65504, a
    number a model can train on, not inf (which turns every loss NaN)."""
    from dan.backbones import GridBackbone

    conv = torch.nn.Conv2d(3, 2, 16, stride=16)  # 64 px -> the 4 x 4 grid of efficientnet-lite0/stride16
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([1e6, -3.0]))
    model = GridBackbone("efficientnet-lite0", "stride16", SIZE, conv, "random")
    store = extract_features(make_images(tmp_path / "img", 2), tmp_path / "f", replace(CFG, random_weights=True),
                             backbone=model, progress=False)
    feats = store.load_all()
    assert feats.shape == (2, 16, 2) and np.isfinite(feats).all()
    assert (feats[..., 0] == 65504).all() and (feats[..., 1] == -3).all()


def test_image_sizes_outside_32_to_4096_px_are_refused_naming_the_value():
    for size in (16, 31, 4097):
        with pytest.raises(ConfigError, match=rf"image_size must be in \[32, 4096\], got {size}"):
            replace(CFG, image_size=size).validate()
    replace(CFG, image_size=32).validate()


def test_the_progress_bar_counts_every_image_including_skipped_ones(tmp_path, model, capsys):
    items = make_images(tmp_path / "img", 5)
    items[1][1].write_bytes(b"")
    extract_features(items, tmp_path / "f", replace(CFG, on_bad_image="skip"), backbone=model, progress=True)
    bars = re.findall(r"features: *\d+%\|[^|]*\| *(\d+)/(\d+)", capsys.readouterr().err)
    assert bars and bars[-1] == ("5", "5")


def test_build_features_builds_no_model_when_every_store_is_current_and_skips_hidden_folders(tmp_path, model,
                                                                                              monkeypatch):
    """A rerun over current stores loads no weights (ResNet-152's are 240 MB); a hidden folder in images/
    (.ipynb_checkpoints, a sync tool's .cache) is not a split."""
    import dan.features as features

    root = tmp_path / "data"
    make_images(root / "images" / "val2014", 2)
    (root / "images" / ".ipynb_checkpoints").mkdir()
    (root / "images" / ".ipynb_checkpoints" / "x.jpg").write_bytes(b"not an image")
    assert list(build_features(root, tmp_path / "features", CFG, progress=False)) == ["val2014"]

    def no_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a model was built although every store is current")

    monkeypatch.setattr(features, "build_backbone", no_model)
    assert len(build_features(root, tmp_path / "features", CFG, progress=False)["val2014"]) == 2


def test_meta_names_the_weights_random_default_or_the_files_name(tmp_path, model):
    import shutil

    from dan.backbones import _lite_weights_file

    items = make_images(tmp_path / "img", 1)
    copy = tmp_path / "my_lite0.pth"
    shutil.copy(_lite_weights_file("efficientnet-lite0"), copy)
    random = build_backbone("efficientnet-lite0", None, SIZE, random_weights=True)
    for name, cfg, backbone, sha in [
            ("default", CFG, model, model.weights_sha256),
            ("random", replace(CFG, random_weights=True), random, "random"),
            ("my_lite0.pth", replace(CFG, weights=str(copy)), None, model.weights_sha256)]:
        meta = extract_features(items, tmp_path / f"f_{name}", cfg, backbone=backbone, progress=False).meta
        assert (meta["weights"], meta["weights_sha256"]) == (name, sha)


def test_a_given_backbone_with_other_weights_than_the_config_names_is_refused(tmp_path, model):
    """meta["weights"] and the fingerprint are the config's: a random-weight model extracted under a config that
    names the default weights (or the reverse) would publish untrained features labelled pretrained, and a store
    whose fingerprint the config never matches (rebuilt on every run)."""
    items = make_images(tmp_path / "img", 1)
    random = build_backbone("efficientnet-lite0", None, SIZE, random_weights=True)
    with pytest.raises(ConfigError, match=r"backbone efficientnet-lite0 has weights with sha256 random but the "
                                          r"config names the default weights \(sha256 [0-9a-f]{16}\)"):
        extract_features(items, tmp_path / "f", CFG, backbone=random, progress=False)
    with pytest.raises(ConfigError, match=r"config names random weights \(sha256 random\)"):
        extract_features(items, tmp_path / "f", replace(CFG, random_weights=True), backbone=model, progress=False)
    assert not (tmp_path / "f").exists()
    store = extract_features(items, tmp_path / "f", replace(CFG, random_weights=True), backbone=random,
                             progress=False)
    assert (store.meta["weights"], store.meta["weights_sha256"]) == ("random", "random")


@pytest.mark.parametrize("field, value, what", [
    ("image_size", "224", "an integer"),  # was a TypeError from the range check
    ("image_size", 224.5, "an integer"),  # passed: a fractional input size
    ("batch_size", True, "an integer"),
    ("num_workers", 1.5, "an integer or unset"),
    ("fuse", "no", "a bool"),  # a non-empty string was taken as True
    ("random_weights", 1, "a bool"),
    ("gpu_decode", "yes", "a bool or unset"),
    ("commit_every_s", float("nan"), "a finite number >= 0"),
    ("commit_every_mb", -1.0, "a finite number >= 0"),
    ("weights", 3, "a name/path or unset"),
    ("backbone", None, "a backbone name"),
    ("device", None, r"a string \(auto, cpu, cuda, cuda:N\)"),  # -p device None in 02_features: torch's TypeError
    ("device", 0, r"a string \(auto, cpu, cuda, cuda:N\)"),
])
def test_feature_config_fields_of_the_wrong_type_are_refused_naming_the_field(field, value, what):
    with pytest.raises(ConfigError, match=rf"^{field} must be {what}, got {re.escape(repr(value))}$"):
        replace(CFG, **{field: value}).validate()


def test_feature_config_takes_numpy_scalars_as_the_python_numbers_they_hold():
    cfg = replace(CFG, image_size=np.int64(64), batch_size=np.int32(4), commit_every_s=np.float32(0.5)).validate()
    assert (cfg.image_size, cfg.batch_size, cfg.commit_every_s) == (64, 4, 0.5)
    assert [type(v) for v in (cfg.image_size, cfg.batch_size, cfg.commit_every_s)] == [int, int, float]
    replace(CFG, weights=Path("w.pt"), commit_every_mb=0, gpu_decode=None, num_workers=None).validate()


def test_model_stream_picks_the_stream_the_config_asks_for(fake_cuda_streams):
    """CUDA: prioritise_model -> a stream of the highest priority; own_model_stream -> one of its own at the default
    (lowest) priority; neither -> None (the current stream). Each waits for the current stream's queued work. The
    CPU never gets a stream. CUDA streams are faked here (no GPU): what is asked of them is what is checked."""
    from dan.extract import model_stream

    made, waited = fake_cuda_streams
    FakeStream = torch.cuda.Stream  # noqa: N806 - the fixture's class
    cuda, cpu = torch.device("cuda:0"), torch.device("cpu")
    assert model_stream(cuda, prioritise=False) is None and model_stream(cuda, False, own=False) is None
    assert all(model_stream(cpu, p, own=o) is None for p in (False, True) for o in (False, True))
    assert made == []
    assert isinstance(model_stream(cuda, prioritise=True), FakeStream)
    assert isinstance(model_stream(cuda, prioritise=False, own=True), FakeStream)
    assert isinstance(model_stream(cuda, prioritise=True, own=True), FakeStream)
    assert made == [("cuda:0", -5), ("cuda:0", 0), ("cuda:0", -5)] and waited == ["current"] * 3


def test_own_model_stream_is_a_bool_field():
    assert FeatureConfig().own_model_stream is False
    with pytest.raises(ConfigError, match="own_model_stream must be a bool, got 'yes'"):
        FeatureConfig(own_model_stream="yes").validate()
