"""Input stage of the feature extraction (:mod:`dan.extract`): image files -> normalised device batches.

DataLoader workers (:class:`_ImageFiles`, :func:`_collate`) decode and resize JPEGs (PIL, with DCT-domain downscaling
when an image is >= 2x the target) into uint8 NHWC chunks ``[b, S, S, 3]``, or, with ``gpu_decode``, only read the
files' bytes (one uint8 tensor per chunk), or both (``FeatureConfig.cpu_decode_share``: the first images of each model
batch decoded here but left at their own size, the rest decoded on the device; the device resizes both). A prefetch
thread (:class:`_Prefetch`) runs :class:`_Stager` on each chunk: it moves the chunk to the device on its own CUDA
stream, decodes the bytes there (:mod:`dan.jpeg`; an image the device decoder refuses is decoded on the CPU), resizes
them (:class:`dan.resize.PilResize`) and normalises uint8 0-255 with the backbone's mean/std into float
``x [b, 3, S, S]``, channels_last, then joins the chunks of one model batch. Unreadable images come back as
``(index, reason)`` pairs. :func:`dan.extract.run_pipeline` builds the loader and consumes the model batches.
"""

from __future__ import annotations

import contextlib
import math
import queue
import signal
import threading
from pathlib import Path

import torch
from torch.utils.data import Dataset, get_worker_info

from dan.backbones import GridBackbone
from dan.images import BadImage, read_image
from dan.jpeg import decode_jpeg_batch, per_input, plain_jpeg_bytes, resize_by_size
from dan.resize import PilResize, antialias_resize, normalise_


def _leave_interrupts_to_the_parent(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's worker_init_fn
    """DataLoader worker initialiser: ignore SIGINT, which the extracting process handles. An interrupt is sent to a
    whole process group (Ctrl-C in a terminal, a Jupyter kernel's stop button), so the workers took it too and
    ended: the extraction, interrupted, then often waited 5 s for the dead worker's batch before stopping, and now
    and then reported ``RuntimeError: DataLoader worker (pid(s) ...) exited unexpectedly`` instead of the
    interrupt. The extraction's own KeyboardInterrupt shuts the workers down, as at its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decoded_by_workers(positions, cpu_first: int, batch: int):  # noqa: ANN001, ANN201 - int or int array in kind
    """Whether the image at ``positions`` (in the sorted image list; an int or an int array) is decoded by the loader
    workers where the device decodes the rest: the first ``cpu_first`` of every ``batch``
    (:func:`dan.feature_config.cpu_decoded_per_batch`)."""
    return positions % batch < cpu_first


class _ImageFiles(Dataset):
    """Item k = image ``start + k``: ``(index, pixels uint8 [S, S, 3] | None, jpeg bytes uint8 [L] | None, error,
    decoded uint8 [H, W, 3] | None)``.

    With ``raw_jpeg`` a plain JPEG's bytes are passed on for the device to decode, except for the first
    ``cpu_first`` images of every ``batch`` (by position in ``items``:
    :func:`dan.feature_config.cpu_decoded_per_batch`), which are decoded here but not resized (``decoded``: the
    device resizes them as it does the images it decodes, and PIL's resize cost the CPU more than its decoding);
    any other file is decoded and resized here (``pixels``)."""

    def __init__(self, items: list[tuple[int, Path]], start: int, size: int, raw_jpeg: bool, cpu_first: int = 0,
                 batch: int = 1) -> None:
        self.items, self.start, self.size, self.raw_jpeg = items, start, size, raw_jpeg
        self.cpu_first, self.batch = cpu_first, batch

    def __len__(self) -> int:
        return len(self.items) - self.start

    def __getitem__(self, k: int):
        i = self.start + k
        path = self.items[i][1]
        try:
            if self.raw_jpeg and decoded_by_workers(i, self.cpu_first, self.batch):  # the device resizes it
                return i, None, None, "", torch.from_numpy(read_image(path, self.size, resize=False))
            data = plain_jpeg_bytes(path) if self.raw_jpeg else None
            if data is not None:
                return i, None, torch.from_numpy(data), "", None
            return i, torch.from_numpy(read_image(path, self.size)), None, "", None
        except BadImage as exc:
            return i, None, None, exc.reason, None


def _joined(parts: list[torch.Tensor], stack: bool) -> torch.Tensor:
    """``torch.stack(parts)``, or ``torch.cat`` of 1-D ``parts``; in a loader worker straight into shared memory, as
    torch's default collate does: the result reaches the main process through shared memory anyway, and so is
    copied once, not twice."""
    shape = (len(parts), *parts[0].shape) if stack else (sum(t.numel() for t in parts),)
    out = None
    if get_worker_info() is not None:
        with contextlib.suppress(AttributeError):  # torch's private storage API, as its collate uses it (2.x)
            out = parts[0].new(parts[0]._typed_storage()._new_shared(math.prod(shape))).resize_(shape)
    return torch.stack(parts, out=out) if stack else torch.cat(parts, out=out)


def _collate(samples: list) -> dict:
    """A batch of :class:`_ImageFiles` items. Pixels are stacked, and the JPEG files' bytes and the unresized
    decoded images flattened and concatenated, into one tensor each (``jpeg_sizes`` and ``decoded_shapes`` split
    them again): a worker hands every tensor to the main process through its own shared-memory file, and 256 small
    ones per batch capped a 2-core machine's loader at ~1,300-1,900 img/s. ``*_slot``: each one's place in the
    chunk's good images."""
    good = [s for s in samples if not s[3]]
    px = [(slot, s[1]) for slot, s in enumerate(good) if s[1] is not None]
    jp = [(slot, s[2]) for slot, s in enumerate(good) if s[2] is not None]
    dec = [(slot, s[4]) for slot, s in enumerate(good) if s[4] is not None]
    return {"index": [s[0] for s in good], "end": samples[-1][0] + 1, "bad": [(s[0], s[3]) for s in samples if s[3]],
            "pixels": _joined([t for _, t in px], stack=True) if px else None, "px_slot": [k for k, _ in px],
            "jpeg_bytes": _joined([t for _, t in jp], stack=False) if jp else None,
            "jpeg_sizes": [len(t) for _, t in jp], "jpeg_slot": [k for k, _ in jp],
            "decoded": _joined([t.reshape(-1) for _, t in dec], stack=False) if dec else None,
            "decoded_shapes": [tuple(t.shape) for _, t in dec], "decoded_slot": [k for k, _ in dec]}


class _Prefetch:
    """Runs ``stage`` on the loader's chunks in a thread, ``depth`` model batches ahead of the consumer.

    ``stage(chunk)`` returns a model batch once it has gathered enough chunks (else None); ``stage.flush()`` returns
    the last, partial one (or None)."""

    _END = object()

    def __init__(self, batches, stage, depth: int = 2) -> None:
        self._it, self._stage, self._q, self._stop = batches, stage, queue.Queue(maxsize=depth), threading.Event()
        self._thread = threading.Thread(target=self._run, name="feature-prefetch", daemon=True)
        self._thread.start()

    def _offer(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                for chunk in self._it:
                    item = self._stage(chunk)
                    if item is not None and not self._offer(item):
                        return
                item = self._stage.flush()
                if item is not None and not self._offer(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._q.put(exc)
            return
        self._q.put(self._END)

    def __iter__(self):
        while (item := self._q.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.1)
            except queue.Empty:
                continue
        self._thread.join()


class _Stager:
    """Loader chunks -> model batches ``(indices, end, x [b, 3, S, S] normalised channels_last on device, ready
    event, bad)``, every ``chunks`` chunks (:meth:`flush`: the rest). Each chunk is moved/decoded on ``side_stream``
    as it arrives; the batch is concatenated there and ``ready`` marks the end of that work."""

    def __init__(self, items, model: GridBackbone, device: torch.device, side_stream, chunks: int = 1,
                 resize: str = "pil", decoder=None) -> None:  # noqa: ANN001 - a dan.jpeg decoder (None: torchvision)
        self.items, self.device, self.side_stream, self.chunks = items, device, side_stream, chunks
        self.decoder = decoder
        self.size = model.image_size
        self.scale = torch.tensor([1 / (255 * s) for s in model.std], device=device).view(1, 3, 1, 1)
        self.shift = torch.tensor([-m / s for m, s in zip(model.mean, model.std, strict=True)],
                                  device=device).view(1, 3, 1, 1)
        # same-size uint8 [3, H, W] images -> normalised model input [n, 3, S, S], channels_last
        self.resize = PilResize(self.size, device, normalise=(self.scale, self.shift)) if resize == "pil" else \
            (lambda images: self._normalise(antialias_resize(images, self.size)))
        if side_stream is not None:
            torch.cuda.synchronize(device)  # scale/shift are ready before the side stream reads them
        self._parts: list[tuple[list[int], torch.Tensor | None, list]] = []
        self._end = 0

    def _stream(self):
        return torch.cuda.stream(self.side_stream) if self.side_stream is not None else contextlib.nullcontext()

    def _chunk(self, batch: dict) -> tuple[list[int], torch.Tensor | None, list]:
        """One collated chunk -> (indices, x [b, 3, S, S] normalised channels_last or None, bad)."""
        index, bad, device, size = list(batch["index"]), list(batch["bad"]), self.device, self.size
        from_bytes = None
        if batch["jpeg_sizes"]:
            jpegs = list(torch.split(batch["jpeg_bytes"], batch["jpeg_sizes"]))  # one 1-D view per file
            x, failed = decode_jpeg_batch(jpegs, size, device, self.resize, self.decoder)  # normalised
            if not failed and len(jpegs) == len(index):  # the usual case: the resized batch as it is
                return index, x.contiguous(memory_format=torch.channels_last), bad  # (a copy only for mixed sizes)
            from_bytes = per_input(x, failed, len(jpegs))
        sources = []  # (slots, normalised rows) of the images the workers decoded
        if batch["pixels"] is not None:  # resized too
            sources.append((batch["px_slot"], self._normalise(
                batch["pixels"].to(device, non_blocking=True).permute(0, 3, 1, 2))))  # NHWC -> NCHW
        if batch["decoded"] is not None:  # at their own sizes: resized here
            shapes = batch["decoded_shapes"]
            flat = batch["decoded"].to(device, non_blocking=True)
            imgs = [v.view(shape).permute(2, 0, 1) for v, shape in  # [H, W, 3] -> [3, H, W] views
                    zip(torch.split(flat, [math.prod(shape) for shape in shapes]), shapes, strict=True)]
            sources.append((batch["decoded_slot"], resize_by_size(imgs, self.resize)))
        slots: list[torch.Tensor | None] = [None] * len(index)
        x = None
        for places, rows in sources:
            if len(places) == len(index):  # one source fills the chunk, in order
                x = rows.contiguous(memory_format=torch.channels_last)  # (a copy only for mixed sizes)
            for k, slot in enumerate(places):
                slots[slot] = rows[k]
        if from_bytes is not None:
            for slot, img in zip(batch["jpeg_slot"], from_bytes, strict=True):
                if img is None:  # the device decoder refused it: decode on the CPU, or report it
                    try:
                        img = torch.from_numpy(read_image(self.items[index[slot]][1], size)).to(device)
                        img = self._normalise(img.permute(2, 0, 1)[None])[0]
                    except BadImage as exc:
                        bad.append((index[slot], exc.reason))
                slots[slot] = img
        keep = [k for k, t in enumerate(slots) if t is not None]
        if x is None or len(keep) != len(index):
            x = torch.stack([slots[k] for k in keep]).contiguous(memory_format=torch.channels_last) if keep else None
            index = [index[k] for k in keep]
        return index, x, bad

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """0..255 ``[b, 3, S, S]`` -> normalised model input, float32 channels_last (:func:`dan.resize.normalise_`).

        (A one-pass ``addcmul`` from an NCHW input into a bf16 channels_last output was tried on an H200 once:
        benchmarks/results/extract_*bf16_h200.json. Their end-to-end rates fell, but their steady period between
        forward calls did not (0.146 / 0.141 s against 0.142 s) while the loop waited 1.5-3.6 s on the store
        writer, against 0.001 s in the runs before: the machine's host side, more than the change, is the likelier
        cause; a guess, not checked. Not re-tried.)"""
        return normalise_(x, self.scale, self.shift)

    def __call__(self, batch: dict):
        with self._stream():
            self._parts.append(self._chunk(batch))
        self._end = batch["end"]
        return self.flush() if len(self._parts) == self.chunks else None

    def flush(self):
        if not self._parts:
            return None
        parts, self._parts = self._parts, []
        index = [i for p in parts for i in p[0]]
        bad = sorted(b for p in parts for b in p[2])
        xs = [p[1] for p in parts if p[1] is not None]
        if not xs:
            return index, self._end, None, None, bad
        with self._stream():
            x = xs[0] if len(xs) == 1 else torch.cat(xs).contiguous(memory_format=torch.channels_last)
            event = None
            if self.side_stream is not None:
                event = torch.cuda.Event()
                event.record(self.side_stream)
        return index, self._end, x, event, bad
