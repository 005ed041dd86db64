"""The study command: run every notebook with papermill for one profile, then build the Jupyter Book.

``python -m dan.study --profile default`` executes ``notebooks/NN_*.ipynb`` in order into a staging folder,
stops at the first failure naming the notebook and the cell, and only when all succeeded moves the executed
notebooks to ``book/notebooks/`` (where ``_toc.yml`` reads them) and builds the book into a fresh folder that
then replaces ``_build/html``, so a failed run always leaves the last good book in place. The wall time of
every stage is printed and written to ``results/<profile>/study_times.json`` (the results folder of the data set's
draw, :func:`dan.io.study_paths`: the study's ``01_data`` generates draw 0).

A rerun resumes: it reuses the staged executed copies of the first notebooks that are provably current (completed;
same notebook, parameters, ``dan`` source, inputs, environment and earlier stages; data as they left them: the rule
is :mod:`dan.study_resume`'s), prints them, and executes from the first one that is not. A reused stage keeps its
earlier time, in ``study_times.json`` and the total too. ``--fresh`` executes every notebook, as ``--only`` does
the ones it names. A partial run (``--only``) updates the times of its notebooks in the file and records no total
of its own; the total it found is kept as ``"total of the last full run"``, until a full run records its own.

``--out DIR --no-book`` executes into DIR only (used to refresh the nbval copies in ``tests/notebooks``; DIR is
made if missing, and may not be a file or inside the study's sources: ``notebooks/``, ``dan/``, ``records/``,
``benchmarks/``);
with ``--record-times`` it still writes the stage times (used by the GPU session for the ``full`` profile,
whose executed notebooks must not replace the default profile's in ``book/notebooks``).

This module holds the run (stage times, the ``--out`` checks, the book build, the command line); executing one
notebook (papermill, its kernel, its failure messages) is :mod:`dan.study_execute`'s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dan.cli import OneLineParser, guard, nonempty, nonempty_path
from dan.config import PROFILES
from dan.io import (
    ROOT_HELP,
    ConfigError,
    DanError,
    DataError,
    is_number,
    read_json,
    repo_root,
    study_paths,
    write_bytes_atomic,
    write_json_atomic,
)
from dan.study_execute import (  # noqa: F401 - _failing_cell, _last_started_cell, strip_root: dan.study's names too
    STUDY_EXTRA,
    _failing_cell,
    _last_started_cell,
    execute,
    strip_root,
)
from dan.study_resume import PACKAGE, Ledger, run_key

STUDY_PROFILES = tuple(p for p in PROFILES if p != "real")  # generated data: the notebooks' subject


TOTAL = "total"  # study_times.json: the wall time of the whole run that wrote it (a full run only)
# what a partial run (--only) keeps of the total it found, which it is not: the last full run's, under this name
LAST_FULL_TOTAL = "total of the last full run"


def read_study_times(path: Path) -> dict[str, float]:
    """``study_times.json``: seconds per stage (an object of finite numbers >= 0); anything else is a
    :class:`DataError` naming the file and up to three bad entries."""
    times = read_json(path, "study times")
    bad = ([repr(times)] if not isinstance(times, dict) else
           [f"{k}: {v!r}" for k, v in times.items()
            if not is_number(v) or v < 0])
    if bad:
        raise DataError(f"{path}: expected seconds per stage (an object of numbers), got {', '.join(bad[:3])}; "
                        f"rerun the study to rewrite it")
    return times


def notebook_list(root: Path, only: list[str] | None = None) -> list[Path]:
    """The study's notebooks in run order (``notebooks/NN_name.ipynb``); with ``only``, those whose name has one."""
    nbs = sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise DataError(f"no notebooks (NN_name.ipynb) in {root / 'notebooks'}; run from the study's folder or set "
                        f"DAN_ROOT to it")
    if only:
        nbs = [p for p in nbs if any(o in p.stem for o in only)]
        if not nbs:
            raise ConfigError(f"no notebook matches {only}; have: {', '.join(p.stem for p in notebook_list(root))}")
    return nbs




def build_book(root: Path, strict: bool = True) -> float:
    """Build the book into a fresh folder, then swap it into ``_build/html`` (the old book survives a failure)."""
    start = time.perf_counter()
    missing = [name for name in ("_config.yml", "_toc.yml") if not (root / name).is_file()]
    if missing:  # outside a checkout jupyter-book was run on the current folder and ended in its own traceback
        raise DataError(f"no book ({', '.join(missing)}) in {root}; run from the study's folder or set DAN_ROOT to "
                        f"it")
    exe = Path(sys.executable).with_name("jupyter-book")
    if not exe.is_file():
        found = shutil.which("jupyter-book")
        if found is None:  # was "[Errno 2] No such file or directory: 'jupyter-book'"
            raise DanError(f"building the book needs jupyter-book, which is neither beside {sys.executable} nor on "
                           f"PATH; {STUDY_EXTRA}")
        exe = Path(found)
    staging = root / "_build" / "book-staging"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [str(exe), "build", str(root), "--path-output", str(staging), "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        output = f"{proc.stdout.rstrip()}\n{proc.stderr}"  # stdout's last line not glued to stderr's first
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise DanError(f"the book build failed (the previous book in _build/html is kept):\n{tail}")
    built = staging / "_build" / "html"
    if not (built / "index.html").is_file():  # checked before the old book is moved aside
        shutil.rmtree(staging, ignore_errors=True)
        raise DanError(f"jupyter-book exited 0 but wrote no {built / 'index.html'} (the previous book in _build/html "
                       f"is kept); its output ended:\n" + "\n".join(proc.stdout.strip().splitlines()[-10:]))
    final, old = root / "_build" / "html", root / "_build" / "html.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    built.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return time.perf_counter() - start


SOURCES = ("notebooks", "records", "benchmarks")  # under the root; and the dan package (PACKAGE)


def _make_folder(folder: Path, root: Path, what: str) -> None:
    """Create ``folder`` (``what``: how the user gave it) for the executed copies, or a one-line
    :class:`ConfigError`: a file in its place was ``[Errno 17] File exists``; a folder of the study's own sources
    would take them (``notebooks/``: each copy replaced the notebook it was executed from; ``dan/``, ``records/``,
    ``benchmarks/``: what every stage's resume key hashes, so no stage would ever be reused)."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} is a file, not a folder: give a folder for the executed notebooks (it is "
                          f"created if missing)")
    here = folder.resolve()
    for source in (*(root / name for name in SOURCES), PACKAGE):
        if here == source.resolve() or source.resolve() in here.parents:
            effect = ("each executed copy would replace the notebook it is executed from" if source.name ==
                      "notebooks" else "the executed copies would land among the files every stage's resume key "
                                       "hashes")
            raise ConfigError(f"{what} {folder} is in {source}, one of the study's own source folders: {effect}; "
                              f"give a folder outside {', '.join(SOURCES)} and the dan package")
    blocking = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # was [Errno 20] Not a directory, naming the folder, not the file
        raise ConfigError(f"{what} {folder}: cannot create this folder, {blocking} on its path is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only or special file system, no permission
        raise ConfigError(f"{what} {folder}: cannot create this folder ({exc.strerror})") from None


def run_study(profile: str = "default", only: list[str] | None = None, out: Path | None = None,
              book: bool = True, extra: dict | None = None, record_times: bool | None = None,
              fresh: bool = False) -> dict[str, float]:
    """Run the study for ``profile``; return the wall time of each stage in seconds.

    ``record_times`` (default: when ``out`` is None) writes them to ``results/<profile>/study_times.json``, the
    results folder of the data set's draw (:func:`dan.io.study_paths`): ``01_data`` generates draw 0 unless
    ``extra`` gives it another ``seed``, and the record follows the draw it generated.
    ``extra``: parameters passed to every notebook beside ``profile``; each notebook must take them (a name a
    notebook's parameters cell lacks is an error: :func:`dan.notebook.check_parameters`). A whole run reuses the
    executed copies of its first notebooks that are provably current (:mod:`dan.study_resume`) unless ``fresh``.
    """
    if record_times is None:
        record_times = out is None
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; accepted: {', '.join(STUDY_PROFILES)}")
    if profile not in STUDY_PROFILES:
        raise ConfigError(f"the study's notebooks run on the embedded benchmark, which profile {profile!r} is not: "
                          f"they generate it, analyse its grounding annotations and sweep 42 training runs; on the "
                          f"real data sets run the commands of book/real_data.md (python -m dan.features ... "
                          f"--profile real, python -m dan.train ... --profile real); study profiles: "
                          f"{', '.join(STUDY_PROFILES)}")
    root = repo_root()
    os.environ.setdefault("DAN_ROOT", str(root))
    nbs = notebook_list(root, only)
    staging = out or root / "_build" / "staging" / profile
    _make_folder(staging, root, "--out" if out is not None else "the staging folder")
    def times_at() -> Path:  # the record of the data set's draw now (dan.io.study_paths; 01_data may draw another)
        return study_paths(profile, root).results / "study_times.json"

    def times_found(path: Path) -> tuple[dict[str, float], bytes | None]:
        """What a run starts its record in ``path`` from (a partial run: the last run's stages) and its bytes."""
        found: dict[str, float] = {}
        if record_times and path.exists() and not path.is_file():  # else found after the first notebook
            raise DataError(f"study times {path} is a folder, not a file; remove it and rerun")
        if only and path.is_file():  # a partial run updates its stages in the last complete run's record
            last = read_study_times(path)
            found = {k: v for k, v in last.items() if k not in ("book", TOTAL)}
            if TOTAL in last:  # kept, under the name of what it now is: not this record's total (was dropped)
                found[LAST_FULL_TOTAL] = last[TOTAL]
        return found, path.read_bytes() if record_times and path.is_file() else None

    def put_back(path: Path, before: bytes | None) -> None:
        """The record ``path`` as the run found it (or none, as before it)."""
        if before is not None:
            write_bytes_atomic(path, before)
        else:
            path.unlink(missing_ok=True)

    times_file = times_at()
    times, before = times_found(times_file)
    params = {"profile": profile, **(extra or {})}
    total = time.perf_counter()
    ledger = Ledger(staging, root, profile, run_key(root, params), [nb.name for nb in notebook_list(root)],
                    skip=(times_file,))
    plan = ledger.plan(nbs, refused="--fresh" if fresh else "--only executes the notebooks it names" if only else "")
    written = False  # whether this run wrote into times_file yet
    try:
        for k, nb in enumerate(nbs):
            if nb.name in plan.reused:
                times[nb.stem] = ledger.reuse(nb.name)
                print(f"[study] {nb.name} reused: current (its earlier time kept: {times[nb.stem]:.1f} s)", flush=True)
            else:
                if nb is nbs[len(plan.reused)]:  # the first one executed
                    print(f"[study] executing from {nb.name}: {plan.reason}", flush=True)
                print(f"[study] {nb.name} (profile {profile}) ...", flush=True)
                ledger.start(nb)
                times[nb.stem] = execute(nb, staging / nb.name, params, cwd=nb.parent)
                if times_at() != times_file:  # it generated another draw of the data: the run's record is that draw's
                    ran = {p.stem: times[p.stem] for p in nbs[:k + 1]}
                    now = times_at()
                    found, found_before = times_found(now)  # read first: a bad record raises with the old one current
                    if record_times and written:
                        put_back(times_file, before)
                    times_file, times, before = now, {**found, **ran}, found_before
                    written = False
                    ledger.skip_also(times_file)
                ledger.record(nb, times[nb.stem])
                print(f"[study] {nb.name} done in {times[nb.stem]:.1f} s", flush=True)
            if record_times:  # after every stage: later notebooks (performance) show this run's times so far
                write_json_atomic(times_file, times, indent=1)
                written = True
    except BaseException:
        if record_times:  # a failed run leaves the last complete record as it was (or none, as before it)
            put_back(times_file, before)
        raise
    if out is None:
        dest = root / "book" / "notebooks"
        dest.mkdir(parents=True, exist_ok=True)
        for nb in nbs:  # each one whole (temp file + rename): a kill mid-copy leaves no half-written notebook
            write_bytes_atomic(dest / nb.name, (staging / nb.name).read_bytes())
    if book and out is None:
        print("[study] building the book ...", flush=True)
        times["book"] = build_book(root)
        print(f"[study] book built in {times['book']:.1f} s: {root / '_build' / 'html' / 'book' / 'intro.html'}")
    if not only:  # a partial run's duration is no total of the study; a resumed one's counts its reused stages
        times[TOTAL] = time.perf_counter() - total + sum(times[Path(name).stem] for name in plan.reused)
    elif LAST_FULL_TOTAL in times:  # last in the file, after this run's stages
        times[LAST_FULL_TOTAL] = times.pop(LAST_FULL_TOTAL)
    if record_times:
        write_json_atomic(times_file, times, indent=1)
    print("[study] wall time per stage (s): " + json.dumps({k: round(v, 1) for k, v in times.items()}))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m dan.study", description=__doc__.split("\n\n")[0], epilog=ROOT_HELP)
    parser.add_argument("--profile", type=nonempty, help=f"one of {', '.join(STUDY_PROFILES)} (default: default)")
    parser.add_argument("--only", nargs="+", type=nonempty,  # "" and no name at all ran every notebook
                        help="run only the notebooks whose name contains one of these")
    parser.add_argument("--out", type=nonempty_path, help="execute into this folder only (no book)")
    parser.add_argument("--no-book", action="store_true", help="do not build the book")
    parser.add_argument("--book-only", action="store_true", help="only build the book from book/notebooks")
    parser.add_argument("--fresh", action="store_true", help="execute every notebook (a rerun reuses none of them)")
    parser.add_argument("--record-times", action="store_true",
                        help="with --out: still write results/<profile>/study_times.json")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    ns = parser.parse_args(argv)
    if ns.book_only:  # the book is built from book/notebooks as they are: these options would be ignored
        given = [f for f, v in (("--profile", ns.profile), ("--only", ns.only), ("--out", ns.out),
                                ("--no-book", ns.no_book), ("--record-times", ns.record_times),
                                ("--fresh", ns.fresh)) if v]
        if given:
            parser.error(f"--book-only builds the book from book/notebooks as they are; it takes no "
                         f"{', '.join(given)} (run the study without --book-only to execute notebooks)")
    if ns.record_times and ns.out is None:
        parser.error("--record-times is for --out runs (a run without --out records its times anyway)")
    if ns.fresh and ns.only:
        parser.error("--only executes the notebooks it names anyway; it takes no --fresh")

    def go() -> int:
        if ns.book_only:
            print(f"[study] book built in {build_book(repo_root()):.1f} s")
            return 0
        run_study(ns.profile or "default", ns.only, ns.out, book=not ns.no_book, record_times=ns.record_times or None,
                  fresh=ns.fresh)
        return 0

    return guard(go, ns.debug, parser.prog)


if __name__ == "__main__":
    sys.exit(main())
