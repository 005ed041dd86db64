"""JPEG decoding for the device-decode path: the files' bytes in, resized images out, on the extraction's device.

Two decoders behind one call (:func:`build_jpeg_decoder`, ``FeatureConfig.jpeg_decoder``):

- ``torchvision``: ``torchvision.io.decode_jpeg``. On CUDA that is nvJPEG's batched decoding: part of the work on
  the host, the rest in CUDA kernels, which share the GPU's multiprocessors with the model.
- ``nvimgcodec``: NVIDIA's nvImageCodec (``pip install nvidia-nvimgcodec-cu13 nvidia-nvjpeg``). On CUDA it uses
  the GPU's hardware JPEG engines (NVJPG: A100, H100, H200) first, so that decoding need not take multiprocessor
  time from the model (whether it does is for ``benchmarks/device_extract.sh`` to measure); whatever the engines
  refuse goes to nvJPEG's CUDA path.
- On the CPU (tests), both are libjpeg-turbo.

Both give ``[3, H, W]`` uint8 RGB images, EXIF orientation ignored (as Pillow's ``Image.open`` and the CPU path
ignore it). On the CPU both are libjpeg-turbo and equal Pillow's decoding pixel for pixel (tested). On a GPU they
differ from it, by very different amounts (``benchmarks/gpu_checks.py`` counts them): on an H200 (2026-11-28,
``benchmarks/results/gpu_checks_resize_h200.json``, 640x480 JPEGs of quality 90) nvImageCodec's values differed
from Pillow's in about one in ten thousand, by one level, and torchvision's nvJPEG in about half, by up to 129
levels. A store extracted on a GPU with ``torchvision`` therefore holds features of slightly different pixels from
a CPU store of the same images; ``nvimgcodec`` comes much closer to the CPU's.
:func:`decode_jpeg_batch` then resizes (PIL's result, :class:`dan.resize.PilResize`) by input size.
"""

from __future__ import annotations

import importlib
import io
import os
import tempfile
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dan.io import ConfigError
from dan.resize import PilResize

JPEG_DECODERS = ("torchvision", "nvimgcodec")
NVIMGCODEC_PIP = "nvidia-nvimgcodec-cu13 nvidia-nvjpeg"


def plain_jpeg_bytes(path: Path) -> np.ndarray | None:
    """The file's bytes (uint8 [L]) if it is a complete RGB or gray JPEG (what nvJPEG decodes), else None."""
    try:
        data = Path(path).read_bytes()
        if data[:2] != b"\xff\xd8" or data.rstrip(b"\0")[-2:] != b"\xff\xd9":
            return None
        with Image.open(io.BytesIO(data)) as im:  # header only
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
    except (OSError, SyntaxError, ValueError):
        return None
    return np.frombuffer(bytearray(data), dtype=np.uint8)


class TorchvisionJpeg:
    """``torchvision.io.decode_jpeg`` on ``device``: one batched call; if it fails, one call per file to find the
    culprit(s)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, jpegs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """uint8 ``[L]`` byte tensors (host) -> uint8 ``[3, H, W]`` RGB on the device, None where decoding failed."""
        with warnings.catch_warnings():  # torchvision 0.29 flags its decoders as deprecated in favour of TorchCodec
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
            from torchvision.io import ImageReadMode, decode_jpeg  # looked up per call (tests replace it)

            try:
                return list(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError:
                out: list[torch.Tensor | None] = []
                for data in jpegs:
                    try:
                        out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                    except RuntimeError:
                        out.append(None)
                return out


_UNUSED_CODECS = ("nvjpeg2k", "nvjpeg2000", "nvtiff")  # extensions nvImageCodec loads at import that JPEGs never need


def load_nvimgcodec():  # noqa: ANN201 - the module, an optional dependency
    """``nvidia.nvimgcodec``, or a :class:`ConfigError` saying how to install it. Its import prints an error for each
    codec library it lacks; those of codecs other than JPEG (JPEG 2000, TIFF) are left out, the rest passed on."""
    import sys

    if sys.modules.get("nvidia.nvimgcodec") is not None:  # imported already (None: known to be missing)
        return sys.modules["nvidia.nvimgcodec"]
    sys.stderr.flush()
    saved, captured = os.dup(2), tempfile.TemporaryFile()
    os.dup2(captured.fileno(), 2)  # the messages come from C++ (fd 2), not from Python's sys.stderr
    try:
        nvimgcodec = importlib.import_module("nvidia.nvimgcodec")
    except ImportError as exc:
        raise ConfigError(f"jpeg_decoder 'nvimgcodec' needs NVIDIA's nvImageCodec: pip install {NVIMGCODEC_PIP} "
                          f"(in this repository: pip install -e '.[gpu]'); the default decoder, 'torchvision', "
                          f"needs nothing more ({exc})") from exc
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        captured.seek(0)
        lines = captured.read().decode(errors="replace").splitlines()
        captured.close()
        keep = [line for line in lines if not any(c in line.lower() for c in _UNUSED_CODECS)]
        if keep:
            print("\n".join(keep), file=sys.stderr)
    return nvimgcodec


def probe_jpeg(width: int = 320, height: int = 240) -> bytes:
    """A baseline 4:2:0 JPEG (Pillow, quality 90) of a colour gradient, the size of a small photo (a hardware
    engine may refuse tiny images): a decoder's first check."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack(np.broadcast_arrays(x + 0 * y, y + 0 * x, (x + y) / 2), axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


_NV_DECODERS: dict[tuple, object] = {}  # (module, device id, backends, options) -> a checked nvimgcodec.Decoder


class NvImageCodecJpeg:
    """nvImageCodec on ``device``. On CUDA its backends are, in this order, the hardware engines and nvJPEG's CUDA
    path (for what the engines do not take: e.g. progressive JPEGs, or a GPU without engines); on the CPU
    libjpeg-turbo. Decoded images are ordered on the current CUDA stream (``cuda_stream``) and taken over without a
    copy (DLPack); nvImageCodec allocates them stream-ordered, so freeing them does not stall the device. A call's
    input bytes (pinned host memory the DataLoader may reuse) and its decoded images are kept alive until the
    stream has passed both the decoding and what the caller queued on them (the resize): an event recorded at
    the next call marks that point, and entries are dropped once it has completed."""

    BACKENDS = {"hw": "HW_GPU_ONLY", "cuda": "GPU_ONLY", "cpu": "CPU_ONLY"}

    def __init__(self, device: torch.device, backends: tuple[str, ...] | None = None, options: str = "") -> None:
        """``backends``: names from :attr:`BACKENDS`, in order of preference; default ``("hw", "cuda")`` on CUDA,
        ``("cpu",)`` on the CPU (``benchmarks/gpu_checks.py`` tries each alone). ``options``: nvImageCodec's decoder
        options (e.g. ``":fancy_upsampling=1"``; default: each backend's own).

        The library's decoder (its threads and the engines' state) is built and checked once per process and
        configuration, as torchvision keeps one nvJPEG handle, so that an extraction after a warm-up pays no
        second start-up."""
        nv = load_nvimgcodec()
        self.nv, self.device = nv, device
        cuda = device.type == "cuda"
        backends = tuple(backends or (("hw", "cuda") if cuda else ("cpu",)))
        if not set(backends) <= set(self.BACKENDS) or (cuda != ("cpu" not in backends)):
            raise ConfigError(f"nvImageCodec backends on {device} must be from hw, cuda (CUDA) or be cpu (CPU), "
                              f"got {backends}")
        if cuda:
            device_id = device.index if device.index is not None else torch.cuda.current_device()
        else:
            device_id = nv.NVIMGCODEC_DEVICE_CPU_ONLY
        self.params = nv.DecodeParams(apply_exif_orientation=False, color_spec=nv.ColorSpec.SRGB,
                                      sample_format=nv.SampleFormat.P_RGB)  # planar: [3, H, W]
        self._inflight: deque[list] = deque()  # [event or None, (inputs, code streams, images)] per CUDA call
        key = (id(nv), device_id, backends, options)
        if key in _NV_DECODERS:
            self.decoder = _NV_DECODERS[key]
            return
        self.decoder = nv.Decoder(device_id=device_id, options=options,
                                  backends=[nv.Backend(getattr(nv.BackendKind, self.BACKENDS[b])) for b in backends])
        probe = self([torch.frombuffer(bytearray(probe_jpeg()), dtype=torch.uint8)])[0]
        if probe is None or tuple(probe.shape) != (3, 240, 320):
            raise ConfigError(f"nvImageCodec {nv.__version__} cannot decode a plain JPEG on {device} with backends "
                              f"{', '.join(backends)} (is nvidia-nvjpeg installed? pip install {NVIMGCODEC_PIP}); use "
                              f"jpeg_decoder 'torchvision'")
        if cuda:  # the probe ran on this thread's stream; later calls come on the extraction's side stream
            torch.cuda.synchronize(device)
            self._inflight.clear()
        _NV_DECODERS[key] = self.decoder  # only a decoder that passed its probe is kept

    def __call__(self, jpegs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """uint8 ``[L]`` byte tensors (host) -> uint8 ``[3, H, W]`` RGB on the device, None where decoding failed."""
        nv = self.nv
        streams = [nv.CodeStream(t.numpy()) for t in jpegs]
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device)
            mark = torch.cuda.Event()
            mark.record(stream)  # after everything queued so far: the earlier calls' decoding and their resizes
            for entry in self._inflight:
                if entry[0] is None:
                    entry[0] = mark
            while self._inflight and self._inflight[0][0].query():
                self._inflight.popleft()
            images = self.decoder.decode(streams, params=self.params, cuda_stream=stream.cuda_stream)
            self._inflight.append([None, (jpegs, streams, images)])  # its event: set at the next call
            return [None if im is None else _take(im, self.device) for im in images]
        images = self.decoder.decode(streams, params=self.params)
        return [None if im is None else torch.from_numpy(np.asarray(im)) for im in images]


def hardware_engines(device: torch.device) -> bool | None:
    """Whether nvImageCodec decodes a plain JPEG on ``device``'s hardware JPEG engines alone (None off CUDA or
    without nvImageCodec): what a benchmark records beside the decoder, which falls back to CUDA silently."""
    if device.type != "cuda":
        return None
    try:
        load_nvimgcodec()
    except ConfigError:  # not installed
        return None
    try:
        NvImageCodecJpeg(device, ("hw",))
    except (ConfigError, RuntimeError):  # the probe failed, or the library refused that backend alone
        return False
    return True


def decoder_label(name: str) -> str:
    """How a store's decoding is recorded (``meta.json`` "decode", part of its fingerprint): torchvision's as before
    (its version is recorded with the store's other libraries), nvImageCodec's with its version."""
    if name == "nvimgcodec":
        return f"nvImageCodec {load_nvimgcodec().__version__}"
    return "torchvision.io.decode_jpeg"


def _take(im, device: torch.device) -> torch.Tensor:  # noqa: ANN001 - an nvimgcodec.Image in device memory
    """A decoded image as a tensor without a copy: DLPack (which orders it on torch's current stream), else the CUDA
    array interface (nvImageCodec already ordered it on the stream it was given)."""
    try:
        return torch.from_dlpack(im)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        return torch.as_tensor(im, device=device)


def build_jpeg_decoder(name: str, device: torch.device) -> TorchvisionJpeg | NvImageCodecJpeg:
    """The decoder called ``name`` (one of :data:`JPEG_DECODERS`) on ``device``."""
    if name == "torchvision":
        return TorchvisionJpeg(device)
    if name == "nvimgcodec":
        return NvImageCodecJpeg(device)
    raise ConfigError(f"jpeg_decoder must be one of {', '.join(JPEG_DECODERS)}, got {name!r}")


def decode_jpeg_batch(jpegs: list[torch.Tensor], size: int, device: torch.device,
                      resize: Callable[[list[torch.Tensor]], torch.Tensor] | None = None,
                      decoder: Callable[[list[torch.Tensor]], list[torch.Tensor | None]] | None = None
                      ) -> tuple[torch.Tensor | None, list[int]]:
    """Decode JPEG byte tensors on ``device`` and resize each whole to ``size`` x ``size``.

    Returns ``(x, failed)``: float ``x [n_ok, 3, S, S]`` for the inputs that decoded, in input order (None if none
    did), and the positions of those that did not. ``decoder`` is a :func:`build_jpeg_decoder` (default:
    torchvision's). ``resize`` maps same-size uint8 ``[3, H, W]`` images to float ``[n, 3, S, S]``; the default,
    :class:`dan.resize.PilResize`, gives PIL's BILINEAR result exactly in whole levels 0..255 (what
    :func:`dan.images.read_image` gives for the same decoded pixels; the extraction's resize also normalises).
    Inputs of one size are resized in one call; when all share a size ``x`` is that call's output (no further copy).
    """
    imgs = (decoder or TorchvisionJpeg(device))(jpegs)
    good = [im for im in imgs if im is not None]
    return resize_by_size(good, resize or PilResize(size, device)), [k for k, im in enumerate(imgs) if im is None]


def resize_by_size(images: list[torch.Tensor], resize: Callable[[list[torch.Tensor]], torch.Tensor]
                   ) -> torch.Tensor | None:
    """Decoded uint8 ``[3, H, W]`` images of any sizes -> ``resize``'s float ``[n, 3, S, S]`` rows in input order
    (None for no image): one ``resize`` call per distinct input size; when all share a size, that call's output
    (no further copy). Nothing here makes the host wait for the device (:class:`dan.resize.PilResize` does the
    first time it meets an input size: it copies that size's coefficients to the device)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, im in enumerate(images):
        by_shape.setdefault(tuple(im.shape), []).append(k)
    x = None
    for ks in by_shape.values():
        g = resize([images[k] for k in ks])  # [n, 3, S, S]
        if len(ks) == len(images):
            return g
        if x is None:
            x = torch.empty((len(images), *g.shape[1:]), dtype=g.dtype, device=g.device)
        rows = torch.tensor(ks)  # to the device from pinned memory: a pageable copy would make the host wait
        x[rows.pin_memory().to(g.device, non_blocking=True) if g.device.type == "cuda" else rows] = g
    return x


def decode_jpegs(jpegs: list[torch.Tensor], size: int, device: torch.device) -> list[torch.Tensor | None]:
    """:func:`decode_jpeg_batch`, one float ``[3, S, S]`` (0..255) per input, None where decoding failed."""
    return per_input(*decode_jpeg_batch(jpegs, size, device), len(jpegs))


def per_input(x: torch.Tensor | None, failed: list[int], n: int) -> list[torch.Tensor | None]:
    """:func:`decode_jpeg_batch`'s ``(x, failed)`` for ``n`` inputs -> one row of ``x`` per input, None where failed."""
    rows, bad = iter(x) if x is not None else iter(()), set(failed)
    return [None if k in bad else next(rows) for k in range(n)]
