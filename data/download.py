#!/usr/bin/env python3
"""Fetch the real data sets (VQA v1/v2, COCO 2014 images, Karpathy splits) into a dan data root.

    python data/download.py --root data/real                      # VQA v2 + COCO train/val 2014 + Karpathy
    python data/download.py --root data/real --only vqa1 karpathy
    python data/download.py --root data/real --checksums SHA256SUMS   # verify against known sums

Downloads resume where they stopped (HTTP Range on ``<name>.part`` files); every finished file's sha256 is
recorded in ``<root>/downloads/SHA256SUMS`` and, when ``--checksums`` names a file in the same format
(``<sha256>  <file name>`` per line), checked against it. Archives are unpacked into the layout the loaders
read (``vqa/``, ``images/train2014/``, ``images/val2014/``, ``captions/``). Flickr30K needs a form: the script
prints how to get it. Standard library only; never run in CI (tests use a local server).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

VQA = "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa"
COCO = "http://images.cocodataset.org/zips"


@dataclass(frozen=True)
class Item:
    url: str
    folder: str  # where the archive's content goes, relative to the data root
    unpack: bool = True

    @property
    def name(self) -> str:
        return Path(urlparse(self.url).path).name


SOURCES: dict[str, list[Item]] = {
    "vqa2": [Item(f"{VQA}/v2_Questions_{s}_mscoco.zip", "vqa") for s in ("Train", "Val", "Test")]
    + [Item(f"{VQA}/v2_Annotations_{s}_mscoco.zip", "vqa") for s in ("Train", "Val")],
    "vqa1": [Item(f"{VQA}/Questions_{s}_mscoco.zip", "vqa") for s in ("Train", "Val", "Test")]
    + [Item(f"{VQA}/Annotations_{s}_mscoco.zip", "vqa") for s in ("Train", "Val")],
    "coco": [Item(f"{COCO}/train2014.zip", "images"), Item(f"{COCO}/val2014.zip", "images")],
    "coco-test": [Item(f"{COCO}/test2015.zip", "images")],
    "karpathy": [Item("https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip", "captions")],
}
DEFAULT = ("vqa2", "coco", "karpathy")

FLICKR30K_HELP = """Flickr30K images are only given out after a form:
  1. Request access at https://shannon.cs.illinois.edu/DenotationGraph/ (or the Flickr30K Entities page).
  2. Unpack flickr30k-images.tar.gz in <root>/images/ so the JPEGs lie in <root>/images/flickr30k-images/<id>.jpg.
  3. The captions and Karpathy split come with --only karpathy: <root>/captions/dataset_flickr30k.json.
  Then load with dan.data.captions.load_karpathy(...) and image_file(<root>/images/flickr30k-images, image)."""


class DownloadError(Exception):
    """A download or unpack failed; the message is one line and says what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checksums(path: str | Path) -> dict[str, str]:
    """``<sha256>  <name>`` lines (the sha256sum format) -> {name: sha256}."""
    out = {}
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is dropped
    except UnicodeDecodeError as exc:  # e.g. a UTF-16 file (PowerShell's '>'), or an archive given by mistake
        raise DownloadError(f"{path}: not a UTF-8 text file of '<sha256>  <file name>' lines ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DownloadError(f"{path}, line {lineno}: expected '<sha256>  <file name>', got {line[:80]!r}")
        out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def record_checksum(path: Path, name: str, digest: str) -> None:
    """Add or update ``name`` in the SHA256SUMS file ``path`` (rewritten atomically)."""
    sums = read_checksums(path) if path.is_file() else {}
    sums[name] = digest
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))
    os.replace(tmp, path)


def download(url: str, dest: Path, expected_sha256: str | None = None, timeout: float = 60.0,
             progress: bool = True) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); verify ``expected_sha256``; return the sha256."""
    dest = Path(dest)
    if dest.is_file():
        digest = sha256_file(dest)
        if expected_sha256 and digest != expected_sha256:
            raise DownloadError(f"{dest} exists but its sha256 {digest} is not the expected {expected_sha256}; "
                                f"delete it and rerun")
        return digest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    host = urlparse(url).netloc
    req = Request(url, headers={"Range": f"bytes={start}-", "User-Agent": "dan-download/1"} if start else
                  {"User-Agent": "dan-download/1"})
    try:
        resp = urlopen(req, timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to fetch: the part is complete
            resp = None
        else:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; if you have the file from elsewhere, put a "
                                f"copy of it at {dest} and rerun") from None
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {host} ({reason}); offline? Rerun when connected - finished "
                            f"parts are kept") from None
    if resp is not None:
        with resp:
            resumed = start > 0 and resp.status == 206 and (resp.headers.get("Content-Range") or "").startswith(
                f"bytes {start}-")
            size = resp.headers.get("Content-Length")
            total = (int(size) + (start if resumed else 0)) if size else None
            done = start if resumed else 0
            try:
                with open(part, "ab" if resumed else "wb") as fh:
                    while block := resp.read(1 << 20):
                        fh.write(block)
                        done += len(block)
                        if progress:
                            pct = f"{100 * done / total:5.1f}%" if total else f"{done >> 20} MiB"
                            print(f"\r{dest.name}: {pct}", end="", file=sys.stderr, flush=True)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"{dest.name}: interrupted after {done} bytes ({exc}); rerun to resume") from None
            finally:
                if progress:
                    print(file=sys.stderr)
            if total is not None and done != total:
                raise DownloadError(f"{dest.name}: got {done} of {total} bytes; rerun to resume")
    digest = sha256_file(part)
    if expected_sha256 and digest != expected_sha256:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(part, bad)
        raise DownloadError(f"{dest.name}: sha256 {digest} does not match the expected {expected_sha256} "
                            f"(kept as {bad.name}; delete it and rerun)")
    os.replace(part, dest)
    return digest


def unpack(archive: Path, target: Path) -> None:
    """Extract a zip into ``target`` (refusing paths that leave it); a marker file makes reruns skip it."""
    marker = target / f".unpacked-{archive.name}"
    if marker.is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                out = (target / info.filename).resolve()
                if root not in out.parents and out != root:
                    raise DownloadError(f"{archive.name}: member {info.filename!r} would be written outside {target}")
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(f".{out.name}.unpacking")  # a member appears under its name only when whole
                try:
                    with zf.open(info) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    os.replace(tmp, out)
                finally:
                    tmp.unlink(missing_ok=True)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a damaged archive: bad CRC, bad deflate data, cut
        raise DownloadError(f"{archive} is not a valid zip ({exc}); delete it and rerun") from None
    marker.write_text("ok\n")


def fetch(items: list[Item], root: Path, checksums: dict[str, str] | None = None, keep_archives: bool = True,
          timeout: float = 60.0, progress: bool = True) -> dict[str, str]:
    """Download (and unpack) ``items`` into ``root``; returns {file name: sha256}."""
    got = {}
    sums = root / "downloads" / "SHA256SUMS"
    for item in items:
        dest = root / "downloads" / item.name
        already = (root / item.folder / f".unpacked-{item.name}").is_file()
        if already and not dest.is_file():
            continue
        digest = download(item.url, dest, (checksums or {}).get(item.name), timeout=timeout, progress=progress)
        if item.unpack:
            unpack(dest, root / item.folder)  # before the sum is recorded: a damaged archive gets none
        record_checksum(sums, item.name, digest)
        got[item.name] = digest
        if item.unpack and not keep_archives:
            dest.unlink()
    return got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python data/download.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data/real", help="data root to fill (default data/real)")
    parser.add_argument("--only", nargs="+", choices=[*SOURCES, "flickr30k"], default=list(DEFAULT))
    parser.add_argument("--checksums", default=None, help="SHA256SUMS file to verify against")
    parser.add_argument("--delete-archives", action="store_true", help="remove zips after unpacking")
    ns = parser.parse_args(argv)
    root = Path(ns.root)
    try:
        checksums = read_checksums(ns.checksums) if ns.checksums else None
        items = [it for key in ns.only if key != "flickr30k" for it in SOURCES[key]]
        fetch(items, root, checksums, keep_archives=not ns.delete_archives)
    except (DownloadError, OSError) as exc:
        print(f"download: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("download: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"data root ready: {root}")
    if "flickr30k" in ns.only or "karpathy" in ns.only:
        print(FLICKR30K_HELP)
    return 0


if __name__ == "__main__":
    sys.exit(main())
