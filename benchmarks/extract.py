"""Feature-extraction speed: the model-only ceiling and the end-to-end rate, measured in one run.

* model-only: random normalised tensors already on the device, same batch size, same precision and memory format
  (channels_last; bf16 autocast on CUDA), timed forward passes including the on-device fp16 conversion;
* end-to-end: N synthetic COCO-like 640 x 480 JPEGs (generated here, deterministic) -> a finished feature store
  (decode, resize, transfer, model, device-to-host copy, writes, fsync, publish), timed around
  ``dan.features.extract_features`` after a warm-up run on a few batches;
* steady: the end-to-end pipeline's rate between its first and last intermediate commit (every
  ``commit_every_mb`` of features), i.e. without the fixed start-up and final-flush seconds, which a short run
  (8,192 images ~ 5 s on a GPU) weighs far more than a real split (COCO train2014: 82,783 images);
* check: image k is a byte copy of image k % 64, so the finished store's copies must equal their originals up to
  rounding; a mismatch (rows misplaced, or read before their device-to-host copy landed) fails the run (exit 3).

Prints both rates (img/s) and their ratio and writes them, with the device, backbone, batch and command, to JSON.

    python benchmarks/extract.py --num-images 64 --device cpu                      # default backbone, CPU
    python benchmarks/extract.py --backbone resnet152 --random-weights --num-images 8192 --batch-size 256 \\
        --device cuda --out results/bench/extract_h200.json                       # the paper's backbone, GPU
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from timeline import Timeline, record, summarise  # noqa: E402  (benchmarks/timeline.py)

from dan.backbones import build_backbone  # noqa: E402
from dan.bench import COPY_TOLERANCE, copy_consistency, extraction_rates, steady_rate  # noqa: E402
from dan.extract_input import decoded_by_workers  # noqa: E402
from dan.feature_config import cpu_decoded_per_batch, decodes_on_device  # noqa: E402
from dan.features import FEATURE_PROFILES, FeatureConfig, extract_features, keep_freed_memory, resolve_device  # noqa: E402
from dan.io import DanError, write_json_atomic  # noqa: E402
from dan.jpeg import hardware_engines  # noqa: E402

DISTINCT = 64  # distinct synthetic images; the rest are byte copies under other names


def synthetic_jpegs(folder: Path, n: int, seed: int = 0) -> list[tuple[int, Path]]:
    """``n`` 640 x 480 JPEGs (quality 90, ~60-120 kB like COCO): blurred noise background, shapes, fine noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(min(n, DISTINCT)):
        low = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        im = Image.fromarray(low).resize((640, 480), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(8))
        draw = ImageDraw.Draw(im)
        for _ in range(8):
            x, y, s = int(rng.integers(0, 560)), int(rng.integers(0, 400)), int(rng.integers(30, 160))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + s, y + s], fill=fill)
        arr = np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (480, 640, 3))
        path = folder / "tmp.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
        blobs.append(path.read_bytes())
    items = []
    for k in range(n):
        path = folder / f"COCO_train2014_{k + 1:012d}.jpg"
        if not path.is_file() or path.stat().st_size != len(blobs[k % len(blobs)]):
            path.write_bytes(blobs[k % len(blobs)])
        items.append((k + 1, path))
    (folder / "tmp.jpg").unlink()
    return items


def model_only_rate(model, device: torch.device, batch: int, seconds: float) -> float:
    """Images/s of forward passes on random tensors already on ``device`` (after warm-up), with cuDNN's kernel
    search on as the extraction has it (``dan.extract.run_pipeline``): the ceiling and the pipeline use the same
    kernels."""
    cuda = device.type == "cuda"
    x = torch.randn(batch, 3, model.image_size, model.image_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                y = model(x)
            return y.permute(0, 2, 3, 1).float().clamp_(-65504, 65504).to(torch.float16)

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda
    with keep_freed_memory():  # as extract_features does on the CPU
        try:
            return _timed_steps(step, sync, cuda, batch, seconds)
        finally:
            torch.backends.cudnn.benchmark = benchmark


def _timed_steps(step, sync, cuda: bool, batch: int, seconds: float) -> float:  # noqa: ANN001
    """Images/s of ``step()`` after 3 warm-up calls (cuDNN's search among them), synchronised every 5 on CUDA."""
    for _ in range(3):
        step()
    sync()
    iters, start = 0, time.perf_counter()
    while iters < 3 or time.perf_counter() - start < seconds:
        step()
        iters += 1
        if not cuda or iters % 5 == 0:
            sync()
    sync()
    return iters * batch / (time.perf_counter() - start)


KERNEL_GROUPS = (  # (group, name fragments): the first group whose fragment a kernel's name holds
    ("resize (ours)", ("_resample_kernel",)),
    ("model bias+ReLU (ours)", ("_bias_act_kernel",)),  # dan.fuse: BatchNorm's shift, residual, ReLU
    ("jpeg decode", ("nvjpeg", "jpeg")),
    ("model (conv/gemm)", ("conv", "gemm", "cutlass", "cudnn", "xmma", "implicit", "wgrad", "dgrad", "sm90", "sm80")),
    ("copies", ("memcpy", "memset", "copy", "cat")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "reduce", "batch_norm", "bn_", "relu", "add")),
)


def kernel_group(name: str) -> str:
    low = name.lower()
    return next((g for g, frags in KERNEL_GROUPS if any(f in low for f in frags)), "other")


def profile_extraction(items, work: Path, cfg, model) -> dict:
    """Run one more extraction of ``items`` under torch.profiler (after the timed one: the profiler slows it) and
    sum the device time of its kernels and copies by group (:data:`KERNEL_GROUPS`) and by name, per model batch.
    On CUDA the model's own time per batch, set beside the model-only batch time, says how much the forward lost
    to sharing the GPU; the other groups say what it shared it with."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available() and cfg.device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    shutil.rmtree(work / "profiled", ignore_errors=True)
    start = time.perf_counter()
    with profile(activities=acts) as prof:
        extract_features(items, work / "profiled", cfg, backbone=model, progress=False)
    wall = time.perf_counter() - start
    shutil.rmtree(work / "profiled", ignore_errors=True)
    batches = -(-len(items) // cfg.batch_size)
    by_name: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type.name == "CUDA":
            entry = by_name.setdefault(e.name[:90], [0.0, 0])
            entry[0] += e.time_range.elapsed_us() / 1e3
            entry[1] += 1
    groups: dict[str, float] = {}
    for name, (ms, _) in by_name.items():
        groups[kernel_group(name)] = groups.get(kernel_group(name), 0.0) + ms
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:15]
    return {"images": len(items), "batches": batches, "wall_s": round(wall, 3),
            "device_ms_per_batch_by_group": {g: round(ms / batches, 2) for g, ms in sorted(groups.items())},
            "top_kernels": [{"name": n, "ms_per_batch": round(ms / batches, 3),
                             "calls_per_batch": round(c / batches, 1)} for n, (ms, c) in top]}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="efficientnet-lite0",
                   choices=["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "resnet152", "vgg19"])
    p.add_argument("--layer")
    p.add_argument("--image-size", type=int, help="default: 224 for EfficientNet-Lite, 448 for ResNet/VGG")
    p.add_argument("--num-images", type=int, default=64)
    p.add_argument("--batch-size", type=int, help="default: 32 on CPU, 256 on CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--gpu-decode", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device-resize", choices=["pil", "antialias"],
                   help="resize after device decoding (default: the package's, pil)")
    p.add_argument("--jpeg-decoder", choices=["torchvision", "nvimgcodec"],
                   help="device decoding (default: the package's, torchvision; nvimgcodec uses the GPU's JPEG "
                        "engines: dan.jpeg)")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="ResNet-152 with BatchNorm folded and bias/residual/ReLU fused (dan.fuse; default) or eager")
    p.add_argument("--prioritise-model", action=argparse.BooleanOptionalAction,
                   help="CUDA: run the model on a high-priority stream (dan.extract.model_stream; default: the "
                        "package's, off)")
    p.add_argument("--own-model-stream", action=argparse.BooleanOptionalAction,
                   help="CUDA: run the model on a non-blocking stream of its own at normal priority, not the current "
                        "(default) stream (dan.extract.model_stream; default: the package's, off)")
    p.add_argument("--prioritise-staging", action=argparse.BooleanOptionalAction,
                   help="CUDA: run the decode/resize stream at the highest priority (dan.extract.staging_stream; "
                        "default: the package's, off)")
    p.add_argument("--cpu-decode-share", type=float,
                   help="with device decoding: the share (0-1) of each batch decoded by PIL in the DataLoader "
                        "workers instead, resized on the device (dan.feature_config.cpu_decoded_per_batch; default: "
                        "the package's, 0)")
    p.add_argument("--freeze-gc", action=argparse.BooleanOptionalAction, default=True,
                   help="host: keep the objects alive at the start out of the cyclic GC's view during the run "
                        "(default; dan.host.frozen_gc)")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--weights")
    p.add_argument("--model-seconds", type=float, default=5.0, help="how long to time the model-only loop")
    p.add_argument("--workdir", help="where images and the store go (default: a temporary folder, removed)")
    p.add_argument("--commit-every-mb", type=float, help="store commit interval (default: the profile's, 256 MB)")
    p.add_argument("--timeline", action="store_true",
                   help="record a host-side timeline of the timed run (benchmarks/timeline.py) into the JSON")
    p.add_argument("--profile-images", type=int, default=0,
                   help="afterwards, extract this many of the images again under torch.profiler and report the "
                        "device time by kernel group and name per batch (0: no profile)")
    p.add_argument("--out", help="JSON file for the results")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.num_images < 1 or args.profile_images < 0 or args.model_seconds <= 0:
        p.error(f"--num-images must be >= 1 (got {args.num_images}), --profile-images >= 0 (got "
                f"{args.profile_images}) and --model-seconds > 0 (got {args.model_seconds})")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dan-bench-"))
    try:
        return _run(args, argv, work)
    finally:
        if not args.workdir:  # also after an error
            shutil.rmtree(work, ignore_errors=True)


def decoder_kinds(cfg: FeatureConfig, device: torch.device, n: int) -> np.ndarray | None:
    """For the copy check: 1 for each of the ``n`` images (in id order) the loader workers decode, 0 for those the
    device decodes, where the configuration splits the batches (``cpu_decode_share``); None where one decoder makes
    every image."""
    n_cpu = cpu_decoded_per_batch(cfg) if decodes_on_device(cfg, device) else 0
    return decoded_by_workers(np.arange(n), n_cpu, cfg.batch_size).astype(np.int64) if n_cpu else None


def run_config(args: argparse.Namespace, device: torch.device) -> FeatureConfig:
    """The extraction's configuration: the package's (the default or the real profile's, by backbone) with the
    flags given; a flag left out keeps the package's default."""
    lite = args.backbone.startswith("efficientnet-lite")
    base = FEATURE_PROFILES["default"] if lite else FEATURE_PROFILES["real"]
    return replace(base, backbone=args.backbone, layer=args.layer or (base.layer if lite else None),
                   image_size=args.image_size or (224 if lite else 448), device=str(device),
                   batch_size=args.batch_size or (256 if device.type == "cuda" else 32),
                   num_workers=args.num_workers, gpu_decode=args.gpu_decode, weights=args.weights,
                   device_resize=args.device_resize or base.device_resize,
                   jpeg_decoder=args.jpeg_decoder or base.jpeg_decoder,
                   random_weights=args.random_weights, fuse=args.fuse, freeze_gc=args.freeze_gc,
                   prioritise_model=base.prioritise_model if args.prioritise_model is None else args.prioritise_model,
                   own_model_stream=base.own_model_stream if args.own_model_stream is None else args.own_model_stream,
                   prioritise_staging=base.prioritise_staging if args.prioritise_staging is None
                   else args.prioritise_staging,
                   cpu_decode_share=base.cpu_decode_share if args.cpu_decode_share is None else args.cpu_decode_share,
                   commit_every_mb=base.commit_every_mb if args.commit_every_mb is None else args.commit_every_mb,
                   ).validate()


def _run(args: argparse.Namespace, argv: list[str] | None, work: Path) -> int:
    try:
        device = resolve_device(args.device)
        cfg = run_config(args, device)
        t0 = time.perf_counter()
        items = synthetic_jpegs(work / "images", args.num_images)
        gen_s = time.perf_counter() - t0
        mean_kb = np.mean([p.stat().st_size for _, p in items[:DISTINCT]]) / 1e3
        model = build_backbone(cfg.backbone, cfg.layer, cfg.image_size, cfg.weights, cfg.random_weights,
                               fuse=cfg.fuse)
        model = model.to(device, memory_format=torch.channels_last)
        ceiling = model_only_rate(model, device, cfg.batch_size, args.model_seconds)
        warm = items[: min(len(items), 2 * cfg.batch_size)]
        shutil.rmtree(work / "warmup", ignore_errors=True)  # a kept --workdir's warm-up store would be reused as is
        extract_features(warm, work / "warmup", cfg, backbone=model, progress=False)
        shutil.rmtree(work / "store", ignore_errors=True)
        commits: list[tuple[float, int]] = []  # (seconds since start, images durable) at each commit
        tl = Timeline()
        with record(tl) if args.timeline else contextlib.nullcontext():
            t0 = tl.start = time.perf_counter()
            store = extract_features(items, work / "store", cfg, backbone=model, progress=False,
                                     on_commit=lambda done: commits.append((time.perf_counter() - t0, done)))
            e2e_s = time.perf_counter() - t0
    except DanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    e2e = len(items) / e2e_s
    steady = steady_rate(commits)
    check = copy_consistency(store, DISTINCT, kinds=decoder_kinds(cfg, device, len(items))) \
        if len(items) > DISTINCT else None
    bad = check is not None and not check["rel_diff"] <= COPY_TOLERANCE
    result = {
        "device": device_name(device), "device_type": device.type, "backbone": cfg.backbone,
        "layer": store.meta["layer"], "image_size": cfg.image_size, "grid": store.meta["grid"], "dim": store.dim,
        "batch_size": cfg.batch_size, "num_images": len(items), "jpeg_size": "640x480",
        "jpeg_mean_kb": round(mean_kb, 1),
        "decode": store.meta["decode"], "precision": store.meta["precision"], "inference": store.meta["inference"],
        "jpeg_hw_engines": None,  # nvImageCodec: probed after the first write (a probe that hangs loses nothing)
        **extraction_rates(len(items), e2e_s, ceiling, cfg.batch_size, commits), "generate_s": round(gen_s, 2),
        "commits": len(commits), "commit_every_mb": cfg.commit_every_mb, "copy_check": check,
        "store_mb": round((work / "store" / "features.npy").stat().st_size / 1e6, 1),
        "timeline": summarise(tl, e2e_s) if args.timeline else None,
        "timeline_events": [(round(t, 4), n) for t, n in tl.events] if args.timeline else None,
        "timeline_gc": [(round(t, 4), g, round(d, 4)) for t, g, d in tl.gc] if args.timeline else None,
        "kernel_profile": None,  # filled in after the profile pass (--profile-images), if it finishes
        "profile_images": args.profile_images,
        "config": asdict(cfg), "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "command": "python " + " ".join(shlex.quote(a) for a in ["benchmarks/extract.py",
                                                                  *(sys.argv[1:] if argv is None else argv)]),
        "copy_check_failed": bad,  # dan.bench.target_table does not judge such a run; collect.py skips it
    }
    print(f"device      {result['device']}\nbackbone    {cfg.backbone}/{result['layer']} @ {cfg.image_size} px -> "
          f"{result['grid'][0]}x{result['grid'][1]}x{store.dim}, batch {cfg.batch_size}, {len(items)} JPEGs 640x480 "
          f"(~{mean_kb:.0f} kB), decode: {result['decode']}, {result['precision']}")
    print(f"model-only  {ceiling:9.1f} img/s\nend-to-end  {e2e:9.1f} img/s  ({e2e_s:.2f} s)\n"
          f"ratio       {e2e / ceiling:9.3f}")
    if steady:
        print(f"steady      {steady:9.1f} img/s  (ratio {steady / ceiling:.3f}; between the first and the last "
              f"intermediate commit of {len(commits)}; start-up, fill and final flush add "
              f"{result['fixed_overhead_s']:.2f} s)")
    if check is not None:
        print(f"check       {check['compared']} byte-identical copies vs their originals: largest difference "
              f"{check['rel_diff']:.3g} x the spread between images ({'FAILED' if bad else 'ok'})")
    if args.timeline:
        print("timeline    " + ", ".join(f"{k} {v}" for k, v in result["timeline"].items()))
    if args.out:  # now, so that a run cut off during the profile pass still leaves its measurement
        write_json_atomic(args.out, result, indent=1)
        print(f"wrote {args.out}")
    if cfg.jpeg_decoder == "nvimgcodec" and device.type == "cuda":
        result["jpeg_hw_engines"] = hardware_engines(device)
        print(f"nvImageCodec decodes on the hardware JPEG engines alone: {result['jpeg_hw_engines']}")
        if args.out:
            write_json_atomic(args.out, result, indent=1)
    profiled = None
    if args.profile_images:
        try:
            profiled = result["kernel_profile"] = profile_extraction(items[: args.profile_images], work, cfg, model)
        except DanError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3 if bad else 2
    if profiled:
        print(f"profile     {profiled['images']} images, {profiled['wall_s']} s under the profiler; device ms per "
              f"batch by group {profiled['device_ms_per_batch_by_group']} (model-only batch "
              f"{1e3 * cfg.batch_size / ceiling:.1f} ms)")
        if args.out:
            write_json_atomic(args.out, result, indent=1)
            print(f"wrote the profile into {args.out}")
    if bad:
        print(f"error: the store's copies of one image differ by more than {COPY_TOLERANCE} x the spread between "
              "images: rows were written to the wrong place or read before their copy finished", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
