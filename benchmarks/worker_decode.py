"""How fast the extraction's DataLoader workers turn JPEGs into pixels, with and without PIL's resize (CPU only).

Why: ``FeatureConfig.cpu_decode_share`` has the loader workers decode a share of each batch with PIL and leaves the
resize (PIL-exact, :class:`dan.resize.PilResize`) to the GPU, so that less of the staging waits behind the forward.
That only helps if the host's CPUs can decode that share at the extraction's rate. This measures, in one run on the
benchmark's own 640x480 JPEGs (:func:`extract.synthetic_jpegs`, ~60-120 kB like COCO):

- per image, in this process: :func:`dan.images.read_image` with and without the resize (ms per image);
- the loader as the extraction builds it (:class:`dan.extract_input._ImageFiles`, :func:`_collate`, ``--workers``
  processes, chunks of ``--chunk`` images): every image decoded and resized by the workers (the PIL path), and every
  image decoded but not resized (``cpu_decode_share=1``), in images per second, after each worker's first chunk.

It prints both and their ratios, and with ``--out`` writes them as JSON. Where CUDA is available the loader pins
each chunk as the extraction's does (``pin_memory=True``: one more copy of every chunk, in the main process), and
``pinned`` says so; nothing runs on the GPU.

    python benchmarks/worker_decode.py --num-images 2048 --workers 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from extract import synthetic_jpegs  # noqa: E402  (benchmarks/extract.py)
from torch.utils.data import DataLoader  # noqa: E402

from dan.extract_input import _collate, _ImageFiles  # noqa: E402
from dan.images import read_image  # noqa: E402
from dan.io import write_json_atomic  # noqa: E402


def per_image_ms(items: list[tuple[int, Path]], size: int, resize: bool, repeats: int = 3) -> float:
    """Median over ``repeats`` passes of the mean milliseconds :func:`read_image` takes per image, in this process."""
    passes = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _, path in items:
            read_image(path, size, resize=resize)
        passes.append(1e3 * (time.perf_counter() - t) / len(items))
    return float(np.median(passes))


def loader_rate(items: list[tuple[int, Path]], size: int, resize: bool, workers: int, chunk: int,
                pin: bool = False) -> float:
    """Images per second through the extraction's loader; ``resize``: the PIL path (workers decode and resize), else
    every image decoded by the workers and left unresized. The clock starts when the first ``max(workers, 1)``
    chunks have arrived (the workers start together, so their first chunks are ready at about the same time:
    counting them would overstate the rate) and those chunks are not counted."""
    files = _ImageFiles(items, 0, size, raw_jpeg=not resize, cpu_first=0 if resize else chunk, batch=chunk)
    loader = DataLoader(files, batch_size=chunk, num_workers=workers, collate_fn=_collate, pin_memory=pin,
                        prefetch_factor=4 if workers else None)
    n, t, warm = 0, None, max(workers, 1)
    for batch in loader:
        kind, slots = ("pixels", "px_slot") if resize else ("decoded", "decoded_slot")
        if batch[kind] is None or len(batch[slots]) != len(batch["index"]):
            raise SystemExit(f"the loader handed over other than {kind} only: not what this times")
        if warm:
            warm -= 1
            t = time.perf_counter()
            continue
        n += len(batch["index"])
    if not n:
        raise SystemExit(f"--num-images must exceed one chunk ({chunk}) a worker to time the loader")
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-images", type=int, default=1024)
    p.add_argument("--workers", type=int, default=min(14, os.cpu_count() or 1),
                   help="loader processes (default: the extraction's for CPU decoding on a GPU, at most one per CPU)")
    p.add_argument("--chunk", type=int, default=64, help="images per loader chunk (a quarter of a batch of 256)")
    p.add_argument("--size", type=int, default=448, help="the model's input size (ResNet-152 in the paper: 448)")
    p.add_argument("--per-image", type=int, default=128, help="images timed one by one in this process")
    p.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        items = synthetic_jpegs(Path(tmp), args.num_images)
        first = items[:args.per_image]
        out = {"num_images": args.num_images, "workers": args.workers, "chunk": args.chunk, "size": args.size,
               "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
               "resize_ms": per_image_ms(first, args.size, True), "decode_ms": per_image_ms(first, args.size, False),
               "pinned": torch.cuda.is_available(),
               "loader_resize_img_s": loader_rate(items, args.size, True, args.workers, args.chunk,
                                                  torch.cuda.is_available()),
               "loader_decode_img_s": loader_rate(items, args.size, False, args.workers, args.chunk,
                                                  torch.cuda.is_available())}
    out["ms_ratio"] = out["resize_ms"] / out["decode_ms"]
    out["loader_ratio"] = out["loader_decode_img_s"] / out["loader_resize_img_s"]
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
    print(f"per image in one process: decode + resize {out['resize_ms']:.2f} ms, decode only {out['decode_ms']:.2f} "
          f"ms ({out['ms_ratio']:.2f} x)")
    pinned = ", pinned" if out["pinned"] else ""
    print(f"loader, {args.workers} workers, chunks of {args.chunk}{pinned}: decode + resize "
          f"{out['loader_resize_img_s']:.0f} img/s, decode only {out['loader_decode_img_s']:.0f} img/s "
          f"({out['loader_ratio']:.2f} x)")
    if args.out:
        write_json_atomic(args.out, out, indent=1)
    return out


if __name__ == "__main__":
    main()
