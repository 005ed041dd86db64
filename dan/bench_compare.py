"""Recorded GPU runs read side by side: pairs of extractions that differ in one setting (:func:`ab_table`), the
GPU JPEG decoders' pixels against Pillow's (:func:`decoder_table`, from ``benchmarks/gpu_checks.py``'s result), and
how long each loader chunk took to stage (:func:`staging_table`, from the timelines' events).

The performance chapter shows them; the pairs are named, not inferred, because two runs that differ in one config
field may still differ in what the machine did (e.g. which run of a device call wrote the first large store), and
the chapter's prose says which pairs are clean.
"""

from __future__ import annotations

from dan.io import DataError

# (what changes, the config field it is, the run without the change, the run with it): H200 extractions,
# ResNet-152 at 448 px; two runs of a pair agree on every other setting (tests/test_bench.py checks it)
EXTRACT_PAIRS = (
    ("fused ResNet-152 (dan.fuse) instead of eager, 8,192 JPEGs", "fuse",
     "extract_pil_eager_8k_h200.json", "extract_pil_8k_h200.json"),
    ("model stream at normal priority instead of the highest, 8,192 JPEGs", "prioritise_model",
     "extract_pil_8k_h200.json", "extract_pil_noprio_8k_h200.json"),
    ("nvImageCodec decoding instead of torchvision's nvJPEG, 8,192 JPEGs", "jpeg_decoder",
     "extract_pil_8k_h200.json", "extract_nvimgcodec_8k_h200.json"),
    ("model stream at normal priority instead of the highest, 40,504 JPEGs", "prioritise_model",
     "extract_pil_val2014_h200.json", "extract_pil_noprio_val2014_h200.json"),
    ("model stream at normal priority instead of the highest, nvImageCodec decoding, 40,504 JPEGs",
     "prioritise_model", "extract_nvimgcodec_val2014_h200.json", "extract_nvimgcodec_noprio_val2014_h200.json"),
    # benchmarks/device_extract.sh's tenth version (/dev/shm touched first; shown once collected)
    ("half of each batch decoded by PIL in the loader workers (resized on the GPU), 8,192 JPEGs", "cpu_decode_share",
     "split_extract_8k_h200.json", "split_extract_half_8k_h200.json"),
    ("every image decoded by PIL in the loader workers (resized on the GPU), 8,192 JPEGs", "cpu_decode_share",
     "split_extract_8k_h200.json", "split_extract_workers_8k_h200.json"),
    ("the staging stream at the highest priority, 8,192 JPEGs", "prioritise_staging",
     "split_extract_8k_h200.json", "split_extract_stageprio_8k_h200.json"),
    ("nvImageCodec decoding (on the staging stream) instead of torchvision's nvJPEG (on a stream of its own), "
     "staging stream at the highest priority, 8,192 JPEGs", "jpeg_decoder",
     "split_extract_stageprio_8k_h200.json", "split_extract_nvimg_stageprio_8k_h200.json"),
)

# the fields of each run shown per side: rates, ratio, steady ratio, and the two waits that say what held it back
_SIDE = (("model_only_img_s", None), ("end_to_end_img_s", None), ("ratio", None), ("steady_ratio", None),
         ("put_wait_s", "timeline"), ("gpu_gap_s_median", "timeline"))


def _field(src: dict, key: str, where: str | None) -> float | None:
    holder = (src.get(where) or {}) if where else src
    return holder.get(key)


def ab_table(recorded: list[dict], pairs: tuple[tuple[str, str, str, str], ...] = EXTRACT_PAIRS) -> list[dict]:
    """One row per pair in ``pairs`` whose two files are both in ``recorded`` (:func:`dan.bench.recorded_results`):
    the change, the config field that differs, both files, and per side (``_a`` without the change, ``_b`` with
    it) the model-only and end-to-end rates (img/s), their ratio, the steady-state ratio, ``put_wait_s`` (seconds
    the GPU loop waited on the store writer) and ``gpu_gap_s_median`` (the compute stream's median wait for its
    next input, seconds); and ``end_to_end_change``, the rate with the change over the rate without it. Pairs with
    a file missing are left out (a checkout with fewer results shows fewer rows)."""
    by_file = {src["file"]: src for src in recorded}
    rows = []
    for change, field, a, b in pairs:
        if a not in by_file or b not in by_file:
            continue
        row = {"change": change, "field": field, "without": a, "with": b}
        for key, where in _SIDE:
            row[f"{key}_a"] = _field(by_file[a], key, where)
            row[f"{key}_b"] = _field(by_file[b], key, where)
        e2e_a, e2e_b = row["end_to_end_img_s_a"], row["end_to_end_img_s_b"]
        row["end_to_end_change"] = round(e2e_b / e2e_a, 3) if e2e_a and e2e_b else None
        rows.append(row)
    return rows


def decoder_table(checks: dict, source: str = "gpu checks") -> list[dict]:
    """One row per JPEG decoder in ``benchmarks/gpu_checks.py``'s result ``checks`` (its ``jpeg_decoders``): the
    images decoded of those given, the share of decoded values (uint8, all channels) that differ from Pillow's
    (libjpeg-turbo), the largest difference in levels, and the decoder's img/s on its own; a decoder that could not
    run has its error instead. ``[]`` where the result holds no decoder check (results before 2026-11-28). A
    decoder entry that is not an object is a :class:`~dan.io.DataError` naming ``source`` and the decoder."""
    section = checks.get("jpeg_decoders")
    if not section:
        return []
    decoders = section.get("decoders") if isinstance(section, dict) else None
    if not isinstance(decoders, dict):
        raise DataError(f"{source}: jpeg_decoders must hold a 'decoders' object, got {section!r}")
    rows = []
    for name, d in decoders.items():
        if not isinstance(d, dict):
            raise DataError(f"{source}: jpeg_decoders.decoders[{name!r}] must be an object, got {d!r}")
        rows.append({"decoder": name, "decoded": d.get("decoded"), "of": d.get("of"),
                     "values_differing_from_pillow": d.get("values_differing_from_pillow"),
                     "max_abs_diff": d.get("max_abs_diff"), "img_s": d.get("img_s"), "error": d.get("error", "")})
    return rows


def staging_table(recorded: list[dict]) -> list[dict]:
    """One row per extraction whose timeline kept its events (``benchmarks/extract.py --timeline``): how long the
    prefetch thread took to stage each loader chunk (``batch_in`` to ``staged``, host milliseconds), grouped by model
    batch (``chunks`` per batch, from the count of chunks over the batches; a last, partial batch is left out): the
    median over batches of the slowest
    chunk of each batch, and of the other chunks' median, beside the GPU's median time per forward. A slowest chunk
    as long as a forward says that staging waited for the forward (see ``benchmarks/staging_blocks.py``).

    Where the run also has its forward calls' events and the GPU's forward time, two more medians, over the forwards
    but the first and last two: ``slow_chunk_end_vs_forward_end_ms``, when the longest chunk whose staging began
    during a forward ended, against that forward's end on the GPU as the host can tell it (its start plus the median
    GPU forward time: :func:`_chunk_vs_forward`); near 0 says the chunk waited for the forward to end. And
    ``next_forward_after_ms``: how long after that chunk's end the next forward was called (about the GPU's idle
    time, where the forward before had ended by then: the rest of the batch being staged)."""
    import statistics

    rows = []
    for src in recorded:
        timeline, events = src.get("timeline") or {}, src.get("timeline_events") or []
        starts = [t for t, name in events if name == "batch_in"]
        ends = [t for t, name in events if name == "staged"]
        batches = timeline.get("batches")
        if not starts or not batches or len(starts) != len(ends):
            continue
        per = -(-len(starts) // batches)  # chunks per batch; only the last batch may have fewer (a partial one)
        if len(starts) <= (batches - 1) * per:
            continue
        spans = [1e3 * (b - a) for a, b in zip(starts, ends, strict=True)]
        groups = [sorted(spans[k:k + per]) for k in range(0, len(spans), per) if k + per <= len(spans)]
        forward = timeline.get("gpu_forward_s_median")
        row = {"file": src["file"], "chunks_per_batch": per,
               "slowest_chunk_ms_median": round(statistics.median(g[-1] for g in groups), 1),
               "other_chunks_ms_median": round(statistics.median(x for g in groups for x in g[:-1]), 1)
               if per > 1 else None,
               "gpu_forward_ms_median": round(1e3 * forward, 1) if forward else None}
        row.update(_chunk_vs_forward(list(zip(starts, ends, strict=True)),
                                     [t for t, name in events if name == "forward>"], forward))
        rows.append(row)
    return rows


def _chunk_vs_forward(chunks: list[tuple[float, float]], calls: list[float], forward: float | None) -> dict:
    """:func:`staging_table`'s two forward-relative medians (ms); None without forward calls or forward time.

    Forward k's end on the GPU is taken as ``max(call_k, end_(k-1)) + forward``: it starts at its call, or when the
    forward before it ends if the GPU is still busy then (forwards queued back to back). Its chunks are those whose
    staging began from 5 ms before its call up to its end or 5 ms before the next call, whichever comes first, so
    that no chunk counts for two forwards."""
    import statistics

    vs_end: list[float] = []
    idle: list[float] = []
    ends: list[float] = []
    for call in calls if forward else ():
        ends.append(max(call, ends[-1] if ends else call) + forward)
    for k in range(2, len(ends) - 2):
        call, end = calls[k], ends[k]
        during = [(b - a, b) for a, b in chunks if call - 0.005 <= a < min(end, calls[k + 1] - 0.005)]
        if during:
            chunk_end = max(during)[1]
            vs_end.append(1e3 * (chunk_end - end))
            idle.append(1e3 * (calls[k + 1] - chunk_end))
    if not vs_end:
        return {"slow_chunk_end_vs_forward_end_ms": None, "next_forward_after_ms": None}
    return {"slow_chunk_end_vs_forward_end_ms": round(statistics.median(vs_end), 1),
            "next_forward_after_ms": round(statistics.median(idle), 1)}
