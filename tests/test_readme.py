"""The README's Python example runs as printed (its asserts hold) and its shell commands take the flags shown, so the
front page cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_blocks_run(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README shows no Python example"
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), {"__name__": "readme"})  # noqa: S102
    assert "'r1': 100.0" in capsys.readouterr().out


def _bash_lines() -> list[str]:
    """The command lines of the README's bash blocks, without their comments."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_readme_commands_exist_and_take_the_flags_shown(capsys) -> None:
    """The python block above runs; the shell commands were not checked: each ``python -m dan...`` flag is one its
    command's --help lists, each script and notebook exists, each papermill -p name is one of the notebook's
    parameters, and each make target is the Makefile's (the CI entry runs the test one)."""
    import importlib
    import json
    import shlex

    import pytest

    root = README.parent
    lines = _bash_lines()
    assert any(line.startswith("make study") for line in lines) and any(line == "make test" for line in lines)
    makefile = (root / "Makefile").read_text(encoding="utf-8")
    seen = set()
    for line in lines:
        words = shlex.split(line)
        if words[0] == "make":
            assert re.search(rf"^{words[1]}:", makefile, flags=re.M), line
        elif words[0] in ("bash", "python") and words[1] != "-m":
            assert (root / words[1]).is_file(), line
        elif "-m" in words and words[words.index("-m") + 1].startswith("dan"):
            module, args = words[words.index("-m") + 1], words[words.index("-m") + 2:]
            sub = [args[0]] if module == "dan.data" else []
            mod = importlib.import_module("dan.data.__main__" if module == "dan.data" else module)
            with pytest.raises(SystemExit):
                mod.main([*sub, "--help"])
            text = capsys.readouterr().out
            for flag in (a.split("=")[0] for a in args if a.startswith("--")):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{line}: {flag} not in its --help"
            seen.add(module)
        elif words[0].endswith("papermill"):
            nb = json.loads((root / words[1]).read_text(encoding="utf-8"))
            (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
            names = set(re.findall(r"^(\w+)\s*=", "".join(cell["source"]), flags=re.M))
            given = [words[i + 1] for i, w in enumerate(words) if w == "-p"]
            assert given and set(given) <= names, f"{line}: {set(given) - names} not parameters of {words[1]}"
            seen.add("papermill")
    assert {"dan.data", "dan.features", "dan.train", "dan.evaluate", "papermill"} <= seen, seen
    ci = (root / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, flags=re.M), ci
