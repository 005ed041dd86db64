"""Everything a run needs before its first step: vocabularies, answer list, feature bank, encoded splits."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dan.batches import CaptionTensors, FeatureBank, VQATensors, caption_tensors, vqa_tensors
from dan.config import TrainConfig
from dan.data.captions import load_karpathy
from dan.data.text import AnswerVocab, Vocab, tokenize
from dan.data.vqa import load_vqa_split, vqa_files
from dan.io import ConfigError, DataError, study_paths
from dan.store import FeatureStore


@dataclass
class Prepared:
    """Encoded data of one run. ``val`` is scored every epoch; ``test`` (matching only) at the end."""

    vocab: Vocab
    answers: AnswerVocab | None
    bank: FeatureBank
    train: VQATensors | CaptionTensors
    val: VQATensors | CaptionTensors
    test: CaptionTensors | None = None
    families: dict[int, str] = field(default_factory=dict)  # question id -> "single-hop"/"multi-hop"
    majority_answer: str | None = None

    def build_model(self, cfg: TrainConfig) -> torch.nn.Module:
        """The (untrained) r-DAN or m-DAN of ``cfg`` sized for this data: vocabulary, region dimension and, for
        VQA, the answer list (the model :func:`dan.train.train` trains; on the CPU, in train mode)."""
        from dan.models import build_model

        return build_model(cfg.task, len(self.vocab), self.bank.dim,
                           num_answers=len(self.answers) if self.answers is not None else None,
                           **cfg.model_options())


def data_root(cfg: TrainConfig) -> Path:
    return Path(cfg.data) if cfg.data else study_paths(cfg.profile).data


def existing_data_root(cfg: TrainConfig) -> Path:
    """:func:`data_root`, or a :class:`DataError` that says how to make it when there is no such folder."""
    root = data_root(cfg)
    if root.is_dir():
        return root
    given = "the data root given (data / --data)" if cfg.data else f"the default data root of profile {cfg.profile!r}"
    make = (f"generate it with `python -m dan.data generate --profile {cfg.profile}"
            f"{' --out ' + str(root) if cfg.data else ''}`" if cfg.profile in ("smoke", "default", "full")
            else "fetch the real data with `python data/download.py` (book/real_data.md)")
    raise DataError(f"no data set at {root} ({given}): {make}, or give the data root (data=... in Python, "
                    f"--data on the command line)")


def features_root(cfg: TrainConfig) -> Path:
    return Path(cfg.features) if cfg.features else study_paths(cfg.profile).features


def open_bank(cfg: TrainConfig, folders: set[str], device: torch.device) -> FeatureBank:
    root = features_root(cfg)
    missing = [name for name in sorted(folders) if not FeatureStore.exists(root / name)]
    if missing:  # the command names the profile and the folders: without them dan.features would extract every
        # folder with the default profile's backbone, replacing the stores of another kind that the root holds
        raise DataError(f"no complete feature store for image folder {missing[0]!r} at {root / missing[0]}; run "
                        f"`python -m dan.features --data {data_root(cfg)} --out {root} --profile {cfg.profile} "
                        f"--splits {' '.join(missing)}` (or the notebook 02_features) first")
    stores = {name: FeatureStore(root / name) for name in sorted(folders)}
    check_one_kind(stores)
    return FeatureBank(stores, device=device, resident=want_resident(cfg.resident_features, stores, device))


def check_one_kind(stores: dict[str, FeatureStore]) -> None:
    """The stores a run reads must hold the same kind of features (:data:`dan.checkpoint.FEATURE_KEYS`: backbone,
    layer, size, grid, dim, weights) and have been computed the same way (precision, decoding, inference): one
    split extracted with other weights, or on a GPU in bf16 while the other ran on the CPU in float32, would
    otherwise be mixed in one run without a word."""
    from dan.checkpoint import PROCESSING_KEYS, feature_summary

    names = sorted(stores)
    first = stores[names[0]].meta
    kind = {**feature_summary(first), **{k: first.get(k) for k in PROCESSING_KEYS}}
    for name in names[1:]:
        meta = stores[name].meta
        for k, a in kind.items():
            if a != meta.get(k):
                raise DataError(f"the feature stores disagree on {k}: {stores[names[0]].path} has {a!r}, "
                                f"{stores[name].path} has {meta.get(k)!r}; extract every split the same way "
                                f"(python -m dan.features with the same settings)")


def want_resident(setting: str, stores: dict[str, FeatureStore], device: torch.device) -> bool:
    """``resident_features``: "yes", "no", or "auto": on a GPU when the fp16 stores take under 60 % of its free
    memory (COCO's 14x14x2048 features, 99 GB, fit an H200 but not an 80 GB H100: they stay in host memory)."""
    if setting != "auto":
        return setting == "yes"
    if device.type != "cuda":
        return False
    need = sum(s.nbytes for s in stores.values())
    free, _ = torch.cuda.mem_get_info(device)
    if need < 0.6 * free:
        return True
    print(f"feature stores ({need / 2**30:.1f} GiB) stay in host memory: {free / 2**30:.1f} GiB free on {device}",
          file=sys.stderr)
    return False


def question_families(root: Path) -> dict[int, str]:
    """Question id -> family from ``grounding.json`` when the data set has one (the embedded benchmark does)."""
    path = root / "grounding.json"
    if not path.is_file():
        return {}
    from dan.data.grounding import load_grounding

    return {qid: q.family for qid, q in load_grounding(path).questions.items()}


def _words(cfg: TrainConfig, token_lists: list[list[str]], what: str) -> Vocab:
    """The training text's vocabulary; refused when ``min_word_count`` leaves no word in it (every token would be
    ``<unk>``, and the run would train on no text at all)."""
    vocab = Vocab.build(token_lists, min_count=cfg.min_word_count)
    if len(vocab) == len(Vocab.SPECIALS):
        top = max(Counter(t for toks in token_lists for t in toks).values(), default=0)
        raise ConfigError(f"min_word_count {cfg.min_word_count} leaves no word in the vocabulary of {what} (the "
                          f"most frequent word occurs {top} times); choose a min_word_count of at most {top}"
                          if top else f"{what} have no words")
    return vocab


def prepare(cfg: TrainConfig, device: torch.device) -> Prepared:
    """Load, encode and open everything ``cfg`` trains and validates on (see :class:`Prepared`)."""
    root = existing_data_root(cfg)
    if cfg.task == "vqa":
        return _prepare_vqa(cfg, root, device)
    return _prepare_matching(cfg, root, device)


def _prepare_vqa(cfg: TrainConfig, root: Path, device: torch.device) -> Prepared:
    train_ex = load_vqa_split(root, cfg.train_split)
    val_ex = load_vqa_split(root, cfg.val_split)
    if cfg.max_train:
        train_ex = train_ex[: cfg.max_train]
    unannotated = [e.question_id for e in train_ex if e.multiple_choice_answer is None]
    if unannotated:
        raise DataError(f"training split {cfg.train_split!r} has {len(unannotated)} questions without annotations "
                        f"(first: question_id {unannotated[0]})")
    unscored = [e.question_id for e in val_ex if e.multiple_choice_answer is None]
    if unscored:  # every epoch is validated: a split without answers (e.g. test-dev) cannot be the val split
        ann = vqa_files(root, cfg.val_split)[1]
        raise DataError(f"validation split {cfg.val_split!r} has {len(unscored)} questions without annotations "
                        f"(first: question_id {unscored[0]}; annotations file: "
                        f"{ann or 'not found next to ' + str(vqa_files(root, cfg.val_split)[0])}); --val-split "
                        f"must be an annotated split")
    vocab = _words(cfg, [tokenize(e.question) for e in train_ex], f"split {cfg.train_split!r}'s questions")
    answers = AnswerVocab.build([e.multiple_choice_answer for e in train_ex], top=cfg.num_answers)
    bank = open_bank(cfg, {cfg.train_split, cfg.val_split}, device)
    train = vqa_tensors(train_ex, vocab, answers, bank, cfg.train_split, where=str(vqa_files(root, cfg.train_split)[0]))
    val = vqa_tensors(val_ex, vocab, answers, bank, cfg.val_split, where=str(vqa_files(root, cfg.val_split)[0]))
    majority = answers.answers[0]  # the most frequent training answer (ties: alphabetical, as the list's order)
    return Prepared(vocab, answers, bank, train, val, families=question_families(root), majority_answer=majority)


def _prepare_matching(cfg: TrainConfig, root: Path, device: torch.device) -> Prepared:
    images = load_karpathy(root / cfg.captions_file)
    by_split: dict[str, list] = {"train": [], "val": [], "test": []}
    for im in images:
        by_split["train" if im.split == "restval" else im.split].append(im)
    for split, ims in by_split.items():
        if not ims:
            raise DataError(f"{root / cfg.captions_file}: no images in split {split!r}")
    train_imgs = by_split["train"][: cfg.max_train] if cfg.max_train else by_split["train"]
    per = cfg.captions_per_image
    vocab = _words(cfg, [tokenize(s) for im in train_imgs for s in im.sentences[:per]],
                   f"{cfg.captions_file}'s training captions")
    folders = {im.filepath or cfg.caption_image_folder for ims in by_split.values() for im in ims}
    bank = open_bank(cfg, folders, device)
    enc = {s: caption_tensors(ims, vocab, bank, where=f"{cfg.captions_file} split {s!r}", per_image=per,
                            default_folder=cfg.caption_image_folder)
           for s, ims in (("train", train_imgs), ("val", by_split["val"]), ("test", by_split["test"]))}
    return Prepared(vocab, None, bank, enc["train"], enc["val"], test=enc["test"])
