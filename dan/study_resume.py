"""Stage-level resume of :mod:`dan.study`: which executed notebooks of an earlier attempt are provably current.

A rerun of the study reuses the executed copies of its first notebooks from the staging folder, and executes from
the first notebook whose copy is not provably current; from there on every notebook executes, since a later notebook
reads what the earlier ones wrote. A notebook's executed copy is reused only when all of these hold (anything else
executes it: re-executing is always right, reusing wrongly is not):

1. the run is a whole study: neither ``--fresh`` (executes every notebook) nor ``--only`` (executes the notebooks it
   names) was given, and every notebook before it was reused in this run;
2. the ledger ``.study-resume.json`` in the staging folder holds a stamp for it. A stamp is written only after the
   notebook executed through its last cell, and a notebook's stamp is dropped, with every later notebook's, before it
   starts executing, so a failed, killed or interrupted attempt leaves none for it;
3. the stamp's key is this run's: the notebook file's bytes (sha256, not its mtime), the parameters (the profile and
   any extras), the source of the ``dan`` package (every file of the package this runner imports; the kernel imports
   the same one when it runs from the checkout), the repository files the notebooks read beside the data
   (``records/``, ``benchmarks/results/`` and the benchmark scripts ``benchmarks/*.py``), the machine (host name,
   platform, CPU count), the Python environment (the interpreter's version and every installed distribution's) and
   the stamp of the notebook before it in the run, its executed copy's sha256 included (the stamps form one chain: a
   notebook that executed again breaks it);
4. the executed copy in the staging folder is the one the stamp names (same sha256). A copy takes its name by a
   rename once papermill has written it whole (:func:`dan.study_execute.execute`): a half-written one is never under it;
5. the data are as the reused notebooks left them. The ledger holds the size and mtime of every file under
   ``data/generated/<profile>`` and the results folder of its draw (``results/<profile>``,
   :func:`dan.io.study_paths`) and the notebook that last changed it (as of that notebook's end; a file there before
   the ledger began counts as changed by the first notebook to execute). Every file a reused notebook last changed
   must be unchanged; one that a later notebook changed, or one added since (the interrupted notebook's partial work,
   which its stages resume), may differ, since those notebooks execute again. When one changed or went, the reuse
   stops before the notebook that last changed it. Size and mtime, not content hashes: those would cost more than
   most stages (the feature stores, the full profile's 12,000 images). The runner's own ``study_times.json``, temp
   files and a staging folder inside those folders are not counted. A notebook about to execute also drops the stamps
   of earlier ones whose files changed (after a file was deleted, an ``--only`` run must not leave them reusable).

A reused notebook keeps the time recorded when it executed (its stamp's), in ``study_times.json`` too.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from dan.io import sha256_file, study_paths, write_json_atomic

LEDGER = ".study-resume.json"
FORMAT = "dan-study-resume/1"
PACKAGE = Path(__file__).resolve().parent  # the dan package whose source a stamp's key covers
INPUTS = ("records/**/*", "benchmarks/results/**/*", "benchmarks/*.py")  # what the notebooks read beside the data
_WHY = {"notebook": "the notebook changed", "parameters": "the profile or the parameters changed",
        "package": "the dan package's source changed", "inputs": "records/ or benchmarks/ changed",
        "environment": "the machine or the Python environment changed",
        "after": "the notebook before it executed since"}


def _files_digest(files: list[Path], base: Path) -> str:
    """sha256 over the files' paths (relative to ``base``) and contents, in path order."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"{path.relative_to(base)}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def _files_under(base: Path, patterns: tuple[str, ...]) -> list[Path]:
    return [p for pattern in patterns for p in base.glob(pattern) if p.is_file() and "__pycache__" not in p.parts]


def _dist(dist: importlib.metadata.Distribution) -> str:
    try:
        return f"{dist.metadata['Name']}=={dist.version}"
    except Exception:  # noqa: BLE001 - a broken install (no METADATA) is named by its folder
        return f"unreadable {getattr(dist, '_path', '?')}"


def _environment() -> str:
    """sha256 of the machine (host name, platform, CPU count), the interpreter's version and every installed
    distribution's name and version."""
    found = [platform.node(), platform.platform(), str(os.cpu_count()), sys.version,
             *sorted(map(_dist, importlib.metadata.distributions()))]
    return hashlib.sha256("\n".join(found).encode()).hexdigest()


def run_key(root: Path, parameters: dict) -> dict:
    """What every stage of a run depends on beside its own notebook and the stage before it (rule 3)."""
    return {"parameters": json.loads(json.dumps(parameters, sort_keys=True, default=repr)),
            "package": _files_digest(_files_under(PACKAGE, ("**/*",)), PACKAGE.parent),
            "inputs": _files_digest(_files_under(root, INPUTS), root), "environment": _environment()}


def data_files(root: Path, profile: str, skip: tuple[Path, ...]) -> dict[str, list[int]]:
    """``[size, mtime_ns]`` of every file under the profile's data and results folders by its path relative to
    ``root`` (rule 5), without temp files and the paths in ``skip`` (files, or folders with all under them)."""
    paths, found = study_paths(profile, root), {}
    skip = tuple(p.resolve() for p in skip)
    for folder in (paths.data, paths.results):
        for dirpath, dirnames, filenames in os.walk(folder):
            here, real = Path(dirpath), Path(dirpath).resolve()
            dirnames[:] = [d for d in dirnames if real / d not in skip]
            for name in filenames:
                path = here / name
                if (name.startswith(".") and name.endswith(".tmp")) or real / name in skip:
                    continue
                try:
                    st = path.stat()
                except OSError:  # removed while listed
                    continue
                found[str(path.relative_to(root))] = [st.st_size, st.st_mtime_ns]
    return found


def _stamp_id(stamp: dict) -> str:
    return hashlib.sha256(json.dumps([stamp["key"], stamp["copy"]], sort_keys=True).encode()).hexdigest()


def _valid(ledger: object) -> bool:
    """Whether ``ledger`` is one this version wrote: its stamps and its files' ``[size, mtime_ns, notebook]``."""
    if not isinstance(ledger, dict) or ledger.get("format") != FORMAT:
        return False
    stamps, files = ledger.get("stages"), ledger.get("files")
    return (isinstance(stamps, list) and isinstance(files, dict)
            and all(isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("key"), dict)
                    and isinstance(s.get("copy"), str) and isinstance(s.get("seconds"), (int, float)) for s in stamps)
            and all(isinstance(v, list) and len(v) == 3 and isinstance(v[2], str) for v in files.values()))


@dataclass
class Plan:
    """The notebooks a run reuses (names, in run order) and why the first of the others executes ("" if none)."""

    reused: list[str]
    reason: str = ""


class Ledger:
    """The stamps of a staging folder's completed executed copies and the data files' states (rules 2 to 5)."""

    def __init__(self, staging: Path, root: Path, profile: str, key: dict, order: list[str],
                 skip: tuple[Path, ...] = ()) -> None:
        """The ledger of ``staging`` for a run of ``profile`` under ``root`` whose stages share ``key``
        (:func:`run_key`); ``order``: every notebook's name in the study's order; ``skip``: files of the runner's
        own under the data folders (rule 5)."""
        self.staging, self.root, self.profile, self.key, self.order = staging, root, profile, key, order
        self.skip = (staging, *skip)
        self.path = staging / LEDGER
        try:  # an unreadable or foreign ledger is none: every notebook executes
            ledger = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            ledger = None
        self.stamps: list[dict] = ledger["stages"] if _valid(ledger) else []
        self.files: dict[str, list] = ledger["files"] if _valid(ledger) else {}  # path: [size, mtime_ns, notebook]
        self.after: str | None = None  # the stamp id of the stage before the next one in this run (the chain)
        self._pending: dict | None = None  # the key of the stage executing now, taken when it started

    def skip_also(self, path: Path) -> None:
        """Leave ``path`` (another file of the runner's own, such as the study times of another draw of the data)
        out of the data files too."""
        self.skip = (*self.skip, path)

    def _write(self) -> None:
        write_json_atomic(self.path, {"format": FORMAT, "stages": self.stamps, "files": self.files})

    def _stamp(self, name: str) -> dict | None:
        return next((s for s in self.stamps if s["name"] == name), None)

    def _current(self) -> dict[str, list[int]]:
        return data_files(self.root, self.profile, self.skip)

    def _holding(self, names: list[str]) -> tuple[list[str], str]:
        """The longest run of ``names`` from the first whose files hold (rule 5), and the first file that does not
        hold for the next one ("" when all do)."""
        now, changed = self._current(), {}
        for path, (size, mtime_ns, owner) in sorted(self.files.items()):
            if now.get(path) != [size, mtime_ns]:
                changed.setdefault(owner, path)
        held = next((i for i, name in enumerate(names) if name in changed), len(names))
        return names[:held], changed[names[held]] if held < len(names) else ""

    def _stale(self, nb: Path, after: str | None) -> str:
        """Why stage ``nb``'s executed copy is not current by rules 2 to 4 ("" when it is)."""
        stamp = self._stamp(nb.name)
        if stamp is None:
            return f"no completed executed copy of it in {self.staging}"
        key = {"notebook": sha256_file(nb), **self.key, "after": after}
        changed = next((field for field in key if stamp["key"].get(field) != key[field]), None)
        if changed:
            return _WHY[changed]
        copy = self.staging / nb.name
        if not copy.is_file() or sha256_file(copy) != stamp["copy"]:
            return f"its executed copy {copy} is missing or not the one that completed"
        return ""

    def plan(self, nbs: list[Path], refused: str = "") -> Plan:
        """The longest run of ``nbs`` from the first that is provably current (rules 2 to 5); none when ``refused``
        says why not (rule 1)."""
        plan, after = Plan([], refused), None
        for nb in nbs if not refused else ():
            plan.reason = self._stale(nb, after)
            if plan.reason:
                break
            plan.reused.append(nb.name)
            after = _stamp_id(self._stamp(nb.name))
        if plan.reused:
            plan.reused, changed = self._holding(plan.reused)
            if changed:
                plan.reason = f"{changed}, which it wrote last, changed or went since"
        return plan

    def reuse(self, name: str) -> float:
        """Stage ``name`` is reused: the next stage's key follows its stamp. Returns its recorded wall time."""
        stamp = self._stamp(name)
        self.after = _stamp_id(stamp)
        return float(stamp["seconds"])

    def start(self, nb: Path) -> None:
        """Stage ``nb`` starts executing: its key is taken as it is now, and before it runs the ledger on disk drops
        its stamp and every later stage's (in the study's order) and those of earlier stages whose files changed."""
        self._pending = {"notebook": sha256_file(nb), **self.key, "after": self.after}
        before = self.order[:self.order.index(nb.name)]
        kept = [s["name"] for s in self.stamps if s["name"] in before]
        kept, _ = self._holding(kept)
        self.stamps = [s for s in self.stamps if s["name"] in kept]
        self._write()

    def record(self, nb: Path, seconds: float) -> None:
        """Stage ``nb`` executed through: stamp its executed copy with the key taken at its start, and charge it with
        every data file that is new or changed since the ledger last saw it."""
        now = self._current()
        self.files = {path: self.files[path] if self.files.get(path, [None, None])[:2] == state else [*state, nb.name]
                      for path, state in now.items()}
        stamp = {"name": nb.name, "key": self._pending, "copy": sha256_file(self.staging / nb.name),
                 "seconds": seconds}
        self.stamps.append(stamp)
        self._write()
        self.after = _stamp_id(stamp)
