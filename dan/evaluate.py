"""Evaluation with the official metrics, and the per-example outputs that analysis reads without retraining.

r-DAN: VQA accuracy (official per-question score) overall, by answer type and by question family; with
``save_to`` it writes ``predictions.csv`` (one row per question) and ``attention.npz`` (per-step visual
attention [Q, K, N] and textual attention [Q, K, T], fp16).
m-DAN: every image and caption is embedded once; S = Z_img Z_txt^T is one matrix product; R@1/5/10 and median
rank both ways. With ``save_to`` it writes ``embeddings.npz`` (embeddings, attention maps, ids, ranks).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from dan.batches import CaptionTensors, batch_text
from dan.io import atomic_path, write_bytes_atomic
from dan.metrics import retrieval_metrics, vqa_accuracy, vqa_score


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def _pad_stack(chunks: list[np.ndarray], width: int) -> np.ndarray:
    """Concatenate [b, K, T_b] chunks along axis 0, zero-padding the last axis to ``width``."""
    out = [np.pad(c, [(0, 0)] * (c.ndim - 1) + [(0, width - c.shape[-1])]) for c in chunks]
    return np.concatenate(out) if out else np.zeros((0, 0, width))


@torch.no_grad()
def evaluate_vqa(model, prep, batch_size: int, device: torch.device, save_to: Path | None = None) -> dict:
    """Accuracy (percent) of ``model`` on ``prep.val``; see the module docstring for what ``save_to`` receives."""
    model.eval()
    data = prep.val
    n = len(data)
    preds, confs, vis, txt = [], [], [], []
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, min(lo + batch_size, n))
        regions = prep.bank.fetch(data.rows[idx])
        tokens, lengths = batch_text(data.tokens, data.lengths, idx, device)
        out = model(regions, tokens, lengths)
        prob = torch.softmax(out.logits.float(), dim=-1)
        conf, top = prob.max(dim=-1)
        preds.append(top.cpu().numpy())
        confs.append(conf.cpu().numpy())
        if save_to is not None:
            vis.append(out.visual_attention.half().cpu().numpy())
            txt.append(out.text_attention.half().cpu().numpy())
    pred_idx = np.concatenate(preds)
    answers = [prep.answers.answers[i] for i in pred_idx]
    by_qid = dict(zip(data.question_ids.tolist(), answers, strict=True))
    metrics = vqa_accuracy(by_qid, data.examples, group_by=prep.families or None)
    if prep.majority_answer is not None:
        base = vqa_accuracy({q: prep.majority_answer for q in by_qid}, data.examples)
        metrics["majority_baseline"] = base["overall"]
    if save_to is not None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["question_id", "image_id", "question", "predicted", "confidence", "score",
                    "multiple_choice_answer", "answer_type", "family"])
        for e, a, c in zip(data.examples, answers, np.concatenate(confs), strict=True):
            w.writerow([e.question_id, e.image_id, e.question, a, f"{c:.4f}", f"{vqa_score(a, e.answers):.4f}",
                        e.multiple_choice_answer, e.answer_type, prep.families.get(e.question_id, "")])
        write_bytes_atomic(save_to / "predictions.csv", buf.getvalue().encode("utf-8"))
        _save_npz(save_to / "attention.npz", question_ids=data.question_ids,
                  image_ids=np.array([e.image_id for e in data.examples], dtype=np.int64),
                  visual=np.concatenate(vis), text=_pad_stack(txt, data.tokens.shape[1]),
                  lengths=data.lengths, grid=np.array(prep.bank.meta.get("grid", [0, 0])))
    return metrics


@torch.no_grad()
def embed_split(model, data: CaptionTensors, bank, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """Embeddings and attention of every image [I, (K+1)H] and caption [5I, (K+1)H] of one split."""
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
            "image_attention": np.concatenate(img_a), "text_attention": _pad_stack(txt_a, data.tokens.shape[1])}


def _retrieval(model, data: CaptionTensors, bank, batch_size: int, device: torch.device) -> tuple[dict, dict]:
    emb = embed_split(model, data, bank, batch_size, device)
    S = torch.from_numpy(emb["image_embedding"]) @ torch.from_numpy(emb["text_embedding"]).T  # [I, 5I]
    m = retrieval_metrics(S, captions_per_image=data.per_image)
    m["rsum"] = sum(m[d][k] for d in ("i2t", "t2i") for k in ("r1", "r5", "r10"))
    return m, emb


def evaluate_matching(model, prep, batch_size: int, device: torch.device, save_to: Path | None = None) -> dict:
    """Retrieval metrics on ``prep.val`` (per epoch) or, with ``save_to``, on test with val nested under "val"."""
    val, _ = _retrieval(model, prep.val, prep.bank, batch_size, device)
    if save_to is None:
        return val
    test, emb = _retrieval(model, prep.test, prep.bank, batch_size, device)
    test["val"] = val
    test["n_images"], test["n_captions"] = len(prep.test), len(prep.test.lengths)
    _save_npz(save_to / "embeddings.npz", image_ids=prep.test.image_ids, sentence_ids=prep.test.sentence_ids,
              lengths=prep.test.lengths, grid=np.array(prep.bank.meta.get("grid", [0, 0])),
              **{k: (v.astype(np.float16) if k.endswith("embedding") else v) for k, v in emb.items()})
    return test
