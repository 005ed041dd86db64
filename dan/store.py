"""Feature stores: fp16 grid features of one image folder, indexed by image id, opened lazily.

On disk (one folder per split, e.g. ``results/default/features/train2014/``)::

    features.npy   float16 [num_images, N, D]; row i belongs to ids[i]; region n = grid cell (n // gw, n % gw)
    ids.npy        int64 [num_images], sorted ascending
    meta.json      backbone, layer, weights_sha256, image_size, grid, dim, skipped, fingerprint, ids_sha256...
    .partial/      only while extracting (see below)
    .lock          empty; an extraction holds it (flock) while it writes the folder: a second one is refused

``meta.json`` is written last, so a folder without it is not a store. Extraction writes rows into a
preallocated ``.partial/features.npy`` with ``pwrite`` and commits ``.partial/progress.json`` (atomically, after
``fsync`` of the data) every chunk; a killed run resumes after the last commit and recomputes exactly the same
batches, so the finished ``features.npy`` is byte-identical to an uninterrupted run's (a resume also requires the
same Pillow/torch/torchvision versions: rows of two versions are never mixed). Finishing moves the files
into place with ``os.replace`` and removes ``.partial/`` (:class:`PartialStore`).

:class:`FeatureStore` (in :mod:`dan.store_reader`, re-exported here with the file names, :func:`npy_header` and
:func:`ids_digest`) opens a finished store lazily, by image id.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import numpy as np

from dan.io import DanError, DataError, exclusive_flock, read_json, write_bytes_atomic, write_json_atomic
from dan.store_reader import (  # noqa: F401 - the reading side, re-exported: dan.store is where callers import it
    FEATURES,
    IDS,
    META,
    META_KEYS,
    PARTIAL,
    FeatureStore,
    _count,
    _identity,
    _read_header,
    ids_digest,
    npy_header,
)

PROGRESS = "progress.json"  # .partial/progress.json: committed rows (with the skips so far) of a running extraction
LOCK = ".lock"  # held (flock) by the one extraction writing a store folder


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


@contextlib.contextmanager
def writer_lock(out_dir: Path):
    """Hold ``out_dir/.lock`` exclusively for the duration: a second extraction into the same folder fails at once
    with a clear error instead of interleaving its rows and files with the first's. The lock is ``flock``'s, so
    the kernel releases it when its process ends, even on ``kill -9``; the empty file stays (deleting it would let
    a third process lock a new file while the second still holds the old one)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DanError(f"cannot create feature store in {out}: {exc.strerror or exc}") from exc
    busy = DataError(f"another extraction is writing feature store {out} (it holds {out / LOCK}); wait for it to "
                     f"finish or stop it, or choose another output folder")
    with exclusive_flock(fd, busy):
        yield


class PartialStore:
    """Writer side: a preallocated ``.partial/features.npy`` [num_images, N, D] plus committed progress."""

    def __init__(self, out_dir: Path, fingerprint: str, num_images: int, row_shape: tuple[int, int],
                 software: dict | None = None) -> None:
        self.out, self.dir = Path(out_dir), Path(out_dir) / PARTIAL
        self.fingerprint, self.num_images, self.row_shape = fingerprint, num_images, row_shape
        self.software = software or {}  # library versions: rows of two versions are never mixed in one store
        self.row_bytes = int(np.prod(row_shape)) * 2
        self._fd: int | None = None

    def open(self) -> tuple[int, list[dict]]:
        """Resume committed progress (same fingerprint) or start afresh; returns ``(images done, skipped so far)``."""
        prog_path, data = self.dir / PROGRESS, self.dir / FEATURES
        if self._finished():
            return self.num_images, []  # finished but not yet published: finish() publishes
        try:
            prog = read_json(prog_path) if prog_path.is_file() else {}
            shape = npy_header(data)[0] if data.is_file() else None
        except (DataError, ValueError, OSError):
            prog, shape = {}, None
        if self._resumable(prog) and shape == (self.num_images, *self.row_shape):
            start, skipped = prog["done"], list(prog["skipped"])
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
            write_json_atomic(prog_path, self._progress(0, []))
        self._offset = npy_header(data)[2]
        self._fd = os.open(data, os.O_RDWR)
        return start, skipped

    def _finished(self) -> bool:
        """Whether ``.partial`` holds this extraction's ``meta.json`` (written by :meth:`finish` before publishing).
        One that is unreadable, not an object or of another fingerprint is removed, so that finish() rewrites it:
        publish() would otherwise read it (a list raised AttributeError, a bad file stopped every rerun)."""
        meta = self.dir / META
        if not meta.exists():
            return False
        try:
            found = read_json(meta, "feature store meta")
        except DataError:
            found = None
        if isinstance(found, dict) and found.get("fingerprint") == self.fingerprint \
                and isinstance(found.get("skipped"), list):
            return True
        if meta.is_dir():
            shutil.rmtree(meta, ignore_errors=True)
        else:
            meta.unlink(missing_ok=True)
        return False

    def _resumable(self, prog: object) -> bool:
        """Whether committed progress ``prog`` (``progress.json``) is of this extraction and well formed: rows
        ``done`` in [0, num_images] (an integer) and ``skipped`` a list of ``{"image_id": int, "file": str,
        "reason": str}``. Anything else (a list, a count of -1 or "x", skips that are not objects) starts afresh, as
        an unreadable file does: it was resumed from, or raised KeyError/TypeError/ValueError."""
        if not isinstance(prog, dict) or prog.get("fingerprint") != self.fingerprint \
                or prog.get("software", {}) != self.software:
            return False
        done, skipped = prog.get("done"), prog.get("skipped")
        return _count(done, 0) and done <= self.num_images and isinstance(skipped, list) \
            and all(isinstance(s, dict) and _count(s.get("image_id"), 0) and isinstance(s.get("file"), str)
                    and isinstance(s.get("reason"), str) for s in skipped)

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
        write_json_atomic(self.dir / PROGRESS, self._progress(done, skipped))

    def _progress(self, done: int, skipped: list[dict]) -> dict:
        return {"fingerprint": self.fingerprint, "software": self.software, "done": done, "skipped": skipped}

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
            kept = np.asarray(ids[keep], dtype=np.int64)
            write_bytes_atomic(self.dir / IDS, _npy_bytes(kept))
            write_json_atomic(self.dir / META, {**meta, "ids_sha256": ids_digest(kept)}, indent=1)
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
