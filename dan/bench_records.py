"""Committed benchmark results read back for the book: the commands that made them, the speed targets and their
verdicts, and the tables of the performance page (targets, timelines, profiles).

Measurement lives in :mod:`dan.bench` (which re-exports these names); this module only reads JSON records, so the
book's tables need neither torch nor a GPU.
"""

from __future__ import annotations

from pathlib import Path

# The paper's sizes (PAPER.md): 14x14 ResNet-152 regions, hidden 512, 2000 answers, batch 128; the training
# targets hold at these sizes (dan.bench measures at them with ``sizes="paper"``).
PAPER_SIZES = dict(batch_size=128, grid=(14, 14), dim=2048, hidden=512, num_answers=2000, vocab_size=10000, steps=2,
                   seq_len=14)


def command_of(src: dict) -> str:
    """The command that produced a recorded result, with the device machine's output folder (``/root/out/``,
    where ``$OUT`` pointed) written as ``$OUT/``: a reader reruns it with their own folder."""
    return str(src.get("command", "")).replace("/root/out/", "$OUT/")


def recorded_results(folder: Path) -> list[dict]:
    """Benchmark JSON files committed under ``folder`` (e.g. GPU runs), each with its file name. Files without the
    ``command`` that made them (e.g. ``benchmarks/gpu_checks.py`` results, checks rather than measurements) are left
    out."""
    from dan.io import check_json, read_json

    found = []
    for p in sorted(Path(folder).glob("*.json")):
        result = read_json(p, "benchmark result")
        check_json(result, "object", str(p))
        if "command" in result:
            check_json(result, RESULT_SCHEMA, str(p))
            for k, row in enumerate(result.get("profile") or []):  # a GPU's row: profile_markdown prints these
                if row.get("device_busy") is not None:
                    check_json(row, dict.fromkeys(_GPU_PROFILE_KEYS, "number"), str(p), f"profile[{k}]")
            found.append({"file": p.name, **result})
    return found


_NUMBER = ("number", None)  # a field a table shows: a number, or null where the run had none
# The fields of a benchmark result that the tables below read, by type (dan.io.check_json): one of another type
# is a DataError naming the file and field, not a TypeError in the performance chapter. Which must be there, and
# be positive, target_table checks (its "need").
_GPU_PROFILE_KEYS = ("wall_ms_per_step", "top_level_ops_per_step", "kernels_per_step")
RESULT_SCHEMA = {
    "command": "string", "config?": "object", "copy_check?": (None, {"rel_diff?": _NUMBER}),
    "num_images?": ("int", None), "batch_size?": ("int", None), "model_only_img_s?": _NUMBER,
    "model_only_batch_s?": _NUMBER, "steady_img_s?": _NUMBER, "train?": (None, ["object"]),
    "retrieval?": (None, {"n_images?": "int", "n_captions?": "int"}), "timeline?": (None, "object"),
    "kernel_profile?": (None, {"device_ms_per_batch_by_group": "object"}),
    "profile?": [{"task": "string", "device": "any", "wall_ms_per_step?": _NUMBER, "top_level_ops_per_step?": _NUMBER,
                  "kernels_per_step?": _NUMBER, "device_busy?": _NUMBER}],
}


# The speed targets of the feature and training issues, set for one H200 (an H100 runs these models more slowly).
TARGETS = {"extract_img_s": 1800.0, "extract_ratio": 0.9, "train_vqa_samples_s": 15000.0, "train_ratio": 0.95,
           "retrieval_s": 1.0}


def _model_label(src: dict) -> str:
    """", fused ResNet" / ", eager ResNet" for extractions that record how the model ran (``dan.fuse``; runs before
    it ran the eager model and say nothing)."""
    how = src.get("inference")
    return "" if how is None else ", eager ResNet" if how == "eager" else ", fused ResNet"


COPY_TOLERANCE = 0.05  # copies of one image may differ by rounding only (bf16, another batch position); another
# image's row differed by 1.0-1.6 x the spread between images (CPU, random ResNet-152; copy_consistency)
CEILING_SLACK = 1.02  # a pipeline more than 2 % above its "ceiling" says the ceiling was not one: no verdict


TARGET_CARD = "H200"  # the issues set every speed target for one H200; other cards' rows are shown, not judged


def _on_target_card(name: object) -> bool:
    return TARGET_CARD.lower() in str(name or "").lower()


def targets_markdown() -> str:
    """The speed targets (:data:`TARGETS`) in one sentence, at the settings :func:`target_table` judges them at: the
    performance page shows this rather than typing the numbers, which could then drift from the ones the table
    judges by."""
    t = TARGETS
    return (f"The study's speed targets, set for one {TARGET_CARD} (`dan.bench.TARGETS`), are: ResNet-152 extraction "
            f"at 448 px at ≥ {t['extract_img_s']:,.0f} img/s end to end and ≥ {t['extract_ratio']:g} of the model-only "
            f"rate; training at the paper's sizes (batch {PAPER_SIZES['batch_size']}, "
            f"{PAPER_SIZES['grid'][0]}×{PAPER_SIZES['grid'][1]} regions of {PAPER_SIZES['dim']}-d, hidden "
            f"{PAPER_SIZES['hidden']}) at ≥ {t['train_ratio']:g} of the ceiling, and for r-DAN at "
            f"≥ {t['train_vqa_samples_s']:,.0f} samples/s; Flickr30K-size retrieval (1,000 images × 5,000 captions) "
            f"in under {t['retrieval_s']:g} s.")


def _extract_verdict(src: dict) -> tuple[str, str]:
    """(target, why not judged): the extraction target holds for ResNet-152 at 448 px on one H200 (else no target);
    a run there is judged only if its store passed its own check (copies of one image agree:
    :func:`dan.bench.copy_consistency`)."""
    t = TARGETS
    if src.get("backbone") != "resnet152" or src.get("image_size") != 448 or not _on_target_card(src.get("device")):
        return "", f"not the target's setting (ResNet-152, 448 px, one {TARGET_CARD})"
    target = f">= {t['extract_img_s']:,.0f} img/s and >= {t['extract_ratio']} x model-only"
    check = src.get("copy_check") or {}
    if check.get("rel_diff") is not None and not check["rel_diff"] <= COPY_TOLERANCE:
        return target, f"the store failed its copy check (rel_diff {check['rel_diff']:.3g} > {COPY_TOLERANCE})"
    return target, ""


def _train_verdict(r: dict) -> str:
    """Why a training row is not judged ('' if it is): the targets hold at the paper's sizes on one H200."""
    paper = {"batch_size": PAPER_SIZES["batch_size"], "regions": PAPER_SIZES["grid"][0] * PAPER_SIZES["grid"][1],
             "dim": PAPER_SIZES["dim"], "hidden": PAPER_SIZES["hidden"]}
    if any(r.get(k) != v for k, v in paper.items()) or not _on_target_card(r.get("device")):
        return f"not the target's setting (the paper's sizes on one {TARGET_CARD})"
    return ""


def target_table(recorded: list[dict]) -> list[dict]:
    """One row per GPU measurement in ``recorded`` (:func:`recorded_results`): what was measured, on which card,
    the ceiling, the pipeline's rate, their ratio, the target (empty outside the target's setting) and whether it
    is met (None outside that setting, or where a run at it cannot be judged: ``note`` says why). Verdicts use the
    numbers as shown (rates in whole units, ratios to 3 places), so that a row never reads 0.95 and "misses
    >= 0.95". A result file missing a field the table needs is a :class:`~dan.io.DataError` naming the file and
    the field."""
    from dan.io import DataError, is_number

    rows = []

    def row(src: dict, what: str, card: str, ceiling, pipeline, unit: str, target: str, met,  # noqa: ANN001
            note: str = "") -> None:
        rows.append({"file": src["file"], "measurement": what, "card": card, "ceiling": ceiling,
                     "pipeline": pipeline, "unit": unit,
                     "ratio": round(pipeline / ceiling, 3) if ceiling and pipeline is not None else None,
                     "target": target, "met": met, "note": note})

    def need(src: dict, keys: tuple[str, ...], where: str = "") -> None:
        for k in keys:
            v = src.get(k)
            if not (is_number(v) and v > 0):
                raise DataError(f"{src.get('file', '?')}: {where}field {k!r} is missing or not a positive number "
                                f"({v!r})")

    t = TARGETS
    for src in recorded:
        if "end_to_end_img_s" in src:  # benchmarks/extract.py
            need(src, ("end_to_end_img_s", "model_only_img_s"))
            e2e, ceiling = round(src["end_to_end_img_s"], 1), round(src["model_only_img_s"], 1)
            ratio = round(e2e / ceiling, 3)
            target, why = _extract_verdict(src)
            what = f"extract {src.get('backbone')} {src.get('image_size')} px, batch {src.get('batch_size')}"
            what += f", {src['num_images']:,} images" if "num_images" in src else ""
            what += ", CPU decode" if str(src.get("decode", "")).startswith("PIL") else ""
            what += ", nvImageCodec decode" if str(src.get("decode", "")).startswith("nvImageCodec") else ""
            what += ", store in /dev/shm" if "/dev/shm" in src.get("command", "") else ""
            resize = src.get("config", {}).get("device_resize") if "on the device" in str(src.get("decode", "")) \
                else None  # recorded since the PIL-exact resize (before it, the device path used interpolate)
            what += {"pil": ", PIL-exact resize", "antialias": ", interpolate resize"}.get(resize, "")
            what += _model_label(src)
            what += ", model stream not prioritised" if src.get("config", {}).get("prioritise_model") is False else ""
            what += ", model on its own stream" if src.get("config", {}).get("own_model_stream") \
                and not src.get("config", {}).get("prioritise_model") else ""
            what += ", staging stream prioritised" if src.get("config", {}).get("prioritise_staging") else ""
            share = src.get("config", {}).get("cpu_decode_share")
            what += f", {share:.0%} of each batch decoded by PIL" if share and not str(
                src.get("decode", "")).startswith("PIL") else ""
            what += ", GC not frozen" if src.get("config", {}).get("freeze_gc") is False else ""
            met = (e2e >= t["extract_img_s"] and ratio >= t["extract_ratio"]) if target and not why else None
            if met is not None and ratio > CEILING_SLACK:
                met, why = None, f"the end-to-end rate is {ratio} x its model-only ceiling: not a ceiling"
            row(src, what, src.get("device"), ceiling, e2e, "img/s", target, met, why)
            if src.get("steady_img_s"):  # the same run without start-up and final flush: shown, not judged
                row(src, what + ", steady state", src.get("device"), ceiling, round(src["steady_img_s"], 1),
                    "img/s", "", None)
        train = src.get("train") or []
        if not isinstance(train, list):
            raise DataError(f"{src.get('file', '?')}: field 'train' must be a list of results, "
                            f"got {type(train).__name__}")
        for k, r in enumerate(train):  # benchmarks/train.py
            if not isinstance(r, dict):
                raise DataError(f"{src.get('file', '?')}: train[{k}] must be an object, got {r!r}")
            need({"file": src.get("file"), **r}, ("fed_samples_per_s", "ceiling_samples_per_s"), f"train[{k}] ")
            vqa = r.get("task") == "vqa"
            fed, ceiling = round(r["fed_samples_per_s"]), round(r["ceiling_samples_per_s"])
            ratio = round(fed / ceiling, 3)
            why = _train_verdict(r)
            target = "" if why else (f">= {t['train_vqa_samples_s']:,.0f} samples/s and >= {t['train_ratio']} x "
                                     f"ceiling" if vqa else f">= {t['train_ratio']} x ceiling")
            met = (ratio >= t["train_ratio"] and (fed >= t["train_vqa_samples_s"] if vqa else True)) if target \
                else None
            if met is not None and ratio > CEILING_SLACK:
                met, why = None, f"the fed rate is {ratio} x its ceiling: the ceiling was not one (timing noise)"
            label = f"train {'r-DAN' if vqa else 'm-DAN'} step, batch {r.get('batch_size')}"
            label += (", bf16" if r.get("amp_bf16") else "") + (", fused SGD" if r.get("fused_sgd") else "")
            label += f", compiled ({r.get('compile_mode') or 'default'})" if r.get("compile") else ""
            row(src, label, r.get("device"), ceiling, fed, "samples/s", target, met, why)
        if src.get("retrieval"):
            r = src["retrieval"]
            need({"file": src.get("file"), **r}, ("seconds_median",), "retrieval ")
            sec = round(r["seconds_median"], 3)
            judged = r.get("n_images") == 1000 and r.get("n_captions") == 5000 and _on_target_card(r.get("device"))
            row(src, f"retrieval {r.get('n_images', 0):,} x {r.get('n_captions', 0):,}", r.get("device"), None, sec,
                "s", f"< {t['retrieval_s']:g} s" if judged else "", sec < t["retrieval_s"] if judged else None,
                "" if judged else f"not the target's setting (1,000 x 5,000 on one {TARGET_CARD})")
    return rows


def extraction_verdict(rows: list[dict]) -> str:
    """One sentence over the extraction rows of :func:`target_table` that carry a verdict: which meet both targets
    end to end, or that none does and how close the best came (by rate, then ratio)."""
    judged = [r for r in rows if r["measurement"].startswith("extract") and r["met"] is not None]
    if not judged:
        return f"No extraction at the target's setting (ResNet-152, 448 px, one {TARGET_CARD}) is recorded yet."
    met = [r for r in judged if r["met"]]
    if met:
        return (f"{len(met)} of the {len(judged)} judged extractions meet both targets end to end: "
                + "; ".join(f"{r['file']} ({r['pipeline']:,} img/s, {r['ratio']} x model-only, {r['card']})"
                            for r in met) + ".")
    best = max(judged, key=lambda r: (r["pipeline"], r["ratio"]))
    return (f"None of the {len(judged)} judged extractions meets both targets end to end; the fastest, "
            f"{best['file']}, ran at {best['pipeline']:,} img/s, {best['ratio']} x its model-only rate, on "
            f"{best['card']}.")


TIMELINE_KEYS = ("total_s", "pipeline_entered_s", "first_batch_in_s", "first_forward_s", "steady_forward_period_s",
                 "last_forward_s", "last_write_done_s", "put_wait_s")
GPU_TIMELINE_KEYS = ("gpu_forward_s_median", "gpu_gap_s_median")  # CUDA events around each forward
GC_TIMELINE_KEYS = ("gc_full_collections", "gc_s_max")  # the cyclic GC's pauses (all threads stop)


def timeline_table(recorded: list[dict]) -> list[dict]:
    """One row per extraction recorded with ``benchmarks/extract.py --timeline``: host seconds since the start at
    which the pipeline was entered, the first batch (chunk) arrived from the loader, the first and last forward were
    called and the last rows written; the median period between forwards; and how long the GPU loop waited on the
    store writer (``put_wait_s``: the writer waits for each batch's copy off the GPU, so this grows when the GPU is
    what is slow). Where any timeline has them, also the GPU's own median time per forward (against the model-only
    batch time) and the compute stream's median wait between forwards, and the garbage collector's full
    collections and longest pause (benchmarks/timeline.py).

    Beside the period between forwards, ``batch_at_ceiling_s`` is what one batch takes at the run's model-only rate
    (batch size / ``model_only_img_s``): a longer period means the forwards came slower than the model alone runs."""
    rows = [src for src in recorded if src.get("timeline")]
    gpu = [k for k in GPU_TIMELINE_KEYS if any(k in src["timeline"] for src in rows)]  # CUDA runs only
    gc = [k for k in GC_TIMELINE_KEYS if any(k in src["timeline"] for src in rows)]  # timelines since 2026-11-27

    def at_ceiling(src: dict) -> float | None:
        batch, rate = src.get("batch_size"), src.get("model_only_img_s")
        return round(batch / rate, 4) if batch and rate else None

    def timeline(src: dict) -> dict:
        out = {}
        for k in TIMELINE_KEYS:
            out[k] = src["timeline"].get(k)
            if k == "steady_forward_period_s":
                out["batch_at_ceiling_s"] = at_ceiling(src)
        return out

    return [{"file": src["file"], "images": src.get("num_images"), **timeline(src),
             **({"model_only_batch_s": src.get("model_only_batch_s")} if gpu else {}),
             **{k: src["timeline"].get(k) for k in gpu + gc}} for src in rows]


def kernel_profile_table(recorded: list[dict]) -> list[dict]:
    """One row per extraction profiled with ``benchmarks/extract.py --profile-images``: GPU milliseconds per model
    batch by kernel group (model, resize, decode, copies, elementwise, other), beside the model-only batch time."""
    def batch_ms(src: dict) -> float | None:
        return round(1e3 * src["model_only_batch_s"], 1) if src.get("model_only_batch_s") else None

    return [{"file": src["file"], "resize": src.get("config", {}).get("device_resize"),
             "model": "eager" if src.get("inference", "eager") == "eager" else "fused", "model_only_batch_ms":
             batch_ms(src), **src["kernel_profile"]["device_ms_per_batch_by_group"]}
            for src in recorded if src.get("kernel_profile")]


def profile_table(recorded: list[dict]) -> list[dict]:
    """One row per profiled training step in ``recorded`` (``benchmarks/train.py --profile``): wall time, ops and,
    on a GPU, kernels per step and ``device_busy`` (summed kernel time / wall time; see :func:`profile_step`)."""
    keys = ("wall_ms_per_step", "top_level_ops_per_step", "aten_ops_per_step", "backward_nodes_per_step",
            "kernels_per_step", "kernel_ms_per_step", "device_busy")
    return [{"file": src["file"], "task": "r-DAN" if p["task"] == "vqa" else "m-DAN", "device": p["device"],
             **{k: (round(p[k], 3) if isinstance(p.get(k), float) else p.get(k)) for k in keys}}
            for src in recorded for p in src.get("profile", [])]


def profile_markdown(rows: list[dict], host_bound_below: float = 0.5) -> str:
    """A sentence per GPU row of :func:`profile_table`: how busy the GPU was, and so what sets the step's pace."""
    lines = []
    for r in rows:
        if r.get("device_busy") is None:
            continue
        pace = ("the host (op dispatch and launches) sets the pace" if r["device_busy"] < host_bound_below
                else "the GPU's own work sets the pace")
        lines.append(f"- {r['task']} on {r['device']} ({r['file']}): kernels run {r['device_busy']:.0%} of the "
                     f"{r['wall_ms_per_step']:.2f} ms step ({r['kernels_per_step']:.0f} kernels, "
                     f"{r['top_level_ops_per_step']:.0f} ops dispatched per step), so {pace}.")
    return "\n".join(lines)


def target_markdown(rows: list[dict]) -> str:
    """A sentence per measurement of :func:`target_table` with a target: met or missed, or why a run at the target's
    setting carries no verdict (its ``note``). Each names its result file, as :func:`profile_markdown` does: runs of
    one setting share a label, and the file is what tells them apart and leads to the command that made it."""
    lines = []
    for r in rows:
        unsound = r["met"] is None and bool(r["target"])  # at the target's setting, but no verdict: note says why
        if r["met"] is None and not unsound:
            continue
        got = f"{r['pipeline']:,} {r['unit']}" + (f" ({r['ratio']} x the ceiling of {r['ceiling']:,})"
                                                 if r["ratio"] is not None else "")
        verdict = f"no verdict: {r['note']}" if unsound else \
            f"{'meets' if r['met'] else 'misses'} the target {r['target']}"
        lines.append(f"- {r['measurement']} on {r['card']} ({r['file']}): {got}; {verdict}.")
    return "\n".join(lines)
