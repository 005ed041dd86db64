"""Copy a device run's benchmark JSON files into ``benchmarks/results/``, named after the card that made them.

    python benchmarks/collect.py FOLDER [--force]     # e.g. the device tool's files_at folder

``train_profile.json`` measured on an "NVIDIA H200" becomes ``benchmarks/results/train_profile_h200.json``;
``benchmarks/gpu_checks.py``'s results (checks, not measurements: no ``command``) are copied too, also when a section
failed or the run was cut off (``ok`` and ``complete`` say so). Files that are not benchmark results (no device
recorded), extractions whose store failed its copy check, logs and anything else are left alone; an existing file
is kept unless ``--force``. The performance page (notebook 08) shows
whatever lies in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def card_of(result: dict) -> str | None:
    """Short card name of a benchmark result (``"h200"``, ``"h100"``, else a slug of the device name), or None if
    it records no GPU."""
    devices = [result.get("device", "")] + [r.get("device", "") for r in result.get("train", [])]
    devices += [p.get("device", "") for p in result.get("profile", [])]
    for name in devices:
        if not name or re.search(r"(^|\s)cpu\b", name, re.IGNORECASE):  # "cpu", "x86_64 CPU, 2 torch threads"
            continue
        match = re.search(r"\b([A-Z]\d{2,4}[A-Za-z]?)\b", name)
        if match:
            return match.group(1).lower()
        return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-")
    return None


def collect(folder: Path, dest: Path = RESULTS, force: bool = False) -> list[tuple[Path, Path | None, str]]:
    """(source, destination or None, why) for every JSON file in ``folder``; copies the ones with a destination."""
    done = []
    for src in sorted(Path(folder).glob("*.json")):
        try:
            result = json.loads(src.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            done.append((src, None, f"unreadable: {exc}"))
            continue
        card = card_of(result) if isinstance(result, dict) else None
        if card is None or ("command" not in result and "aligned_vs_packed_lstm" not in result):
            done.append((src, None, "not a GPU benchmark result"))
            continue
        if result.get("copy_check_failed"):  # benchmarks/extract.py exited 3: rows in the wrong place
            done.append((src, None, "its store failed the copy check: not a measurement to keep"))
            continue
        target = dest / f"{src.stem}_{card}.json"
        if target.exists() and not force:
            done.append((src, None, f"{target.name} exists (--force replaces it)"))
            continue
        dest.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(src, partial)
        partial.replace(target)  # never a half-copied result under its final name
        done.append((src, target, "copied"))
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    if not a.folder.is_dir():
        print(f"error: {a.folder} is not a folder", file=sys.stderr)
        return 2
    rows = collect(a.folder, force=a.force)
    for src, target, why in rows:
        print(f"{src.name}: {why}" + (f" -> {target}" if target else ""))
    return 0 if any(t for _, t, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
