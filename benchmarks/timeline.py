"""Where an extraction's fixed seconds go: a host-side timeline of :func:`dan.features.extract_features`.

``benchmarks/extract.py --timeline`` installs :func:`record` around one timed extraction. It wraps, for that run
only, the pipeline's stage functions (fingerprint, store open, loader start, each chunk's arrival from the loader,
staging, forward call, device-to-host copy set-up, row writes, commits, writer close, finish) and notes the
``time.perf_counter()`` of each entry and exit. :func:`summarise` turns the events into the few spans that make up
the start-up (before the first forward), the drain (after the last forward) and the steady batch period.

Host times: a forward call returns when its kernels are queued, so these spans say where the host waited
(loader, writer back-pressure, pinned-memory allocation, flush), not what the GPU did. On CUDA each forward is also
bracketed by CUDA events on its stream: ``gpu_forward_s_median`` is how long the GPU took per forward in the
steady part (against the model-only ceiling's batch time: slower means the forward shared the GPU with the
decode/resize work), ``gpu_gap_s_median`` how long the compute stream waited between forwards (the forward was
starved: its input was not staged yet).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import Iterator

import numpy as np
import torch

import dan.extract as ex
import dan.features as ft
import dan.store as st
import dan.store_writer as sw


class Timeline:
    """Events ``(seconds since start, name)``; ``start`` is set by the caller just before the timed run."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.events: list[tuple[float, str]] = []
        self.gpu: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # per forward on CUDA: (start, end)
        self.gc: list[tuple[float, int, float]] = []  # per cyclic-GC collection: (start, generation, seconds)
        self._gc_start = 0.0

    def on_gc(self, phase: str, info: dict) -> None:
        """A ``gc.callbacks`` hook: while it runs, every Python thread is stopped (it holds the GIL)."""
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        else:
            self.gc.append((self._gc_start - self.start, int(info["generation"]), now - self._gc_start))

    def mark(self, name: str) -> None:
        self.events.append((time.perf_counter() - self.start, name))

    def times(self, name: str) -> list[float]:
        return [t for t, n in self.events if n == name]


def _timed(tl: Timeline, name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tl.mark(name + ">")
        try:
            return fn(*args, **kwargs)
        finally:
            tl.mark(name + "<")
    return wrapper


def _gpu_timed(tl: Timeline, fn):
    """``forward_padded`` with CUDA events recorded on the current stream before and after its kernels."""
    @functools.wraps(fn)
    def wrapper(model, x, *args, **kwargs):
        if x.device.type != "cuda":
            return fn(model, x, *args, **kwargs)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(model, x, *args, **kwargs)
        end.record()
        tl.gpu.append((start, end))
        return out
    return wrapper


@contextlib.contextmanager
def record(tl: Timeline) -> Iterator[Timeline]:
    """Wrap the pipeline's stages for the duration; everything is restored on exit."""
    saved: list[tuple[object, str, object]] = []

    def patch(owner, attr: str, new) -> None:
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, new)

    patch(ft, "_check_images", _timed(tl, "check_images", ft._check_images))
    patch(ft, "file_stats", _timed(tl, "file_stats", ft.file_stats))
    patch(ft, "fingerprint", _timed(tl, "fingerprint", ft.fingerprint))
    patch(st.PartialStore, "open", _timed(tl, "store_open", st.PartialStore.open))
    patch(st.PartialStore, "write_rows", _timed(tl, "write", st.PartialStore.write_rows))
    patch(st.PartialStore, "commit", _timed(tl, "commit", st.PartialStore.commit))
    patch(st.PartialStore, "finish", _timed(tl, "finish", st.PartialStore.finish))
    patch(sw.StoreWriter, "put", _timed(tl, "put", sw.StoreWriter.put))
    patch(sw.StoreWriter, "close", _timed(tl, "writer_close", sw.StoreWriter.close))
    patch(ex, "forward_padded", _timed(tl, "forward", _gpu_timed(tl, ex.forward_padded)))
    patch(ex, "_copy_out", _timed(tl, "copy_out", ex._copy_out))
    patch(ft, "run_pipeline", _timed(tl, "pipeline", ft.run_pipeline))  # extract_features' own name for it

    loader_cls = ex.DataLoader

    class TimedLoader(loader_cls):  # type: ignore[misc, valid-type]
        def __iter__(self):
            tl.mark("loader_start>")
            it = super().__iter__()
            tl.mark("loader_start<")
            return it

    patch(ex, "DataLoader", TimedLoader)
    call = ex._Stager.__call__

    def timed_call(self, batch):
        tl.mark("batch_in")  # the loader handed over a chunk (the prefetch thread asked for it before)
        try:
            return call(self, batch)
        finally:
            tl.mark("staged")

    patch(ex._Stager, "__call__", timed_call)
    gc.callbacks.append(tl.on_gc)
    try:
        yield tl
    finally:
        gc.callbacks.remove(tl.on_gc)
        for owner, attr, old in reversed(saved):
            setattr(owner, attr, old)


def summarise(tl: Timeline, total_s: float) -> dict:
    """Start-up, steady period and drain of one run, in seconds (host clock)."""
    fwd, batch_in = tl.times("forward>"), tl.times("batch_in")
    writes_end, commits_end = tl.times("write<"), tl.times("commit<")
    if not fwd or not writes_end:
        return {"total_s": round(total_s, 3)}
    gaps = np.diff(fwd)
    steady = float(np.median(gaps[len(gaps) // 4:])) if len(gaps) >= 4 else None

    def first(name: str) -> float | None:
        ts = tl.times(name)
        return round(ts[0], 3) if ts else None

    def span(a: str, b: str) -> float | None:
        ta, tb = tl.times(a), tl.times(b)
        return round(sum(y - x for x, y in zip(ta, tb, strict=False)), 3) if ta and tb else None

    return {
        "total_s": round(total_s, 3),
        "check_images_s": span("check_images>", "check_images<"),
        "file_stats_s": span("file_stats>", "file_stats<"),
        "fingerprint_s": span("fingerprint>", "fingerprint<"),
        "store_open_s": span("store_open>", "store_open<"),
        "loader_start_s": span("loader_start>", "loader_start<"),
        "pipeline_entered_s": first("pipeline>"),
        "first_batch_in_s": round(batch_in[0], 3) if batch_in else None,
        "first_forward_s": round(fwd[0], 3),
        "first_write_done_s": round(writes_end[0], 3),
        "first_commit_done_s": round(commits_end[0], 3) if commits_end else None,
        "steady_forward_period_s": round(steady, 4) if steady else None,
        "last_forward_s": round(fwd[-1], 3),
        "last_write_done_s": round(writes_end[-1], 3),
        "writer_close_done_s": first("writer_close<"),
        "pipeline_done_s": round(tl.times("pipeline<")[-1], 3) if tl.times("pipeline<") else None,
        "finish_s": span("finish>", "finish<"),
        "copy_out_s_first3": [round(y - x, 4) for x, y in zip(tl.times("copy_out>")[:3], tl.times("copy_out<")[:3],
                                                                strict=False)],
        "copy_out_s_max": round(max((y - x for x, y in zip(tl.times("copy_out>"), tl.times("copy_out<"),
                                                          strict=False)), default=0.0), 4),
        "put_wait_s": span("put>", "put<"),
        "write_s_median": round(float(np.median([y - x for x, y in zip(tl.times("write>"), writes_end,
                                                                         strict=False)])), 4),
        "commit_s_median": round(float(np.median([y - x for x, y in zip(tl.times("commit>"), commits_end,
                                                                          strict=False)])), 4)
        if commits_end else None,
        "stage_s_median": _median_span(tl.times("batch_in"), tl.times("staged")),  # per loader chunk (host)
        "loader_wait_s_median": _median_span(tl.times("staged")[:-1], tl.times("batch_in")[1:]),
        "batches": len(fwd),
        **_gc_pauses(tl),
        **_gpu_spans(tl),
    }


def _gc_pauses(tl: Timeline) -> dict:
    """The cyclic garbage collector's pauses during the run: how many, how long in all, the longest, and how many
    were full (generation 2) collections, which walk every tracked object (see ``FeatureConfig.freeze_gc``)."""
    durations = [d for _, _, d in tl.gc]
    return {"gc_collections": len(durations), "gc_s_total": round(float(sum(durations)), 4),
            "gc_s_max": round(max(durations, default=0.0), 4),
            "gc_full_collections": sum(1 for _, g, _ in tl.gc if g == 2)}


def _median_span(starts: list[float], ends: list[float]) -> float | None:
    """Median of ``end - start`` over the pairs, the first quarter left out (start-up)."""
    d = [b - a for a, b in zip(starts, ends, strict=False)]
    return round(float(np.median(d[len(d) // 4:])), 4) if d else None


def _gpu_spans(tl: Timeline) -> dict:
    """Median GPU time per forward and median compute-stream wait between forwards, over the steady part (the
    first quarter left out, as for the host period)."""
    if len(tl.gpu) < 4:
        return {}
    torch.cuda.synchronize()
    fwd = [a.elapsed_time(b) / 1e3 for a, b in tl.gpu]
    gaps = [tl.gpu[k][1].elapsed_time(tl.gpu[k + 1][0]) / 1e3 for k in range(len(tl.gpu) - 1)]
    skip = len(fwd) // 4
    return {"gpu_forward_s_median": round(float(np.median(fwd[skip:-1])), 4),  # the last one may be a short batch
            "gpu_gap_s_median": round(float(np.median(gaps[skip:])), 4),
            "gpu_gap_s_total": round(float(np.sum(gaps[skip:])), 3)}
