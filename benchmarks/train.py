"""Training throughput of r-DAN/m-DAN: model-only ceiling vs the step fed from a feature store, in one run.

    python benchmarks/train.py --device cuda --sizes paper --resident --amp --out results/bench/train_h200.json
    python benchmarks/train.py --device cpu --sizes default --out results/bench/train_cpu.json

Prints samples/s of both and their ratio for each task, and the seconds to score Flickr30K-size retrieval
(1,000 images x 5,000 captions); writes everything (with the device and the command) to --out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dan.bench import (  # noqa: E402
    DEFAULT_SIZES,
    PAPER_SIZES,
    TrainStep,
    profile_step,
    retrieval_throughput,
    train_throughput,
)
from dan.io import write_json_atomic  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", choices=["paper", "default"], default="paper")
    p.add_argument("--tasks", nargs="+", default=["vqa", "matching"], choices=["vqa", "matching"])
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--store-images", type=int, default=1024)
    p.add_argument("--resident", action="store_true", help="keep the feature store on the device")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the step's loss (forward and backward)")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune-no-cudagraphs")
    p.add_argument("--fused-sgd", action=argparse.BooleanOptionalAction, default=None,
                   help="the fused SGD kernel (default: as training does, i.e. on CUDA only)")
    p.add_argument("--profile", action="store_true",
                   help="also profile the model-only step: ops and kernels per step, GPU busy fraction")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    sizes = PAPER_SIZES if a.sizes == "paper" else DEFAULT_SIZES
    results = {"command": "python benchmarks/train.py " + shlex.join(sys.argv[1:] if argv is None else argv),
               "sizes": a.sizes, "train": [], "retrieval": None}
    for task in a.tasks:
        r = train_throughput(task, device=a.device, iters=a.iters, warmup=a.warmup, store_images=a.store_images,
                             resident=a.resident, amp=a.amp, compile=a.compile, compile_mode=a.compile_mode,
                             fused=a.fused_sgd, **sizes)
        results["train"].append(r)
        print(f"{task}: ceiling {r['ceiling_samples_per_s']:.0f} samples/s, fed {r['fed_samples_per_s']:.0f} "
              f"samples/s, ratio {r['ratio']:.3f} ({r['device']})")
        if a.profile:
            step = TrainStep(task, a.device, a.amp, a.compile, a.compile_mode, a.fused_sgd, **sizes)
            prof = profile_step(step, iters=min(a.iters, 20), warmup=a.warmup)
            results.setdefault("profile", []).append(prof)
            print(f"{task} profile: " + ", ".join(f"{k} {v:.3g}" for k, v in prof.items()
                                                  if isinstance(v, float)))
    ret = retrieval_throughput(dim=(sizes["steps"] + 1) * sizes["hidden"], device=a.device)
    results["retrieval"] = ret
    print(f"retrieval {ret['n_images']} x {ret['n_captions']}: {ret['seconds_median'] * 1000:.1f} ms")
    if a.out:
        write_json_atomic(a.out, results, indent=1)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
