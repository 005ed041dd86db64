"""The device-decode path's JPEG decoders (dan.jpeg): nvImageCodec beside torchvision, on the CPU (libjpeg-turbo for
both; the GPU's hardware engines are checked on the card by benchmarks/gpu_checks.py)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dan.jpeg
from dan.features import FeatureConfig, extract_features, processing
from dan.io import ConfigError
from dan.jpeg import (
    NvImageCodecJpeg,
    TorchvisionJpeg,
    build_jpeg_decoder,
    decode_jpeg_batch,
    decoder_label,
    plain_jpeg_bytes,
    probe_jpeg,
)

CPU = torch.device("cpu")
CFG = FeatureConfig(image_size=64, batch_size=3, num_workers=0, device="cpu", gpu_decode=True)


def jpegs(folder: Path) -> list[Path]:
    """RGB (4:2:0 and 4:4:4), gray and progressive JPEGs of textured content (the chroma upsampling matters)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    out = []
    for k, (mode, wh, kw) in enumerate([("RGB", (96, 72), {}), ("RGB", (50, 61), {"subsampling": 0}),
                                        ("L", (64, 48), {}), ("RGB", (80, 80), {"progressive": True}),
                                        ("RGB", (96, 72), {"quality": 40})]):
        shape = (wh[1], wh[0], 3) if mode == "RGB" else (wh[1], wh[0])
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        path = folder / f"COCO_val2014_{k + 1:012d}.jpg"
        Image.fromarray(pixels, mode).save(path, quality=kw.pop("quality", 90), **kw)
        out.append(path)
    return out


def test_nvimgcodec_decodes_like_pillow_and_torchvision_on_the_cpu(tmp_path):
    paths = jpegs(tmp_path)
    data = [torch.from_numpy(plain_jpeg_bytes(p)) for p in paths]
    nv, tv = build_jpeg_decoder("nvimgcodec", CPU), build_jpeg_decoder("torchvision", CPU)
    assert isinstance(nv, NvImageCodecJpeg) and isinstance(tv, TorchvisionJpeg)
    for path, a, b in zip(paths, nv(data), tv(data), strict=True):
        pil = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        assert a.dtype == torch.uint8 and a.shape == pil.shape, path.name
        np.testing.assert_array_equal(a.numpy(), pil, err_msg=path.name)
        assert torch.equal(a, b), path.name


def test_a_file_nvimgcodec_cannot_decode_comes_back_as_none_in_place(tmp_path):
    paths = jpegs(tmp_path)[:2]
    data = [torch.from_numpy(plain_jpeg_bytes(p)) for p in paths]
    data.insert(1, torch.frombuffer(bytearray(b"\xff\xd8 not a jpeg \xff\xd9"), dtype=torch.uint8))
    x, failed = decode_jpeg_batch(data, 40, CPU, decoder=build_jpeg_decoder("nvimgcodec", CPU))
    ref, _ = decode_jpeg_batch([data[0], data[2]], 40, CPU)
    assert failed == [1] and torch.equal(x, ref)


def test_extraction_with_nvimgcodec_gives_the_pillow_paths_store_and_records_its_decoder(tmp_path):
    paths = jpegs(tmp_path / "img")
    bad = tmp_path / "img" / "COCO_val2014_000000000009.jpg"  # a JPEG's head and tail around garbage: decoders
    bad.write_bytes(paths[0].read_bytes()[:200] + b"\0" * 300 + b"\xff\xd9")  # refuse it, PIL reports it
    items = [*enumerate(paths, start=1), (9, bad)]
    cfg = replace(CFG, on_bad_image="skip")
    nv = extract_features(items, tmp_path / "nv", replace(cfg, jpeg_decoder="nvimgcodec"), progress=False)
    pil = extract_features(items, tmp_path / "pil", replace(cfg, gpu_decode=False), progress=False)
    assert nv.ids.tolist() == pil.ids.tolist() == [1, 2, 3, 4, 5]
    assert [s["image_id"] for s in nv.meta["skipped"]] == [9]
    np.testing.assert_array_equal(nv.load_all(), pil.load_all())
    assert nv.meta["decode"] == f"{decoder_label('nvimgcodec')} on the device, pil resize"
    assert nv.meta["decode"].startswith("nvImageCodec 0.")
    assert processing(replace(cfg, jpeg_decoder="nvimgcodec"))["decode"] != processing(cfg)["decode"]


def test_decoder_names_are_checked_and_a_missing_package_says_how_to_install_it(monkeypatch):
    with pytest.raises(ConfigError, match="jpeg_decoder must be one of torchvision, nvimgcodec, got 'pil'"):
        replace(CFG, jpeg_decoder="pil").validate()
    with pytest.raises(ConfigError, match="jpeg_decoder must be one of"):
        build_jpeg_decoder("nvjpeg", CPU)
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)  # as if not installed: the import fails
    with pytest.raises(ConfigError, match="pip install nvidia-nvimgcodec-cu13 nvidia-nvjpeg"):
        build_jpeg_decoder("nvimgcodec", CPU)


def test_a_decoder_that_cannot_decode_the_probe_is_refused_at_once(monkeypatch):
    monkeypatch.setattr("dan.jpeg._NV_DECODERS", {})
    real_call = NvImageCodecJpeg.__call__
    monkeypatch.setattr(NvImageCodecJpeg, "__call__", lambda self, jpegs: [None] * len(jpegs))
    with pytest.raises(ConfigError, match="cannot decode a plain JPEG on cpu with backends cpu"):
        build_jpeg_decoder("nvimgcodec", CPU)
    assert not dan.jpeg._NV_DECODERS  # a decoder that failed its probe is not kept for the next extraction
    monkeypatch.setattr(NvImageCodecJpeg, "__call__", real_call)
    first, second = build_jpeg_decoder("nvimgcodec", CPU), build_jpeg_decoder("nvimgcodec", CPU)
    assert first.decoder is second.decoder and first is not second  # built and checked once per process
    assert NvImageCodecJpeg(CPU, options=":fancy_upsampling=1").decoder is not first.decoder  # other options
    assert dan.jpeg.hardware_engines(CPU) is None  # a CUDA-only question


def test_importing_nvimgcodec_leaves_out_only_the_other_codecs_complaints():
    """nvImageCodec's import prints an error per missing codec library (JPEG 2000 and TIFF here): not ours to show."""
    code = ("import sys; sys.stderr.write('before\\n'); from dan.jpeg import load_nvimgcodec; load_nvimgcodec(); "
            "sys.stderr.write('after\\n')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert run.stderr.splitlines() == ["before", "after"], run.stderr
    raw = subprocess.run([sys.executable, "-c", "from nvidia import nvimgcodec"], capture_output=True, text=True,
                         timeout=120, check=True)
    assert "nvjpeg2k" in raw.stderr.lower() or "nvtiff" in raw.stderr.lower()  # what is left out, unfiltered


def test_on_cuda_each_calls_inputs_and_images_live_until_the_stream_has_passed_their_use(monkeypatch):
    """The CUDA bookkeeping, simulated on the CPU (events whose completion the test decides): a call's bytes and
    images are released only once an event recorded at a later call, i.e. after the caller's resize was queued on
    the same stream, has completed."""
    from unittest import mock

    dec = build_jpeg_decoder("nvimgcodec", CPU)
    events = []

    class Event:
        def __init__(self) -> None:
            self.done = False
            events.append(self)

        def record(self, stream) -> None:  # noqa: ANN001
            pass

        def query(self) -> bool:
            return self.done

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: mock.Mock(cuda_stream=0))
    monkeypatch.setattr("dan.jpeg._take", lambda im, device: torch.from_numpy(np.asarray(im)))
    dec.device = mock.Mock(type="cuda")
    data = torch.frombuffer(bytearray(probe_jpeg()), dtype=torch.uint8)
    held = []
    for k in range(4):
        out = dec([data, data])
        assert [tuple(o.shape) for o in out] == [(3, 240, 320)] * 2
        held.append([entry[1] for entry in dec._inflight])
        if k == 1:
            events[1].done = True  # the mark of call 1: call 0's decode and resize are done
    assert len(held[0]) == 1 and held[0][0][2] is not None  # call 0: its inputs, code streams and images kept
    assert len(held[1]) == 2  # call 1's mark is not done yet: both kept
    assert len(held[2]) == 2 and held[2][0] is held[1][1]  # call 0 released at call 2, call 1 still held
    assert len(held[3]) == 3  # call 2's mark has not completed: nothing more released


def test_only_complete_rgb_or_gray_jpegs_go_to_the_device_decoder(tmp_path):
    """``plain_jpeg_bytes``: the file's bytes for a whole JPEG (SOI ... EOI, zero padding after EOI allowed); None
    for a file cut short (no EOI), another format, or a JPEG in another colour mode (CMYK): those take the CPU
    path, so that reading them is judged as for every other file (PIL: decoded or reported unreadable)."""
    good = jpegs(tmp_path / "img")[0]
    data = good.read_bytes()
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    got = plain_jpeg_bytes(good)
    assert got is not None and got.dtype == np.uint8 and got.tobytes() == data
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(data + b"\0" * 7)
    assert plain_jpeg_bytes(padded) is not None
    for name, content in [("cut.jpg", data[:-2]), ("half.jpg", data[: len(data) // 2]), ("text.jpg", b"hello")]:
        (tmp_path / name).write_bytes(content)
        assert plain_jpeg_bytes(tmp_path / name) is None, name
    png = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(png)
    cmyk = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8)).save(cmyk)
    assert plain_jpeg_bytes(png) is None and plain_jpeg_bytes(cmyk) is None
    assert plain_jpeg_bytes(tmp_path / "missing.jpg") is None


def test_a_batch_reports_the_positions_that_did_not_decode_and_resizes_the_rest_in_order():
    """Inputs 1 and 3 are no JPEGs: the rest (of one size) come back as one resized batch in input order, and the
    failed positions are reported even then (an image dropped without a word would shift the rows after it)."""
    red, blue = (Image.new("RGB", (40, 30), c) for c in ((250, 0, 0), (0, 0, 250)))

    def data(im: Image.Image) -> torch.Tensor:
        import io

        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=95)
        return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)

    junk = torch.frombuffer(bytearray(b"\xff\xd8not a jpeg\xff\xd9"), dtype=torch.uint8)
    x, failed = decode_jpeg_batch([data(red), junk, data(blue), junk], 16, CPU, decoder=TorchvisionJpeg(CPU))
    assert failed == [1, 3] and tuple(x.shape) == (2, 3, 16, 16)
    assert x[0, 0].mean() > 200 and x[0, 2].mean() < 50  # red first
    assert x[1, 2].mean() > 200 and x[1, 0].mean() < 50  # then blue
