"""Feature stores: fp16 grid features of one image folder, indexed by image id, opened lazily.

On disk (one folder per split, e.g. ``results/default/features/train2014/``)::

    features.npy   float16 [num_images, N, D]; row i belongs to ids[i]; region n = grid cell (n // gw, n % gw)
    ids.npy        int64 [num_images], sorted ascending
    meta.json      backbone, layer, weights_sha256, image_size, grid, dim, preprocessing, skipped, fingerprint...
    .partial/      only while extracting (see below)

``meta.json`` is written last, so a folder without it is not a store. Extraction writes rows into a
preallocated ``.partial/features.npy`` with ``pwrite`` and commits ``.partial/progress.json`` (atomically, after
``fsync`` of the data) every chunk; a killed run resumes after the last commit and recomputes exactly the same
batches, so the finished ``features.npy`` is byte-identical to an uninterrupted run's. Finishing moves the files
into place with ``os.replace`` and removes ``.partial/`` (:class:`PartialStore`).

:class:`FeatureStore` maps ``features.npy`` read-only on first access and re-maps it after a ``fork`` (each
DataLoader worker gets its own map); ``__init__`` reads only ``meta.json`` and ``ids.npy``.
"""

from __future__ import annotations

import io
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dan.io import DanError, DataError, read_json, require_keys, write_bytes_atomic, write_json_atomic

FEATURES, IDS, META, PARTIAL, PROGRESS = "features.npy", "ids.npy", "meta.json", ".partial", "progress.json"
META_KEYS = ("backbone", "layer", "weights_sha256", "image_size", "grid", "dim", "dtype", "preprocessing",
             "num_images", "skipped", "fingerprint")


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset (bytes) of an ``.npy`` file, reading only its header."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh)
        if fortran:
            raise DataError(f"{path}: Fortran-ordered arrays are not supported")
        return shape, dtype, fh.tell()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


class FeatureStore:
    """Read access to a finished store: ``gather(positions) -> np.float16 [B, N, D]``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not FeatureStore.exists(self.path):
            hint = " (an extraction was interrupted; rerun it to resume)" if (self.path / PARTIAL).is_dir() else ""
            raise DataError(f"no complete feature store at {self.path}: {META} missing{hint}; "
                            f"build it with `python -m dan.features --data DIR --out DIR`")
        self.meta: dict = read_json(self.path / META, "feature store meta")
        require_keys(self.meta, META_KEYS, f"{self.path / META}")
        self.ids: np.ndarray = np.load(self.path / IDS, allow_pickle=False).astype(np.int64, copy=False)
        shape, dtype, _ = npy_header(self.path / FEATURES)
        expected = (int(self.meta["num_images"]), self.num_regions, self.dim)
        if tuple(shape) != expected or dtype != np.float16 or self.ids.shape != (expected[0],):
            raise DataError(f"feature store {self.path} is inconsistent: features {tuple(shape)} {dtype}, "
                            f"ids {self.ids.shape}, meta expects {expected} float16; delete it and re-extract")
        if expected[0] > 1 and not np.all(np.diff(self.ids) > 0):
            raise DataError(f"feature store {self.path}: {IDS} is not sorted and unique; delete it and re-extract")
        self._array: np.ndarray | None = None
        self._pid = -1

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """True when ``path`` holds a complete store (its ``meta.json`` is written last)."""
        path = Path(path)
        return all((path / name).is_file() for name in (META, IDS, FEATURES))

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.meta["grid"][0]), int(self.meta["grid"][1])

    @property
    def num_regions(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def nbytes(self) -> int:
        """Size of the fp16 features [images, regions, dim] in bytes (what loading them whole takes)."""
        return len(self) * self.num_regions * self.dim * 2

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, images={len(self)}, grid={self.grid}, dim={self.dim}, "
                f"backbone={self.meta['backbone']}/{self.meta['layer']})")

    def _features(self) -> np.ndarray:  # [num_images, N, D] read-only memmap, one per process
        if self._array is None or self._pid != os.getpid():
            self._array = np.load(self.path / FEATURES, mmap_mode="r", allow_pickle=False)
            self._pid = os.getpid()
        return self._array

    def __getstate__(self) -> dict:  # pickled into DataLoader workers without the map
        state = self.__dict__.copy()
        state["_array"], state["_pid"] = None, -1
        return state

    def positions(self, ids) -> np.ndarray:
        """Row positions (int64 [B]) of image ``ids``; unknown ids raise :class:`DataError` naming them."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(self.ids, ids)
        pos_c = np.minimum(pos, max(len(self) - 1, 0))
        bad = (pos >= len(self)) | (self.ids[pos_c] != ids) if len(self) else np.ones(ids.shape, bool)
        if bad.any():
            missing = ids[bad]
            raise DataError(f"{missing.size} image id(s) not in feature store {self.path} "
                            f"(e.g. {', '.join(str(i) for i in missing[:5])}); its {len(self)} images come from "
                            f"another image folder or were skipped as unreadable")
        return pos.astype(np.int64)

    def gather(self, positions) -> np.ndarray:
        """Features of rows ``positions`` (int [B]) as a new ``np.float16`` array ``[B, N, D]``."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise DataError(f"row position out of range [0, {len(self)}) for feature store {self.path}")
        return np.asarray(self._features()[positions])

    def __getitem__(self, image_id: int) -> np.ndarray:  # [N, D]
        return self.gather(self.positions([image_id]))[0]

    def load_all(self) -> np.ndarray:
        """Every row in memory: ``np.float16 [num_images, N, D]`` (explicit; may be large)."""
        return np.array(self._features())

    def check_compatible(self, expected: dict, what: str = "the checkpoint") -> None:
        """Raise :class:`DataError` if ``expected`` (e.g. a checkpoint's feature meta) differs in dim/grid/backbone."""
        for key in ("dim", "grid", "backbone", "layer", "image_size"):
            if key in expected and list(np.atleast_1d(expected[key])) != list(np.atleast_1d(self.meta[key])):
                raise DataError(
                    f"feature store {self.path} has {key}={self.meta[key]} ({self.meta['backbone']}/"
                    f"{self.meta['layer']}, dim {self.dim}, grid {self.grid}) but {what} expects {key}="
                    f"{expected[key]}; extract features with the same backbone or train a new model")


class PartialStore:
    """Writer side: a preallocated ``.partial/features.npy`` [num_images, N, D] plus committed progress."""

    def __init__(self, out_dir: Path, fingerprint: str, num_images: int, row_shape: tuple[int, int]) -> None:
        self.out, self.dir = Path(out_dir), Path(out_dir) / PARTIAL
        self.fingerprint, self.num_images, self.row_shape = fingerprint, num_images, row_shape
        self.row_bytes = int(np.prod(row_shape)) * 2
        self._fd: int | None = None

    def open(self) -> tuple[int, list[dict]]:
        """Resume committed progress (same fingerprint) or start afresh; returns ``(images done, skipped so far)``."""
        prog_path, data = self.dir / PROGRESS, self.dir / FEATURES
        if (self.dir / META).is_file() and read_json(self.dir / META).get("fingerprint") == self.fingerprint:
            return self.num_images, []  # finished but not yet published: finish() publishes
        try:
            prog = read_json(prog_path) if prog_path.is_file() else {}
            shape = npy_header(data)[0] if data.is_file() else None
        except (DataError, ValueError, OSError):
            prog, shape = {}, None
        if prog.get("fingerprint") == self.fingerprint and shape == (self.num_images, *self.row_shape):
            start, skipped = int(prog["done"]), list(prog["skipped"])
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
            try:
                self.dir.mkdir(parents=True)
                mm = np.lib.format.open_memmap(data, mode="w+", dtype=np.float16,
                                               shape=(self.num_images, *self.row_shape))
                del mm
            except OSError as exc:
                raise DanError(f"cannot create feature store in {self.dir}: {exc.strerror or exc}") from exc
            start, skipped = 0, []
            write_json_atomic(prog_path, {"fingerprint": self.fingerprint, "done": 0, "skipped": []})
        self._offset = npy_header(data)[2]
        self._fd = os.open(data, os.O_RDWR)
        return start, skipped

    def write_rows(self, positions: np.ndarray, rows: np.ndarray) -> None:
        """Write ``rows`` (float16 [b, N, D]) at row ``positions`` (int [b], ascending)."""
        rows = np.ascontiguousarray(rows, dtype=np.float16)
        runs = np.split(np.arange(len(positions)), np.flatnonzero(np.diff(positions) != 1) + 1)
        for run in runs:
            if run.size == 0:
                continue
            view = memoryview(rows[run[0]: run[-1] + 1]).cast("B")
            offset = self._offset + int(positions[run[0]]) * self.row_bytes
            try:
                while view.nbytes:
                    n = os.pwrite(self._fd, view, offset)
                    view, offset = view[n:], offset + n
            except OSError as exc:
                raise DanError(f"cannot write feature store {self.dir / FEATURES}: {exc.strerror or exc}") from exc

    def commit(self, done: int, skipped: list[dict]) -> None:
        """Make rows ``[0, done)`` durable (fsync), then record them in ``progress.json`` (atomic)."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise DanError(f"cannot flush feature store {self.dir / FEATURES}: {exc.strerror or exc}") from exc
        write_json_atomic(self.dir / PROGRESS, {"fingerprint": self.fingerprint, "done": done, "skipped": skipped})

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self, ids: np.ndarray, meta: dict) -> FeatureStore:
        """Drop skipped rows, write ids and meta, and move everything into ``out_dir`` (idempotent after a crash)."""
        self.close()
        if not (self.dir / META).is_file():
            keep = np.isin(ids, [s["image_id"] for s in meta["skipped"]], invert=True)
            if not keep.all():
                self._compact(keep)
            write_bytes_atomic(self.dir / IDS, _npy_bytes(np.asarray(ids[keep], dtype=np.int64)))
            write_json_atomic(self.dir / META, meta, indent=1)
        return publish(self.out)

    def _compact(self, keep: np.ndarray) -> None:
        src = np.load(self.dir / FEATURES, mmap_mode="r")
        final = self.dir / "final.npy"
        dst = np.lib.format.open_memmap(final, mode="w+", dtype=np.float16, shape=(int(keep.sum()), *self.row_shape))
        rows = np.flatnonzero(keep)
        for i in range(0, rows.size, 4096):
            dst[i: i + 4096] = src[rows[i: i + 4096]]
        dst.flush()
        del dst, src


class StoreWriter:
    """Background writer: waits for each batch's device-to-host copy, writes its rows, commits every chunk.

    Two threads: the writer ``pwrite``s rows; a committer makes each chunk durable (``fsync``) and records it in
    ``progress.json``, so the flush of one chunk overlaps the writes of the next (the rows of a commit were all
    written before its ``fsync`` began). Commits land in order, one per chunk, each followed by ``on_commit``.
    ``put`` blocks when ``depth`` batches are pending (back-pressure on the GPU loop) and re-raises any error of
    either thread (a failed write or flush, or an exception from ``on_commit``) in the caller.
    """

    def __init__(self, part: PartialStore, done: int, skipped: list[dict], every_bytes: float, every_s: float,
                 on_commit: Callable[[int], None] | None = None, depth: int = 4) -> None:
        self.part, self.done, self.committed, self.skipped = part, done, done, list(skipped)
        self.every_bytes, self.every_s, self.on_commit = every_bytes, every_s, on_commit
        self.error: BaseException | None = None
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._commits: queue.Queue = queue.Queue(maxsize=1)  # one chunk flushing, at most one more waiting
        self._committer = threading.Thread(target=self._run_commits, name="feature-store-commit", daemon=True)
        self._thread = threading.Thread(target=self._run, name="feature-store-writer", daemon=True)
        self._committer.start()
        self._thread.start()

    def put(self, end: int, positions: np.ndarray, rows, event, bad: list[dict]) -> None:
        """Queue a batch: ``rows`` (float16 [b, N, D], numpy or CPU tensor) for ``positions``; images < ``end`` done."""
        self._put(self._q, self._thread, (end, positions, rows, event, bad))

    def _put(self, q: queue.Queue, consumer: threading.Thread, item) -> None:
        while True:
            if self.error is not None:
                raise self.error
            if not consumer.is_alive():
                raise DanError(f"feature store {consumer.name} thread stopped unexpectedly")
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        pending, last, requested = 0, time.monotonic(), self.done
        try:
            while (item := self._q.get()) is not None:
                end, positions, rows, event, bad = item
                if event is not None:
                    event.synchronize()  # the non-blocking device-to-host copy has landed
                if len(positions):
                    arr = rows.numpy() if hasattr(rows, "numpy") else rows
                    self.part.write_rows(positions, arr)
                    pending += arr.nbytes
                self.skipped.extend(bad)
                self.done = end
                if pending >= self.every_bytes or time.monotonic() - last >= self.every_s:
                    self._put(self._commits, self._committer, (self.done, list(self.skipped)))
                    pending, last, requested = 0, time.monotonic(), self.done
            if self.done > requested:
                self._put(self._commits, self._committer, (self.done, list(self.skipped)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by put()/close()
            self.error = self.error or exc
        finally:
            self._commits.put(None)  # never full for long: the committer drains it (or has stopped on an error)

    def _run_commits(self) -> None:
        try:
            while (item := self._commits.get()) is not None:
                done, skipped = item
                self.part.commit(done, skipped)
                self.committed = done
                if self.on_commit is not None:
                    self.on_commit(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by put()/close()
            self.error = self.error or exc
            while self._commits.get() is not None:  # let the writer hand over its last request and stop
                pass

    def close(self) -> list[dict]:
        """Write what is queued, commit, stop; returns the skipped images. Re-raises an error of either thread."""
        while self._thread.is_alive():  # hand over the end marker even after an error (the writer may be waiting)
            try:
                self._q.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._committer.join()
        if self.error is not None:
            raise self.error
        return self.skipped

    def abort(self) -> None:
        """Stop after an error elsewhere: commit what was written, swallow the writer's own errors."""
        try:
            self.close()
        except BaseException:  # noqa: BLE001 - the caller is already raising the first error
            pass


def publish(out_dir: Path) -> FeatureStore:
    """Move a finished ``.partial`` into place: data and ids first, ``meta.json`` last, then remove ``.partial``."""
    out, part = Path(out_dir), Path(out_dir) / PARTIAL
    meta = read_json(part / META, "feature store meta")
    (out / META).unlink(missing_ok=True)
    src = part / ("final.npy" if meta["skipped"] else FEATURES)
    try:
        if src.is_file():
            os.replace(src, out / FEATURES)
        if (part / IDS).is_file():
            os.replace(part / IDS, out / IDS)
        os.replace(part / META, out / META)
        dir_fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise DanError(f"cannot publish feature store {out}: {exc.strerror or exc}") from exc
    shutil.rmtree(part, ignore_errors=True)
    return FeatureStore(out)
