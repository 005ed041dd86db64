"""The inputs of the attention analysis (:mod:`dan.analysis`, which re-exports these names): a finished run's saved
outputs read back (:func:`load_vqa_outputs`, :func:`load_mdan_outputs`: nothing is retrained), which runs can be
analysed (:func:`analysable`, :func:`check_analysable`, :func:`analysed_configs`), and where a run's grounding
tables are written (:func:`save_grounding_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dan.io import ConfigError, DataError


@dataclass
class VQAOutputs:
    """The saved validation outputs of one r-DAN run, row-aligned."""

    run_dir: Path
    predictions: pd.DataFrame  # one row per question (predictions.csv), + column "correct" (full VQA credit)
    visual: np.ndarray  # float32 [Q, K, N]
    text: np.ndarray  # float32 [Q, K, T], 0 on padding
    lengths: np.ndarray  # int [Q]
    grid: tuple[int, int]
    data_root: Path
    split: str  # image folder of the validation questions
    stride: int | None = None  # the backbone's stride and input size: the grid's cells (see feature_cells)
    image_size: int | None = None


@dataclass
class MDANOutputs:
    """The saved test-split outputs of one m-DAN run."""

    run_dir: Path
    image_ids: np.ndarray  # int64 [I]
    sentence_ids: np.ndarray  # int64 [I * per_image], captions of image i at rows i*per .. i*per+per-1
    lengths: np.ndarray  # int [I * per_image]
    grid: tuple[int, int]
    image_attention: np.ndarray  # float32 [I, K, N]
    text_attention: np.ndarray  # float32 [I * per_image, K, T]
    similarity: np.ndarray  # float32 [I, I * per_image]
    sentences: dict[int, str]  # sentence id -> raw caption
    image_files: dict[int, Path]  # image id -> file
    per_image: int
    data_root: Path
    stride: int | None = None  # the backbone's stride and input size: the grid's cells (see feature_cells)
    image_size: int | None = None


def _config_and_root(run_dir: Path, data: str | Path | None) -> tuple:
    """The run's config and its data root: ``data`` if given, else the data folder the run was trained on
    (recorded in the checkpoint), else the profile's default."""
    from dan.prepare import data_root
    from dan.train import load_checkpoint, load_result

    cfg = load_result(run_dir).config
    if data is not None:
        return cfg, Path(data)
    cfg.data = load_checkpoint(run_dir)["config"].get("data")
    return cfg, data_root(cfg)


def _open_outputs(run_dir: Path, data: str | Path | None, name: str, model: str) -> tuple:
    """(config, data root, the run's ``name`` npz), or a clear error when the run left no such file."""
    cfg, root = _config_and_root(run_dir, data)
    path = run_dir / name
    if not path.is_file():
        raise DataError(f"{path} not found: {run_dir} is not a finished {model} run")
    if not analysable(cfg.steps, cfg.attention):
        raise DataError(f"{run_dir} ran with K = {cfg.steps}, attention {cfg.attention!r}: {NEEDS}")
    return cfg, root, np.load(path)


def feature_cells(run_dir: Path, prefer: str | None = None) -> dict:
    """``{"stride", "image_size"}`` of the features a run was trained on, from its ``inputs.json`` (each feature
    store's backbone, layer and input size; ``prefer``: the store of the images analysed, if recorded): where the
    feature grid's cells lie in the image (:func:`dan.data.grounding.cell_edges`). ``{}`` (equal cells, which
    they are where the stride divides the input size) for a run that recorded none, stores that disagree, or a
    backbone this version does not know."""
    from dan.backbones import BACKBONES
    from dan.checkpoint import INPUTS
    from dan.io import is_int, read_json

    path = Path(run_dir) / INPUTS
    recorded = read_json(path, "run inputs") if path.is_file() else None
    stores = recorded.get("features") if isinstance(recorded, dict) else None
    if not isinstance(stores, dict) or not stores:
        return {}

    def geometry_of(summary: object) -> tuple:  # (backbone, layer, image_size); anything unhashable as its repr
        values = tuple(summary.get(k) for k in ("backbone", "layer", "image_size")) if isinstance(summary, dict) \
            else (None, None, None)
        return tuple(v if isinstance(v, (str, int, float, type(None))) else repr(v) for v in values)

    geometry = {geometry_of(stores[prefer])} if prefer in stores else {geometry_of(s) for s in stores.values()}
    if len(geometry) != 1:
        return {}
    backbone, layer, image_size = geometry.pop()
    stride = BACKBONES[backbone].layers.get(layer) if backbone in BACKBONES else None
    if stride is None:
        return {}
    if not is_int(image_size) or image_size <= 0:
        raise DataError(f"{path}: the features' image_size must be an integer > 0, got {image_size!r}")
    return {"stride": stride, "image_size": image_size}


def _grid_cells(run_dir: Path, name: str, grid: tuple[int, int], prefer: str | None = None) -> dict:
    """:func:`feature_cells` of the run, checked against the ``grid`` of its saved maps (``name``): a grid those
    features cannot give is a :class:`DataError` naming both files (:func:`dan.data.grounding.cell_edges`'s own
    message named neither, and came in the first example's scoring)."""
    from dan.checkpoint import INPUTS
    from dan.data.grounding import check_grid

    cells = feature_cells(run_dir, prefer)
    if cells:
        try:
            check_grid(grid, **cells)
        except DataError as exc:
            raise DataError(f"{run_dir / name}: its grid {grid} is not that of the features in "
                            f"{run_dir / INPUTS}: {exc}") from None
    return cells


NEEDS = "the attention analysis needs maps on both sides at every step, i.e. a run with K >= 1 and attention 'dual'"


def analysable(steps: int, attention: str) -> bool:
    """Whether runs with ``steps`` and ``attention`` leave the maps the analysis reads (both sides, each step)."""
    return steps >= 1 and attention == "dual"


def check_analysable(steps, attention) -> None:  # noqa: ANN001 - the attention notebook's parameters
    """:class:`ConfigError` naming the attention notebook's ``steps`` and ``attention`` when their runs cannot be
    analysed: before its two trainings, not after them (``-p attention visual`` trained r-DAN and m-DAN, then
    failed on the first map). None is refused by name (:func:`dan.config.check_not_none`), as by
    :func:`analysed_configs` (``-p steps None`` was a TypeError here, then the preset's K = 2)."""
    from dan.config import notebook_preset

    cfg = notebook_preset("default", "vqa", steps=steps, attention=attention)  # bad values: validate()'s own errors
    if not analysable(cfg.steps, cfg.attention):
        raise ConfigError(f"steps {steps!r}, attention {attention!r}: {NEEDS}")


def analysed_configs(profile: str, steps: int = 2, attention: str = "dual", seed: int = 0, epochs: int | None = None,
                     hidden_dim: int | None = None, device: str = "auto", negatives: str | None = None,
                     margin: float | None = None) -> tuple:
    """The r-DAN and m-DAN configurations the attention notebook analyses: those 03_rdan and 04_mdan build from the
    same parameters (:func:`dan.config.notebook_preset`: None is the profile's preset for those that default to
    None; ``negatives`` and ``margin`` are m-DAN's), so that it reads back, or trains, their runs; taking steps,
    attention and seed only, it could not analyse a -p epochs 2 run. Runs that leave no maps on both sides are
    refused first (:func:`check_analysable`), bad values by :meth:`dan.config.TrainConfig.validate`. Returns
    ``(vqa config, matching config)``."""
    from dan.config import notebook_preset

    shared = dict(steps=steps, attention=attention, seed=seed, epochs=epochs, hidden_dim=hidden_dim, device=device)
    check_analysable(steps, attention)
    return (notebook_preset(profile, "vqa", **shared),
            notebook_preset(profile, "matching", **shared, negatives=negatives, margin=margin))


def save_grounding_tables(run_dir: str | Path, visual: pd.DataFrame, text: pd.DataFrame) -> list[Path]:
    """Write a run's per-example grounding scores into its own folder, ``attention_grounding_{visual,text}.csv``
    (atomic; no index): the attention notebook wrote them into ``results/<profile>`` under fixed names, so a run
    of other parameters (``-p epochs 2``, ``-p steps 3``) replaced the preset runs' tables there. Returns the paths."""
    from dan.io import atomic_path

    paths = []
    for what, df in (("visual", visual), ("text", text)):
        path = Path(run_dir) / f"attention_grounding_{what}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        paths.append(path)
    return paths


def load_vqa_outputs(run_dir: str | Path, data: str | Path | None = None) -> VQAOutputs:
    """Read a finished r-DAN run's predictions and attention maps (``data``: the data root, if not the run's)."""
    run_dir = Path(run_dir)
    cfg, root, npz = _open_outputs(run_dir, data, "attention.npz", "r-DAN")
    preds = pd.read_csv(run_dir / "predictions.csv")
    if not np.array_equal(preds.question_id.to_numpy(), npz["question_ids"]):
        raise DataError(f"{run_dir}: predictions.csv and attention.npz list different questions")
    preds["correct"] = preds.score >= 1.0 - 1e-6  # full credit under the VQA metric (>= 4 of 10 humans agree)
    grid = tuple(int(g) for g in npz["grid"])
    return VQAOutputs(run_dir, preds, npz["visual"].astype(np.float32), npz["text"].astype(np.float32),
                      npz["lengths"], grid, root, cfg.val_split,
                      **_grid_cells(run_dir, "attention.npz", grid, cfg.val_split))


def load_mdan_outputs(run_dir: str | Path, data: str | Path | None = None) -> MDANOutputs:
    """Read a finished m-DAN run's test embeddings and attention maps, with caption texts and image files."""
    from dan.data.captions import image_file, load_karpathy

    run_dir = Path(run_dir)
    cfg, root, npz = _open_outputs(run_dir, data, "embeddings.npz", "m-DAN")
    sentences, files = {}, {}
    for im in load_karpathy(root / cfg.captions_file):
        sentences.update(zip(im.sentence_ids, im.sentences, strict=True))
        files[im.image_id] = image_file(root / "images", im) if im.filepath else image_file(
            root / "images" / cfg.caption_image_folder, im)
    sim = npz["image_embedding"].astype(np.float32) @ npz["text_embedding"].astype(np.float32).T
    image_ids, grid = npz["image_ids"], tuple(int(g) for g in npz["grid"])
    return MDANOutputs(run_dir, image_ids, npz["sentence_ids"], npz["lengths"], grid,
                       npz["image_attention"].astype(np.float32), npz["text_attention"].astype(np.float32),
                       sim, sentences, files, len(npz["sentence_ids"]) // max(len(image_ids), 1), root,
                       **_grid_cells(run_dir, "embeddings.npz", grid))
