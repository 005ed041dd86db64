"""Correctness of the GPU-only code paths, on the device itself, before any speed is measured.

The text encoder's ``aligned`` LSTM path (``dan.models.TextEncoder._lstm``) is what a GPU runs; the unit tests check
it against packing on the CPU only. This compares the two paths on ``--device`` at the paper's sizes: outputs, the
zeros on padding, and the gradients of the input and of every LSTM weight (relative max difference; cuDNN may
reduce in another order than the packed kernels). Writes a JSON result and exits with 1 if a check fails.

    python benchmarks/gpu_checks.py --device cuda --out gpu_checks.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dan.io import write_json_atomic  # noqa: E402
from dan.models import TextEncoder  # noqa: E402


def lstm_paths(device: str, batch: int = 128, width: int = 14, dim: int = 512, seed: int = 0) -> dict:
    """Largest relative difference between the aligned and the packed LSTM path (output, input and weight grads)."""
    torch.manual_seed(seed)
    enc = TextEncoder(vocab_size=10, embed_dim=dim, hidden_dim=dim, dropout=0.0).to(device)
    lengths = torch.randint(1, width + 1, (batch,))
    lengths[0] = width  # at least one full-width text
    x = torch.randn(batch, width, dim, device=device)
    probe = torch.randn(batch, width, 2 * dim, device=device)
    runs = {}
    for aligned in (False, True):
        enc.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = enc._lstm(xi, lengths, width, aligned=aligned)
        (out * probe).sum().backward()
        runs[aligned] = {"output": out.detach(), "input grad": xi.grad,
                         **{f"grad {n}": p.grad.clone() for n, p in enc.lstm.named_parameters()}}

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))

    pad = torch.arange(width)[None, :] >= lengths[:, None]
    return {"rel_diff": {k: rel(runs[True][k], runs[False][k]) for k in runs[False]},
            "padding_max_abs": float(runs[True]["output"][pad.to(device)].abs().max()) if pad.any() else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest relative difference accepted")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    torch.backends.cudnn.allow_tf32 = False  # a check of the index maps, not of TF32 rounding
    torch.backends.cuda.matmul.allow_tf32 = False
    res = {"device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu",
           "aligned_vs_packed_lstm": lstm_paths(a.device), "tolerance": a.tolerance}
    check = res["aligned_vs_packed_lstm"]
    res["ok"] = max(check["rel_diff"].values()) <= a.tolerance and check["padding_max_abs"] == 0.0
    print(f"aligned vs packed LSTM on {res['device']}: largest relative difference "
          f"{max(check['rel_diff'].values()):.2e} (tolerance {a.tolerance:g}), padding {check['padding_max_abs']:g}: "
          + ("ok" if res["ok"] else "FAILED"))
    if a.out:
        write_json_atomic(a.out, res, indent=1)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
