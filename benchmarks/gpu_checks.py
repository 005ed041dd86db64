"""Correctness of the GPU-only code paths, on the device itself, before any speed is measured.

The text encoder's ``aligned`` LSTM path (``dan.models.TextEncoder._lstm``) is what a GPU runs; the unit tests check
it against packing on the CPU only. This compares the two paths on ``--device`` at the paper's sizes: outputs, the
zeros on padding, and the gradients of the input and of every LSTM weight (relative max difference; cuDNN may
reduce in another order than the packed kernels). It also runs a few r-DAN training steps with the optimiser that
``dan.train.build_optimizer`` makes on the device (the fused kernel) and with PyTorch's multi-tensor one, from the
same weights on the same batches, and compares the weights after them. And it checks the device path's resize
(``dan.resize.PilResize``: Triton kernel; matrix products with TF32 off and on) against Pillow pixel for pixel,
and times it against torch's antialiased ``interpolate`` (the resize the extraction used before) on a model
batch of 256 640 x 480 images (4 chunks of 64, as the loader hands them over). And the fused ResNet-152
(``dan.fuse``, its Triton kernel) against the eager one in bf16, both measured against float32, and timed per batch.
And it reports the JPEG decoders' (``dan.jpeg``) differences from Pillow and their rates (not a check), and which
step of the extraction's input staging holds the host while the GPU is busy (``benchmarks/staging_blocks.py``; not
a check either).
Writes a JSON result and exits with 1 if a check fails.

    python benchmarks/gpu_checks.py --device cuda --out gpu_checks.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dan.config import TrainConfig  # noqa: E402
from dan.io import write_json_atomic  # noqa: E402
from dan.models import TextEncoder, build_model  # noqa: E402
from dan.train import build_optimizer  # noqa: E402


def lstm_paths(device: str, batch: int = 128, width: int = 14, dim: int = 512, seed: int = 0) -> dict:
    """Largest relative difference between the aligned and the packed LSTM path (output, input and weight grads)."""
    torch.manual_seed(seed)
    enc = TextEncoder(vocab_size=10, embed_dim=dim, hidden_dim=dim, dropout=0.0).to(device)
    lengths = torch.randint(1, width + 1, (batch,))
    lengths[0] = width  # at least one full-width text
    x = torch.randn(batch, width, dim, device=device)
    probe = torch.randn(batch, width, 2 * dim, device=device)
    runs = {}
    for aligned in (False, True):
        enc.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = enc._lstm(xi, lengths, width, aligned=aligned)
        (out * probe).sum().backward()
        runs[aligned] = {"output": out.detach(), "input grad": xi.grad,
                         **{f"grad {n}": p.grad.clone() for n, p in enc.lstm.named_parameters()}}

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))

    pad = torch.arange(width)[None, :] >= lengths[:, None]
    return {"rel_diff": {k: rel(runs[True][k], runs[False][k]) for k in runs[False]},
            "padding_max_abs": float(runs[True]["output"][pad.to(device)].abs().max()) if pad.any() else 0.0}


def optimizer_paths(device: str, steps: int = 3, batch: int = 32, seed: int = 0) -> dict:
    """Largest relative difference of the weights after ``steps`` SGD steps (paper's momentum, weight decay, lr 0.1)
    with ``build_optimizer``'s choice for ``device`` against the multi-tensor kernel; dropout off."""
    dev = torch.device(device)
    cfg = TrainConfig(task="vqa", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
    torch.manual_seed(seed)
    regions = torch.randn(steps, batch, 196, 256, device=dev)  # [steps, B, N, D]
    tokens = torch.randint(1, 50, (steps, batch, 9), device=dev)
    lengths = torch.full((batch,), 9)
    targets = torch.randint(0, 20, (steps, batch), device=dev)
    finals, kinds = {}, {}
    for name in ("built", "foreach"):
        torch.manual_seed(seed)
        model = build_model("vqa", 50, 256, num_answers=20, hidden_dim=64, steps=2, dropout=0.0).to(dev)
        params = list(model.parameters())
        opt = build_optimizer(cfg, params, dev) if name == "built" else torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
        kinds[name] = "fused" if opt.param_groups[0].get("fused") else ("default" if name == "built" else "foreach")
        for s in range(steps):
            loss = torch.nn.functional.cross_entropy(model(regions[s], tokens[s], lengths).logits, targets[s])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        finals[name] = [p.detach().clone() for p in params]
    diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
               for a, b in zip(finals["built"], finals["foreach"], strict=True))
    return {"built": kinds["built"], "against": kinds["foreach"], "steps": steps, "rel_diff_max": diff}


def median_ms(fn, dev: torch.device, reps: int) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` timed calls after two warm-up calls (coefficients built, kernels
    compiled and chosen), the device synchronised around each."""
    times = []
    for k in range(reps + 2):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if k >= 2:
            times.append(time.perf_counter() - t)
    return round(1e3 * sorted(times)[len(times) // 2], 2)


def resize_paths(device: str, size: int = 448, reps: int = 10) -> dict:
    """Pixels where ``PilResize`` on ``device`` differs from Pillow (its methods there: the Triton kernel on CUDA,
    the matrix products with matmul precision highest and high), and median milliseconds per 256 images (4 calls
    of 64 uint8 640 x 480 images on the device -> normalised model input, as the extraction stages them) of each
    method and of torch's ``interpolate`` (``antialias_resize``, the extraction's resize before)."""
    import numpy as np
    from PIL import Image

    from dan.resize import PilResize, antialias_resize, normalise_, triton

    dev, rng = torch.device(device), np.random.default_rng(0)
    methods = ["kernel", "products"] if dev.type == "cuda" and triton is not None else ["products"]
    shapes = [(480, 640), (640, 480), (375, 500), (427, 640)]
    imgs = {hw: [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(3)] for hw in shapes}
    mismatched = {}
    for method, precision in [(m, p) for m in methods for p in ("highest", "high")]:
        if method == "kernel" and precision == "high":
            continue  # no matrix products in it
        torch.set_float32_matmul_precision(precision)
        r = PilResize(size, dev, method=method)
        for hw, group in imgs.items():
            got = r([torch.from_numpy(a).permute(2, 0, 1).to(dev) for a in group]).permute(0, 2, 3, 1).cpu().numpy()
            ref = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR))
                            for a in group])
            ran = method if r.method == method else f"{method} -> {r.method}"  # a kernel that failed falls back
            mismatched[f"{ran} {precision} {hw[0]}x{hw[1]}"] = int((got != ref).sum())
    torch.set_float32_matmul_precision("high")  # as the extraction runs it
    scale = torch.tensor([0.0171, 0.0175, 0.0174], device=dev).view(1, 3, 1, 1)
    shift = torch.tensor([-2.12, -2.04, -1.80], device=dev).view(1, 3, 1, 1)
    normalised = {}  # the model input each method writes (the kernel: straight into NHWC) against the products'
    for hw, group in imgs.items():
        ims = [torch.from_numpy(a).permute(2, 0, 1).to(dev) for a in group]
        want = PilResize(size, dev, method="products", normalise=(scale, shift))(ims)
        for m in methods:
            got = PilResize(size, dev, method=m, normalise=(scale, shift))(ims)
            normalised[f"{m} {hw[0]}x{hw[1]}"] = float((got - want).abs().max())  # one rounding vs two at most
    chunk = [torch.randint(0, 256, (3, 480, 640), dtype=torch.uint8, device=dev) for _ in range(64)]
    fns = {m: PilResize(size, dev, method=m, normalise=(scale, shift)) for m in methods}
    fns["antialias"] = lambda ims: normalise_(antialias_resize(ims, size), scale, shift)
    if dev.type != "cuda":
        reps = 1  # a rehearsal: the CPU is slow at this, and its timings say nothing about a GPU
    ms = {}
    for name, fn in fns.items():
        took = median_ms(lambda fn=fn: [fn(chunk) for _ in range(4)], dev, reps)
        ran = getattr(fn, "method", name)
        ms[name if ran == name else f"{name} -> {ran}"] = took
    torch.set_float32_matmul_precision("highest")
    return {"mismatched_pixels": mismatched, "normalised_max_abs_diff": normalised, "ms_per_256_images": ms,
            "image": "640x480 -> 448x448, normalised"}


def fused_paths(device: str, size: int = 448, batch: int = 256, reps: int = 5) -> dict:
    """ResNet-152 (res5c, seeded random weights, BatchNorm statistics perturbed so that folding is not trivial)
    fused (:mod:`dan.fuse`: the Triton kernel on CUDA) and eager, both in bf16 autocast and channels_last as the
    extraction runs them: each one's relative error against the eager trunk in float32 (the fused one should be
    about as close as the eager one), whether the kernel ran, and median milliseconds per batch."""
    import dan.fuse
    from dan.backbones import build_backbone
    from dan.fuse import fuse_resnet

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if not cuda:  # a rehearsal: tiny sizes, no timing worth the name
        size, batch, reps = 64, 2, 1
    eager = build_backbone("resnet152", "res5c", size, random_weights=True, fuse=False)
    g = torch.Generator().manual_seed(1)
    for m in eager.trunk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) * 0.5 + 0.5
            m.bias.data = torch.rand(m.num_features, generator=g) * 0.4 - 0.2
    models = {"eager": eager.trunk, "fused": fuse_resnet(eager.trunk)}
    for k in models:
        models[k] = models[k].to(dev, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
    x = x.to(dev).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = models["eager"](x[:8]).float()  # float32 eager: the reference
        err, ms = {}, {}
        for name, model in models.items():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                out = model(x[:8]).float()
            err[name] = float((out - ref).norm() / ref.norm())
            def forward(model=model):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                    model(x)
            ms[name] = median_ms(forward, dev, reps)
    return {"rel_err_vs_fp32_eager": err, "kernel_ran": cuda and not dan.fuse._kernel_failed,
            "ms_per_batch": ms, "batch": batch, "image_size": size}


def decode_paths(device: str, n: int = 256, reps: int = 10) -> dict:  # n >= 64
    """The device path's JPEG decoders (:mod:`dan.jpeg`) on ``n`` synthetic 640 x 480 JPEGs (64 distinct, as the
    extraction benchmark makes them): the share of decoded values that differ from Pillow's (libjpeg-turbo) and the
    largest difference, and median milliseconds per ``n`` images (4 calls of n/4, as the loader hands them over).
    nvImageCodec also runs with its hardware engines only (``hw_only``: None per image where the GPU has none or
    they refuse the file) and with CUDA only (``cuda_only``), so that the result says which did the work. Reported,
    not checked: a GPU decoder may round its IDCT or colour conversion differently from libjpeg."""
    import tempfile

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from extract import synthetic_jpegs

    from dan.jpeg import NvImageCodecJpeg, build_jpeg_decoder, plain_jpeg_bytes

    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [p for _, p in synthetic_jpegs(Path(tmp), 64)]
        data = [torch.from_numpy(plain_jpeg_bytes(p)) for p in paths]
        ref = [np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in paths]
    data = [data[k % len(data)] for k in range(n)]
    if dev.type == "cuda":
        data = [t.pin_memory() for t in data]
    decoders: dict[str, object] = {"torchvision": build_jpeg_decoder("torchvision", dev)}
    out: dict[str, dict] = {}
    kinds = [("nvimgcodec", None, "")]
    if dev.type == "cuda":  # which of its backends did the work: each alone (hardware engines: None without them)
        kinds += [("nvimgcodec hw_only", ("hw",), ""), ("nvimgcodec cuda_only", ("cuda",), ""),
                  ("nvimgcodec hw_only fancy_upsampling", ("hw",), ":fancy_upsampling=1")]  # libjpeg's 4:2:0 chroma?
    for name, backends, options in kinds:
        try:
            decoders[name] = NvImageCodecJpeg(dev, backends, options)
        except Exception as exc:  # noqa: BLE001 - not installed, or nothing decodes on this device: say so
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    q = max(1, n // 4)
    for name, dec in decoders.items():
        try:  # one decoder that raises costs only its own line
            imgs = dec(data[:len(ref)])  # the distinct images, once each (n >= 64)
            ok = [(a, b) for a, b in zip(imgs, ref, strict=True) if a is not None]
            differ = sum(int((a.cpu().numpy() != b).sum()) for a, b in ok)
            total = sum(b.size for _, b in ok)
            worst = max((int(np.abs(a.cpu().numpy().astype(int) - b).max()) for a, b in ok), default=None)
            ms = median_ms(lambda dec=dec: [dec(data[i:i + q]) for i in range(0, n, q)], dev,
                           reps if dev.type == "cuda" else 1)
        except Exception as exc:  # noqa: BLE001 - reported in its place
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[name] = {"decoded": len(ok), "of": len(imgs), "values_differing_from_pillow": differ / max(total, 1),
                     "max_abs_diff": worst, "ms_per_n": ms, "img_s": round(n / ms * 1e3) if ms else None}
    return {"n": n, "image": "640x480 JPEG quality 90", "decoders": out}


def staging_paths(device: str) -> dict:
    """benchmarks/staging_blocks.py: which step of the extraction's input staging holds the host while the GPU is
    busy with other work (reported, not checked)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from staging_blocks import staging_blocking

    return staging_blocking(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest relative difference accepted")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    torch.backends.cudnn.allow_tf32 = False  # a check of the index maps, not of TF32 rounding
    torch.set_float32_matmul_precision("highest")
    res: dict = {"device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu",
                 "tolerance": a.tolerance, "complete": False}
    sections = (("aligned_vs_packed_lstm", lstm_paths), ("optimizer", optimizer_paths), ("resize", resize_paths),
                ("fused_resnet", fused_paths), ("jpeg_decoders", decode_paths), ("staging_blocking", staging_paths))
    for key, check_fn in sections:  # each section alone: one that raises costs only itself (never yet run on a GPU)
        try:
            res[key] = check_fn(a.device)
        except Exception as exc:  # noqa: BLE001 - recorded and reported as a failure below
            res[key] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{key} on {res['device']}: FAILED with {res[key]['error']}")
        if a.out:  # after each section, so that a crash or a hang in a later one leaves these
            write_json_atomic(a.out, res, indent=1)
    res["complete"] = True
    failed = {k: "error" in res[k] for k, _ in sections}
    check, opt, resize, fused = (res[k] for k in ("aligned_vs_packed_lstm", "optimizer", "resize", "fused_resnet"))
    lstm_ok = not failed["aligned_vs_packed_lstm"] and max(check["rel_diff"].values()) <= a.tolerance \
        and check["padding_max_abs"] == 0.0
    opt_ok = not failed["optimizer"] and opt["rel_diff_max"] <= a.tolerance \
        and (opt["built"] == "fused") == a.device.startswith("cuda")
    fell_back = not failed["resize"] and any("->" in k for k in resize["mismatched_pixels"])  # no kernel here
    resize_ok = not failed["resize"] and not any(resize["mismatched_pixels"].values()) and not fell_back \
        and max(resize["normalised_max_abs_diff"].values()) <= 1e-5
    fused_ok = not failed["fused_resnet"] \
        and fused["rel_err_vs_fp32_eager"]["fused"] <= 2 * fused["rel_err_vs_fp32_eager"]["eager"] + 1e-4 \
        and fused["kernel_ran"] == a.device.startswith("cuda")
    res["ok"] = lstm_ok and opt_ok and resize_ok and fused_ok  # the decoders are reported, not checked
    if not failed["aligned_vs_packed_lstm"]:
        print(f"aligned vs packed LSTM on {res['device']}: largest relative difference "
              f"{max(check['rel_diff'].values()):.2e} (tolerance {a.tolerance:g}), padding "
              f"{check['padding_max_abs']:g}: " + ("ok" if lstm_ok else "FAILED"))
    if not failed["optimizer"]:
        print(f"training optimiser ({opt['built']}) vs {opt['against']} after {opt['steps']} r-DAN steps: largest "
              f"relative weight difference {opt['rel_diff_max']:.2e}: " + ("ok" if opt_ok else "FAILED"))
    if not failed["resize"]:
        print(f"PIL-exact resize on {res['device']}: pixels differing from Pillow {resize['mismatched_pixels']}, "
              f"normalised input against the products' {resize['normalised_max_abs_diff']}: "
              + ("ok" if resize_ok else "FAILED") + f"; ms per 256 images {resize['ms_per_256_images']}")
    if not failed["fused_resnet"]:
        print(f"fused ResNet-152 on {res['device']}: relative error against float32 eager "
              f"{fused['rel_err_vs_fp32_eager']}, kernel ran: {fused['kernel_ran']}: "
              + ("ok" if fused_ok else "FAILED")
              + f"; ms per batch of {fused['batch']} at {fused['image_size']} px {fused['ms_per_batch']}")
    for name, d in res["jpeg_decoders"].get("decoders", {}).items():  # reported, not checked (see decode_paths)
        print(f"JPEG decoder {name} on {res['device']}: " + (d["error"] if "error" in d else
              f"{d['decoded']}/{d['of']} decoded, {d['values_differing_from_pillow']:.2%} of values differ from "
              f"Pillow's (at most by {d['max_abs_diff']}), {d['img_s']} img/s"))
    for name, row in res["staging_blocking"].get("steps", {}).items():  # reported, not checked
        print(f"staging step {name} on {res['device']}: " + (row["error"] if "error" in row else ", ".join(
            f"{k} {v['host_ms']} ms (done {v.get('done_ms', '?')}) of {v['busy_ms']} ms busy"
            + (" (BLOCKED)" if v["blocked"] else "") + (" (STARVED)" if v.get("starved") else "")
            for k, v in row.items() if isinstance(v, dict)) + f"; idle {row['idle_host_ms']} ms"))
    if "skipped" in res["staging_blocking"]:
        print(f"staging steps: {res['staging_blocking']['skipped']}")
    if a.out:
        write_json_atomic(a.out, res, indent=1)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
