"""Shared, session-scoped smoke fixtures: one generated data set, one feature extraction, one run per task.

Everything lives under pytest's tmp folder; nothing is written into the repository's ``data/`` or ``results/``.
Training tests compare against the reference runs below, so each configuration is trained only once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dan.config import TrainConfig, preset
from dan.features import FEATURE_PROFILES, FeatureConfig

# The smoke profile's extractor, pinned so that any process (threads=1, batch 8) gives byte-identical stores.
SMOKE_FEATURES: FeatureConfig = replace(FEATURE_PROFILES["smoke"], batch_size=8, num_workers=0, device="cpu")


@contextlib.contextmanager
def torch_state() -> Iterator[None]:
    """Restore torch's global thread count and determinism flag (``train`` sets both) after the block."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(autouse=True)
def _restore_torch_state() -> Iterator[None]:
    with torch_state():
        yield


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke data set (48 train + 24 val images, VQA + captions + grounding), generated once."""
    from dan.data.synth import generate

    return generate("smoke", out=tmp_path_factory.mktemp("smoke") / "data", progress=False)


@pytest.fixture(scope="session")
def smoke_features(smoke_data: Path) -> Path:
    """Feature stores (train2014, val2014; 10 x 10 x 112 fp16) of the smoke data, extracted once, 1 thread."""
    from dan.features import build_features

    out = smoke_data.parent / "features"
    with torch_state():
        torch.set_num_threads(1)
        build_features(smoke_data, out, SMOKE_FEATURES, progress=False)
    return out


@pytest.fixture(scope="session")
def make_cfg(smoke_data: Path, smoke_features: Path) -> Callable[..., TrainConfig]:
    """``make_cfg(task, out, **overrides)``: the smoke preset on the session's data and features, on the CPU."""

    def make(task: str, out: str | Path, **overrides) -> TrainConfig:
        fields = {"data": str(smoke_data), "features": str(smoke_features), "device": "cpu", **overrides}
        return preset("smoke", task, out=str(out), **fields)

    return make


def _train_once(cfg: TrainConfig):
    from dan.train import train

    with torch_state():
        return train(cfg, progress=False)


@pytest.fixture(scope="session")
def vqa_run(make_cfg, tmp_path_factory: pytest.TempPathFactory):
    """Reference r-DAN run (smoke preset, seed 0): RunResult with run_dir, config, metrics, history."""
    return _train_once(make_cfg("vqa", tmp_path_factory.mktemp("runs") / "vqa"))


@pytest.fixture(scope="session")
def matching_run(make_cfg, tmp_path_factory: pytest.TempPathFactory):
    """Reference m-DAN run (smoke preset, seed 0)."""
    return _train_once(make_cfg("matching", tmp_path_factory.mktemp("runs") / "matching"))


@pytest.fixture
def fake_cuda_streams(monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    """``torch.cuda.Stream`` faked (no GPU needed): each stream made is recorded as ``(device, priority)`` in the
    first list, each ``wait_stream`` argument in the second; the priority range is CUDA's ``(0, -5)`` (lowest,
    highest), and ``torch.cuda.current_stream`` is the string ``"current"``."""
    made: list = []
    waited: list = []

    class FakeStream:
        @staticmethod
        def priority_range() -> tuple[int, int]:
            return (0, -5)

        def __init__(self, device, priority=0) -> None:  # noqa: ANN001 - as torch.cuda.Stream's
            made.append((str(device), priority))

        def wait_stream(self, other) -> None:  # noqa: ANN001
            waited.append(other)

    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "current")
    return made, waited
