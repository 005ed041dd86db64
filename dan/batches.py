"""Turn loaded annotations + feature stores into index arrays, and feed batches without per-sample Python work.

Everything a training step needs is precomputed once into flat arrays (token matrix, lengths, feature-row
positions, targets); a batch is then a fancy-index into those arrays plus one ``gather`` from the fp16
feature store (memmap, or a tensor already on the device when ``resident=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dan.attention import host_to_device
from dan.data.captions import CaptionImage
from dan.data.text import AnswerVocab, Vocab, tokenize
from dan.data.vqa import VQAExample
from dan.io import DataError
from dan.store import FeatureStore


def encode_texts(texts: list[str], vocab: Vocab, max_len: int | None = None,
                 where: str = "text", ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise and encode ``texts`` -> (tokens int64 [M, T] with 0 = padding, lengths int64 [M]).

    An empty text (no tokens after tokenisation) is a :class:`DataError` naming ``where`` and the text's id
    (``ids[i]``, else its index). Words outside the vocabulary become ``<unk>`` (id 1); a text of only unknown
    words is kept.
    """
    encoded = []
    for i, text in enumerate(texts):
        tok = vocab.encode(tokenize(text))
        if not tok:
            name = f"{ids[i]}" if ids is not None else f"#{i}"
            raise DataError(f"{where} {name} is empty after tokenisation: {text!r}")
        encoded.append(tok[:max_len] if max_len else tok)
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    tokens = np.zeros((len(encoded), int(lengths.max()) if len(encoded) else 1), dtype=np.int64)
    for i, row in enumerate(encoded):
        tokens[i, : len(row)] = row
    return tokens, lengths


class FeatureBank:
    """Several feature stores (one per image folder) behind one row index, optionally resident on a device.

    ``rows(folder_of_each, ids)`` maps images to global rows; ``fetch(rows)`` returns float32 [B, N, D] on ``device``.
    """

    def __init__(self, stores: dict[str, FeatureStore], device: torch.device | str = "cpu",
                 resident: bool = False) -> None:
        if not stores:
            raise DataError("no feature stores given")
        dims = {name: (s.num_regions, s.dim) for name, s in stores.items()}
        if len(set(dims.values())) != 1:
            raise DataError(f"feature stores disagree on [regions, dim]: {dims}")
        self.stores = stores
        self.names = sorted(stores)
        self.offsets = {}
        total = 0
        for name in self.names:
            self.offsets[name] = total
            total += len(stores[name])
        self.num_regions, self.dim = next(iter(dims.values()))
        self.device = torch.device(device)
        self._resident: torch.Tensor | None = None
        if resident:
            arrays = [torch.from_numpy(np.ascontiguousarray(stores[n].load_all())) for n in self.names]
            self._resident = torch.cat(arrays).to(self.device)  # [R, N, D] fp16

    @property
    def meta(self) -> dict:
        return self.stores[self.names[0]].meta

    def rows(self, folders: list[str] | str, ids: np.ndarray) -> np.ndarray:
        """Global row of every image; ``folders`` is one folder name or one per image."""
        ids = np.asarray(ids, dtype=np.int64)
        if isinstance(folders, str):
            folders = [folders] * len(ids)
        out = np.empty(len(ids), dtype=np.int64)
        folders_arr = np.asarray(folders)
        for name in np.unique(folders_arr):
            if name not in self.stores:
                raise DataError(f"no feature store for image folder {name!r} (have: {', '.join(self.names)})")
            sel = folders_arr == name
            out[sel] = self.stores[name].positions(ids[sel]) + self.offsets[name]
        return out

    def fetch(self, rows: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
        """Features of ``rows`` as float32 [B, N, D] on ``device`` (default: the bank's device); host rows are
        moved as float16 and widened there."""
        device = self.device if device is None else torch.device(device)
        if self._resident is not None:
            idx = host_to_device(torch.from_numpy(np.asarray(rows, dtype=np.int64)), self.device)
            return host_to_device(self._resident.index_select(0, idx), device).float()
        rows = np.asarray(rows)
        out = np.empty((len(rows), self.num_regions, self.dim), dtype=np.float16)
        for name in self.names:
            lo = self.offsets[name]
            hi = lo + len(self.stores[name])
            sel = np.nonzero((rows >= lo) & (rows < hi))[0]
            if len(sel):
                local = rows[sel] - lo
                order = np.argsort(local, kind="stable")  # sorted reads are kinder to a memmap
                out[sel[order]] = self.stores[name].gather(local[order])
        return host_to_device(torch.from_numpy(out), device).float()


@dataclass
class VQATensors:
    """One VQA split as flat arrays: question i asks about feature row ``rows[i]``."""

    question_ids: np.ndarray  # [Q] int64
    tokens: np.ndarray  # [Q, T] int64, 0 = padding
    lengths: np.ndarray  # [Q] int64
    rows: np.ndarray  # [Q] int64 rows in the FeatureBank
    targets: np.ndarray  # [Q] int64 answer index, -1 if outside the answer vocabulary / no annotation
    soft_idx: np.ndarray  # [Q, 10] int64 answer indices (-1 = none) for soft VQA targets
    soft_val: np.ndarray  # [Q, 10] float32 their VQA scores
    examples: list[VQAExample] = field(repr=False, default_factory=list)

    def __len__(self) -> int:
        return len(self.question_ids)

    def batch(self, idx: np.ndarray, bank: FeatureBank, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """The inputs of questions ``idx`` (positions in this split), as a training step reads them: regions
        float32 [B, N, D] and tokens int64 [B, T_b] on ``device``, lengths [B] on the CPU, targets int64 [B] on
        ``device`` (-1: no answer in the vocabulary). ``model(regions, tokens, lengths)``, then
        :func:`dan.losses.vqa_loss` on ``(logits, targets)``."""
        idx, device = np.asarray(idx, dtype=np.int64), torch.device(device)
        regions = bank.fetch(self.rows[idx], device)
        tokens, lengths = batch_text(self.tokens, self.lengths, idx, device)
        return regions, tokens, lengths, host_to_device(torch.from_numpy(self.targets[idx]), device)

    def soft_targets(self, idx: np.ndarray, num_answers: int) -> torch.Tensor:
        """Dense soft VQA targets [B, C] for questions ``idx``."""
        out = torch.zeros(len(idx), num_answers + 1)
        cols = torch.from_numpy(self.soft_idx[idx]).clamp(min=-1) % (num_answers + 1)
        out.scatter_add_(1, cols, torch.from_numpy(self.soft_val[idx]))
        return out[:, :num_answers]


def vqa_tensors(examples: list[VQAExample], vocab: Vocab, answers: AnswerVocab, bank: FeatureBank,
                folder: str, where: str) -> VQATensors:
    """Encode ``examples`` (questions about images in ``folder``) for training/evaluation."""
    if not examples:
        raise DataError(f"{where}: no questions")
    tokens, lengths = encode_texts([e.question for e in examples], vocab, where=f"{where}: question",
                                   ids=[e.question_id for e in examples])
    rows = bank.rows(folder, np.array([e.image_id for e in examples]))
    targets = np.full(len(examples), -1, dtype=np.int64)
    soft_idx = np.full((len(examples), 10), -1, dtype=np.int64)
    soft_val = np.zeros((len(examples), 10), dtype=np.float32)
    for i, e in enumerate(examples):
        if e.multiple_choice_answer is not None:
            j = answers.index(e.multiple_choice_answer)
            targets[i] = -1 if j is None else j
        for c, (j, s) in enumerate(sorted(answers.soft_target(e.answers).items())[:10]):
            soft_idx[i, c], soft_val[i, c] = j, s
    return VQATensors(np.array([e.question_id for e in examples], dtype=np.int64), tokens, lengths, rows,
                      targets, soft_idx, soft_val, examples)


@dataclass
class CaptionTensors:
    """Images with exactly ``per_image`` captions each; caption j belongs to image j // per_image."""

    image_ids: np.ndarray  # [I] int64
    rows: np.ndarray  # [I] int64 rows in the FeatureBank
    tokens: np.ndarray  # [I * per_image, T]
    lengths: np.ndarray  # [I * per_image]
    sentence_ids: np.ndarray  # [I * per_image]
    per_image: int = 5
    images: list[CaptionImage] = field(repr=False, default_factory=list)

    def __len__(self) -> int:
        return len(self.image_ids)

    def batch(self, idx: np.ndarray, bank: FeatureBank, device: torch.device | str = "cpu",
              captions: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Paired inputs of images ``idx`` (positions in this split): regions float32 [B, N, D] and the tokens
        [B, T_b] (on ``device``) and lengths [B] (CPU) of one caption each, ``captions`` (caption rows, image i's
        being ``i * per_image`` to ``i * per_image + per_image - 1``; default: each image's first). Row i of the
        regions and of the captions is a positive pair: ``model(...).similarity`` [B, B] has them on its
        diagonal, as :func:`dan.losses.matching_loss` expects."""
        idx = np.asarray(idx, dtype=np.int64)
        captions = idx * self.per_image if captions is None else np.asarray(captions, dtype=np.int64)
        if captions.shape != idx.shape or np.any(captions // self.per_image != idx):
            raise DataError(f"captions must be one caption row per image, of that image (i * {self.per_image} "
                            f"to i * {self.per_image} + {self.per_image - 1}); got {captions.tolist()[:8]} for "
                            f"images {idx.tolist()[:8]}")
        regions = bank.fetch(self.rows[idx], device)
        tokens, lengths = batch_text(self.tokens, self.lengths, captions, torch.device(device))
        return regions, tokens, lengths


def caption_tensors(images: list[CaptionImage], vocab: Vocab, bank: FeatureBank, where: str,
                    per_image: int = 5, default_folder: str = "images") -> CaptionTensors:
    """Encode Karpathy-style images (first ``per_image`` captions of each) for matching.

    An image's feature store is its Karpathy ``filepath`` (COCO: train2014/val2014), else ``default_folder``.
    """
    if not images:
        raise DataError(f"{where}: no images")
    short = [im for im in images if len(im.sentences) < per_image]
    if short:
        raise DataError(f"{where}: image {short[0].image_id} ({short[0].filename}) has "
                        f"{len(short[0].sentences)} captions, {per_image} needed ({len(short)} such images)")
    texts = [s for im in images for s in im.sentences[:per_image]]
    sids = [s for im in images for s in im.sentence_ids[:per_image]]
    tokens, lengths = encode_texts(texts, vocab, where=f"{where}: caption", ids=sids)
    folders = [im.filepath or default_folder for im in images]
    rows = bank.rows(folders, np.array([im.image_id for im in images]))
    return CaptionTensors(np.array([im.image_id for im in images], dtype=np.int64), rows, tokens, lengths,
                          np.array(sids, dtype=np.int64), per_image, images)


def batch_text(tokens: np.ndarray, lengths: np.ndarray, idx: np.ndarray,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [B, T_b] trimmed to the batch's longest text, and lengths [B] (on CPU, as packing needs)."""
    lens = lengths[idx]
    tok = torch.from_numpy(tokens[idx, : int(lens.max())])
    return host_to_device(tok, device), torch.from_numpy(lens)
