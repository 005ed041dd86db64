"""dan.fuse: the fused ResNet trunk computes the eager one (folded BatchNorm; bias, residual and ReLU in one pass),
its Triton kernel gives the torch ops' result (interpreter) and compiles for the GPUs, and stores record it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch
from torch import nn
from triton_aot import LaunchRecorder, interpreter_env

import dan.fuse
from dan.backbones import build_backbone
from dan.fuse import FUSED, bias_act_, fold_batchnorm, fuse_resnet


def randomise_batchnorm(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm parameters, and statistics perturbed around the present ones (a fresh layer's identity
    map would hide a wrong fold; statistics far from the activations' would blow a deep trunk's outputs up)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) * 0.5 + 0.5
            m.bias.data = torch.rand(c, generator=g) * 0.4 - 0.2
            m.running_mean.data += torch.randn(c, generator=g) * 0.1 * m.running_var.sqrt()
            m.running_var.data *= torch.rand(c, generator=g) * 0.45 + 0.8


def test_folding_gives_the_convolution_then_the_batchnorm():
    torch.manual_seed(0)
    for bias in (False, True):
        conv, bn = nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=bias), nn.BatchNorm2d(7, eps=1e-3).eval()
        randomise_batchnorm(bn)
        x = torch.randn(2, 5, 9, 11)
        folded, shift = fold_batchnorm(conv, bn)
        assert folded.bias is None and shift.shape == (7,) and shift.dtype == torch.float32
        with torch.no_grad():
            torch.testing.assert_close(folded(x) + shift.view(1, -1, 1, 1), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", ["res5c", "res4"])
def test_the_fused_resnet152_trunk_computes_the_eager_one(layer):
    """Float32 on the CPU: the same function up to rounding, in either memory layout; the eager trunk is kept."""
    eager = build_backbone("resnet152", layer, 64, random_weights=True, fuse=False)
    randomise_batchnorm(eager.trunk)
    fused = fuse_resnet(eager.trunk)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in eager.trunk.modules()) > 0  # the original is untouched
    x = torch.randn(2, 3, 80, 64)
    with torch.inference_mode():
        ref = eager(x)
        for fmt in (torch.contiguous_format, torch.channels_last):
            got = fused.to(memory_format=fmt)(x.contiguous(memory_format=fmt))
            assert got.shape == ref.shape and torch.isfinite(ref.norm()) and ref.norm() > 0
            assert float((got - ref).norm() / ref.norm()) < 1e-5


def test_build_backbone_fuses_resnet_only_and_stores_record_it(tmp_path):
    from PIL import Image

    from dan.features import FeatureConfig, extract_features, fingerprint

    assert build_backbone("resnet152", image_size=64, random_weights=True).inference == FUSED
    assert build_backbone("resnet152", image_size=64, random_weights=True, fuse=False).inference == "eager"
    assert build_backbone("efficientnet-lite0", None, 64, random_weights=True).inference == "eager"
    images = []
    for k in range(3):
        path = tmp_path / f"{k}.jpg"
        Image.new("RGB", (70, 50), (40 * k, 90, 200 - 50 * k)).save(path)
        images.append((k + 1, path))
    cfg = FeatureConfig(backbone="resnet152", image_size=64, batch_size=2, num_workers=0, device="cpu",
                        random_weights=True)
    eager_cfg = replace(cfg, fuse=False)
    fused = extract_features(images, tmp_path / "fused", cfg, progress=False)
    eager = extract_features(images, tmp_path / "eager", eager_cfg, progress=False)
    assert fused.meta["inference"] == FUSED and eager.meta["inference"] == "eager"
    assert fingerprint(cfg, images, "random") != fingerprint(eager_cfg, images, "random")
    a, b = fused.load_all().astype("float32"), eager.load_all().astype("float32")
    assert abs(a - b).max() <= 1e-3 * abs(b).max()  # fp16 rows of the same function
    with pytest.raises(Exception, match="backbone runs 'eager' but the config asks for"):
        extract_features(images, tmp_path / "x", cfg, backbone=build_backbone(
            "resnet152", image_size=64, random_weights=True, fuse=False), progress=False)


def test_the_kernel_gives_the_torch_ops_result():
    """The Triton kernel (interpreter) against the torch ops: float32, float16 and bfloat16 activations,
    channel counts that do and do not fill its 64-channel tiles, with and without the residual; and the whole
    fused trunk running it."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import functools, torch
        import dan.fuse
        from dan.backbones import build_backbone
        from dan.fuse import bias_act_
        torch.manual_seed(0)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for c in (3, 64, 100):
                for residual in (False, True):
                    y = (torch.randn(2, c, 5, 7) * 3).to(dtype).contiguous(memory_format=torch.channels_last)
                    r = torch.randn(2, c, 5, 7).to(dtype).contiguous(memory_format=torch.channels_last)
                    bias = torch.randn(c)
                    want = torch.relu(y.float() + bias.view(1, -1, 1, 1) + (r.float() if residual else 0))
                    got = bias_act_(y.clone(), bias, r if residual else None, kernel=True)
                    assert got.dtype == dtype, got.dtype
                    # one rounding to dtype: within a unit in the last place (the interpreter may truncate)
                    tol = {torch.float32: 1e-6, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
                    err = ((got.float() - want).abs() / want.abs().clamp_min(1e-3)).max()
                    assert err <= tol, (dtype, c, residual, float(err))
        fused = build_backbone("resnet152", "res4", 64, random_weights=True).to(memory_format=torch.channels_last)
        x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            dan.fuse.bias_act_ = functools.partial(bias_act_, kernel=False)
            want = fused(x)
            dan.fuse.bias_act_ = functools.partial(bias_act_, kernel=True)
            got = fused(x)
        print("trunk", float((got - want).abs().max()))
    """)
    run = subprocess.run([sys.executable, "-c", code], env=interpreter_env(), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout.split("trunk ")[1]) == 0.0, run.stdout  # float32: the same single rounding per element


def test_the_kernel_compiles_for_hopper_and_ampere_with_the_arguments_it_is_launched_with(monkeypatch):
    pytest.importorskip("triton")
    recorder = LaunchRecorder(dan.fuse._bias_act_kernel)
    monkeypatch.setattr(dan.fuse, "_bias_act_kernel", recorder)
    for dtype in (torch.bfloat16, torch.float32):
        y = torch.zeros(2, 64, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
        bias_act_(y, torch.zeros(64), kernel=True)
        bias_act_(y, torch.zeros(64), y.clone(), kernel=True)
    assert len(recorder.launches) == 4
    assert recorder.compile_all() == 8


def test_a_kernel_that_cannot_run_warns_once_and_the_torch_ops_take_over(monkeypatch):
    """Outside the interpreter Triton cannot run on CPU tensors: the failure a GPU it cannot compile for gives."""
    pytest.importorskip("triton")
    monkeypatch.setattr(dan.fuse, "_kernel_failed", False)
    monkeypatch.setattr(dan.fuse, "_kernel_by_default", lambda y: not dan.fuse._kernel_failed)
    y = torch.randn(1, 8, 2, 2).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(8)
    with pytest.warns(RuntimeWarning, match="Triton kernel failed"):
        got = bias_act_(y.clone(), bias)
    assert dan.fuse._kernel_failed
    torch.testing.assert_close(got, torch.relu(y + bias.view(1, -1, 1, 1)))
    # asked for explicitly: Triton's own error, not hidden (no driver here; a CUDA host refuses the CPU tensor)
    with pytest.raises((RuntimeError, ValueError)):
        bias_act_(y.clone(), bias, kernel=True)


def test_tensors_that_need_gradients_take_the_torch_ops():
    """Autograd does not see the kernel, so it is left out where gradients flow (outside the interpreter it would
    fail on these CPU tensors: this passing shows it did not run)."""
    x = torch.randn(1, 8, 2, 2, requires_grad=True)
    y = (x * 2).contiguous(memory_format=torch.channels_last)
    bias_act_(y, torch.zeros(8), kernel=True).sum().backward()
    assert torch.equal(x.grad, 2.0 * (x > 0).float())


def test_the_cli_runs_resnet_fused_by_default_and_eager_when_asked(tmp_path, capsys):
    from PIL import Image

    from dan.features import main
    from dan.store import FeatureStore

    (tmp_path / "data" / "images" / "val2014").mkdir(parents=True)
    for k in range(2):
        Image.new("RGB", (80, 60), (90 * k, 40, 160)).save(tmp_path / "data" / "images" / "val2014" / f"{k}.jpg")
    base = ["--data", str(tmp_path / "data"), "--backbone", "resnet152", "--random-weights", "--image-size", "64",
            "--device", "cpu", "--num-workers", "0", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "fused")]) == 0
    assert main([*base, "--out", str(tmp_path / "eager"), "--no-fuse"]) == 0
    assert FeatureStore(tmp_path / "fused" / "val2014").meta["inference"] == FUSED
    assert FeatureStore(tmp_path / "eager" / "val2014").meta["inference"] == "eager"


def test_the_kernel_takes_only_dense_channels_last_tensors_and_a_residual_of_the_outputs_shape():
    """The kernel indexes ``y`` and the residual alike as ``[pixels, channels]``: a residual that would broadcast
    (``[B, C, 1, 1]``) or is laid out NCHW would be read at the wrong places, so the torch ops take those."""
    from dan.fuse import _kernel_fits

    def nhwc(*shape: int) -> torch.Tensor:
        return torch.zeros(*shape).contiguous(memory_format=torch.channels_last)

    y = nhwc(2, 8, 3, 3)
    assert _kernel_fits(y, None) and _kernel_fits(y, nhwc(2, 8, 3, 3))
    assert not _kernel_fits(y, nhwc(2, 8, 1, 1)) and not _kernel_fits(y, torch.zeros(2, 8, 3, 3))
    assert not _kernel_fits(torch.zeros(2, 8, 3, 3), None) and not _kernel_fits(torch.zeros(16, 8), None)
