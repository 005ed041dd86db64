"""dan.resize: the device path's resize gives PIL's BILINEAR result pixel for pixel (the CPU path's resize)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from triton_aot import LaunchRecorder, interpreter_env

from dan.features import FeatureConfig, extract_features
from dan.io import ConfigError
from dan.resize import (
    PILLOW_MAJOR,
    PilResize,
    antialias_resize,
    bilinear_coefficients,
    normalise_,
    vertical_first,
)


def noise(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 [H, W, 3]: smooth colour plus strong noise (every rounding boundary gets hit)."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(low, dtype=np.int16) + rng.integers(-60, 61, (h, w, 3)), 0, 255).astype(np.uint8)


def pil(img: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


def ours(imgs: list[np.ndarray], size: int, resize=None) -> np.ndarray:
    resize = resize or PilResize(size, "cpu")
    out = resize([torch.from_numpy(a).permute(2, 0, 1) for a in imgs])  # [n, 3, S, S]
    assert out.dtype == torch.float32 and out.shape == (len(imgs), 3, size, size)
    return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("tile", [None, 112, 5])
@pytest.mark.parametrize(("h", "w", "size"), [
    (480, 640, 448),  # COCO landscape: both passes shrink, horizontal first
    (640, 480, 448),  # COCO portrait: Pillow >= 13 runs the vertical pass first here
    (375, 500, 448),  # one pass grows, the other shrinks
    (30, 20, 64),  # both grow
    (64, 90, 64),  # one pass only
    (40, 40, 40),  # nothing to do
    (400, 300, 14),  # windows too wide for the float32 split: float64
])
def test_the_matrix_products_give_pillows_pixels_exactly(h, w, size, tile):
    imgs = [noise(h, w, seed) for seed in range(2)]
    got = ours(imgs, size, PilResize(size, "cpu", tile=tile))
    for g, img in zip(got, imgs, strict=True):
        np.testing.assert_array_equal(g, pil(img, size))


def test_normalising_in_the_resize_equals_normalising_after_it():
    imgs = [torch.from_numpy(noise(48, 64, k)).permute(2, 0, 1) for k in range(2)]
    scale, shift = torch.tensor([0.02, 0.03, 0.01]).view(1, 3, 1, 1), torch.tensor([-2.0, 1.0, 0.5]).view(1, 3, 1, 1)
    x = PilResize(40, "cpu", normalise=(scale, shift))(imgs)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, normalise_(PilResize(40, "cpu")(imgs), scale, shift))


def test_torchs_antialiased_resize_is_close_to_pillow_but_not_equal():
    img = noise(480, 640, 0)
    diff = np.abs(ours([img], 448, lambda ims: antialias_resize(ims, 448))[0] - pil(img, 448))
    assert diff.max() == 1 and 0.05 < (diff > 0).mean() < 0.5  # ~20 % of the pixels one level off


def test_pass_order_and_float64_fallback_follow_the_window_widths():
    assert vertical_first(640, 480, 448, 448) == (PILLOW_MAJOR >= 13)
    assert not vertical_first(480, 640, 448, 448) and not vertical_first(60, 50, 40, 40)  # 20 > 2 x 10 is false
    blocks, split = PilResize(448, "cpu", tile=112).blocks(640)
    assert split and [(o0, o1) for o0, o1, *_ in blocks] == [(0, 112), (112, 224), (224, 336), (336, 448)]
    for o0, o1, a, b, m in blocks:  # a block reads only the inputs under its windows
        assert m.dtype == torch.float32 and m.shape == (b - a, 2 * (o1 - o0)) and b - a < 640 / 3
        assert float(m.max()) <= 2 ** 11 and bool((m == m.round()).all())  # exact TF32 inputs
    (_, _, a, b, m), = PilResize(448, "cpu", tile=None).blocks(640)[0]
    assert (a, b) == (0, 640) and m.shape == (640, 2 * 448)
    blocks, split = PilResize(14, "cpu").blocks(400)  # ~60 taps a window
    assert not split and blocks[0][4].dtype == torch.float64 and blocks[0][4].shape == (400, 14)
    c = bilinear_coefficients(640, 448)
    assert c.shape == (448, 640) and (c >= 0).all()
    assert np.abs(c.sum(axis=1) - 2 ** 22).max() <= 4  # each row sums to 1 (fixed point, rounded per weight)
    for level in (0, 255):  # no clipping step: the extremes come back as they are
        flat = np.full((480, 640, 3), level, dtype=np.uint8)
        assert (ours([flat], 448) == level).all() and (ours([flat[:300, :20]], 14) == level).all()
    with pytest.raises(ValueError, match="line lengths"):
        bilinear_coefficients(0, 4)


def write_jpegs(folder, shapes) -> list:
    items = []
    for k, (h, w) in enumerate(shapes):
        path = folder / f"COCO_val2014_{k + 1:012d}.jpg"
        Image.fromarray(noise(h, w, k)).save(path, quality=90)
        items.append((k + 1, path))
    return items


def test_device_decoding_gives_the_cpu_paths_features_exactly(tmp_path):
    """On the CPU, torchvision's decoder gives PIL's pixels, so with the PIL-exact resize the device path's store
    equals the PIL path's bit for bit; torch's antialiased resize does not (the test can tell them apart)."""
    items = write_jpegs(tmp_path, [(60, 45), (45, 60), (30, 20), (60, 45), (41, 56)])  # all < 2 x S: no DCT scaling
    cfg = FeatureConfig(batch_size=2, num_workers=0, device="cpu", image_size=40, random_weights=True)
    runs = {name: extract_features(items, tmp_path / name, c, progress=False)
            for name, c in [("pil", cfg), ("device", replace(cfg, gpu_decode=True)),
                            ("antialias", replace(cfg, gpu_decode=True, device_resize="antialias"))]}
    feats = {k: s.load_all() for k, s in runs.items()}
    np.testing.assert_array_equal(feats["device"], feats["pil"])
    assert not np.array_equal(feats["antialias"], feats["pil"])
    assert runs["device"].meta["decode"] == "torchvision.io.decode_jpeg on the device, pil resize"
    with pytest.raises(ConfigError, match="device_resize"):
        replace(cfg, device_resize="bicubic").validate()


def test_the_gpu_kernel_gives_pillows_pixels_exactly():
    """PilResize's default on CUDA is a Triton kernel; Triton's interpreter runs the same kernel code on the CPU."""
    pytest.importorskip("triton")  # it comes with PyTorch's CUDA builds (the pinned one included)
    code = textwrap.dedent("""
        import numpy as np, torch
        from PIL import Image
        from dan.resize import PilResize
        rng = np.random.default_rng(0)
        scale = torch.tensor([0.02, 0.03, 0.01]).view(1, 3, 1, 1)
        shift = torch.tensor([-2.0, 1.0, 0.5]).view(1, 3, 1, 1)
        for h, w, s in [(60, 45, 40), (45, 60, 40), (30, 20, 40), (40, 52, 40), (40, 40, 40), (90, 80, 12)]:
            imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)]
            ims = [torch.from_numpy(a).permute(2, 0, 1) for a in imgs]
            kernel = PilResize(s, "cpu", method="kernel")
            got = kernel(ims).permute(0, 2, 3, 1).numpy()
            ref = np.stack([np.asarray(Image.fromarray(a).resize((s, s), Image.Resampling.BILINEAR)) for a in imgs])
            fused = PilResize(s, "cpu", method="kernel", normalise=(scale, shift))
            norm = fused(ims)
            ran = [r.method == "kernel" and r._kernel_ran for r in (kernel, fused)]  # no fallback (same pixels)
            assert (h, w) == (s, s) or all(ran), ran
            want = PilResize(s, "cpu", method="products", normalise=(scale, shift))(ims)
            assert norm.is_contiguous(memory_format=torch.channels_last) and norm.dtype == torch.float32
            print(h, w, s, int((got != ref).sum()), float((norm - want).abs().max()) < 1e-6)
    """)
    env = interpreter_env()
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.split("\n")[:-1]
    assert len(lines) == 6 and all(line.endswith(" 0 True") for line in lines), run.stdout


def test_a_kernel_that_cannot_run_falls_back_to_the_products_with_a_warning():
    """Outside the interpreter Triton cannot run on CPU tensors: the same failure a GPU it cannot compile for gives."""
    pytest.importorskip("triton")
    img = noise(48, 64, 3)
    r = PilResize(40, "cpu", method="kernel")
    with pytest.warns(RuntimeWarning, match="Triton kernel failed"):
        got = ours([img], 40, r)
    assert r.method == "products"
    np.testing.assert_array_equal(got[0], pil(img, 40))


def test_the_extraction_with_the_gpu_kernel_gives_the_cpu_paths_features(tmp_path):
    """The whole device-decode pipeline with the Triton kernel as a GPU runs it (Triton's interpreter on the CPU):
    landscape, portrait (vertical pass first) and enlarged images in mixed batches give the PIL path's store."""
    pytest.importorskip("triton")
    items = write_jpegs(tmp_path, [(60, 45), (45, 60), (30, 20), (60, 45), (41, 56)])
    code = textwrap.dedent(f"""
        import functools, sys
        from dataclasses import replace
        from pathlib import Path
        import numpy as np
        import dan.extract_input
        from dan.features import FeatureConfig, extract_features
        from dan.resize import PilResize
        kernel = []
        class KernelResize(PilResize):
            def __init__(self, *a, **kw):
                super().__init__(*a, **{{**kw, "method": "kernel"}})
                kernel.append(self)
        dan.extract_input.PilResize = KernelResize  # where _Stager looks it up
        items = [(k + 1, Path(p)) for k, p in enumerate({[str(p) for _, p in items]!r})]
        cfg = FeatureConfig(batch_size=2, num_workers=0, device="cpu", image_size=40, random_weights=True)
        out = Path({str(tmp_path)!r})
        pil = extract_features(items, out / "pil", cfg, progress=False).load_all()
        dev = extract_features(items, out / "dev", replace(cfg, gpu_decode=True), progress=False).load_all()
        assert all(r.method == "kernel" for r in kernel) and any(r._kernel_ran for r in kernel)  # no fallback
        print("max difference", float(np.abs(dev.astype(np.float32) - pil.astype(np.float32)).max()))
    """)
    env = interpreter_env()
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("max difference 0.0"), run.stdout


def test_the_gpu_kernel_compiles_for_hopper_and_ampere_with_the_arguments_it_is_launched_with(monkeypatch):
    """The interpreter does not run Triton's compiler: compile each launch a resize makes (its real argument types;
    landscape, portrait and enlarging; with the fused normalisation) ahead of time for sm_90 (H100/H200) and sm_80,
    as the device would, without a GPU."""
    pytest.importorskip("triton")
    import dan.resize

    recorder = LaunchRecorder(dan.resize._resample_kernel)
    monkeypatch.setattr(dan.resize, "_resample_kernel", recorder)
    norm = (torch.full((1, 3, 1, 1), 0.02), torch.full((1, 3, 1, 1), -2.0))
    for h, w in [(480, 640), (640, 480), (300, 200)]:
        PilResize(448, "cpu", method="kernel", normalise=norm)([torch.zeros((3, h, w), dtype=torch.uint8)] * 2)
    assert len(recorder.launches) >= 4  # uint8 and float outputs, outputs or lines memory-adjacent
    assert recorder.compile_all() == 2 * len(recorder.launches)
