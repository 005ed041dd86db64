"""File I/O shared by every stage: atomic writes, locks, JSON read with clear errors, checksums, the study's folders.

Every file the project writes goes through a temporary file in the same folder followed by ``os.replace``, so a
killed process never leaves a half-written file under the final name.

The errors and checks on values (:class:`DanError`, :class:`DataError`, :class:`ConfigError`, :func:`check_json`,
:func:`is_int`, ...) live in :mod:`dan.errors`; they are re-exported here, where every stage imports them from.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dan.errors import (  # noqa: F401 (check_json, first_line, is_int, is_number, require_keys: re-exported)
    ConfigError,
    DanError,
    DataError,
    check_json,
    first_line,
    is_int,
    is_number,
    require_keys,
)


def _pid_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one owned by another user counts; a number no pid can be
    counts too: nothing is known of it, so its file is kept)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _host_tag() -> str:
    """This machine in a temp file's name (a hash of its host name: eight hex digits, no dots)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[A-Za-z0-9_]+\.tmp")  # atomic_path's


def _stale(match: re.Match, host: str) -> bool:
    pid = int(match["pid"])
    return match["host"] == host and pid != os.getpid() and not _pid_running(pid)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left beside ``path`` in processes that no longer run
    (killed with ``kill -9`` before their rename, so never cleaned up): ``.NAME.<pid>-<host>.<random>.tmp`` written
    on this machine (``<host>``: a hash of its host name) whose pid is not a running process. A live writer's temp
    file is kept, and so is every temp file written on another machine (a folder shared over NFS: whether its
    writer still runs cannot be seen from here). Returns the files removed."""
    path = Path(path)
    return _remove(path.parent, lambda m: m is not None and m["name"] == path.name)


def remove_stale_temps_in(folder: str | os.PathLike) -> list[Path]:
    """:func:`remove_stale_temps` for every file of ``folder`` (a run folder, under its training lock), and also the
    hidden ``.*.tmp`` files without a pid and host in their name, which only versions of dan before those were
    added wrote (a running writer of this version never has such a name). Returns the files removed."""
    return _remove(Path(folder), lambda m: True)


def _remove(folder: Path, wanted) -> list[Path]:  # noqa: ANN001 - (re.Match | None) -> bool
    host, removed = _host_tag(), []
    with contextlib.suppress(OSError):
        for cand in folder.iterdir():
            if not (cand.name.startswith(".") and cand.name.endswith(".tmp")) or not cand.is_file():
                continue
            m = _TEMP.fullmatch(cand.name)
            if wanted(m) and (m is None or _stale(m, host)):
                with contextlib.suppress(OSError):
                    cand.unlink()
                    removed.append(cand)
    return removed


def _fsync_path(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``.NAME.<pid>-<host>.<random>.tmp``); on success make it durable
    (fsync), rename it onto ``path`` and sync the folder, on failure delete it. Temp files of killed writers of the same
    ``path`` are removed first (:func:`remove_stale_temps`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_host_tag()}.", suffix=".tmp",
                                   dir=path.parent)
    except OSError as exc:
        raise DanError(f"cannot write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp_path
        try:
            _fsync_path(tmp_path)  # the data on disk before the name points at it
            os.replace(tmp_path, path)
        except OSError as exc:
            raise DanError(f"cannot write {path}: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):  # the rename itself durable; some file systems refuse a folder's fsync
            _fsync_path(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


_HELD_LOCKS: set[int] = set()  # descriptors of the flocks this process holds (exclusive_flock)


def _drop_held_locks_in_child() -> None:
    """In a process forked while a lock is held: close its copy of the locked descriptor. A flock belongs to the
    open file, which a fork shares: DataLoader workers forked by an extraction held its ``.lock`` on after a
    ``kill -9`` of the extraction (up to 5 s, until their watchdog saw it gone), and the rerun right after the kill
    was refused as "another extraction is writing" the store."""
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_held_locks_in_child)


@contextlib.contextmanager
def exclusive_flock(fd: int, busy: DanError) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the open file (or folder) ``fd`` for the duration, then close it; raise ``busy``
    at once when another open file holds the lock. The kernel releases it when its process ends, even on
    ``kill -9`` (the run folder's lock in :mod:`dan.train`, a feature store writer's in :mod:`dan.store`); a
    process forked meanwhile (a DataLoader worker) does not keep it (:func:`_drop_held_locks_in_child`)."""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        _HELD_LOCKS.add(fd)
        yield
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)  # releases the lock


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename, :func:`atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise DanError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Serialise ``obj`` as JSON (sorted keys, so equal objects give byte-identical files) and write atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False)
    return write_bytes_atomic(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file; a missing or malformed file raises :class:`DataError` naming the file and position."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text: {exc}") from exc
    except RecursionError:  # json's decoder recurses once per nested [ or {: some thousands of them end it
        raise DataError(f"{what} {path} is nested too deeply to read (thousands of [ or {{ inside each other)") \
            from None


ROOT_HELP = ("relative default paths are under the study's folder: $DAN_ROOT if set, else the repository checkout "
             "holding the current directory or the installed package, else the current directory")


def _is_checkout(path: Path) -> bool:
    return (path / "dan" / "__init__.py").is_file() and (path / "pyproject.toml").is_file()


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The study's root folder, under which the default paths (``data/generated/<profile>``, ``results/<profile>``
    (``results/<profile>-seed<k>`` for another draw of the data: :func:`study_paths`),
    ``notebooks/``, ``records/``, ``benchmarks/``) lie: ``$DAN_ROOT`` if set, else the nearest parent of ``start``
    (the current directory) holding ``pyproject.toml`` and ``dan/``, else the checkout the package was imported
    from (an editable install), else the current directory (a package installed from a wheel, whose parent folder
    is ``site-packages``: nothing is written there).

    Notebooks run with their own folder as working directory (JupyterLab, nbval, jupyter-book), so every
    stage resolves its default paths from here rather than from the current directory.
    """
    env = os.environ.get("DAN_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or os.getcwd()).resolve()
    for cand in (here, *here.parents):
        if _is_checkout(cand):
            return cand
    package_parent = Path(__file__).resolve().parent.parent
    return package_parent if _is_checkout(package_parent) else here


@dataclass(frozen=True)
class StudyPaths:
    """Where one profile's artefacts live (all under the repository root unless overridden): those of the draw of its
    generated data that :func:`study_paths` found."""

    profile: str
    data: Path  # generated data set in the real formats
    features: Path  # feature stores, one per image split
    runs: Path  # checkpoints, predictions, metrics per training run
    results: Path  # tables/JSON that the book reads

    def ensure(self) -> StudyPaths:
        """Create the folders the stages write (features, runs, results); an unknown profile is a
        :class:`ConfigError` before any folder is made (a notebook run with ``-p profile smok`` left
        ``data/generated/smok`` and ``results/smok/...`` behind its error). The data folder is left to what makes
        the data set (01_data, ``python -m dan.data generate``, ``data/download.py``): made empty here by every
        notebook's first cell, it hid that the data set was missing, and 03_rdan opened before 01_data failed with
        "no VQA questions file for split 'train2014'; looked for: ..." instead of "no data set at ...: generate it
        with ..." (:func:`dan.prepare.existing_data_root`)."""
        from dan.config import PROFILES  # dan.config imports this module

        if self.profile not in PROFILES:
            raise ConfigError(f"unknown profile {self.profile!r}; accepted: {', '.join(PROFILES)}")
        for p in (self.features, self.runs, self.results):
            p.mkdir(parents=True, exist_ok=True)
        return self


def study_paths(profile: str, root: str | os.PathLike | None = None) -> StudyPaths:
    """Default locations for ``profile``: ``data/generated/<profile>`` (``data/real`` for ``real``, where
    ``data/download.py`` puts the real data sets) and ``results/<profile>/...``. A ``profile`` that is no string is
    a :class:`ConfigError` (``-p profile 1`` was pathlib's TypeError in every notebook's first cell).

    Results are keyed by the generated data set's draw: when ``data/generated/<profile>/manifest.json`` says it was
    generated with a seed ``k`` other than 0 (``01_data -p seed k``, ``python -m dan.data generate --seed k``), the
    features, runs and results of that draw are ``results/<profile>-seed<k>/...``, beside draw 0's
    ``results/<profile>``, which a later run of seed 0 finds again. A missing, damaged or foreign manifest counts as
    seed 0 (:func:`dan.data.synth.generated_seed`); the real data sets have no draw."""
    if not isinstance(profile, str):
        from dan.config import PROFILES  # dan.config imports this module

        raise ConfigError(f"unknown profile {profile!r}; accepted: {', '.join(PROFILES)}")
    base = Path(root) if root is not None else repo_root()
    data = base / "data" / "real" if profile == "real" else base / "data" / "generated" / profile
    seed = None
    if profile != "real":
        from dan.data.synth import generated_seed  # dan.data.synth imports this module

        seed = generated_seed(data, profile)
    res = base / "results" / (profile if not seed else f"{profile}-seed{seed}")
    return StudyPaths(profile=profile, data=data, features=res / "features",
                      runs=res / "runs", results=res)
