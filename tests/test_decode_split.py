"""The extraction's decode split (FeatureConfig.cpu_decode_share): each model batch's first images decoded by PIL in
the DataLoader workers, the rest on the device; and the staging stream's priority (prioritise_staging). On the CPU
both decoders are libjpeg-turbo and the device path's resize is PIL's exactly, so a split store must equal either
decoder's store bit for bit; which image went where is checked on the loader's items."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dan.extract import loader_workers, staging_stream
from dan.extract_input import _ImageFiles
from dan.feature_config import cpu_decoded_per_batch, decodes_on_device, pixels_on_device
from dan.features import FeatureConfig, extract_features, processing, store_is_current
from dan.io import ConfigError

CFG = FeatureConfig(batch_size=4, num_workers=0, device="cpu", image_size=40, random_weights=True)
DEVICE = replace(CFG, gpu_decode=True)
CPU = torch.device("cpu")


def write_jpegs(folder: Path, n: int) -> list[tuple[int, Path]]:
    """``n`` noise JPEGs of mixed sizes, all below 2 x 40 px (no DCT-domain scaling on the PIL path)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    items = []
    for k in range(n):
        h, w = [(60, 45), (45, 60), (30, 20), (41, 56)][k % 4]
        path = folder / f"COCO_val2014_{k + 1:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        items.append((k + 1, path))
    return items


def test_a_split_batch_gives_the_store_of_either_decoder_alone(tmp_path):
    items = write_jpegs(tmp_path / "img", 10)  # batches of 4, 4 and 2: the split also in the short last one
    feats = {name: extract_features(items, tmp_path / name, cfg, progress=False).load_all()
             for name, cfg in [("pil", CFG), ("device", DEVICE), ("half", replace(DEVICE, cpu_decode_share=0.5)),
                               ("quarter", replace(DEVICE, cpu_decode_share=0.25))]}
    for name in ("device", "half", "quarter"):
        np.testing.assert_array_equal(feats[name], feats["pil"], err_msg=name)


def test_workers_that_only_decode_give_the_pil_store_with_large_images_and_all_images_decoded_by_them(tmp_path,
                                                                                                      monkeypatch):
    """The workers' share leaves them unresized, so the device resizes images of several sizes in one chunk, after
    libjpeg's DCT scaling for those >= 2 x the input (here 100 x 90 and 170 x 96 -> 1/2); with a share of 1 the
    device decodes none (no decoder is called), resizes every image (the workers leave them unresized: not the PIL
    path run under another label) and still gives the PIL path's store."""
    import dan.extract_input
    import dan.jpeg

    items = write_jpegs(tmp_path / "img", 6)
    rng = np.random.default_rng(7)
    for k, (h, w) in ((1, (100, 90)), (4, (170, 96))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(items[k][1], quality=90)
    pil = extract_features(items, tmp_path / "pil", CFG, progress=False).load_all()
    half = extract_features(items, tmp_path / "half", replace(DEVICE, cpu_decode_share=0.5), progress=False)
    np.testing.assert_array_equal(half.load_all(), pil)

    def no_decoder(*args):  # noqa: ANN002
        raise AssertionError("a device decoder was built with a share of 1")

    monkeypatch.setattr(dan.jpeg.TorchvisionJpeg, "__init__", no_decoder)
    monkeypatch.setattr(dan.jpeg.TorchvisionJpeg, "__call__", no_decoder)
    resized, pixels_of = [], dan.extract_input.read_image
    monkeypatch.setattr(dan.extract_input, "read_image", lambda path, size, resize=True: resized.append(resize) or
                        pixels_of(path, size, resize))
    whole = extract_features(items, tmp_path / "whole", replace(DEVICE, cpu_decode_share=1.0), progress=False)
    assert resized == [False] * len(items)
    assert whole.meta["decode"] == "PIL decoding in DataLoader workers, pil resize on the device"
    np.testing.assert_array_equal(whole.load_all(), pil)


def test_the_extraction_hands_the_device_only_the_images_after_each_batchs_share(tmp_path, monkeypatch):
    """The pipeline's own loader, not only _ImageFiles alone: of 10 images in batches of 4 with a share of 0.5, the
    device gets the bytes of images 2, 3, 6 and 7, and the workers decode the rest (on the CPU the stores are equal
    either way, so this is what tells whether the split happened)."""
    import dan.extract_input

    read, decoded = [], []
    bytes_of, pixels_of = dan.extract_input.plain_jpeg_bytes, dan.extract_input.read_image
    monkeypatch.setattr(dan.extract_input, "plain_jpeg_bytes", lambda path: read.append(path) or bytes_of(path))
    monkeypatch.setattr(dan.extract_input, "read_image", lambda path, size, resize=True: decoded.append(
        (path, resize)) or pixels_of(path, size, resize))
    items = write_jpegs(tmp_path / "img", 10)
    extract_features(items, tmp_path / "f", replace(DEVICE, cpu_decode_share=0.5), progress=False)
    paths = [p for _, p in items]
    assert read == [paths[k] for k in (2, 3, 6, 7)]
    assert decoded == [(paths[k], False) for k in (0, 1, 4, 5, 8, 9)]  # decoded, not resized: the device does that


def test_whole_chunks_of_either_kind_join_into_the_same_batches(tmp_path):
    """Batches of 32 read as 2 chunks of 16 by 2 worker processes: with a share of 0.5 the first chunk of each batch
    is all pixels and the second all JPEG bytes (each kind's fast path, then the join); the 40 images end in a short
    batch of 8, all decoded by the workers."""
    from dan.extract import loader_chunks

    items = write_jpegs(tmp_path / "img", 40)
    cfg = replace(CFG, batch_size=32, num_workers=2)
    assert loader_chunks(cfg.batch_size, cfg.num_workers) == 2
    pil = extract_features(items, tmp_path / "pil", cfg, progress=False).load_all()
    split = extract_features(items, tmp_path / "split", replace(cfg, gpu_decode=True, cpu_decode_share=0.5),
                             progress=False)
    assert split.meta["decode"].endswith("PIL decoding in DataLoader workers for the first 16 of every 32 images, "
                                         "resized on the device too")
    np.testing.assert_array_equal(split.load_all(), pil)


def test_the_first_images_of_each_batch_are_decoded_by_the_workers_by_position_not_by_start(tmp_path):
    items = write_jpegs(tmp_path, 10)

    def on_cpu(start: int, cpu_first: int, raw: bool = True) -> list[int]:
        files = _ImageFiles(items, start, 40, raw, cpu_first, batch=4)
        got = [files[k] for k in range(len(files))]
        assert all(sum(t is None for t in (px, data, dec)) == 2 and not err for _, px, data, err, dec in got)
        for i, px, _, _, dec in got:  # the workers' share unresized (the device resizes it); all resized when not raw
            if px is not None or dec is not None:
                assert (px is None) == raw
                assert (dec if raw else px).shape == ((*Image.open(items[i][1]).size[::-1], 3) if raw else (40, 40, 3))
        return [i for i, px, _, _, dec in got if px is not None or dec is not None]

    assert on_cpu(0, 2) == [0, 1, 4, 5, 8, 9]
    assert on_cpu(4, 2) == [4, 5, 8, 9]  # a resumed run (it restarts at a batch boundary) splits the same way
    assert on_cpu(0, 0) == [] and on_cpu(0, 4) == list(range(10)) and on_cpu(0, 1, raw=False) == list(range(10))


def test_the_split_rounds_the_share_to_images_and_is_part_of_the_stores_fingerprint(tmp_path):
    share = {s: replace(DEVICE, batch_size=256, cpu_decode_share=s) for s in (0.0, 0.25, 0.5, 0.3, 1.0)}
    assert [cpu_decoded_per_batch(c) for c in share.values()] == [0, 64, 128, 77, 256]
    assert processing(share[0.5])["decode"] == ("torchvision.io.decode_jpeg on the device, pil resize; PIL decoding "
                                                "in DataLoader workers for the first 128 of every 256 images, resized "
                                                "on the device too")
    # the device decodes none: it only resizes (not the PIL path, where the workers resize too)
    assert processing(share[1.0])["decode"] == "PIL decoding in DataLoader workers, pil resize on the device"
    assert processing(replace(share[1.0], device_resize="antialias"))["decode"].endswith("antialias resize on the "
                                                                                           "device")
    assert processing(replace(share[1.0], gpu_decode=False))["decode"] == "PIL in DataLoader workers"
    assert not decodes_on_device(share[1.0], CPU) and decodes_on_device(share[0.5], CPU)
    assert pixels_on_device(share[1.0], CPU) and not pixels_on_device(replace(share[1.0], gpu_decode=False), CPU)
    assert pixels_on_device(replace(CFG, gpu_decode=None), torch.device("cuda"))
    assert processing(replace(CFG, cpu_decode_share=0.5)) == processing(CFG)  # no device decoding: no split
    items = write_jpegs(tmp_path / "img", 6)
    extract_features(items, tmp_path / "f", replace(DEVICE, cpu_decode_share=0.5), progress=False)
    assert store_is_current(items, tmp_path / "f", replace(DEVICE, cpu_decode_share=0.5))
    assert not store_is_current(items, tmp_path / "f", replace(DEVICE, cpu_decode_share=0.25))
    assert not store_is_current(items, tmp_path / "f", DEVICE)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_a_share_outside_0_to_1_or_no_number_is_refused(value):
    with pytest.raises(ConfigError, match=rf"^cpu_decode_share must be a number in \[0, 1\], got "
                                          rf"{re.escape(repr(value))}$"):
        replace(DEVICE, cpu_decode_share=value).validate()


def test_loader_workers_decode_with_many_processes_and_read_bytes_with_few():
    assert loader_workers(None, cuda=True, bytes_only=True, cpus=16) == 4
    assert loader_workers(None, cuda=True, bytes_only=False, cpus=16) == 14  # CPU decoding, all or a share
    assert loader_workers(None, cuda=True, bytes_only=False, cpus=8) == 8
    assert loader_workers(None, cuda=False, bytes_only=False, cpus=16) == 2
    assert loader_workers(None, cuda=False, bytes_only=True, cpus=1) == 1
    assert loader_workers(7, cuda=True, bytes_only=True, cpus=16) == 7


def test_staging_stream_priority(fake_cuda_streams):
    """CUDA: the highest priority with prioritise_staging, else the lowest (the default); the CPU gets none. CUDA
    streams are faked here (no GPU)."""
    made, _ = fake_cuda_streams
    FakeStream = torch.cuda.Stream  # noqa: N806 - the fixture's class
    cuda = torch.device("cuda:0")
    assert staging_stream(CPU, True) is None and staging_stream(CPU, False) is None and made == []
    assert isinstance(staging_stream(cuda, True), FakeStream) and isinstance(staging_stream(cuda, False), FakeStream)
    assert made == [("cuda:0", -5), ("cuda:0", 0)]
    with pytest.raises(ConfigError, match="prioritise_staging must be a bool, got 'yes'"):
        replace(CFG, prioritise_staging="yes").validate()


def test_settings_that_change_nothing_on_the_device_are_named_in_a_warning(tmp_path, recwarn):
    """On the CPU the stream options do nothing, without device decoding the decoding options neither, with a share
    of 1 the decoder, and fuse=False only matters for ResNet-152; defaults and settings in use give no warning."""
    from dan.feature_config import unused_settings

    assert unused_settings(CFG, CPU) == [] and unused_settings(replace(DEVICE, cpu_decode_share=0.5), CPU) == []
    notes = unused_settings(replace(CFG, prioritise_staging=True, own_model_stream=True, cpu_decode_share=0.5,
                                    jpeg_decoder="nvimgcodec", fuse=False), CPU)
    assert notes == ["own_model_stream, prioritise_staging: CUDA streams only, no effect on cpu",
                     "cpu_decode_share, jpeg_decoder: no effect without device decoding (gpu_decode resolves to False "
                     "on cpu: the DataLoader workers decode and resize every image)",
                     "fuse=False: no effect on efficientnet-lite0 (only resnet152 is fused)"]
    assert unused_settings(replace(DEVICE, cpu_decode_share=1.0, jpeg_decoder="nvimgcodec"), CPU) == [
        "jpeg_decoder: no effect with cpu_decode_share 1.0 (the DataLoader workers decode every image)"]
    assert unused_settings(replace(CFG, backbone="resnet152", fuse=False), CPU) == []
    cuda = torch.device("cuda")
    assert unused_settings(replace(CFG, prioritise_model=True, device_resize="antialias"), cuda) == []
    assert unused_settings(replace(CFG, gpu_decode=False, device_resize="antialias"), cuda) == [
        "device_resize: no effect without device decoding (gpu_decode resolves to False on cuda: the DataLoader "
        "workers decode and resize every image)"]
    items = write_jpegs(tmp_path / "img", 2)
    with pytest.warns(UserWarning, match=r"^FeatureConfig prioritise_staging: CUDA streams only, no effect on cpu$"):
        extract_features(items, tmp_path / "f", replace(CFG, prioritise_staging=True), progress=False)
    recwarn.clear()
    extract_features(items, tmp_path / "g", CFG, progress=False)
    assert not [w for w in recwarn if "FeatureConfig" in str(w.message)]


def test_a_workers_chunk_is_joined_into_shared_memory_or_plainly_without_torchs_private_call(monkeypatch):
    """In a loader worker ``_joined`` stacks / concatenates into a shared-memory tensor through torch's private
    ``_typed_storage()._new_shared`` (as torch's collate does); a torch without it gets a plain stack / cat, which
    the worker's queue then moves to shared memory itself (the fallback was untested)."""
    import dan.extract_input as ei

    parts = [torch.arange(6, dtype=torch.uint8).reshape(2, 3) + k for k in range(3)]
    monkeypatch.setattr(ei, "get_worker_info", lambda: object())  # as in a worker
    stacked, flat = ei._joined(parts, stack=True), ei._joined([p.reshape(-1) for p in parts], stack=False)
    assert stacked.is_shared() and flat.is_shared()
    assert torch.equal(stacked, torch.stack(parts)) and torch.equal(flat, torch.cat([p.reshape(-1) for p in parts]))
    monkeypatch.delattr(torch.Tensor, "_typed_storage")
    stacked, flat = ei._joined(parts, stack=True), ei._joined([p.reshape(-1) for p in parts], stack=False)
    assert torch.equal(stacked, torch.stack(parts))  # (is_shared() itself needs _typed_storage)
    assert torch.equal(flat, torch.cat([p.reshape(-1) for p in parts]))
