"""Host work of one r-DAN/m-DAN training step, counted on the CPU the way a GPU would dispatch it.

On a GPU the paper-size step looks host-bound: the H100 ran a 128-sample r-DAN step in ~11.5 ms
(benchmarks/results/train_h100.json), far more than its matrix products need, so the ops the host dispatches
per step are what to cut (or to replay as CUDA graphs). This counts them without a GPU, with what differs on CUDA
emulated: bf16 autocast, multi-tensor (foreach) SGD and clipping, and the LSTM replaced by a one-op stand-in (cuDNN
runs the whole bidirectional LSTM as one op, PyTorch's CPU LSTM as hundreds of small ones). The text encoder takes
its GPU path (``aligned``: no packing) and, for comparison, the packed path the CPU uses (and GPUs used before).
The stand-in has 2 parameters where the LSTM has 8, so the counts are 6 gradient accumulations short. Op counts
do not depend on the sizes; the default profile's are used.

    python benchmarks/host_ops.py [--tasks vqa matching] [--top 25] [--out FILE]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from torch import nn
from torch.nn.utils.rnn import PackedSequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dan.bench import DEFAULT_SIZES, TrainStep, profile_step  # noqa: E402
from dan.io import write_json_atomic  # noqa: E402


class OneOpLSTM(nn.Module):
    """Stands in for ``nn.LSTM(bidirectional=True)`` on a packed sequence: one linear map E -> 2H of its data."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        self.proj = nn.Linear(lstm.input_size, 2 * lstm.hidden_size)

    def forward(self, x):  # noqa: ANN001, ANN201 - a padded tensor or a PackedSequence, as nn.LSTM takes them
        if isinstance(x, PackedSequence):
            return x._replace(data=self.proj(x.data)), None
        return self.proj(x), None


def cudnn_like_step(task: str, aligned: bool = True, sizes: dict | None = None, seed: int = 0) -> TrainStep:
    """:class:`~dan.bench.TrainStep` on the CPU as a GPU would run it (bf16 autocast, foreach SGD and clipping,
    the LSTM as one op, the text encoder's ``aligned`` path unless told otherwise); its optimiser is rebuilt over
    the stand-in's parameters."""
    step = TrainStep(task, "cpu", amp=True, foreach=True, seed=seed, **(sizes or DEFAULT_SIZES))
    step.model.text.lstm = OneOpLSTM(step.model.text.lstm)
    step.model.text.aligned = aligned
    step.opt = type(step.opt)(step.model.parameters(), **step.opt.defaults)  # same settings, the stand-in's weights
    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=["vqa", "matching"], choices=["vqa", "matching"])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--top", type=int, default=25, help="how many of the most frequent direct ops to list")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    results = {"command": "python benchmarks/host_ops.py " + shlex.join(sys.argv[1:] if argv is None else argv),
               "emulated": "bf16 autocast, foreach SGD and clipping, one-op LSTM stand-in", "profile": []}
    for task, aligned in ((task, aligned) for task in a.tasks for aligned in (True, False)):
        prof = profile_step(cudnn_like_step(task, aligned), iters=a.iters, warmup=2, top=a.top)
        prof.pop("wall_ms_per_step")  # a CPU time with a stand-in says nothing about a GPU step
        prof["lstm_path"] = "aligned" if aligned else "packed"
        results["profile"].append(prof)
        print(f"{task}, {prof['lstm_path']} LSTM: {prof['top_level_ops_per_step']:.0f} ops dispatched per step "
              f"({prof['aten_ops_per_step']:.0f} with nested ones), {prof['backward_nodes_per_step']:.0f} "
              f"backward nodes; most frequent: " + ", ".join(f"{k.removeprefix('aten::')} {v:g}"
                                                            for k, v in prof["top_ops_per_step"].items()))
    if a.out:
        write_json_atomic(a.out, results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
