"""Reading and writing trajectory files in the course's format, safely.

The file is what the course's `generate_data.py` writes: a pickled dict {'states': float32 tensor
(N, T, 10), 'actions': int64 tensor (N, T)} (the handout calls the keys 'trajectories' and 'tokenized';
both spellings load; so does a NumPy .npz of the same arrays, read without pickle). Reading goes through
`safe_pickle.safe_load`, so a hostile file cannot run code, and the arrays are validated before use.
Writing is atomic.

Beside each file we write a small JSON sidecar (`<file>.json`) with its provenance: version, mode, seed
and the pickle's sha256. The course format has no room for the version, yet it decides whether the
ln 5 loss floor applies; the hash makes a sidecar left next to a replaced pickle harmless (it is ignored).
A file without a (valid) sidecar gets the version its arrays show (`trajectories.detect_version`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratchlm.data.actions import COURSE_ACTION_VOCAB
from scratchlm.data.safe_pickle import safe_load
from scratchlm.data.trajectories import VERSIONS, TrajectoryData, check_trajectory_arrays, detect_version
from scratchlm.errors import DataError
from scratchlm.fileio import atomic_write

logger = logging.getLogger(__name__)

STATE_KEYS = ("states", "trajectories")
ACTION_KEYS = ("actions", "tokenized")
SIDECAR_FORMAT = "scratchlm-trajectories-1"


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the provenance JSON of the trajectory file `path` lives."""
    return Path(f"{os.fspath(path)}.json")


def save_trajectories(data: TrajectoryData, path: str | os.PathLike, provenance: dict[str, Any] | None = None) -> str:
    """Write `data` in the course's pickle format (atomically), plus its sidecar; returns the sha256."""
    payload = pickle.dumps(
        {"states": torch.from_numpy(data.states_NTS), "actions": torch.from_numpy(data.actions_NT)}, protocol=4
    )
    digest = hashlib.sha256(payload).hexdigest()
    with atomic_write(path, "wb") as fh:
        fh.write(payload)
    meta = {
        "format": SIDECAR_FORMAT,
        "version": data.version,
        "num_trajectories": data.num_trajectories,
        "seq_length": data.seq_length,
        **(provenance or {}),
        "sha256": digest,
    }
    with atomic_write(sidecar_path(path), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    return digest


def load_trajectories(
    path: str | os.PathLike, version: str | None = None, action_vocab: int = COURSE_ACTION_VOCAB
) -> TrajectoryData:
    """Load and validate a course-format trajectory pickle (from anyone: nothing in it can run).

    `version` ("v2"/"v1") overrides the sidecar's; without either (a file from the course's own
    generate_data.py), the version is detected from the arrays (`detect_version`), else None.
    Raises DataError for a missing file, a refused or damaged pickle, missing keys, wrong shapes or
    dtypes, non-finite states, or actions outside [0, action_vocab).
    """
    source = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(
            f"trajectory file {source!r} does not exist; create it with `scratchlm data trajectories --out {source}`."
        ) from None
    except IsADirectoryError:
        if (Path(source) / "meta.json").is_file() and (Path(source) / "train.bin").is_file():
            raise DataError(
                f"{source!r} holds token files (`scratchlm data text`), not trajectories; train on it with "
                "--set data.kind=tokens (and model.vocab_size at least its tokenizer's)."
            ) from None
        raise DataError(f"trajectory path {source!r} is a directory; pass the .pkl file inside it.") from None
    obj = _npz_arrays(raw, source) if raw.startswith(b"PK\x03\x04") else _unpickle(raw, source)
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a dict with 'states' and 'actions', got {type(obj).__name__}.")
    states = _to_numpy(_pick(obj, STATE_KEYS, source), "states", source)
    actions = _to_numpy(_pick(obj, ACTION_KEYS, source), "actions", source)
    if states.size == 0 or actions.size == 0:
        raise DataError(
            f"{source}: the file holds no trajectories (its states have shape {states.shape}, its actions "
            f"{actions.shape}); generate some with `scratchlm data trajectories`."
        )
    if not np.issubdtype(states.dtype, np.floating):
        raise DataError(f"{source}: 'states' must be floating point, got {states.dtype}.")
    if not np.issubdtype(actions.dtype, np.integer):
        raise DataError(f"{source}: 'actions' must hold integer tokens, got {actions.dtype}; save them with .long().")
    states = states.astype(np.float32, copy=False)
    actions = actions.astype(np.int64, copy=False)
    check_trajectory_arrays(states, actions, action_vocab, source)
    if version is None:
        version = _sidecar_version(path, hashlib.sha256(raw).hexdigest())
        if version is None:
            # The course's generate_data.py writes no sidecar; its arrays still tell the version.
            version = detect_version(states, actions)
            if version is not None:
                logger.info("%s has no scratchlm sidecar; its contents are course %s data", source, version)
            else:
                logger.warning(
                    "%s matches neither version of the course's generator (changed, damaged or other data), so "
                    "no loss floor is reported; set data.version if it is course data",
                    source,
                )
    elif version not in VERSIONS:
        raise DataError(f"trajectory version {version!r} is unknown; use one of {', '.join(VERSIONS)}.")
    return TrajectoryData(states, actions, version)


# torch.save's format before PyTorch 1.6: a pickle of this magic number, then the protocol, then the data.
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C


def _unpickle(raw: bytes, source: str) -> Any:
    if raw.startswith(b"\x93NUMPY"):
        raise DataError(
            f"{source}: this is one NumPy array (.npy), not the course's dict of 'states' and 'actions'; save both "
            "with pickle.dump({'states': ..., 'actions': ...}) or np.savez(path, states=..., actions=...)."
        )
    obj = safe_load(raw, source=source)
    if type(obj) is int and obj == _LEGACY_TORCH_MAGIC:
        raise DataError(
            f"{source}: this is a torch.save file (the format before PyTorch 1.6), not the course's pickle; load "
            "it with torch.load and re-save the dict with pickle.dump (or regenerate it with `scratchlm data "
            "trajectories`)."
        )
    return obj


def _npz_arrays(raw: bytes, source: str) -> dict[str, np.ndarray]:
    """The arrays of a NumPy .npz archive (read without pickle); a torch.save zip archive is refused."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{source}: a damaged zip archive ({exc}); regenerate the file.") from None
    if not names or not all(name.endswith(".npy") for name in names):
        raise DataError(
            f"{source}: this is a torch.save zip archive, not the course's pickle; re-save the dict of tensors "
            "with pickle.dump (or regenerate it with `scratchlm data trajectories`)."
        )
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:  # an object array, which would need pickle
        raise DataError(f"{source}: an .npz array that is not numeric ({exc}); save numeric arrays.") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{source}: a damaged .npz archive ({exc}); regenerate the file.") from None


def _pick(obj: dict, keys: tuple[str, ...], source: str) -> Any:
    for key in keys:
        if key in obj:
            return obj[key]
    found = ", ".join(repr(k) for k in obj) or "none"
    raise DataError(f"{source}: missing key {keys[0]!r} (or {keys[1]!r}); the file has {found}.")


def _to_numpy(value: Any, name: str, source: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # NumPy has no bfloat16
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # ragged, too deep, mixed types
            raise DataError(f"{source}: {name!r} is a list that is not a rectangular numeric array ({exc}).") from None
        if array.dtype != object:
            return array
    raise DataError(f"{source}: {name!r} must be a tensor or a NumPy array, got {type(value).__name__}.")


def _sidecar_version(path: str | os.PathLike, digest: str) -> str | None:
    meta_path = sidecar_path(path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        logger.warning("ignoring unreadable trajectory sidecar %s", meta_path)
        return None
    if not isinstance(meta, dict) or meta.get("sha256") != digest:
        logger.warning("ignoring %s: it describes a different file than %s", meta_path, os.fspath(path))
        return None
    version = meta.get("version")
    return version if version in VERSIONS else None
