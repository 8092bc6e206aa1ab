"""Every random-number generator a run touches, captured as checkpoint-safe values and restored exactly.

Checkpoints load with `torch.load(weights_only=True)`, which admits tensors and plain Python values only,
so NumPy's state (which holds an ndarray) is stored as a tensor.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of process `rank` in a job seeded `seed`: distinct for every (seed, rank) pair and
    reproducible. A hash, not seed + rank, so rank 1 of seed 1 does not draw what rank 0 of seed 2 draws."""
    digest = hashlib.blake2b(f"{seed}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch.manual_seed takes values below 2**63 on every build


def capture_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    # random.setstate wants the nested tuples back; serialization may hand lists.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
