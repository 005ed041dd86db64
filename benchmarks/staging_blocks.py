"""Which step of the extraction's input staging holds the host while the GPU is busy with other work (a section of
``benchmarks/gpu_checks.py``; reported, not checked).

Why: in every H200 extraction of 2026-11-28 (``benchmarks/results/*_h200.json``, the timelines' events), one of the
four loader chunks of each model batch took about one forward's time to stage (``_Stager.__call__``: 65-87 ms with
the fused ResNet-152, 100-120 ms with the eager one) and the other three a few milliseconds, whatever the decoder
and the model stream's priority; the GPU then waited between forwards for the rest of the batch
(``gpu_gap_s_median``). A staging step that synchronises the host with GPU work queued behind the forward would do
exactly that. Read in torchvision's source (not measured here): its nvJPEG decoding synchronises its own stream
before it returns, and in one version that stream is a blocking one, which waits for the legacy default stream,
where the model runs unless ``FeatureConfig.own_model_stream`` or ``prioritise_model`` gives it a stream of its own.

A second guess, from the same timelines (2026-11-28): nvImageCodec, which decodes on the extraction's own staging
stream, stalled in the same way, so the host may wait for the staging work itself, whose kernels, queued behind the
forward's at the same (default) priority, run only after them. If so, a staging stream of the highest priority
(``FeatureConfig.prioritise_staging``) or less decoding on the device (``cpu_decode_share``) shortens the wait.

What it measures: for each step (each decoder, the PIL-exact resize, a pinned copy to the device, a CPU-decoded
chunk's copy and normalisation, new device memory from the driver, a chunk the workers decoded but left unresized
as the extraction stages it (``cpu_decode_share``: copy and PIL-exact resize, no host synchronisation in the
package's code), and a whole chunk decoded on the device as the extraction stages it)
and for each placement (the stream the busy work, bf16 matrix products of about ``busy_ms``, is queued on: the
legacy default stream, a non-blocking stream of normal priority, one of the highest priority; and the priority of
the step's own stream: normal, or the highest), the host milliseconds of the step's call while that work runs
(``host_ms``) and until the step's own stream has finished its work (``done_ms``), beside the busy work's GPU time
and the call's time on an idle GPU. ``blocked``: the call took more than half the busy time; ``starved``: its
stream's work finished only after more than half the busy time.
"""

from __future__ import annotations

import time

import torch


def _busy(a: torch.Tensor, times: int) -> None:
    for _ in range(times):
        torch.mm(a, a)


def _calibrate(a: torch.Tensor, busy_ms: float) -> int:
    """How many products of ``a`` with itself take about ``busy_ms`` on its device."""
    _busy(a, 3)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    _busy(a, 10)
    end.record()
    end.synchronize()
    return max(1, round(busy_ms / (start.elapsed_time(end) / 10)))


def staging_blocking(device: str, n: int = 64, size: int = 448, busy_ms: float = 300.0) -> dict:
    """See the module's docstring. ``n`` JPEGs per chunk (640x480, as the benchmark's), resized to ``size``."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return {"skipped": "CUDA only: on the CPU every step runs on the host anyway"}
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from extract import synthetic_jpegs  # benchmarks/extract.py (gpu_checks puts benchmarks/ on the path)

    from dan.extract_input import _collate, _Stager
    from dan.images import read_image
    from dan.jpeg import NvImageCodecJpeg, TorchvisionJpeg, decode_jpeg_batch, plain_jpeg_bytes
    from dan.resize import PilResize, normalise_

    with tempfile.TemporaryDirectory() as tmp:
        files = synthetic_jpegs(Path(tmp), n)
        jpegs = [torch.from_numpy(plain_jpeg_bytes(p)).pin_memory() for _, p in files]
        # a chunk as the loader hands it over when the workers decoded it (cpu_decode_share): unresized, pinned
        chunk = _collate([(k, None, None, "", torch.from_numpy(read_image(p, size, resize=False)))
                          for k, (_, p) in enumerate(files)])
        chunk["decoded"] = chunk["decoded"].pin_memory()
    stager = _Stager([], SimpleNamespace(image_size=size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
                     dev, None)  # no side stream of its own: it stages on the stream each placement sets
    resize = PilResize(size, dev)
    decoders = {"torchvision decode": TorchvisionJpeg(dev)}
    try:
        decoders["nvimgcodec decode"] = NvImageCodecJpeg(dev)
    except Exception as exc:  # noqa: BLE001 - not installed: the other steps still tell
        decoders["nvimgcodec decode"] = exc
    decoded = decoders["torchvision decode"](jpegs)
    pinned = torch.empty(n * 3 * 480 * 640, dtype=torch.uint8).pin_memory()
    pixels = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8).pin_memory()  # a CPU-decoded chunk, NHWC
    scale, shift = torch.full((1, 3, 1, 1), 1 / 58.0, device=dev), torch.full((1, 3, 1, 1), -2.0, device=dev)
    grown = [0]

    def new_memory() -> None:  # more than the caching allocator holds: the driver is asked for memory
        grown[0] += 1
        torch.empty((2 << 30) + grown[0] * (2 << 20), dtype=torch.uint8, device=dev)

    steps = {name: (lambda d=d: d(jpegs)) for name, d in decoders.items() if not isinstance(d, Exception)}
    steps.update({"PIL-exact resize": lambda: resize(decoded),
                  "pinned copy to the device": lambda: pinned.to(dev, non_blocking=True),
                  "a CPU-decoded chunk (copy + normalise)": lambda: normalise_(
                      pixels.to(dev, non_blocking=True).permute(0, 3, 1, 2), scale, shift),
                  "new device memory": new_memory,
                  "a worker-decoded chunk (copy + PIL-exact resize, as the extraction stages it)":
                      lambda: stager._chunk(chunk),
                  "a whole chunk (torchvision decode + resize)":
                      lambda: decode_jpeg_batch(jpegs, size, dev, resize, decoders["torchvision decode"])})
    priorities = torch.cuda.Stream.priority_range()  # (lowest, highest): a lower number is a higher priority
    side, side_high = (torch.cuda.Stream(dev, priority=p) for p in (max(priorities), min(priorities)))
    normal, high = (torch.cuda.Stream(dev, priority=p) for p in (max(priorities), min(priorities)))
    legacy = torch.cuda.default_stream(dev)
    where = {"legacy default stream": (legacy, side), "own stream, normal priority": (normal, side),
             "own stream, highest priority": (high, side),
             "legacy default stream, staging at the highest priority": (legacy, side_high),
             "own stream, normal priority, staging at the highest priority": (normal, side_high)}
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    times = _calibrate(a, busy_ms)
    out: dict = {"n": n, "busy_products": times, "steps": {}}
    for name, step in steps.items():
        row: dict = {}
        try:
            with torch.cuda.stream(side):
                step()  # warm: coefficients, kernels, decoder state
                torch.cuda.synchronize(dev)
                t = time.perf_counter()
                step()
                row["idle_host_ms"] = round(1e3 * (time.perf_counter() - t), 2)
            torch.cuda.synchronize(dev)
            for label, (stream, own) in where.items():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                with torch.cuda.stream(stream):
                    start.record()
                    _busy(a, times)
                    end.record()
                with torch.cuda.stream(own):
                    t = time.perf_counter()
                    step()
                    host_ms = 1e3 * (time.perf_counter() - t)
                own.synchronize()  # the step's own work (and what its stream waited for) is done
                done_ms = 1e3 * (time.perf_counter() - t)
                torch.cuda.synchronize(dev)
                gpu_ms = start.elapsed_time(end)
                row[label] = {"host_ms": round(host_ms, 2), "done_ms": round(done_ms, 2), "busy_ms": round(gpu_ms, 1),
                              "blocked": host_ms > 0.5 * gpu_ms, "starved": done_ms > 0.5 * gpu_ms}
        except Exception as exc:  # noqa: BLE001 - one step's failure costs only its own row
            torch.cuda.synchronize(dev)
            row["error"] = f"{type(exc).__name__}: {exc}"
        out["steps"][name] = row
    if isinstance(decoders["nvimgcodec decode"], Exception):
        exc = decoders["nvimgcodec decode"]
        out["steps"]["nvimgcodec decode"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out
