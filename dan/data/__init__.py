"""Data sets of the study: loaders for the real formats (VQA v1/v2, Karpathy JSON, Flickr8k captions.txt),
the grounding file, and the generator of the embedded benchmark (``python -m dan.data generate``).

Names are re-exported lazily, so ``import dan.data`` stays cheap (no numpy/PIL until something is used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "tokenize": "text", "Vocab": "text", "AnswerVocab": "text",
    "VQAExample": "vqa", "vqa_files": "vqa", "load_vqa": "vqa", "load_vqa_split": "vqa",
    "CaptionImage": "captions", "load_karpathy": "captions", "load_flickr8k_txt": "captions", "image_file": "captions",
    "Grounding": "grounding", "load_grounding": "grounding",
    "SynthConfig": "synth", "PROFILES": "synth", "generate": "synth",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
