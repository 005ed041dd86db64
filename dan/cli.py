"""Command-line front ends: user mistakes end in one line on stderr and exit code 2, never a traceback.

``--debug`` re-raises so the full traceback shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

from dan.io import ROOT_HELP, DanError


def guard(fn: Callable[[], int], debug: bool, prog: str) -> int:
    """Run ``fn``; a :class:`DanError` or an OS error (missing file, full or read-only disk) becomes one line
    ``prog: error: ...`` on stderr and exit code 2."""
    try:
        return fn()
    except (DanError, OSError) as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``prog: error: ...``, exit code 2), no usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def nonempty(text: str) -> str:
    """An argparse type: the text as given, unless it is empty (``--out "$RUN"`` with RUN unset): an empty path read
    as "." or as unset, so the command wrote into the current folder or the default one instead of failing."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a non-empty value, got {text!r}")
    return text


def nonempty_path(text: str) -> Path:
    """:func:`nonempty`, as a :class:`~pathlib.Path`."""
    return Path(nonempty(text))


def _parse_bool(text: str) -> bool:
    """true/false (also 1/0, yes/no, on/off); anything else is an error, not a silent False."""
    value = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
             "off": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def field_comments(cls: type) -> dict[str, str]:
    """The comment after each field of the dataclass ``cls`` in its source, with the comment lines that follow it
    (what the fields mean: the CLI's help); empty when the source cannot be read."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    last = None
    for line in lines:
        field_match = re.match(r"    (\w+): [^#]*?(?:#\s*(.*))?$", line)
        more = re.match(r"    #\s*(.*)$", line)
        if field_match:
            last = field_match.group(1)
            out[last] = (field_match.group(2) or "").strip()
        elif more and last:
            out[last] = f"{out[last]} {more.group(1).strip()}".strip()
        else:
            last = None
    return {k: v for k, v in out.items() if v}


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, choices: dict | None = None) -> None:
    """One ``--flag`` per field of ``cls`` (underscores become dashes); booleans take true/false. The help of each
    is the field's comment (:func:`field_comments`) and, from ``choices`` (field -> accepted values), what it
    accepts."""
    helps = field_comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if args and typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = args[0]
        is_list = typing.get_origin(tp) is list
        if is_list:
            tp = typing.get_args(tp)[0]
        accepted = (choices or {}).get(f.name)
        text = helps.get(f.name, "") + (f" (one of: {', '.join(map(str, accepted))})" if accepted else "")
        kwargs: dict = {"dest": f.name, "default": None, "help": text.strip().replace("%", "%%") or None}
        if tp is bool:
            kwargs["type"] = _parse_bool
        else:
            kwargs["type"] = tp
        if is_list:
            kwargs["nargs"] = "*"
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def run_train_cli(argv: list[str] | None = None) -> int:
    from dan.config import CHOICES, TrainConfig, check_ignored, preset

    parser = OneLineParser(
        prog="python -m dan.train",
        description="Train and evaluate r-DAN (--task vqa) or m-DAN (--task matching). Unset flags take the "
                    "profile's preset (the paper's setting, shrunk for the CPU profiles).",
        epilog=ROOT_HELP)
    add_dataclass_args(parser, TrainConfig, CHOICES)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    ns = parser.parse_args(argv)
    values = {k: v for k, v in vars(ns).items() if k not in ("no_progress", "debug") and v is not None}
    task, profile = values.pop("task", "vqa"), values.pop("profile", "default")

    def go() -> int:
        from dan.train import train

        cfg = preset(profile, task, **values)  # validated: refuses the other task's fields, momentum without SGD
        check_ignored(cfg, given=values)  # ... and those flags even where they repeat the preset's values
        result = train(cfg, progress=not ns.no_progress)
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 holds the metrics
            print(json.dumps({"run_dir": str(result.run_dir), "metrics": result.metrics}, indent=1, default=str))
        return 0

    return guard(go, ns.debug, parser.prog)
