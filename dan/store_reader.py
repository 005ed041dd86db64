"""The reading side of a feature store (:mod:`dan.store` has the files and how they are written): :class:`FeatureStore`.

:class:`FeatureStore` maps ``features.npy`` read-only on first access and re-maps it after a ``fork`` (each
DataLoader worker gets its own map), after checking that it is still the file it opened (a re-extraction into
the same folder fails such reads instead of mixing new rows with the old meta); ``__init__`` reads only
``meta.json``, ``ids.npy`` and the header of ``features.npy``. ``store[image_id]`` is one image's ``[N, D]`` by
its id (not a row position); by position, e.g. in a DataLoader with workers:
``DataLoader(range(len(store)), batch_size=64, num_workers=2, collate_fn=store.gather)`` gives ``float16
[B, N, D]`` arrays of the images ``store.ids[positions]``.

Also here, shared with the writer: the names of a store's files, :func:`npy_header` and :func:`ids_digest`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from dan.io import DataError, is_int, read_json, require_keys

FEATURES, IDS, META, PARTIAL = "features.npy", "ids.npy", "meta.json", ".partial"
META_KEYS = ("backbone", "layer", "weights_sha256", "image_size", "grid", "dim", "dtype", "preprocessing",
             "num_images", "skipped", "fingerprint")


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset (bytes) of an ``.npy`` file, reading only its header."""
    with open(path, "rb") as fh:
        return _read_header(fh, path)


def _read_header(fh, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    version = np.lib.format.read_magic(fh)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = reader(fh)
    if fortran:
        raise DataError(f"{path}: Fortran-ordered arrays are not supported")
    return shape, dtype, fh.tell()


def _count(value, least: int = 1) -> bool:
    """An integer (not a bool) >= ``least``: a meta.json field that sizes the arrays."""
    return is_int(value) and value >= least


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """Which file this is (device, inode) and which version of it (size, modification time)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def ids_digest(ids: np.ndarray) -> str:
    """meta.json's ``ids_sha256``: sha256 of the ids as little-endian int64 values (not of the .npy file's bytes)."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()


class FeatureStore:
    """Read access to a finished store: ``gather(positions) -> np.float16 [B, N, D]``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not FeatureStore.exists(self.path):
            hint = (" (an extraction stopped before finishing; rerunning it resumes where it stopped if the images "
                    "and settings are unchanged)") if (self.path / PARTIAL).is_dir() else ""
            inner = sorted(p.name for p in self.path.iterdir() if FeatureStore.exists(p)) if self.path.is_dir() else []
            if inner:  # a features root (python -m dan.features --out): one store per image folder below it
                raise DataError(f"{self.path} is a features root, not a store: open one of its stores, "
                                f"{', '.join(str(self.path / n) for n in inner)}")
            raise DataError(f"no complete feature store at {self.path}: {META} missing{hint}; "
                            f"build it with `python -m dan.features --data DIR --out DIR`")
        self.meta: dict = read_json(self.path / META, "feature store meta")
        require_keys(self.meta, META_KEYS, f"{self.path / META}")
        grid, dim, num = self.meta["grid"], self.meta["dim"], self.meta["num_images"]
        if not (isinstance(grid, list) and len(grid) == 2 and all(_count(g) for g in grid) and _count(dim)
                and _count(num, 0)):
            raise DataError(f"{self.path / META}: grid {grid!r}, dim {dim!r} and num_images {num!r} must be "
                            f"[rows, cols], a count and a count; delete the store and re-extract")
        try:
            ids = np.load(self.path / IDS, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # truncated, empty, not an .npy file, object array
            raise DataError(f"feature store {self.path}: cannot read {IDS}: {exc}; delete it and re-extract") \
                from exc
        if not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"feature store {self.path}: {IDS} holds {ids.dtype}, not integer image ids; delete it "
                            f"and re-extract")
        self.ids: np.ndarray = ids.astype(np.int64, copy=False)
        try:
            with open(self.path / FEATURES, "rb") as fh:
                shape, dtype, offset = _read_header(fh, self.path / FEATURES)
                st = os.fstat(fh.fileno())
        except (ValueError, OSError) as exc:
            raise DataError(f"feature store {self.path}: cannot read {FEATURES}: {exc}; delete it and re-extract") \
                from exc
        expected = (int(self.meta["num_images"]), self.num_regions, self.dim)
        if tuple(shape) != expected or dtype != np.float16 or self.ids.shape != (expected[0],):
            raise DataError(f"feature store {self.path} is inconsistent: features {tuple(shape)} {dtype}, "
                            f"ids {self.ids.shape}, meta expects {expected} float16; delete it and re-extract")
        if st.st_size < offset + int(np.prod(expected)) * 2:
            raise DataError(f"feature store {self.path}: {FEATURES} is truncated ({st.st_size} bytes, its header "
                            f"promises {offset + int(np.prod(expected)) * 2}); delete it and re-extract")
        self._offset, self._opened = offset, _identity(st)  # every later map must be of this very file
        if expected[0] > 1 and not np.all(np.diff(self.ids) > 0):
            raise DataError(f"feature store {self.path}: {IDS} is not sorted and unique; delete it and re-extract")
        digest = self.meta.get("ids_sha256")  # stores written before it have none: nothing to compare
        if digest is not None and ids_digest(self.ids) != digest:  # e.g. ids 1..5 swapped for 100..104
            span = f"ids {self.ids[0]}..{self.ids[-1]}" if len(self.ids) else "no ids"
            raise DataError(f"feature store {self.path}: {IDS} ({span}) does not match {META}'s ids_sha256 "
                            f"{str(digest)[:12]}...: replaced by another store's?; delete the store and re-extract")
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
        """Map ``features.npy``, checking that it is still the file ``__init__`` read: a re-extraction into the same
        folder replaces it (a new file), and rows of the new one must not be read under the old meta and ids."""
        if self._array is None or self._pid != os.getpid():
            with open(self.path / FEATURES, "rb") as fh:
                if _identity(os.fstat(fh.fileno())) != self._opened:
                    raise DataError(f"feature store {self.path} was replaced or changed after it was opened (a "
                                    f"re-extraction into the same folder?); open it again")
                shape = (len(self), self.num_regions, self.dim)
                self._array = np.memmap(fh, dtype=np.float16, mode="r", offset=self._offset, shape=shape)
            self._pid = os.getpid()
        return self._array

    def __getstate__(self) -> dict:  # pickled into DataLoader workers without the map
        state = self.__dict__.copy()
        state["_array"], state["_pid"] = None, -1
        return state

    def positions(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Row positions (int64 [B]) of image ``ids``; unknown ids raise :class:`DataError` naming them."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(self.ids, ids)
        pos_c = np.minimum(pos, max(len(self) - 1, 0))
        bad = (pos >= len(self)) | (self.ids[pos_c] != ids) if len(self) else np.ones(ids.shape, bool)
        if bad.any():
            missing = list(dict.fromkeys(ids[bad].tolist()))  # distinct, in order: one id per question repeats
            raise DataError(f"{len(missing)} image id(s) not in feature store {self.path} "
                            f"(e.g. {', '.join(str(i) for i in missing[:5])}); its {len(self)} images come from "
                            f"another image folder or were skipped as unreadable")
        return pos.astype(np.int64)

    def gather(self, positions: np.ndarray | list[int]) -> np.ndarray:
        """Features of rows ``positions`` (int [B]) as a new ``np.float16`` array ``[B, N, D]``."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise DataError(f"row position out of range [0, {len(self)}) for feature store {self.path}")
        return np.asarray(self._features()[positions])

    def __getitem__(self, image_id: int) -> np.ndarray:  # [N, D]
        try:
            return self.gather(self.positions([image_id]))[0]
        except DataError as exc:  # e.g. DataLoader(store) asking for positions 0, 1, ...
            first = ", ".join(str(i) for i in self.ids[:3])
            raise DataError(f"{exc}; store[...] takes an image id (store.ids: {first}, ...), not a row position: "
                            f"rows by position are store.gather(positions)") from None

    def load_all(self) -> np.ndarray:
        """Every row in memory: ``np.float16 [num_images, N, D]`` (explicit; may be large)."""
        return np.array(self._features())

    def check_compatible(self, expected: dict, what: str = "the checkpoint") -> None:
        """Raise :class:`DataError` if ``expected`` (e.g. a checkpoint's feature meta) differs in dim, grid, backbone,
        layer or image_size (keys missing from ``expected`` are not compared)."""
        for key in ("dim", "grid", "backbone", "layer", "image_size"):
            if key in expected and list(np.atleast_1d(expected[key])) != list(np.atleast_1d(self.meta[key])):
                raise DataError(
                    f"feature store {self.path} has {key}={self.meta[key]} ({self.meta['backbone']}/"
                    f"{self.meta['layer']}, dim {self.dim}, grid {self.grid}) but {what} expects {key}="
                    f"{expected[key]}; extract features with the same backbone or train a new model")
