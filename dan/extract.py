"""Feature-extraction pipeline of :mod:`dan.features`: image files -> device batches -> frozen CNN -> store.

Stages, one code path on CPU and GPU (the input side, up to the device batches, is :mod:`dan.extract_input`; its names
are re-exported here): DataLoader workers (:class:`_ImageFiles`, :func:`_collate`) decode and resize JPEGs (PIL, with
DCT-domain downscaling when an image is >= 2x the target) into pinned uint8 NHWC batches ``[b, S, S, 3]``, or, with
``gpu_decode`` (default on CUDA), only read the files' bytes (one uint8 tensor per chunk) and the device decodes them in
a batch (:mod:`dan.jpeg`: nvJPEG, or the GPU's JPEG engines; resized to PIL's result exactly and normalised by
:class:`dan.resize.PilResize`: a Triton kernel, or matrix products where Triton is missing); with ``cpu_decode_share``
the workers decode a share of each batch (PIL) and the device resizes those too. With several workers a model batch is
read as up to 4 chunks in parallel (:func:`loader_chunks`: the first batch is ready sooner). A prefetch thread
(:class:`_Prefetch`, :class:`_Stager`) moves each chunk to the device on its own CUDA stream (:func:`staging_stream`;
non-blocking copies; uint8 0-255 normalised with the backbone's mean/std into float ``x [b, 3, S, S]``, channels_last)
while the model runs the current one (bf16 autocast on CUDA, on the stream :func:`model_stream` picks);
:func:`run_pipeline` turns each output ``[b, D, gh, gw]`` into fp16 rows ``[b, N = gh * gw, D]``, copied to pinned host
memory on a third CUDA stream (:func:`_copy_out`, overlapping the next batch's forward), that a
:class:`~dan.store_writer.StoreWriter` thread writes into the partial store with ``pwrite``, committing progress every
chunk (resumable). Unreadable images come back as ``(index, reason)`` pairs.

Also here: :func:`_check_images` (the sorted, duplicate-free ``(image_id, path)`` list every stage indexes into).
:func:`resolve_device`, :func:`keep_freed_memory` and :func:`frozen_gc` are re-exported from :mod:`dan.host`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dan.backbones import GridBackbone
from dan.extract_input import _collate, _ImageFiles, _leave_interrupts_to_the_parent, _Prefetch, _Stager
from dan.feature_config import FeatureConfig, cpu_decoded_per_batch
from dan.host import (  # noqa: F401 - frozen_gc, keep_freed_memory, resolve_device: re-exported (moved)
    frozen_gc,
    interrupt_after_fork,
    keep_freed_memory,
    resolve_device,
)
from dan.io import DataError
from dan.jpeg import build_jpeg_decoder
from dan.store import PartialStore
from dan.store_writer import StoreWriter


def _check_images(images: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
    items = sorted((int(i), p if isinstance(p, Path) else Path(p)) for i, p in images)  # Path(Path) re-parses
    if not items:
        raise DataError("no images given to extract features from")
    ids = np.array([i for i, _ in items], dtype=np.int64)
    dup = ids[1:][np.diff(ids) == 0]
    if dup.size:
        raise DataError(f"duplicate image id {int(dup[0])} in the image list")
    return items


MIN_CHUNK = 16  # images; a guess (not measured) below which a chunk's own overhead would outweigh the overlap


def loader_chunks(batch_size: int, workers: int) -> int:
    """Loader chunks per model batch: with several workers, a batch is read as up to 4 equal chunks in parallel
    (a worker reads one chunk), so the first batch arrives after a quarter of the reading, and the device starts
    decoding a chunk while the next is read. At most one chunk per worker; 1 where no split leaves ``MIN_CHUNK``
    images a chunk. (On an H200 with ResNet-152 and batch 256 the first batch took 0.19 s to read and 0.09 s to
    decode when one worker read it whole: benchmarks/results/extract_timeline_base_h200.json.)"""
    for k in (4, 2):
        if workers >= k and batch_size % k == 0 and batch_size // k >= MIN_CHUNK:
            return k
    return 1


def loader_workers(asked: int | None, cuda: bool, bytes_only: bool, cpus: int) -> int:
    """DataLoader processes: ``asked`` if given; else, feeding a GPU, 4 where the workers only read files' bytes
    (``bytes_only``: every image is decoded on the device) and 14 where they decode (all images, or a share:
    ``cpu_decode_share``), at most one per CPU; on the CPU, where the model needs the cores, at most 2."""
    if asked is not None:
        return asked
    return min(cpus, 4 if bytes_only else 14) if cuda else min(2, cpus)


def forward_padded(model: GridBackbone, x: torch.Tensor, pad_to: int, bf16: bool) -> torch.Tensor:
    """``model(x)`` for x [b, 3, S, S] -> [b, D, gh, gw], with a short batch (b < ``pad_to``) padded by zero images.

    With cuDNN's benchmark mode on, every new input shape is autotuned layer by layer. On an H100 a store's short
    tail batch took 4-5 s (book/full/02_features), most likely for that reason (not yet re-measured with padding).
    Padding keeps the one tuned shape; the padded rows are dropped (the backbones are in eval mode, so a row's
    output does not depend on the others)."""
    b = x.shape[0]
    if b < pad_to:
        pad = torch.zeros((pad_to - b, *x.shape[1:]), dtype=x.dtype, device=x.device)
        x = torch.cat([x, pad]).contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        return model(x)[:b]


def _copy_out(y: torch.Tensor, stream: torch.cuda.Stream) -> tuple[torch.Tensor, torch.cuda.Event]:
    """Start the copy of ``y`` [b, N, D] fp16 (device) into pinned host memory on ``stream``; returns the host
    tensor and an event that marks the copy's end.

    The copy waits for the compute stream's work so far (which produced ``y``) but not the other way round, so the
    next batch's forward runs while this batch leaves the GPU (a ResNet-152 batch of 256 is 205 MB).
    ``record_stream`` keeps ``y``'s memory from being reused by the compute stream before the copy has read it.
    """
    stream.wait_stream(torch.cuda.current_stream(y.device))
    rows = torch.empty(y.shape, dtype=torch.float16, pin_memory=True)
    with torch.cuda.stream(stream):
        rows.copy_(y, non_blocking=True)
        event = torch.cuda.Event()
        event.record(stream)
    y.record_stream(stream)
    return rows, event


def model_stream(device: torch.device, prioritise: bool, own: bool = False) -> torch.cuda.Stream | None:
    """The stream the model runs on. CUDA with ``prioritise``: a stream of the device's highest priority (its work waits
    for what the current stream has queued, e.g. moving the weights); the decode/resize stream keeps the default
    priority, the lowest, so where both have work queued the GPU schedules the forward's blocks first. Off by default
    since the H200 A/B of 2026-11-28: prioritised, the fused forward waited longer for its next input. CUDA with
    ``own`` (and not ``prioritise``): a stream of its own at the default priority. Unlike the current stream (the
    legacy default stream, unless a caller set another), it is non-blocking, so a library's work queued on a blocking
    stream of its own (one torchvision version's nvJPEG decoder, read in its source) does not wait for the forward;
    whether that shortens the extraction is not yet measured. None: run on the current stream (the
    CPU; both off)."""
    if device.type != "cuda" or not (prioritise or own):
        return None
    priorities = torch.cuda.Stream.priority_range()  # (lowest, highest): a lower number is a higher priority
    stream = torch.cuda.Stream(device, priority=min(priorities) if prioritise else max(priorities))
    stream.wait_stream(torch.cuda.current_stream(device))
    return stream


def staging_stream(device: torch.device, prioritise: bool) -> torch.cuda.Stream | None:
    """The stream on which the prefetch thread copies, decodes (nvImageCodec; torchvision's nvJPEG decodes on a stream
    of its own, then this one waits for it) and resizes each chunk: CUDA only, at the highest priority with
    ``prioritise``, else at the default (lowest) one, which the model's stream has too unless
    ``prioritise_model``. Why ask: in the H200 timelines of 2026-11-28, one chunk a batch, staged during a forward,
    was done only a few milliseconds after that forward ended (:func:`dan.bench.staging_table`), as if its kernels,
    queued behind the forward's, ran only after them (a guess, not measured: ``benchmarks/staging_blocks.py``); a
    higher-priority stream's blocks are scheduled first as the forward's finish. None on the CPU."""
    if device.type != "cuda":
        return None
    priorities = torch.cuda.Stream.priority_range()  # (lowest, highest): a lower number is a higher priority
    return torch.cuda.Stream(device, priority=min(priorities) if prioritise else max(priorities))


def run_pipeline(items: list[tuple[int, Path]], start: int, skipped: list[dict], model: GridBackbone,
                 device: torch.device, cfg: FeatureConfig, gpu_decode: bool, part: PartialStore, on_commit,
                 progress: bool) -> list[dict]:
    """Extract images ``start..`` into ``part``: loader workers -> prefetch thread -> model -> writer thread.
    ``gpu_decode``: the device resizes the images and decodes those the workers leave it
    (:func:`dan.feature_config.pixels_on_device`)."""
    cuda = device.type == "cuda"
    cpu_first = cpu_decoded_per_batch(cfg) if gpu_decode else 0
    workers = loader_workers(cfg.num_workers, cuda, gpu_decode and not cpu_first, os.cpu_count() or 1)
    chunks = loader_chunks(cfg.batch_size, workers)
    loader = DataLoader(_ImageFiles(items, start, model.image_size, gpu_decode, cpu_first, cfg.batch_size),
                        batch_size=cfg.batch_size // chunks,
                        shuffle=False, num_workers=workers, collate_fn=_collate, pin_memory=cuda,
                        prefetch_factor=4 * chunks if workers else None,
                        worker_init_fn=_leave_interrupts_to_the_parent if workers else None)
    cudnn_benchmark, matmul_precision = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    torch.backends.cudnn.benchmark = cuda  # fixed input shapes: let cuDNN pick its fastest kernels
    if cuda:  # PilResize's products (without Triton) on TF32 tensor cores: exact, integer inputs below 2**11
        torch.set_float32_matmul_precision("high")
    batches = writer = prefetch = bar = None
    try:
        model = model.to(device, memory_format=torch.channels_last)
        gh, gw = model.grid
        with interrupt_after_fork():  # a Jupyter interrupt during the fork was lost
            batches = iter(loader)  # loader workers fork here, before this function starts any thread
        writer = StoreWriter(part, start, skipped, cfg.commit_every_mb * 1e6, cfg.commit_every_s, on_commit)
        # after the workers' fork (an nvImageCodec decoder kept from an earlier extraction in this process has its
        # threads alive at this fork: the workers only read files and never call into it)
        decoder = build_jpeg_decoder(cfg.jpeg_decoder, device) if gpu_decode and cpu_first < cfg.batch_size else None
        prefetch = _Prefetch(batches, _Stager(items, model, device, staging_stream(device, cfg.prioritise_staging),
                                              chunks, cfg.device_resize, decoder))
        copy_stream = torch.cuda.Stream(device) if cuda else None
        compute = model_stream(device, cfg.prioritise_model, cfg.own_model_stream)
        bar = tqdm(total=len(items), initial=start, unit="img", desc="features", disable=not progress, smoothing=0.05)
        with torch.inference_mode(), keep_freed_memory() if not cuda else contextlib.nullcontext(), \
                torch.cuda.stream(compute) if compute is not None else contextlib.nullcontext():
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
                    y = forward_padded(model, x, cfg.batch_size if cuda else len(index), cuda)  # [b, D, gh, gw]
                    y = y.permute(0, 2, 3, 1).reshape(len(index), gh * gw, model.dim)  # [b, N, D]
                    y = y.float().clamp_(-65504.0, 65504.0).to(torch.float16)
                    if cuda:  # copy into pinned memory on its own stream; the writer waits on the event
                        rows, done_event = _copy_out(y, copy_stream)
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
        torch.set_float32_matmul_precision(matmul_precision)
