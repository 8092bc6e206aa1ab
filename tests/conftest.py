"""Shared fixtures. Tests are CPU-only, seeded and small; CUDA tests carry @pytest.mark.cuda and skip here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_processes import CommandServer

# Triton kernels (scratchlm.nn.triton_rope) run in Triton's interpreter where there is no GPU; the variable
# must be set before the kernels are defined, i.e. before any test imports them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real data lives outside the project (see ../shared/data/MANIFEST.md); tests that need it skip without it.
SHARED_DATA = Path(os.environ.get("SCRATCHLM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# One intra-op thread: the tensors here are tiny, and several test processes sharing two cores with two
# OpenMP threads each would spin against one another.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def command_server() -> Iterator[CommandServer]:
    """One warm `scratchlm` command server for the session (tests/cli_processes.py): it only forks a child per
    command, each with its own environment, so sharing it costs nothing but one torch import per test."""
    with CommandServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
