"""Files from strangers never run code and never make scratchlm allocate more than they hold.

Checkpoints load with `torch.load(weights_only=True)`, trajectory pickles through the restricted unpickler,
tokenizer and corpus files are parsed as JSON / text and never evaluated. Every crafted file here is
refused with one ScratchLMError; payloads that would create a marker file are checked not to have run.
Single-format loader tests live beside their loaders (tests/test_checkpoint.py, tests/test_trajectory_io.py);
this file drives the paths a user takes (train, resume, report, load_model, load_tokenizer, load_token_dir)
and covers truncation and oversized claims across every format.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import resource
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from scratchlm.cli import main
from scratchlm.data.safe_pickle import UnsafePickleError
from scratchlm.data.text import load_token_dir, prepare_text_corpus
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import load_trajectories, save_trajectories
from scratchlm.errors import CheckpointError, ScratchLMError
from scratchlm.presets import resolve_run_config
from scratchlm.tokenizers import load_tokenizer
from scratchlm.tokenizers.bpe import train_bpe
from scratchlm.tokenizers.tokenizer import Tokenizer
from scratchlm.train.checkpoint import load_model, read_checkpoint
from scratchlm.train.trainer import train

MARKER = "pwned"  # every payload here would create this file in the current directory


class RunsCommand:
    """Unpickling this calls os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    save_trajectories(generate_trajectories(64, seq_length=12, seed=5, fast=True), root / "traj.pkl")
    train(run_config(root / "traj.pkl"), root / "run")
    return root / "run"


def run_config(data: Path):
    return resolve_run_config(
        "debug",
        None,
        [f"data.path={json.dumps(str(data))}", "train.progress=false", "train.max_steps=4", "train.eval_interval=2"],
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "text.txt").write_text("".join(f"line {i}: hello world, hello tokens.\n" for i in range(200)))
    prepare_text_corpus(root / "text.txt", root / "data", "char", progress=False)
    vocab, merges = train_bpe(root / "text.txt", 300, ["<|endoftext|>"], num_workers=1, progress=False)
    Tokenizer(vocab, merges, ["<|endoftext|>"]).save(root / "bpe")
    return root


def copy_of(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


# ----------------------------------------------------------------------------------- code in checkpoints


def evil_checkpoints(finished_run: Path) -> dict[str, Callable[[Path], None]]:
    """Ways to put code into a checkpoint that is otherwise a valid scratchlm checkpoint."""
    good = read_checkpoint(finished_run / "checkpoints" / "last.pt")

    def payload_value(path: Path) -> None:
        torch.save({**good, "hook": RunsCommand(f"touch {MARKER}")}, path)

    def legacy_format_payload(path: Path) -> None:
        torch.save({**good, "hook": RunsCommand(f"touch {MARKER}")}, path, _use_new_zipfile_serialization=False)

    def stored_callable(path: Path) -> None:
        torch.save({**good, "callback": os.system}, path)

    def pickled_module(path: Path) -> None:
        torch.save({**good, "model_object": torch.nn.Linear(2, 2)}, path)

    def plain_pickle(path: Path) -> None:
        path.write_bytes(pickle.dumps({**good, "hook": RunsCommand(f"touch {MARKER}")}))

    attacks = (payload_value, legacy_format_payload, stored_callable, pickled_module, plain_pickle)
    return {attack.__name__: attack for attack in attacks}


CHECKPOINT_ATTACKS = ["payload_value", "legacy_format_payload", "stored_callable", "pickled_module", "plain_pickle"]


@pytest.mark.parametrize("attack", CHECKPOINT_ATTACKS)
def test_code_in_a_checkpoint_never_runs_on_resume_report_or_load_model(
    in_tmp: Path, finished_run: Path, attack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_of(finished_run, in_tmp)
    for name in ("last.pt", "best.pt"):
        evil_checkpoints(finished_run)[attack](run_dir / "checkpoints" / name)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_model(run_dir / "checkpoints" / "best.pt")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        train(run_config(finished_run.parent / "traj.pkl"), run_dir, resume=True)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchlm: error: checkpoint") and "cannot be loaded safely" in err and "\n" not in err
    assert not (in_tmp / MARKER).exists()


# ----------------------------------------------------------------------------------- code in trajectory files


def test_code_in_a_trajectory_pickle_never_runs_when_training(in_tmp: Path) -> None:
    blob = pickle.dumps(RunsCommand(f"touch {MARKER}"), protocol=2)

    class HiddenInStorage:  # torch's own loader would torch.load(weights_only=False) this blob
        def __reduce__(self) -> tuple:
            return (torch.storage._load_from_bytes, (blob,))

    for payload in (RunsCommand(f"touch {MARKER}"), HiddenInStorage()):
        path = in_tmp / "evil.pkl"
        path.write_bytes(pickle.dumps({"states": payload, "actions": torch.zeros(2, 3, dtype=torch.long)}))
        with pytest.raises(UnsafePickleError, match="refusing to load"):
            train(run_config(path), in_tmp / "run")
        assert not (in_tmp / MARKER).exists() and not (in_tmp / "run").exists()


# ----------------------------------------------------------------------------------- tokenizer files


def edit_json(name: str, change: Callable[[object], object]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        path = directory / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return edit


def with_meta(**values: object) -> Callable[[Path], None]:
    return edit_json("tokenizer.json", lambda meta: {**meta, **values})


def write(name: str, text: str) -> Callable[[Path], None]:
    return lambda directory: (directory / name).write_text(text)


def link_to_device(name: str) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        (directory / name).unlink()
        (directory / name).symlink_to("/dev/zero")  # read naively, this never ends

    return edit


TOKENIZER_ATTACKS = {
    "kind is code": ("char", with_meta(kind=f"__import__('os').system('touch {MARKER}')"), "unknown kind"),
    "kind is a number": ("char", with_meta(kind=5), "string 'kind'"),
    "format is a string": ("char", with_meta(format="1"), "has format '1'"),
    "chars are numbers": ("char", with_meta(chars=[1, 2]), "single characters, got 1"),
    "chars is a string": ("char", with_meta(chars="abc"), "must be lists"),
    "special tokens is a string": ("char", with_meta(special_tokens="<s>"), "must be lists"),
    "special token is a number": ("bpe", with_meta(special_tokens=[5]), "non-empty string, got 5"),
    "vocab points outside": ("bpe", with_meta(vocab="../../etc/passwd"), "must name a file in the same directory"),
    "vocab is a number": ("bpe", with_meta(vocab=7), "must name a file in the same directory"),
    "meta is a list": ("bpe", write("tokenizer.json", "[1, 2]"), "must be a JSON object"),
    "meta nested 100k deep": ("bpe", write("tokenizer.json", "[" * 100_000), "is not valid JSON"),
    "ids are strings": ("bpe", edit_json("vocab.json", lambda v: {k: str(i) for k, i in v.items()}), "has id '"),
    "ids are floats": ("bpe", edit_json("vocab.json", lambda v: {k: i + 0.5 for k, i in v.items()}), "has id 0.5"),
    "id beyond uint32": ("bpe", edit_json("vocab.json", lambda v: {**v, "zz": 1 << 40}), "integers below 4294967296"),
    "vocab is a list": ("bpe", write("vocab.json", "[1]"), "non-empty JSON object"),
    "merge of three": ("bpe", write("merges.txt", "#version: 0.2\na b c\n"), "expected two tokens"),
    "merge of unknown tokens": ("bpe", write("merges.txt", "#version: 0.2\nq z\n"), "not in the vocabulary"),
    "vocab is /dev/zero": ("bpe", link_to_device("vocab.json"), "not a regular file"),
    "merges is /dev/zero": ("bpe", link_to_device("merges.txt"), "not a regular file"),
}


@pytest.mark.parametrize("attack", list(TOKENIZER_ATTACKS))
def test_tokenizer_files_with_wrong_types_are_refused(in_tmp: Path, corpus: Path, attack: str) -> None:
    kind, edit, message = TOKENIZER_ATTACKS[attack]
    directory = copy_of(corpus / "data" / "tokenizer" if kind == "char" else corpus / "bpe", in_tmp)
    edit(directory)
    with pytest.raises(ScratchLMError, match=re.escape(message)):
        load_tokenizer(directory)
    assert not (in_tmp / MARKER).exists()


def test_a_tokenizer_pattern_in_the_file_is_never_compiled(in_tmp: Path, corpus: Path) -> None:
    directory = copy_of(corpus / "bpe", in_tmp)
    with_meta(pattern="(a+)+$")(directory)  # catastrophic backtracking if anyone used it
    tokenizer = load_tokenizer(directory)
    text = "a" * 40 + "!"
    assert tokenizer.decode(tokenizer.encode(text)) == text


# ----------------------------------------------------------------------------------- truncated files


@pytest.fixture(scope="module")
def sources(finished_run: Path, corpus: Path) -> dict[str, Path]:
    traj = finished_run.parent / "traj.pkl"
    return {"run": finished_run, "data": corpus / "data", "bpe": corpus / "bpe", "traj": traj}


# artifact -> (the source it lives in, the file inside it, how to load what it belongs to)
TRUNCATABLE: dict[str, tuple[str, str, Callable[[Path], object]]] = {
    "checkpoint": ("run", "checkpoints/last.pt", lambda run: load_model(run / "checkpoints" / "last.pt")),
    "trajectory pickle": ("traj", "", load_trajectories),
    "corpus meta.json": ("data", "meta.json", load_token_dir),
    "token file": ("data", "train.bin", load_token_dir),
    "char tokenizer.json": ("data", "tokenizer/tokenizer.json", lambda data: load_tokenizer(data / "tokenizer")),
    "bpe tokenizer.json": ("bpe", "tokenizer.json", load_tokenizer),
    "bpe vocab.json": ("bpe", "vocab.json", load_tokenizer),
}


def fresh_copy(source: Path, tmp_path: Path) -> Path:
    if source.is_dir():
        return copy_of(source, tmp_path)
    tmp_path.mkdir()
    return Path(shutil.copy(source, tmp_path / source.name))


@pytest.mark.parametrize("artifact", list(TRUNCATABLE))
def test_truncated_files_are_refused(tmp_path: Path, sources: dict[str, Path], artifact: str) -> None:
    source, inner, load = TRUNCATABLE[artifact]
    for cut in ("0", "10%", "50%", "90%", "-2"):  # -2: without its last byte of content (JSON ends in a newline)
        copy = fresh_copy(sources[source], tmp_path / cut.replace("%", ""))
        path = copy / inner if inner else copy
        size = path.stat().st_size
        keep = size - 2 if cut == "-2" else size * int(cut.rstrip("%")) // 100
        path.write_bytes(path.read_bytes()[:keep])
        with pytest.raises(ScratchLMError):
            load(copy)
            pytest.fail(f"a {artifact} cut to {keep} of its {size} bytes loaded")


# ----------------------------------------------------------------------------------- oversized claims


def zip_entry_claiming(size: int) -> bytes:
    """A real checkpoint whose zip headers say its tensor data is `size` bytes long."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(4)}, "iteration": 0}, buffer)
    raw = bytearray(buffer.getvalue())
    entry = next(i for i in zipfile.ZipFile(io.BytesIO(bytes(raw))).infolist() if i.filename.endswith("data/0"))
    struct.pack_into("<II", raw, entry.header_offset + 18, size, size)  # local header: compressed, uncompressed
    central = raw.find(b"PK\x01\x02")
    while central >= 0:  # the central directory repeats both sizes
        name_length = struct.unpack_from("<H", raw, central + 28)[0]
        if raw[central + 46 : central + 46 + name_length] == entry.filename.encode():
            struct.pack_into("<II", raw, central + 20, size, size)
        central = raw.find(b"PK\x01\x02", central + 4)
    return bytes(raw)


Crafter = Callable[[Path, dict[str, Path]], Callable[[], object]]


def meta_claiming(**changes: object) -> Crafter:
    """A corpus whose meta.json says something else (`train.X` keys change the train split's entry)."""

    def craft(tmp_path: Path, sources: dict[str, Path]) -> Callable[[], object]:
        data = copy_of(sources["data"], tmp_path)
        meta = json.loads((data / "meta.json").read_text())
        for key, value in changes.items():
            split, _, field = key.rpartition(".")
            (meta["splits"][split] if split else meta)[field] = value
        (data / "meta.json").write_text(json.dumps(meta))
        return lambda: load_token_dir(data)

    return craft


def checkpoint_with(change: Callable[[dict], None]) -> Crafter:
    """The finished run's checkpoint, changed, loaded as `load_model` would (e.g. by `scratchlm report`)."""

    def craft(tmp_path: Path, sources: dict[str, Path]) -> Callable[[], object]:
        state = read_checkpoint(sources["run"] / "checkpoints" / "last.pt")
        change(state)
        torch.save(state, tmp_path / "crafted.pt")
        return lambda: load_model(tmp_path / "crafted.pt")

    return craft


def raw_file(content: bytes, load: Callable[[Path], object]) -> Crafter:
    def craft(tmp_path: Path, sources: dict[str, Path]) -> Callable[[], object]:
        (tmp_path / "crafted").write_bytes(content)
        return lambda: load(tmp_path / "crafted")

    return craft


def broadcast_weight(shape: tuple[int, ...]) -> Callable[[dict], None]:
    return lambda state: state["model"].update({"token_embeddings.weight": torch.zeros(1).expand(*shape)})


def config_value(**values: object) -> Callable[[dict], None]:
    return lambda state: state["config"].update(values)


def numpy_placeholder(shape: tuple[int, ...]) -> bytes:
    """NumPy's own pickles pre-allocate an empty array here; this one asks for `shape`."""

    class Placeholder:
        def __reduce__(self) -> tuple:
            return (np.zeros(0).__reduce__()[0], (np.ndarray, shape, b"b"))

    return pickle.dumps({"states": Placeholder()}, protocol=4)


def reduce_to(call: Any, *args: Any) -> bytes:
    """{'states': call(*args)} as a pickle: a tiny file whose one REDUCE would allocate."""

    class Call:
        def __reduce__(self) -> tuple:
            return (call, args)

    return pickle.dumps({"states": Call()}, protocol=4)


def deep_lists(depth: int) -> bytes:
    """{'states': [[[...]]] nested `depth` deep, 'actions': []}, written opcode by opcode."""
    nested = b"]" * depth + b"a" * (depth - 1)  # EMPTY_LIST x depth, then APPEND each into the one below
    return b"\x80\x04}\x8c\x06states" + nested + b"s\x8c\x07actions]s."


# claim -> (how to craft it, what the refusal says)
HUGE_CLAIMS: dict[str, tuple[Crafter, str]] = {
    "token count 10^15 in meta.json": (meta_claiming(**{"train.tokens": 10**15}), "meta.json records 10000"),
    "vocab 2^40 with uint16 ids": (meta_claiming(vocab_size=1 << 40), "uint16 cannot hold ids up to"),
    "a void dtype of 1 GB per id": (meta_claiming(dtype="V1000000000"), "hold unsigned integers"),
    "a dtype that is not one": (meta_claiming(dtype="garbage"), "'garbage' is not a NumPy dtype"),
    "split file outside the directory": (
        meta_claiming(**{"train.file": "../../../etc/hostname"}),
        "must be a name inside the directory",
    ),
    "splits is a list": (meta_claiming(splits=[1]), "lacks the 'train' split"),
    "checkpoint zip entry of 4 GiB": (raw_file(zip_entry_claiming(0xFFFF_FF00), read_checkpoint), "loaded safely"),
    "broadcast weight of 10^9 x 32": (checkpoint_with(broadcast_weight((10**9, 32))), "a broadcast view"),
    "config context_length 10^9": (checkpoint_with(config_value(context_length=10**9)), "GiB of position tables"),
    "config vocab_size 10^10": (checkpoint_with(config_value(vocab_size=10**10)), "the stored config needs"),
    "config with a string size": (checkpoint_with(config_value(d_model="32")), "model.d_model must be int"),
    "broadcast tensor of 3*10^9 in a pickle": (
        raw_file(pickle.dumps({"states": torch.zeros(1).expand(3 * 10**9)}), load_trajectories),
        "claims 3000000000 elements over a storage of 1",
    ),
    "numpy placeholder of 10^11 bytes": (
        raw_file(numpy_placeholder((10**11,)), load_trajectories),
        "pre-allocates an array of shape (100000000000,)",
    ),
    "lists nested 300k deep": (raw_file(deep_lists(300_000), load_trajectories), "not a rectangular numeric array"),
    "numpy.ndarray((10^11, 50, 10)) called": (
        raw_file(reduce_to(np.ndarray, (10**11, 50, 10), "f4"), load_trajectories),
        "calls numpy.ndarray() directly",
    ),
    "bytearray(4 * 10^9) called": (raw_file(reduce_to(bytearray, 4 * 10**9), load_trajectories), "bytearray() on int"),
    "bytes(4 * 10^9) called": (raw_file(reduce_to(bytes, 4 * 10**9), load_trajectories), "bytes() on int"),
}


@pytest.mark.parametrize("claim", list(HUGE_CLAIMS))
def test_oversized_claims_are_refused_before_anything_is_allocated(
    tmp_path: Path, sources: dict[str, Path], claim: str
) -> None:
    craft, message = HUGE_CLAIMS[claim]
    load = craft(tmp_path, sources)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(ScratchLMError) as refused:
        load()
    assert message in str(refused.value)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 256, f"{claim}: peak memory grew by {grown_mib:.0f} MiB"
