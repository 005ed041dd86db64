"""The process an extraction or a training run works in: which device (:func:`resolve_device`), the C heap
(:func:`keep_freed_memory`), the cyclic garbage collector (:func:`frozen_gc`) and an interrupt that arrives while it
forks (:func:`interrupt_after_fork`). Shared by :mod:`dan.extract`,
:mod:`dan.feature_config`, :mod:`dan.train` and :mod:`dan.evaluate`; :mod:`dan.extract` re-exports these names,
where they lived before.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import signal
import sys
import threading

import torch

from dan.io import ConfigError


@contextlib.contextmanager
def interrupt_after_fork():
    """Around code that forks (a DataLoader starting its workers): a SIGINT that arrives meanwhile is raised at the
    end of the block, by the handler it would have met, instead of being lost.

    A signal that lands during ``fork()`` has its Python handler run by the first Python code after it, which is an
    at-fork callback (logging's ``_releaseLock``), and an exception there is only printed ("Exception ignored in:
    ... KeyboardInterrupt"): a Jupyter interrupt of an extraction at that moment was lost, and the extraction ran on
    to the end. The processes forked in the block also start with the recording handler, so one that is
    interrupted before it sets its own (a loader worker's ``worker_init_fn``) does not end on it. Only in the main
    thread, and where SIGINT has a Python handler (not ignored, not the OS default)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    got: list[object] = []
    signal.signal(signal.SIGINT, lambda signum, frame: got.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if got:
        previous(signal.SIGINT, got[0])


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


@contextlib.contextmanager
def frozen_gc(enabled: bool = True):
    """Move every object alive now out of the cyclic garbage collector's view for the duration (``gc.freeze``).

    A full (generation-2) collection walks every tracked object while holding the GIL, so all of the pipeline's
    threads stop. With torch and a split's image list loaded that is ~0.5 M objects: on the development machine a
    4,096-image run (``benchmarks/extract.py --timeline``) had one such pause of 0.155 s, set off by
    :func:`file_stats`' ``os.stat`` results, and entered the pipeline at 0.174 s; frozen, it had none and entered it
    at 0.019 s. (On the H200 the seconds before the fingerprint varied from 0.03 to 0.62 s between runs of the same
    size; such a pause is a likely cause, not checked.) The objects alive at the start do not become garbage during
    an extraction, so the collector gains nothing by walking them; new objects are still collected, and reference
    counting frees objects as always. It is also what ``gc.freeze`` is documented for: the forked loader workers do
    not copy the parent's memory pages by collecting them. No-op when ``enabled`` is False or when the caller has
    frozen objects already (their freeze is left as it is)."""
    if not enabled or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; an unavailable CUDA request raises :class:`ConfigError`, and so
    does a device that is no string (``-p device None`` was torch's TypeError; ``0`` would be taken as ``cuda:0``)."""
    if not isinstance(device, str):
        raise ConfigError(f"device must be a string (auto, cpu, cuda, cuda:N), got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device {device!r}; accepted: auto, cpu, cuda, cuda:N") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}; accepted: auto, cpu, cuda, cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available; use device 'cpu' or 'auto' "
                          f"(on the command line: --device cpu)")
    return dev
