"""Safe loading and atomic saving of course-format trajectory pickles."""

from __future__ import annotations

import json
import os
import pickle
import pickletools

import numpy as np
import pytest
import torch

from scratchlm.data.safe_pickle import UnsafePickleError, safe_load
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import load_trajectories, save_trajectories, sidecar_path
from scratchlm.errors import DataError


def _write_pickle(path, obj, protocol=4):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _course_dict(num=3, steps=4):
    return {"states": torch.randn(num, steps, 10), "actions": torch.randint(0, 256, (num, steps))}


class _RunsACommand:
    """Unpickling this runs `os.system(command)`."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_the_course_file_holds_exactly_the_globals_we_admit(shared_data):
    raw = (shared_data / "scratch1" / "course_v2_seed42_1000.pkl").read_bytes()
    names = set()
    strings = []
    for opcode, arg, _ in pickletools.genops(raw):
        if "UNICODE" in opcode.name:
            strings.append(arg)
        if opcode.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]}.{strings[-1]}")
    assert names == {"torch._utils._rebuild_tensor_v2", "torch.storage._load_from_bytes", "collections.OrderedDict"}


def test_an_os_system_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"states": _RunsACommand(f"touch {marker}"), "actions": torch.zeros(1, 2, dtype=torch.long)}
    path = _write_pickle(tmp_path / "evil.pkl", payload)
    with pytest.raises(UnsafePickleError, match=r"refusing to load `(posix|os|nt)\.system`"):
        load_trajectories(path)
    assert not marker.exists()


def test_a_payload_hidden_inside_a_tensor_storage_is_refused(tmp_path):
    # torch's own _load_from_bytes would torch.load(weights_only=False) this blob and run the command.
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_RunsACommand(f"touch {marker}"), protocol=2)

    class _EvilStorage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (blob,))

    with pytest.raises(UnsafePickleError):
        safe_load(pickle.dumps({"states": _EvilStorage()}), "evil")
    assert not marker.exists()


@pytest.mark.parametrize(
    "forbidden", [eval, getattr, __import__, np.load, torch.load, pickle.loads], ids=lambda f: f.__name__
)
def test_other_callables_are_refused(forbidden):
    class _Calls:
        def __reduce__(self):
            return (forbidden, ("1",))

    with pytest.raises(UnsafePickleError, match="refusing to load"):
        safe_load(pickle.dumps(_Calls()))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_tensors_numpy_arrays_and_plain_containers_load(protocol):
    obj = {
        "tensor": torch.arange(12).reshape(3, 4)[:, 1:],  # a strided view
        "float": torch.randn(2, 3, dtype=torch.float64),
        "half": torch.ones(2, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 5),
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "scalar": np.int64(7),
        "plain": [1, 2.5, "x", (3, None), {"k": b"bytes"}],
    }
    loaded = safe_load(pickle.dumps(obj, protocol=protocol))
    for key in ("tensor", "float", "half", "empty"):
        assert torch.equal(loaded[key], obj[key]) and loaded[key].dtype == obj[key].dtype
    assert np.array_equal(loaded["array"], obj["array"]) and loaded["array"].dtype == np.float32
    assert loaded["scalar"] == 7 and loaded["plain"] == obj["plain"]


def test_object_arrays_are_refused():
    with pytest.raises(UnsafePickleError, match="Python objects"):
        safe_load(pickle.dumps(np.array([1, "a"], dtype=object)))


def test_damaged_files_get_a_clear_error(tmp_path):
    raw = pickle.dumps(_course_dict())
    (tmp_path / "cut.pkl").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.pkl"):
        load_trajectories(tmp_path / "cut.pkl")
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(DataError, match="not a readable trajectory pickle"):
        load_trajectories(tmp_path / "text.pkl")
    with pytest.raises(DataError, match="does not exist"):
        load_trajectories(tmp_path / "missing.pkl")
    torch.save(_course_dict(), tmp_path / "saved.pt")
    with pytest.raises(DataError, match=r"torch\.save zip archive"):
        load_trajectories(tmp_path / "saved.pt")


def test_other_formats_are_named_and_an_npz_of_the_arrays_loads(tmp_path, caplog):
    obj = _course_dict()
    torch.save(obj, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(DataError, match=r"torch\.save file \(the format before PyTorch 1\.6\)"):
        load_trajectories(tmp_path / "legacy.pt")
    np.save(tmp_path / "one.npy", obj["actions"].numpy())
    with pytest.raises(DataError, match=r"one NumPy array \(\.npy\)"):
        load_trajectories(tmp_path / "one.npy")
    np.savez(tmp_path / "arrays.npz", states=obj["states"].numpy(), actions=obj["actions"].numpy())
    with caplog.at_level("WARNING"):
        loaded = load_trajectories(tmp_path / "arrays.npz")
    assert np.array_equal(loaded.actions_NT, obj["actions"].numpy()) and loaded.version is None
    assert "matches neither version of the course's generator" in caplog.text  # random data: no floor, said so


def test_save_then_load_round_trips_with_the_version(tmp_path):
    data = generate_trajectories(5, 6, seed=0, version="v1")
    path = tmp_path / "t.pkl"
    save_trajectories(data, path, {"mode": "course", "seed": 0})
    loaded = load_trajectories(path)
    assert np.array_equal(loaded.states_NTS, data.states_NTS) and np.array_equal(loaded.actions_NT, data.actions_NT)
    assert loaded.version == "v1"
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["mode"] == "course" and meta["num_trajectories"] == 5
    # The course's own loader (plain pickle) reads our file as the course format.
    with open(path, "rb") as fh:
        raw = pickle.load(fh)
    assert set(raw) == {"states", "actions"}
    assert raw["states"].dtype == torch.float32 and raw["actions"].dtype == torch.int64


def test_a_stale_sidecar_is_ignored_and_an_explicit_version_wins(tmp_path):
    path = tmp_path / "t.pkl"
    save_trajectories(generate_trajectories(3, 4, seed=0), path)
    _write_pickle(path, _course_dict())  # replaced by another tool; the sidecar now lies
    assert load_trajectories(path).version is None
    assert load_trajectories(path, version="v2").version == "v2"
    with pytest.raises(DataError, match="unknown"):
        load_trajectories(path, version="v7")


@pytest.mark.parametrize("keys", [("trajectories", "tokenized"), ("states", "tokenized"), ("trajectories", "actions")])
def test_the_handouts_key_spellings_load(tmp_path, keys):
    obj = _course_dict()
    path = _write_pickle(tmp_path / "t.pkl", {keys[0]: obj["states"], keys[1]: obj["actions"]})
    loaded = load_trajectories(path)
    assert np.array_equal(loaded.actions_NT, obj["actions"].numpy())


def test_numpy_arrays_and_other_numeric_dtypes_are_converted(tmp_path):
    states = np.random.default_rng(0).standard_normal((2, 3, 10))  # float64
    actions = np.array([[1, 2, 3], [4, 5, 255]], dtype=np.uint8)
    loaded = load_trajectories(_write_pickle(tmp_path / "t.pkl", {"states": states, "actions": actions}))
    assert loaded.states_NTS.dtype == np.float32 and loaded.actions_NT.dtype == np.int64


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"actions": torch.zeros(2, 3, dtype=torch.long)}, "missing key 'states'"),
        ({"states": torch.zeros(2, 3, 10)}, "missing key 'actions'"),
        ([1, 2], "expected a dict"),
        ({"states": torch.zeros(2, 3), "actions": torch.zeros(2, 3, dtype=torch.long)}, "shape"),
        ({"states": torch.zeros(2, 3, 10), "actions": torch.zeros(2, 4, dtype=torch.long)}, "must agree"),
        ({"states": torch.zeros(2, 3, 10), "actions": torch.zeros(2, 3)}, "integer tokens"),
        (
            {"states": torch.zeros(2, 3, 10, dtype=torch.long), "actions": torch.zeros(2, 3, dtype=torch.long)},
            "floating point",
        ),
        ({"states": torch.zeros(2, 3, 10), "actions": torch.full((2, 3), 256)}, r"\[0, 256\)"),
        ({"states": torch.zeros(2, 3, 10), "actions": torch.full((2, 3), -1)}, r"\[0, 256\)"),
        ({"states": torch.zeros(2, 1, 10), "actions": torch.zeros(2, 1, dtype=torch.long)}, "at least 2 steps"),
        ({"states": "abc", "actions": torch.zeros(2, 3, dtype=torch.long)}, "must be a tensor"),
        ({"states": [], "actions": []}, "holds no trajectories"),
        ({"states": np.array([[["a"] * 10] * 3] * 2, dtype=object), "actions": np.zeros((2, 3))}, r"t\.pkl: .*objects"),
    ],
)
def test_bad_contents_get_one_clear_error(tmp_path, obj, needle):
    with pytest.raises(DataError, match=needle):
        load_trajectories(_write_pickle(tmp_path / "t.pkl", obj))


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "t.pkl"
    save_trajectories(generate_trajectories(2, 3, seed=0), path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("scratchlm.fileio.os.fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_trajectories(generate_trajectories(4, 5, seed=1), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pkl", "t.pkl.json"]
