"""Tables the notebooks and the book show, built from files on disk (data sets, run folders), never typed in."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd

from dan import reference
from dan.data.captions import load_karpathy
from dan.data.vqa import load_vqa_split
from dan.io import DataError, check_json

VQA_COLUMNS = ["overall", "yes/no", "number", "other"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in its number, for a phrase the book glues into prose: "1 seed", "3 seeds", "1,024 runs"
    (``plural``: when it is not the noun plus "s")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def data_overview(root: str | Path, captions_file: str = "captions/dataset_synth.json",
                  splits: tuple[str, ...] = ("train2014", "val2014")) -> pd.DataFrame:
    """Per split: images, questions, questions per answer type and per family, caption images and captions."""
    root = Path(root)
    families: dict[int, str] = {}
    if (root / "grounding.json").is_file():
        from dan.data.grounding import load_grounding

        families = {q: g.family for q, g in load_grounding(root / "grounding.json").questions.items()}
    rows = []
    for split in splits:
        ex = load_vqa_split(root, split)
        types = Counter(e.answer_type for e in ex)
        fams = Counter(families.get(e.question_id, "n/a") for e in ex)
        rows.append({"split": split, "images": len({e.image_id for e in ex}), "questions": len(ex),
                     **{f"q {t}": types.get(t, 0) for t in ("yes/no", "number", "other")},
                     **{f"q {f}": n for f, n in sorted(fams.items())}})
    df = pd.DataFrame(rows).set_index("split")
    cap_path = root / captions_file
    if cap_path.is_file():
        caps, sents = Counter(), Counter()
        for im in load_karpathy(cap_path):
            caps[im.split] += 1
            sents[im.split] += len(im.sentences)
        cap = pd.DataFrame({"caption images": caps, "captions": sents})
        cap.index = [f"captions {s}" for s in cap.index]
        df = pd.concat([df, cap])
    return df.fillna(0).astype(int)


def answer_distribution(root: str | Path, split: str = "train2014", top: int = 15) -> pd.DataFrame:
    """The ``top`` most frequent majority answers of ``split`` with their answer type and share (%)."""
    ex = load_vqa_split(root, split)
    counts = Counter((e.multiple_choice_answer, e.answer_type) for e in ex)
    rows = [{"answer": a, "answer type": t, "questions": n, "share %": round(100 * n / len(ex), 1)}
            for (a, t), n in counts.most_common(top)]
    return pd.DataFrame(rows)


def preset_run_metrics(profile: str, task: str, seed: int = 0) -> dict:
    """``metrics.json`` of the profile's preset run of ``task`` (K = 2, dual) with ``seed``, read as
    :func:`dan.train.train` would reuse it: a :class:`DataError` when it has not finished or was trained on other
    data or features than the profile's now (the data set regenerated under its runs, e.g. by another version of the
    generator; another seed's draw has a results folder of its own, :func:`dan.io.study_paths`), a
    :class:`~dan.io.ConfigError` when its folder holds another configuration. Reading ``metrics.json`` as it was
    reported the old data's runs as this data's (the summary chapter)."""
    from dan.config import preset
    from dan.train import finished_metrics, run_dir_for

    cfg = preset(profile, task, seed=seed)
    metrics = finished_metrics(cfg)
    if metrics is None:
        notebook = "03_rdan" if task == "vqa" else "04_mdan"  # the summary page opened before the runs' chapters
        raise DataError(f"run {run_dir_for(cfg)} has not finished (no metrics.json); train it first: the notebook "
                        f"{notebook} (profile {profile!r}, seed {seed}), or `python -m dan.train --task {task} "
                        f"--profile {profile} --seed {seed}`")
    return metrics


def vqa_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """Accuracy (%) per answer type (and family, when present) for {label: r-DAN metrics}."""
    rows = []
    for label, m in metrics.items():
        row = {"run": label, **{c: m.get(c) for c in VQA_COLUMNS}}
        for fam, v in sorted((m.get("groups") or {}).items()):
            row[fam] = v.get("overall") if isinstance(v, dict) else v
        if "majority_baseline" in m:
            row["majority baseline"] = m["majority_baseline"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("run").round(2)


def retrieval_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """R@1/5/10 (%) and median rank both ways for {label: m-DAN metrics}."""
    rows = []
    for label, m in metrics.items():
        row = {"run": label}
        for d, name in (("i2t", "image→text"), ("t2i", "text→image")):
            for k in ("r1", "r5", "r10", "medr"):
                row[f"{name} {k.upper() if k != 'medr' else 'MR'}"] = m[d][k]
        rows.append(row)
    return pd.DataFrame(rows).set_index("run").round(2)


def reproduction_vqa(ours: dict[str, dict]) -> pd.DataFrame:
    """The paper's VQA rows beside ours (``ours``: {label: metrics}); data sets differ, see the book."""
    rows = [{"source": "paper" + (" (uncertain)" if r["uncertain"] else ""), "model": r["model"],
             "data": f"VQA v1.0 {r['split']}", **{c: r[c] for c in VQA_COLUMNS}} for r in reference.VQA]
    for label, m in ours.items():
        default = "embedded benchmark val" + (f" ({m['n']:,} questions)" if m.get("n") else "")
        rows.append({"source": "this study", "model": label, "data": m.get("data", default),
                     **{c: round(m[c], 2) if m.get(c) is not None else None for c in VQA_COLUMNS}})
    return pd.DataFrame(rows)


def reproduction_retrieval(ours: dict[str, dict]) -> pd.DataFrame:
    """The paper's Flickr30K rows beside ours."""
    def flat(m: dict) -> dict:
        return {f"{d} {k.upper() if k != 'medr' else 'MR'}": m[d][k] for d in ("i2t", "t2i")
                for k in ("r1", "r5", "r10", "medr")}

    rows = [{"source": r.get("source", "paper") + (" (uncertain)" if r["uncertain"] else ""), "model": r["model"],
             "data": "Flickr30K 1k test", **flat(r)} for r in reference.FLICKR30K]
    for label, m in ours.items():
        default = "embedded benchmark test" + (f" ({m['n_images']:,} images)" if m.get("n_images") else "")
        rows.append({"source": "this study", "model": label, "data": m.get("data", default),
                     **{k: (round(v, 2) if v is not None else None) for k, v in flat(m).items()}})
    return pd.DataFrame(rows)


def real_runs_markdown() -> str:
    """The commands that fill the paper's rows (real data, ResNet-152, GPU), as Markdown ``bash`` blocks. Steps of a
    command run as one ``&&`` chain; a step done by hand (written ``(...)`` in the command) ends the chain and
    becomes a comment, so that a pasted block stops there instead of running on without the files."""
    blocks = []
    for task, cmd in reference.REAL_COMMANDS.items():
        chains: list[list[str]] = [[]]
        for part in (p.strip() for p in cmd.split("&&")):
            if part.startswith("(") and part.endswith(")"):
                chains.append([f"# {part[1:-1]}; then:"])
                chains.append([])
            else:
                chains[-1].append(part)
        text = "\n".join(" &&\n  ".join(c) for c in chains if c)
        blocks.append(f"**{task}**\n\n```bash\n{text}\n```")
    return "\n\n".join(blocks)


def attention_findings(vis: pd.DataFrame, txt: pd.DataFrame, mvis: pd.DataFrame, mtxt: pd.DataFrame,
                       hop_sentence: str) -> str:
    """The attention chapter's findings as Markdown, from :func:`dan.analysis.grounding_summary` tables: each value
    with its 95 % half width, its chance value, and whether it lies above, below or across it (by the interval of
    the paired difference from chance, where the table has it).

    ``vis``/``txt``: r-DAN indexed by (family, step); ``mvis``: m-DAN by (objects, step); ``mtxt``: by step.
    Works for any number of attention steps: per-step values are joined with " / " in step order. Chance
    values (uniform attention) are those of the first step, since they do not depend on the step.
    """
    def rows(summary: pd.DataFrame, group: str | None) -> pd.DataFrame:
        return summary.xs(group, level=0) if group is not None else summary

    def per_step(summary: pd.DataFrame, col: str, group: str | None = None) -> str:
        """Values per step, each with its 95 % half width where the table has one (grounding_summary names the
        pointing one "± ci" and the mass one "± ci ")."""
        table = rows(summary, group).sort_index()
        half = {"pointing %": "± ci", "mass %": "± ci "}.get(col)
        if half not in table.columns:
            return " / ".join(f"{v:.1f}" for v in table[col])
        return " / ".join(f"{v:.1f} ± {h:.1f}" for v, h in zip(table[col], table[half], strict=True))

    def chance(summary: pd.DataFrame, col: str, group: str | None = None) -> str:
        return f"{rows(summary, group).sort_index()[col].iloc[0]:.1f}"

    def against(summary: pd.DataFrame, col: str, chance_col: str, group: str | None = None) -> str:
        """Where each step's value lies against its chance value: above, below, or not distinguishable, from the
        95 % interval of the paired difference score - chance (grounding_summary's "... − chance" and its
        "... − chance ± ci"; the chance value varies over the examples, so the score's own interval against the
        mean chance is not that test). A table without it falls back to the score's interval; without either
        there is nothing to say."""
        table = rows(summary, group).sort_index()
        diff = {"pointing %": "pointing − chance", "mass %": "mass − chance"}[col]
        if {diff, f"{diff} ± ci"} <= set(table.columns):
            values, halves, chances = table[diff], table[f"{diff} ± ci"], [0.0] * len(table)
        else:
            half = {"pointing %": "± ci", "mass %": "± ci "}[col]
            if half not in table.columns:
                return ""
            values, halves, chances = table[col], table[half], table[chance_col]
        said = ["above" if v - h > c else "below" if v + h < c else "not distinguishable from"
                for v, h, c in zip(values, halves, chances, strict=True)]
        if len(set(said)) == 1:
            return f"; {said[0]} it" + (" at every step" if len(said) > 1 else "")
        return "; " + " / ".join(said) + " it"

    steps = sorted({int(s) for s in vis.index.get_level_values("step")})
    where = f"step {steps[0]}" if len(steps) == 1 else "steps " + "/".join(map(str, steps))
    def order(names) -> list[str]:  # single-hop before multi-hop, as in the text of the chapter
        return sorted(set(names), key=lambda f: (f != "single-hop", f))

    families = order(vis.index.get_level_values(0))
    point = "; ".join(f"{per_step(vis, 'pointing %', f)} % of {f} questions (uniform "
                      f"{chance(vis, 'chance pointing %', f)} %{against(vis, 'pointing %', 'chance pointing %', f)})"
                      for f in families)
    mass = "; ".join(f"{per_step(vis, 'mass %', f)} % on {f} questions (area fraction "
                     f"{chance(vis, 'chance mass %', f)} %{against(vis, 'mass %', 'chance mass %', f)})"
                     for f in families)
    tfam = order(txt.index.get_level_values(0))
    words = "; ".join(f"{per_step(txt, 'mass %', f)} % on {f} questions (uniform {chance(txt, 'chance mass %', f)} %"
                      f"{against(txt, 'mass %', 'chance mass %', f)})" for f in tfam)
    lines = [f"Per-step values are for {where}.",
             "",
             f"- **r-DAN, visual attention** (objects the question names): the most attended region touches one "
             f"of them in {point}. The attention mass on these objects is {mass}.",
             f"- **r-DAN, textual attention**: the key words receive {words}.",
             f"- **Multi-hop steps**: {hop_sentence}"]
    if "named" in set(mvis.index.get_level_values(0)):
        lines.append(f"- **m-DAN**: image attention puts {per_step(mvis, 'mass %', 'named')} % of its mass on the "
                     f"objects the captions name (area fraction {chance(mvis, 'chance mass %', 'named')} %"
                     f"{against(mvis, 'mass %', 'chance mass %', 'named')}); the most attended region touches one "
                     f"of them in {per_step(mvis, 'pointing %', 'named')} % of the images (uniform "
                     f"{chance(mvis, 'chance pointing %', 'named')} %"
                     f"{against(mvis, 'pointing %', 'chance pointing %', 'named')}). Caption attention puts "
                     f"{per_step(mtxt, 'mass %')} % on the key words (uniform {chance(mtxt, 'chance mass %')} %"
                     f"{against(mtxt, 'mass %', 'chance mass %')}).")
    return "\n".join(lines)


def recorded_checks(names: dict[str, str], root: Path | None = None) -> dict[str, dict]:
    """``{label: record}`` for those of the single-run records ``records/<name>.json`` (``names``: name -> label;
    :func:`dan.record.collect_run`) that exist, in the given order; a label gets the run's epochs and wall time."""
    from dan import record

    out = {}
    for name, label in names.items():
        rec = record.load_run(name, root)
        if rec is not None:
            out[f"{label} ({rec['config']['epochs']} epochs, {rec['wall_seconds'] / 60:.0f} min)"] = rec
    return out


def chapter_label(cfg, hidden: bool = True) -> str:  # noqa: ANN001 - a dan.config.TrainConfig
    """The label of a chapter's own run beside recorded runs: "this chapter (<profile> data, <optimizer>, hidden
    <H>, <E> epochs)", led by every other setting in which the run differs from its profile's preset (a notebook run
    with ``-p steps 3 -p attention visual`` reads "this chapter (K=3, attention visual, ...)": the label alone had
    made it look like the preset's K = 2 dual run that the records are set beside). ``hidden``: name the hidden
    size even when it is the preset's."""
    from dan.config import preset

    base, mine = preset(cfg.profile, cfg.task).identity(), cfg.identity()
    shown = {"profile", "optimizer", "epochs"} | ({"hidden_dim"} if hidden else set())
    names = {"steps": "K={}", "attention": "attention {}", "seed": "seed {}", "hidden_dim": "hidden {}"}
    first = [k for k in ("steps", "attention") if k in mine]
    changed = [k for k in first + sorted(set(mine) - set(first)) if k not in shown and mine[k] != base.get(k)]
    parts = [names.get(k, f"{k} {{}}").format(mine[k]) for k in changed]
    parts += [f"{cfg.profile} data", cfg.optimizer, *([f"hidden {cfg.hidden_dim}"] if hidden else []),
              f"{cfg.epochs} epochs"]
    return f"this chapter ({', '.join(parts)})"


def paper_deviations(config: dict) -> str:
    """What a recorded run's configuration (a run's ``config.json``) changes from the paper's setting, one line:
    ``name ours (paper theirs)`` per field of :func:`dan.config.deviations`, or that it changes nothing. Read from
    the configuration itself, so that a label typed beside a record cannot claim more of the paper than it ran."""
    from dan.config import TrainConfig, deviations

    changed = deviations(TrainConfig.from_dict(config))
    if not changed:
        return "nothing (the paper's setting)"
    return ", ".join(f"{name} {ours} (paper {paper})" for name, (ours, paper) in sorted(changed.items()))


def shown_command(command: str) -> str:
    """A recorded command as the book shows it: the value of each option that is an absolute path (the folder on
    the machine that ran it, ``--out /tmp/checks/run``) written as a placeholder, ``RUN_DIR`` for ``--out`` (a
    training run's folder) and the option's name in capitals for any other (``--data DATA``), as
    :func:`dan.bench_records.command_of` writes ``$OUT``: a reader reruns it with their own folder, and the book
    does not print a path of the machine it was built on."""
    def placeholder(m: re.Match) -> str:
        name = m.group(2)
        return f"{m.group(1)}{m.group(3)}{'RUN_DIR' if name == 'out' else name.upper().replace('-', '_')}"

    return re.sub(r"""(--([a-z][a-z0-9-]*))([ =])(?:'/[^']*'|"/[^"]*"|/\S*)""", placeholder, command)


def run_record_summary(rec: dict, metrics: dict, at_epoch: int) -> str:
    """A sentence on a single-run record (:func:`dan.record.collect_run`) of m-DAN beside another run's test
    ``metrics``: its command, wall time and machine, its validation R@1 both ways after ``at_epoch`` epochs and at
    the end, and both runs' test R@1 (the command as :func:`shown_command` writes it)."""
    if not rec.get("history"):
        raise DataError(f"the record of `{rec.get('command', '?')}` has no training history (an empty run?)")
    check_json(rec, {"command": "string", "date": "string", "machine": {"gpu?": ("string", None), "cpus": "any"},
                     "metrics": {"i2t": {"r1": "number"}, "t2i": {"r1": "number"}},
                     "history": [{"epoch": "int", "val_i2t_r1": "number", "val_t2i_r1": "number"}]},
               f"the record of `{rec.get('command', '?')}`")  # m-DAN's: an r-DAN record has no R@1
    hist = {h["epoch"]: h for h in rec["history"]}
    last = rec["history"][-1]

    def r1(h: dict | None) -> str:
        return f"{h['val_i2t_r1']:.1f} / {h['val_t2i_r1']:.1f}" if h else "n/a (shorter run)"

    machine = rec["machine"]
    where = f"a GPU ({machine['gpu']})" if machine.get("gpu") else f"a {machine['cpus']}-core CPU machine"
    note = f"; {rec['note'].rstrip('.')}" if rec.get("note") else ""
    return (f"Record: `{shown_command(rec['command'])}` ({rec['wall_seconds'] / 60:.0f} min on {where}, "
            f"{rec['date']}{note}). "
            f"Validation R@1 (image→text / text→image) after {at_epoch} epochs {r1(hist.get(at_epoch))}, after "
            f"{last['epoch']} {r1(last)}; test R@1 {rec['metrics']['i2t']['r1']:.1f} / "
            f"{rec['metrics']['t2i']['r1']:.1f} against {metrics['i2t']['r1']:.1f} / {metrics['t2i']['r1']:.1f}.")
