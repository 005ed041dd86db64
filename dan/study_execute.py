"""Executing one notebook of :mod:`dan.study` with papermill: the executed copy, the kernel, the failure messages.

:func:`execute` runs a notebook into its executed copy, which takes its name only once written whole (a rerun's
resume, :mod:`dan.study_resume`, may reuse it); a failing cell or a dead kernel is a one-line :class:`DanError` naming
the notebook and the cell (:func:`_failing_cell`, :func:`_last_started_cell`); a Ctrl-C kills the kernel's process
group instead of interrupting it (:func:`_interrupt_kills_the_kernel`, :func:`_kernel_manager`); :func:`strip_root`
makes this machine's paths in the copy relative. The study's runner, its ``--out`` checks and the book build are
:mod:`dan.study`'s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import warnings
from pathlib import Path

from dan.io import DanError, atomic_path, repo_root, write_bytes_atomic

STUDY_EXTRA = "install the study extra in the repository: pip install '.[study]' (or make env)"


def execute(nb: Path, out: Path, parameters: dict, cwd: Path) -> float:
    """Execute ``nb`` into ``out`` with papermill; return the wall time in seconds.

    papermill writes into a temp file that takes ``out``'s name once executed through (:func:`dan.io.atomic_path`):
    ``out`` never holds a half-written copy, which a rerun could reuse. A failing cell raises :class:`DanError` naming
    the notebook, the cell and the error; so does a kernel that died (killed from outside, or out of memory); both
    copies, written whole, then replace ``out``. A Ctrl-C (SIGINT) ends the kernel with everything it started at once
    (:func:`_kernel_manager`) and raises :class:`KeyboardInterrupt`, which the CLI reports in one line (its copy is
    dropped).
    """
    try:
        import papermill as pm
        from nbclient.exceptions import DeadKernelError
        from papermill.exceptions import PapermillExecutionError
    except ImportError as exc:  # `pip install .` (no extras) was a ModuleNotFoundError traceback here
        raise DanError(f"executing the notebooks needs papermill ({exc}); {STUDY_EXTRA}") from None

    os.environ.setdefault("PYTHONHASHSEED", "0")  # the kernel inherits it: string hashing fixed from its start
    start = time.perf_counter()
    with atomic_path(out) as partial:
        try:
            with _interrupt_kills_the_kernel(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The specified file .* does not end in")  # the .tmp name
                pm.execute_notebook(str(nb), str(partial), parameters=parameters, cwd=str(cwd), progress_bar=False,
                                    kernel_name="python3", kernel_manager_class=_kernel_manager())
        except PapermillExecutionError as exc:
            where = _failing_cell(partial, exc.cell_index)
            _settle(partial, out)
            evalue = " ".join(str(exc.evalue).split())
            raise DanError(f"notebook {nb.name} failed in {where}: {exc.ename}: {evalue}; "
                           f"the executed copy with the error is at {out}") from None
        except DeadKernelError:
            cell = _last_started_cell(partial)
            where = "a cell" if cell is None else _failing_cell(partial, cell)
            _settle(partial, out)
            raise DanError(f"notebook {nb.name}: its kernel died in {where} "
                           f"(killed from outside, or out of memory); rerun the same command to resume: finished "
                           f"notebooks, data, feature stores and runs are reused, interrupted ones resume") from None
        strip_root(partial, repo_root(), final=out)
    return time.perf_counter() - start


def _settle(partial: Path, out: Path) -> None:
    """The copy of a notebook that failed, which papermill finished writing, takes ``out``'s name (if it wrote any)."""
    if partial.is_file() and partial.stat().st_size:
        strip_root(partial, repo_root(), final=out)
        os.replace(partial, out)


_INTERRUPTED = threading.Event()  # set by a Ctrl-C during a notebook: the kernel is then killed, not interrupted


@contextlib.contextmanager
def _interrupt_kills_the_kernel():
    """While a notebook runs: a Ctrl-C marks the run interrupted before it raises :class:`KeyboardInterrupt`.

    papermill then shuts the kernel down, which by default first sends SIGINT to the kernel's process group: the
    interrupted cell's error, the kernel's own errors on its closing sockets and the sweep workers' tracebacks
    followed the one-line message as a wall of tracebacks (measured: 20 to 110 lines). Marked, the shutdown kills
    the group instead (:func:`_kernel_manager`), as kill -9 would: every stage resumes from that (issue 8)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield  # signal handlers belong to the main thread; a SIGINT ignored (a background job) stays ignored
        return

    def interrupted(signum, frame):  # noqa: ANN001
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    _INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _kernel_manager() -> type:
    """jupyter_client's kernel manager, except that after a Ctrl-C (:data:`_INTERRUPTED`) the shutdown's first step
    kills the kernel's process group (the kernel, its sweep workers, its DataLoader workers) instead of
    interrupting it."""
    from jupyter_client.manager import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        async def _async_interrupt_kernel(self) -> None:
            if _INTERRUPTED.is_set() and self.shutting_down:
                await self._async_kill_kernel()
            else:
                await super()._async_interrupt_kernel()

    return KernelManager


def _last_started_cell(executed: Path) -> int | None:
    """Index of the last cell papermill started in an executed copy (the one running when its kernel died)."""
    try:
        import nbformat

        cells = nbformat.read(executed, as_version=4).cells
        return max(i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("start_time"))
    except Exception:  # noqa: BLE001 - an unreadable copy, or no cell started
        return None


def strip_root(nb_path: Path, root: Path, final: Path | None = None) -> None:
    """Make paths under ``root`` relative in an executed notebook (papermill metadata, printed output).

    Executed notebooks are committed and rendered; a reader's machine has none of this machine's paths. ``final``:
    the name the copy will have, for the temp name papermill wrote it under (its ``output_path``).
    """
    text = nb_path.read_text(encoding="utf-8")
    cleaned = text if final is None else text.replace(str(nb_path), str(final))
    cleaned = cleaned.replace(str(root).rstrip("/") + "/", "")
    if cleaned != text:
        write_bytes_atomic(nb_path, cleaned.encode("utf-8"))


def _failing_cell(executed: Path, index: int) -> str:
    """``cell N (`first line`)``, N counted from 1 as in the source notebook (papermill's injected cell excluded)."""
    try:
        import nbformat

        cells = [c for c in nbformat.read(executed, as_version=4).cells  # papermill's error banners out
                 if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
        injected = sum(1 for c in cells[:index] if "injected-parameters" in c.metadata.get("tags", []))
        first = next((line.strip() for line in cells[index].source.splitlines() if line.strip()), "")
    except Exception:  # the executed copy is unreadable: fall back to papermill's index
        return f"cell index {index}"
    return f"cell {index - injected + 1} (`{first[:80]}`)"
