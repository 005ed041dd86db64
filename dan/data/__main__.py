"""Command line for the data sets.

  python -m dan.data generate --profile default [--out DIR] [--seed 0] [--force] [--workers N]
  python -m dan.data info     [--profile default | --root DIR]      summary of a generated data set
  python -m dan.data check    [--profile real | --root DIR] [--verify-images | --decode-images]
                                                                     load every split of a data root

A user's mistake (unknown profile, missing or malformed file) ends in one line on stderr and exit code 2;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dan.io import ROOT_HELP, ConfigError, DataError, read_json, repo_root, study_paths

PROG = "python -m dan.data"


def _profile(name: str) -> str:
    from dan.data.synth import PROFILES

    if name not in PROFILES and name != "real":
        raise ConfigError(f"unknown profile {name!r} (accepted: {', '.join([*PROFILES, 'real'])})")
    return name


def _generate(ns: argparse.Namespace) -> int:
    from dan.data.synth import generate

    out = generate(_profile(ns.profile), out=ns.out, seed=ns.seed, force=ns.force, workers=ns.workers,
                   progress=not ns.no_progress)
    print(out)
    return 0


def _root(ns: argparse.Namespace) -> Path:
    """``--root`` if given, else the profile's data folder (``data/real`` for the real data sets)."""
    if ns.root:
        return Path(ns.root)
    if _profile(ns.profile) == "real":
        return repo_root() / "data" / "real"
    return study_paths(ns.profile).data


def _info(ns: argparse.Namespace) -> int:
    if ns.profile == "real" and not ns.root:
        raise ConfigError("info summarises a generated data set; for the real ones run: "
                          "python -m dan.data check --profile real")
    root = _root(ns)
    m = read_json(root / "manifest.json", "manifest")
    if not isinstance(m, dict):
        raise DataError(f"{root / 'manifest.json'}: not a manifest object")
    files = m.get("files") or {}
    if not isinstance(files, dict):  # len() of a number raised TypeError
        raise DataError(f"{root / 'manifest.json'}: field 'files' must be an object (file -> size and sha256), got "
                        f"{files!r}; regenerate the data set")
    summary = {k: v for k, v in m.items() if k != "files"}
    summary["files"] = len(files)
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


def _check(ns: argparse.Namespace) -> int:
    from dan.data.captions import default_image_folder, image_file, load_karpathy
    from dan.data.grounding import load_grounding
    from dan.data.vqa import image_folder, load_vqa_split, split_images, vqa_files

    if ns.decode_images:
        ns.verify_images = True
    root = _root(ns)
    if not root.is_dir():
        raise DataError(f"data root not found: {root}")
    report: dict = {"root": str(root), "vqa": {}, "captions": {}}
    unchecked: dict[Path, str] = {}  # image folder not there -> what needed it (not downloaded: not verified)
    decode: dict[Path, int] = {}  # with --decode-images: every image a question or caption refers to, once
    listed: dict[Path, dict[int, Path]] = {}  # VQA image folder -> its files by id, listed once (test splits share)
    for split in ("train2014", "val2014", "test-dev2015", "test2015"):
        try:
            vqa_files(root, split)
        except DataError:
            continue
        folder = root / "images" / image_folder(split)
        verify = ns.verify_images and folder.is_dir()
        if ns.verify_images and not verify:
            unchecked.setdefault(folder, f"VQA {split}")  # test-dev2015 and test2015 share one folder: listed once
        if verify and folder not in listed:
            listed[folder] = split_images(root, split)
        ex = load_vqa_split(root, split, images=listed[folder] if verify else None)
        if ns.decode_images and verify:  # the files the check found (any name list_images reads, as dan.features)
            decode.update((listed[folder][e.image_id], e.image_id) for e in ex)
        report["vqa"][split] = {"questions": len(ex), "images": len({e.image_id for e in ex}),
                                "annotated": sum(1 for e in ex if e.answers)}
    for path in sorted((root / "captions").glob("dataset_*.json")):
        images = load_karpathy(path)
        if ns.verify_images:
            missing = set()
            default = ns.caption_image_folder or default_image_folder(path)
            for img in images:
                folder = root / "images" / (img.filepath or default)
                if not folder.is_dir():
                    missing.add(folder)
                    continue
                image = image_file(root / "images", img, check=True, default_folder=default)
                if ns.decode_images:
                    decode[image] = img.image_id
            for folder in sorted(missing):
                unchecked.setdefault(folder, path.name)
        splits: dict[str, int] = {}
        for img in images:
            splits[img.split] = splits.get(img.split, 0) + 1
        report["captions"][path.name] = dict(sorted(splits.items()))
    if unchecked:
        report["images_not_verified"] = [f"{folder} ({what})" for folder, what in unchecked.items()]
        print(f"{PROG} check: warning: no image folder {', '.join(report['images_not_verified'])}: those images "
              f"were not verified (not downloaded?)", file=sys.stderr)
    if decode:
        report["images_decoded"] = _decode_all(decode)
    if (root / "grounding.json").is_file():
        g = load_grounding(root / "grounding.json")
        report["grounding"] = {"images": len(g.images), "questions": len(g.questions), "captions": len(g.captions)}
    if not report["vqa"] and not report["captions"]:
        raise DataError(f"{root}: no VQA files (vqa/*questions.json) and no captions/dataset_*.json found")
    print(json.dumps(report, indent=1))
    return 0


def _decode_all(images: dict[Path, int]) -> int:
    """Decode every image (Pillow, in full); a :class:`DataError` lists how many failed and the first ones."""
    from tqdm import tqdm

    from dan.data.vqa import check_image_file

    bad = []
    for path, image_id in tqdm(sorted(images.items()), desc="decoding images", unit="img", file=sys.stderr,
                               disable=len(images) < 100):
        try:
            check_image_file(path, image_id, verify=True)
        except DataError as exc:
            bad.append(str(exc))
    if bad:
        raise DataError(f"{len(bad)} of {len(images)} images do not decode; first: " + "; ".join(bad[:3]))
    return len(images)


def build_parser() -> argparse.ArgumentParser:
    from dan.cli import OneLineParser, nonempty

    parser = OneLineParser(prog=PROG, description="Generate, summarise and check data sets.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    g = sub.add_parser("generate", help="generate the embedded benchmark of a profile", epilog=ROOT_HELP)
    g.add_argument("--profile", default="default", help="smoke | default | full")
    g.add_argument("--out", default=None, type=nonempty, help="target folder (default data/generated/<profile>)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--force", action="store_true", help="regenerate even if a complete data set is there")
    g.add_argument("--workers", type=int, default=None,
                   help="processes (default: 1, or one per CPU core, at most 16, for full)")
    g.add_argument("--no-progress", action="store_true")
    i = sub.add_parser("info", help="print a generated data set's manifest summary", epilog=ROOT_HELP)
    i.add_argument("--profile", default="default")
    i.add_argument("--root", default=None, type=nonempty)
    c = sub.add_parser("check", help="load every split of a data root and report counts", epilog=ROOT_HELP)
    c.add_argument("--profile", default="default", help="smoke | default | full | real (data/real)")
    c.add_argument("--root", default=None, type=nonempty, help="any data root (overrides --profile)")
    c.add_argument("--verify-images", action="store_true",
                   help="also require every image file (present and non-empty; not decoded); image folders that are "
                        "not there are listed as not verified")
    c.add_argument("--decode-images", action="store_true",
                   help="--verify-images, and decode every image the questions and captions refer to (truncated or "
                        "corrupt files are listed; slower: a full decode of each image)")
    c.add_argument("--caption-image-folder", default=None, type=nonempty,
                   help="image folder of Karpathy entries without a filepath, for every captions file (default: "
                        "flickr30k-images for dataset_flickr30k.json, Flicker8k_Dataset for dataset_flickr8k.json)")
    for p in (g, i, c):
        p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns = parser.parse_args(argv)
    debug = ns.debug or "--debug" in argv
    run = {"generate": _generate, "info": _info, "check": _check}[ns.command]
    from dan.cli import guard

    return guard(lambda: run(ns), debug, PROG)

if __name__ == "__main__":
    sys.exit(main())
