"""m-DAN's retrieval evaluation: every image and caption of a split embedded once, S = Z_img Z_txt^T, and the recalls.

:func:`evaluate_matching` is what :mod:`dan.train` scores each epoch (val) and the finished run (test) with;
:func:`evaluate_matching_run` is the matching half of :func:`dan.evaluate.evaluate_run`: a trained run's checkpoint on
any Karpathy split, on a subset of its images (``image_ids``), or in consecutive folds (``folds``: COCO's usual
"1K test" is the 5,000 test images in five folds of 1,000, the metrics averaged over the folds).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dan.batches import CaptionTensors, FeatureBank, batch_text
from dan.io import ConfigError, DataError, atomic_path
from dan.metrics import retrieval_metrics

if TYPE_CHECKING:
    from dan.prepare import Prepared


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` of ``arrays`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def pad_stack(chunks: list[np.ndarray], width: int) -> np.ndarray:
    """Concatenate [b, K, T_b] chunks along axis 0, zero-padding the last axis to ``width``."""
    out = [np.pad(c, [(0, 0)] * (c.ndim - 1) + [(0, width - c.shape[-1])]) for c in chunks]
    return np.concatenate(out) if out else np.zeros((0, 0, width))


@torch.no_grad()
def embed_split(model: torch.nn.Module, data: CaptionTensors, bank: FeatureBank, batch_size: int,
                device: torch.device) -> dict[str, np.ndarray]:
    """Embeddings and attention of every image [I, (K+1)H] and caption [per_image * I, (K+1)H] of one split."""
    model.eval()
    img_e, img_a, txt_e, txt_a = [], [], [], []
    for lo in range(0, len(data), batch_size):
        out = model.encode_image(bank.fetch(data.rows[lo: lo + batch_size]))
        img_e.append(out.embedding.float().cpu())
        img_a.append(out.attention.half().cpu().numpy())
    n_cap = len(data.lengths)
    for lo in range(0, n_cap, batch_size):
        idx = np.arange(lo, min(lo + batch_size, n_cap))
        tokens, lengths = batch_text(data.tokens, data.lengths, idx, device)
        out = model.encode_text(tokens, lengths)
        txt_e.append(out.embedding.float().cpu())
        txt_a.append(out.attention.half().cpu().numpy())
    return {"image_embedding": torch.cat(img_e).numpy(), "text_embedding": torch.cat(txt_e).numpy(),
            "image_attention": np.concatenate(img_a), "text_attention": pad_stack(txt_a, data.tokens.shape[1])}


def _with_rsum(m: dict) -> dict:
    m["rsum"] = sum(m[d][k] for d in ("i2t", "t2i") for k in ("r1", "r5", "r10"))
    return m


def fold_metrics(similarity: np.ndarray, captions_per_image: int, folds: int) -> dict:
    """Retrieval metrics of ``similarity`` [I, per_image * I] in ``folds`` consecutive folds of I / folds images
    (each fold ranks only its own images and captions), averaged over the folds (recalls in percent, median ranks and
    rsum too), with each fold's own under ``"folds"``. ``folds`` = 1 is the whole matrix, without ``"folds"``."""
    n_img = similarity.shape[0]
    if not isinstance(folds, int) or folds < 1 or n_img % folds:
        raise ConfigError(f"folds must be a positive integer that divides the split's {n_img} images, got {folds!r}")
    size = n_img // folds
    each = [_with_rsum(retrieval_metrics(similarity[f * size:(f + 1) * size,
                                                    f * size * captions_per_image:(f + 1) * size * captions_per_image],
                                         captions_per_image=captions_per_image)) for f in range(folds)]
    if folds == 1:
        return each[0]
    mean = {d: {k: float(np.mean([m[d][k] for m in each])) for k in each[0][d]} for d in ("i2t", "t2i")}
    return {**mean, "rsum": float(np.mean([m["rsum"] for m in each])), "folds": each}


def retrieval(model: torch.nn.Module, data: CaptionTensors, bank: FeatureBank, batch_size: int,
              device: torch.device, folds: int = 1) -> tuple[dict, dict]:
    """Retrieval metrics (:func:`fold_metrics`) of ``model`` on ``data``, and the embeddings they came from."""
    emb = embed_split(model, data, bank, batch_size, device)
    S = torch.from_numpy(emb["image_embedding"]) @ torch.from_numpy(emb["text_embedding"]).T  # [I, per_image * I]
    return fold_metrics(S.numpy(), data.per_image, folds), emb


def evaluate_matching(model: torch.nn.Module, prep: Prepared, batch_size: int, device: torch.device,
                      save_to: Path | None = None) -> dict:
    """Retrieval metrics on ``prep.val`` (per epoch) or, with ``save_to``, on test with val nested under "val";
    ``save_to`` also receives ``embeddings.npz`` (image and caption embeddings and attention maps, fp16; image and
    sentence ids, caption lengths, grid; no ranks)."""
    val, _ = retrieval(model, prep.val, prep.bank, batch_size, device)
    if save_to is None:
        return val
    test, emb = retrieval(model, prep.test, prep.bank, batch_size, device)
    test["val"] = val
    test["n_images"], test["n_captions"] = len(prep.test), len(prep.test.lengths)
    save_npz(save_to / "embeddings.npz", image_ids=prep.test.image_ids, sentence_ids=prep.test.sentence_ids,
             lengths=prep.test.lengths, grid=np.array(prep.bank.meta.get("grid", [0, 0])),
             **{k: (v.astype(np.float16) if k.endswith("embedding") else v) for k, v in emb.items()})
    return test


def evaluate_matching_run(run, root: Path, split: str, bank_for, batch_size: int, device: torch.device,
                          image_ids: Iterable[int] | None = None, folds: int = 1) -> tuple[dict, str, FeatureBank]:
    """Retrieval metrics of the trained m-DAN ``run`` (a :class:`dan.evaluate.TrainedRun`) on Karpathy split
    ``split`` (``train`` includes ``restval``) of the data root ``root``, its images restricted to ``image_ids``
    and ranked in ``folds`` folds; ``bank_for(folders)`` opens the run's feature stores. Returns the result (without
    the results file), the results file's name part ("" for the whole split in one fold) and the bank it read."""
    from dan.batches import caption_tensors
    from dan.data.captions import load_karpathy
    from dan.evaluate import select_ids

    cfg = run.cfg
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split for a matching run is train, val or test (of {cfg.captions_file}); got {split!r}")
    where = f"{root / cfg.captions_file} split {split!r}"
    images = [im for im in load_karpathy(root / cfg.captions_file)
              if (im.split == "restval" and split == "train") or im.split == split]
    if not images:
        raise DataError(f"{root / cfg.captions_file}: no images in split {split!r}")
    subset = ""
    if image_ids is not None:
        images, subset = select_ids(images, image_ids, "image", where)
    if not isinstance(folds, int) or folds < 1 or len(images) % folds:
        raise ConfigError(f"folds (--folds) must be a positive integer that divides the {len(images)} images of "
                          f"{where}{' (subset)' if subset else ''}, got {folds!r}")
    bank = bank_for({im.filepath or cfg.caption_image_folder for im in images})
    tensors = caption_tensors(images, run.vocab, bank, where=f"{cfg.captions_file} split {split!r}",
                              per_image=cfg.captions_per_image, default_folder=cfg.caption_image_folder)
    metrics, _ = retrieval(run.model, tensors, bank, batch_size, device, folds=folds)
    result = {"task": "matching", "split": split, "images": len(tensors), "metrics": metrics}
    if folds > 1:
        result["folds"] = folds
    return result, subset + (f"_{folds}folds" if folds > 1 else ""), bank
