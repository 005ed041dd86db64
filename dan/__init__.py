"""Dual Attention Networks (Nam, Ha & Kim, CVPR 2017): a reproducible study.

The stages, one module each, in the order a study runs them (``python -m dan`` lists the command lines):

- data: :mod:`dan.data` (``python -m dan.data generate|info|check``): loaders for VQA v1/v2, Karpathy splits and
  Flickr8k in their real formats, and the embedded benchmark generated in those formats (:mod:`dan.data.synth`).
- features: :mod:`dan.features` (``python -m dan.features``; its configuration in :mod:`dan.feature_config`) with
  :mod:`dan.backbones`, :mod:`dan.extract` (:mod:`dan.extract_input`), :mod:`dan.jpeg`, :mod:`dan.resize` and
  :mod:`dan.fuse`: frozen-CNN grid features into fp16 stores (:mod:`dan.store`, :mod:`dan.store_writer`), opened
  lazily by image id (:mod:`dan.store_reader`).
- models: :mod:`dan.attention` and :mod:`dan.models` (r-DAN for VQA, m-DAN for image-text matching;
  :func:`dan.models.build_model`), :mod:`dan.losses`.
- training: :mod:`dan.config` (presets as dataclasses), :mod:`dan.prepare`, :mod:`dan.batches`, :mod:`dan.train`
  (``python -m dan.train``; a step's pieces in :mod:`dan.step`; checkpoints in :mod:`dan.checkpoint`, resumable).
  A loop of one's own: ``prep = prepare(cfg, device)``, ``prep.build_model(cfg)``,
  ``prep.train.batch(idx, prep.bank)`` (README).
- evaluation: :mod:`dan.metrics` (official VQA accuracy, retrieval recall), :mod:`dan.evaluate`
  (``python -m dan.evaluate RUN --split ...``: any split from a checkpoint, e.g. the VQA server's results file),
  :mod:`dan.retrieval` (m-DAN's: whole split, a subset of images, or COCO's 1K folds).
- analysis: :mod:`dan.ablation` (sweeps over K and attention type), :mod:`dan.claims` (their tables and claim
  checks), :mod:`dan.stats` (t intervals),
  :mod:`dan.analysis` (runs' outputs read back by :mod:`dan.analysis_outputs`) and :mod:`dan.gallery` (does
  attention look where it should), :mod:`dan.viz`,
  :mod:`dan.report` (tables from files on disk), :mod:`dan.reference` (the paper's numbers).
- the study and its records: :mod:`dan.study` (``make study``; a rerun resumes: :mod:`dan.study_resume`),
  :mod:`dan.notebook`, :mod:`dan.record`,
  :mod:`dan.bench` and :mod:`dan.bench_records` (speed benchmarks and their committed results).
"""

import sys as _sys

__version__ = "0.1.0"

# pyproject.toml's [project.scripts] (`pip install .` puts them on PATH): the stage each one runs
_SCRIPTS = {"dan-train": "dan.train", "dan-features": "dan.features", "dan-evaluate": "dan.evaluate",
            "dan-data": "dan.data", "dan-study": "dan.study"}


def _script() -> str | None:
    """The console script this program is (``dan-train``), or None."""
    name = _sys.argv[0].rpartition("/")[2] if _sys.argv else ""
    return name if name in _SCRIPTS else None


def _stage_module() -> str | None:
    """The ``dan`` module that ``python -m`` (or its console script, ``dan-train``) runs (``dan.train``), or None
    when the program is not one."""
    import os

    if (script := _script()) is not None:
        return _SCRIPTS[script]
    argv0 = _sys.argv[0] if _sys.argv else ""
    if argv0 == "-m":  # runpy is still importing the packages above the module: the command line names it
        orig = list(getattr(_sys, "orig_argv", []))
        flag = next((i for i, a in enumerate(orig) if i and a.startswith("-m")), None)  # -m dan.x or -mdan.x
        name = "" if flag is None else orig[flag][2:] or (orig[flag + 1] if flag + 1 < len(orig) else "")
    else:  # the module's file, e.g. .../dan/data/__main__.py -> dan.data
        top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        name = os.path.relpath(os.path.splitext(os.path.abspath(argv0))[0], top) if argv0 else ""
        name = name.replace(os.sep, ".").removesuffix(".__main__")
    return name if name == "dan" or name.startswith("dan.") else None


def _interrupted_in_one_line(kind, value, tb):  # noqa: ANN001 - sys.excepthook's signature
    """``python -m dan.<stage>`` interrupted (Ctrl-C) before its own handler runs, e.g. while torch is still being
    imported: one line instead of the import machinery's traceback (each stage's ``guard`` handles it after). Any
    other exception, or a program that is not a ``dan`` module (a package run with ``-m`` that imports dan), goes to
    the hook that was there before."""
    module = _stage_module() if issubclass(kind, KeyboardInterrupt) else None
    if module is None:
        _previous_excepthook(kind, value, tb)
    else:
        print(f"python -m {module}: interrupted", file=_sys.stderr)


# runpy imports the package (argv[0] "-m") before it runs the module as __main__; a console script imports it first
if _sys.argv[:1] == ["-m"] or _script() is not None:
    _previous_excepthook = _sys.excepthook
    _sys.excepthook = _interrupted_in_one_line
