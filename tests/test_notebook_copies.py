"""The executed notebooks (the book's, book/notebooks/, and notebook CI's, tests/notebooks/) are the sources in
notebooks/ as they ran: the same cells, text and code. An edit to a source that was not re-executed (make study /
make refresh-nbval) would leave the book or the CI showing the old one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cells(path: Path) -> list[tuple[str, str]]:
    """(type, source) of each cell, leaving out the parameters cell papermill injects."""
    return [(c["cell_type"], "".join(c["source"])) for c in json.loads(path.read_text())["cells"]
            if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("copies", ["book/notebooks", "tests/notebooks"])
def test_executed_copies_hold_the_sources_cells(copies):
    assert len(SOURCES) == 8
    for src in SOURCES:
        copy = ROOT / copies / src.name
        assert copy.is_file(), f"{copies}/{src.name} is missing"
        want, got = cells(src), cells(copy)
        differ = [k for k, (a, b) in enumerate(zip(want, got, strict=False)) if a != b]
        assert len(want) == len(got) and not differ, (
            f"{copies}/{src.name} differs from notebooks/{src.name} (cells {differ or 'count'}): re-execute it "
            f"({'make refresh-nbval' if copies.startswith('tests') else 'python -m dan.study --only ...'})")
