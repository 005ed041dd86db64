"""The store's background writer: device-to-host copies -> ``pwrite`` of rows -> commits, in two threads.

Used by :func:`dan.extract.run_pipeline` with a :class:`dan.store.PartialStore`; see :mod:`dan.store` for the
files and the commit protocol that makes an interrupted extraction resumable.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from dan.io import DanError
from dan.store import PartialStore


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
