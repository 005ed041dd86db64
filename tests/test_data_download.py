"""data/download.py against a local HTTP server on 127.0.0.1: resume, checksums, unpacking, offline message."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import re
import socket
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dan.data.captions import load_karpathy

_spec = importlib.util.spec_from_file_location("dan_download", Path(__file__).parents[1] / "data" / "download.py")
dl = importlib.util.module_from_spec(_spec)
sys.modules["dan_download"] = dl  # dataclasses look their module up while the file runs
_spec.loader.exec_module(dl)

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


KARPATHY = {"dataset": "coco", "images": [{"filepath": "val2014", "filename": "COCO_val2014_000000000001.jpg",
                                           "imgid": 0, "cocoid": 1, "split": "test", "sentids": [0],
                                           "sentences": [{"tokens": ["a"], "raw": "A.", "imgid": 0, "sentid": 0}]}]}
FILES = {"data.bin": PAYLOAD, "caption_datasets.zip": _zip({"dataset_coco.json": json.dumps(KARPATHY)}),
         "evil.zip": _zip({"../outside.txt": "x"})}


@pytest.fixture
def server():
    """Serves FILES; /cut/<f> sends half a body on a request without Range; /norange/<f> ignores Range."""
    log: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            log.append((self.path, rng))
            body = FILES.get(self.path.rsplit("/", 1)[-1])
            if body is None:
                self.send_error(404)
                return
            start = int(rng.split("=")[1].rstrip("-")) if rng and "/norange/" not in self.path else 0
            if start >= len(body) and start:
                self.send_error(416)
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if "/cut/" in self.path and not rng:
                self.wfile.write(body[: len(body) // 2])
                return
            self.wfile.write(body[start:])

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", log
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_resume_after_interruption(server, tmp_path):
    url, log = server
    dest = tmp_path / "data.bin"
    with pytest.raises(dl.DownloadError, match="rerun to resume"):
        dl.download(f"{url}/cut/data.bin", dest, timeout=5, progress=False)
    part = tmp_path / "data.bin.part"
    assert not dest.exists() and part.stat().st_size == len(PAYLOAD) // 2
    digest = dl.download(f"{url}/cut/data.bin", dest, timeout=5, progress=False)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert digest == hashlib.sha256(PAYLOAD).hexdigest()
    assert log[-1] == ("/cut/data.bin", f"bytes={len(PAYLOAD) // 2}-")  # only the rest was asked for


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    url, _ = server
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes")
    dl.download(f"{url}/norange/data.bin", tmp_path / "data.bin", timeout=5, progress=False)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_checksums(server, tmp_path):
    url, _ = server
    good = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(dl.DownloadError, match="does not match the expected"):
        dl.download(f"{url}/data.bin", tmp_path / "data.bin", expected_sha256="0" * 64, timeout=5, progress=False)
    assert not (tmp_path / "data.bin").exists() and (tmp_path / "data.bin.bad").is_file()
    assert dl.download(f"{url}/data.bin", tmp_path / "data.bin", good, timeout=5, progress=False) == good
    with pytest.raises(dl.DownloadError, match="exists but its sha256"):
        dl.download(f"{url}/data.bin", tmp_path / "data.bin", "f" * 64, timeout=5, progress=False)
    sums = tmp_path / "SHA256SUMS"
    dl.record_checksum(sums, "data.bin", good)
    dl.record_checksum(sums, "a.zip", "a" * 64)
    assert dl.read_checksums(sums) == {"data.bin": good, "a.zip": "a" * 64}
    sums.write_text("not a checksum line\n")
    with pytest.raises(dl.DownloadError, match="line 1"):
        dl.read_checksums(sums)
    sums.write_text(f"{good}  data.bin\n", encoding="utf-16")  # PowerShell's `Get-FileHash ... > SUMS`
    with pytest.raises(dl.DownloadError, match="SHA256SUMS: not a UTF-8 text file"):
        dl.read_checksums(sums)


def test_fetch_unpacks_into_the_layout(server, tmp_path):
    url, log = server
    items = [dl.Item(f"{url}/caption_datasets.zip", "captions")]
    got = dl.fetch(items, tmp_path, timeout=5, progress=False)
    assert load_karpathy(tmp_path / "captions" / "dataset_coco.json")[0].image_id == 1
    assert dl.read_checksums(tmp_path / "downloads" / "SHA256SUMS") == got
    n = len(log)
    dl.fetch(items, tmp_path, timeout=5, progress=False, keep_archives=False)  # already there: no request
    assert len(log) == n and not (tmp_path / "downloads" / "caption_datasets.zip").exists()
    with pytest.raises(dl.DownloadError, match="outside"):
        dl.fetch([dl.Item(f"{url}/evil.zip", "vqa")], tmp_path, timeout=5, progress=False)
    assert not (tmp_path / "outside.txt").exists()


def test_a_file_the_server_no_longer_has_can_be_put_in_downloads_by_hand(server, tmp_path):
    """Karpathy's caption_datasets.zip has been reported gone (HTTP 404, ruotianluo/ImageCaptioning.pytorch#184,
    2023): the error says where a copy from elsewhere goes, and the rerun unpacks that copy without a request."""
    url, log = server
    items = [dl.Item(f"{url}/gone/caption_datasets_elsewhere.zip", "captions")]
    dest = tmp_path / "downloads" / "caption_datasets_elsewhere.zip"
    with pytest.raises(dl.DownloadError, match=r"HTTP 404 Not Found; .*put a copy of it at "
                                               + re.escape(str(dest)) + " and rerun"):
        dl.fetch(items, tmp_path, timeout=5, progress=False)
    dest.write_bytes(FILES["caption_datasets.zip"])
    n = len(log)
    dl.fetch(items, tmp_path, timeout=5, progress=False)
    assert len(log) == n and load_karpathy(tmp_path / "captions" / "dataset_coco.json")[0].image_id == 1


def _damaged_zips(n: int = 12) -> list[bytes]:
    """One deflated 600 kB member, with 64 bytes overwritten at ``n`` places inside its compressed data (some give
    a CRC error at the end, others a broken deflate stream midway)."""
    import random

    rng = random.Random(0)
    text = " ".join(rng.choice(["red", "cube", "left", "of", "the", "sphere", "blue"]) for _ in range(100_000))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("vqa/questions.json", text)
    good = buf.getvalue()
    out = []
    for k in range(n):
        at = 100 + (len(good) - 400) * k // n
        out.append(good[:at] + bytes(rng.randrange(256) for _ in range(64)) + good[at + 64:])
    return out


def test_a_damaged_archive_is_one_error_and_leaves_no_partial_file(server, tmp_path):
    for k, data in enumerate(_damaged_zips()):
        archive, target = tmp_path / f"bad{k}.zip", tmp_path / f"root{k}"
        archive.write_bytes(data)
        with pytest.raises(dl.DownloadError, match=rf"bad{k}\.zip is not a valid zip .*delete it and rerun"):
            dl.unpack(archive, target)
        left = [p.name for p in target.rglob("*") if p.is_file()]
        assert left == [], (k, left)  # neither the member under its name, a temp file, nor the done-marker
    url, _ = server
    FILES["damaged.zip"] = _damaged_zips(1)[0]
    try:
        with pytest.raises(dl.DownloadError, match="not a valid zip"):
            dl.fetch([dl.Item(f"{url}/damaged.zip", "vqa")], tmp_path / "r", timeout=5, progress=False)
    finally:
        del FILES["damaged.zip"]
    sums = tmp_path / "r" / "downloads" / "SHA256SUMS"
    assert not sums.exists() or "damaged.zip" not in sums.read_text()  # no sum recorded for a damaged archive


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_is_one_clear_line(tmp_path, capsys, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/caption_datasets.zip"
    with pytest.raises(dl.DownloadError, match="offline"):
        dl.download(url, tmp_path / "x.zip", timeout=5, progress=False)
    monkeypatch.setitem(dl.SOURCES, "karpathy", [dl.Item(url, "captions")])
    assert dl.main(["--root", str(tmp_path), "--only", "karpathy"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("download: error: cannot reach 127.0.0.1") and "\n" not in err
