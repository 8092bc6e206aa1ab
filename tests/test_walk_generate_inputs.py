"""A user's walk through the inputs of `scratchlm generate` (and `scratchlm.generate`): bad ones, edge ones.

Every bad input must end in one `scratchlm: error:` line naming the problem and the fix, an exit status of
scratchlm.errors, nothing on stdout, and no change to the saved runs (checked after every test). The runs are
trained once per module by the debug preset: a char-level text run and an actions-only trajectory run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from scratchlm.cli import main
from scratchlm.data.text import load_token_dir, prepare_text_corpus
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import EXIT_BAD_INPUT, EXIT_IO, EXIT_OUT_OF_MEMORY, ConfigError, ScratchLMError, ShapeError
from scratchlm.infer.generate import generate
from scratchlm.model import TransformerLM
from scratchlm.train.checkpoint import load_model
from tests.test_generate import one_error_line

TEXT = "the quick brown fox jumps over the lazy dog.<|endoftext|>" * 40
MODEL_VOCAB = 40  # padded past the char tokenizer's 29 ids, so sampling is limited to the tokenizer's ids
CONTEXT = 64  # the debug preset's context_length


@dataclass
class Runs:
    root: Path
    text: Path  # char tokenizer with <|endoftext|>
    plain: Path  # the same checkpoint, but its config names a char tokenizer without <|endoftext|>
    traj: Path  # actions-only trajectory run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("walk-gen-inputs")
    (root / "in.txt").write_text(TEXT, encoding="utf-8")
    (root / "plain.txt").write_text(TEXT.replace("<|endoftext|>", "\n"), encoding="utf-8")
    prepare_text_corpus(root / "in.txt", root / "data", "char", special_tokens=["<|endoftext|>"], progress=False)
    prepare_text_corpus(root / "plain.txt", root / "plain-data", "char", special_tokens=[], progress=False)
    save_trajectories(generate_trajectories(120, seq_length=12, seed=1, fast=True), root / "traj.pkl")
    train = ["train", "--preset", "debug", "--no-progress", "--set", "train.max_steps=4",
             "--set", "train.eval_interval=2", "--set", "optim.warmup_steps=1"]  # fmt: skip
    text_data = ["--set", 'data.kind="tokens"', "--set", f"data.path={json.dumps(str(root / 'data'))}"]
    assert main([*train, *text_data, "--set", f"model.vocab_size={MODEL_VOCAB}", "--out", str(root / "text")]) == 0
    assert main([*train, "--set", f"data.path={json.dumps(str(root / 'traj.pkl'))}", "--out", str(root / "traj")]) == 0
    shutil.copytree(root / "text", root / "plain")
    config = (root / "plain" / "config.toml").read_text(encoding="utf-8")
    assert json.dumps(str(root / "data")) in config
    config = config.replace(json.dumps(str(root / "data")), json.dumps(str(root / "plain-data")))
    (root / "plain" / "config.toml").write_text(config, encoding="utf-8")
    return Runs(root, root / "text", root / "plain", root / "traj")


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(autouse=True)
def nothing_saved_changes(runs: Runs) -> Iterator[None]:
    """Whatever a test does, the runs, their checkpoints and their data stay byte for byte as trained."""
    before = _snapshot(runs.root)
    yield
    assert _snapshot(runs.root) == before


@pytest.fixture(autouse=True)
def _clean_output(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()  # the module fixture's training logs are not this test's output


def gen(*args: str) -> int:
    return main(["generate", *args])


def error_for(capsys: pytest.CaptureFixture[str], *args: str, status: int = EXIT_BAD_INPUT) -> str:
    """The one error line of `scratchlm generate ARGS` (asserting the exit status and an empty stdout)."""
    assert gen(*args) == status
    return one_error_line(capsys)


def output(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert gen(*args) == 0
    return capsys.readouterr().out


@contextmanager
def pipe_partner(fifo: Path, role: str) -> Iterator[None]:
    """A thread at the other end of a FIFO ("write": feeds it a prompt; "read": drains it), so that a command
    that wrongly opens the FIFO completes instead of blocking; a command that rightly refuses it never opens it,
    and the thread's own open is then released by an O_RDWR open (which on Linux never blocks)."""

    def partner() -> None:
        if role == "write":
            with open(fifo, "w", encoding="utf-8") as fh:
                fh.write("the fox")
        else:
            with open(fifo, encoding="utf-8") as fh:
                fh.read()

    thread = threading.Thread(target=partner, daemon=True)
    thread.start()
    try:
        yield
    finally:
        release = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        if role == "read":
            os.close(release)  # no writer left: the reader's read ends at once
        thread.join(timeout=10)
        if role == "write":
            os.close(release)  # held until the writer is done, so its write finds a reader
        assert not thread.is_alive()


# ------------------------------------------------------------------------- the run and the checkpoint


@pytest.fixture
def bad_files(runs: Runs, tmp_path: Path) -> Path:
    """Things that are not checkpoints: text, a truncated .pt, a FIFO, a directory named x.pt, a non-run dir."""
    (tmp_path / "notes.txt").write_text("hello\n", encoding="utf-8")
    (tmp_path / "cut.pt").write_bytes((runs.text / "checkpoints" / "last.pt").read_bytes()[:300])
    os.mkfifo(tmp_path / "fifo.pt")
    (tmp_path / "x.pt").mkdir()
    (tmp_path / "not-a-run").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        # fixed: these said "is not a run directory (no config.toml)"
        ("missing", r"{d}/missing does not exist; give the directory of a trained run"),
        ("fifo.pt", r"run {d}/fifo.pt is a device, pipe or socket, not a regular file; point at the file"),
        # already fine
        ("not-a-run", r"{d}/not-a-run is not a run directory \(no config.toml\); give the directory of a trained"),
        ("x.pt", r"{d}/x.pt is not a run directory \(no config.toml\)"),
        ("notes.txt", r"checkpoint '{d}/notes.txt' cannot be loaded safely .*; it is truncated, corrupt, or holds"),
        ("cut.pt", r"checkpoint '{d}/cut.pt' cannot be loaded safely .*; it is truncated, corrupt"),
    ],
)
def test_a_run_that_is_not_one_is_named_as_what_it_is(
    bad_files: Path, capsys: pytest.CaptureFixture[str], run: str, expected: str
) -> None:
    line = error_for(capsys, "--run", str(bad_files / run), "--prompt", "the", "--max-new-tokens", "2")
    assert re.search(expected.format(d=re.escape(str(bad_files))), line), line


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        # fixed: these said "checkpoint ... does not exist"
        ("fifo.pt", r"--checkpoint {d}/fifo.pt is a device, pipe or socket, not a regular file"),
        ("x.pt", r"--checkpoint {d}/x.pt is a directory, not a regular file; point at the file itself"),
        # already fine
        ("missing.pt", r"checkpoint '{d}/missing.pt' does not exist \(.*checkpoints holds best, last\); use"),
        ("notes.txt", r"checkpoint '{d}/notes.txt' cannot be loaded safely"),
        ("cut.pt", r"checkpoint '{d}/cut.pt' cannot be loaded safely"),
    ],
)
def test_a_checkpoint_that_is_not_one_is_named_as_what_it_is(
    runs: Runs, bad_files: Path, capsys: pytest.CaptureFixture[str], checkpoint: str, expected: str
) -> None:
    args = ("--run", str(runs.text), "--checkpoint", str(bad_files / checkpoint), "--prompt", "the")
    line = error_for(capsys, *args)
    assert re.search(expected.format(d=re.escape(str(bad_files))), line), line


@pytest.mark.parametrize(
    ("where", "make", "expected"),
    [
        # fixed: said "is not a run directory (no config.toml)"
        ("config.toml", Path.mkdir, "run config {f} is a directory, not a regular file"),
        ("config.toml", os.mkfifo, "run config {f} is a device, pipe or socket, not a regular file"),
        # fixed: generated from last.pt as though best.pt were not there
        ("checkpoints/best.pt", Path.mkdir, "checkpoint {f} is a directory, not a regular file"),
        ("checkpoints/best.pt", os.mkfifo, "checkpoint {f} is a device, pipe or socket, not a regular file"),
    ],
    ids=["config.toml folder", "config.toml fifo", "best.pt folder", "best.pt fifo"],
)
def test_a_run_with_a_folder_or_pipe_in_place_of_its_files_says_which(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, make: object, expected: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs.text, run)
    (run / where).unlink()
    make(run / where)  # type: ignore[operator]
    line = error_for(capsys, "--run", str(run), "--prompt", "the", "--max-new-tokens", "2")
    assert expected.format(f=run / where) in line


def test_a_checkpoint_named_by_choice_that_the_run_lacks_lists_what_it_holds(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    line = error_for(capsys, "--run", str(runs.text), "--checkpoint", "nope", "--prompt", "the")
    assert "checkpoint 'nope' does not exist" in line and "holds best, last" in line


# ------------------------------------------------------------------------------------ sampling values

# Each bad value, as the CLI takes it and as the library does: both must say the very same sentence.
BAD_SAMPLING = {
    "temperature -1": (["--temperature", "-1"], {"temperature": -1.0}, "temperature (--temperature) must be >= 0"),
    "temperature nan": (["--temperature", "nan"], {"temperature": float("nan")}, "must be >= 0 (0 means greedy)"),
    "temperature -inf": (["--temperature=-inf"], {"temperature": float("-inf")}, "got -inf"),
    "top-k 0": (["--top-k", "0"], {"top_k": 0}, "top_k (--top-k) must be a positive integer"),
    "top-k -3": (["--top-k", "-3"], {"top_k": -3}, "top_k (--top-k) must be a positive integer"),
    "top-p 0": (["--top-p", "0"], {"top_p": 0.0}, "top_p (--top-p) must be in (0, 1]"),
    "top-p 1.5": (["--top-p", "1.5"], {"top_p": 1.5}, "top_p (--top-p) must be in (0, 1]"),
    "top-p nan": (["--top-p", "nan"], {"top_p": float("nan")}, "got nan"),
    "top-p inf": (["--top-p", "inf"], {"top_p": float("inf")}, "got inf"),
    "seed 2**64": (["--seed", str(2**64)], {"seed": 2**64}, "seed (--seed) must be an integer from -2**63"),
    # fixed: the CLI said "--max-new-tokens must be >= 1", the library "max_new_tokens must be a positive integer"
    "max-new-tokens 0": (["--max-new-tokens", "0"], {"max_new_tokens": 0}, "max_new_tokens (--max-new-tokens) must"),
    "max-new-tokens -1": (["--max-new-tokens", "-1"], {"max_new_tokens": -1}, "must be >= 1"),
    # the context is a hard limit (no sliding window), with the cache and without it
    "past the context": (["--max-new-tokens", "62"], {"max_new_tokens": 62}, "generate at most 61 tokens"),
    "past the context, no cache": (
        ["--max-new-tokens", "1000", "--no-cache"], {"max_new_tokens": 1000, "use_cache": False}, "at most 61",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("cli", "api", "part"), BAD_SAMPLING.values(), ids=BAD_SAMPLING.keys())
def test_a_bad_sampling_value_is_the_same_sentence_from_the_cli_and_the_library(
    runs: Runs, capsys: pytest.CaptureFixture[str], cli: list[str], api: dict, part: str
) -> None:
    line = error_for(capsys, "--run", str(runs.text), "--prompt", "the", "--seed", "1", *cli)
    model = load_model(runs.text)
    kwargs = {"max_new_tokens": 4, "seed": 1, **api}
    with pytest.raises(ScratchLMError) as caught:
        generate(model, load_token_dir(runs.root / "data").tokenizer().encode("the"), **kwargs)
    assert line == f"scratchlm: error: {caught.value}"
    assert part in line


def test_the_edges_of_the_sampling_values_still_generate(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--run", str(runs.text), "--prompt", "the", "--max-new-tokens", "8", "--seed", "3")
    sampled = output(capsys, *base)
    assert output(capsys, *base, "--top-k", "1000") == sampled  # more than the vocabulary: every token
    assert output(capsys, *base, "--top-p", "1") == sampled  # the whole distribution
    greedy = output(capsys, *base, "--temperature", "0")
    assert output(capsys, *base, "--temperature", "inf", "--top-k", "1") == greedy
    assert output(capsys, *base, "--seed=-1") != ""


def test_the_whole_context_can_be_generated_and_the_cache_does_not_change_it(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("--run", str(runs.text), "--prompt", "the", "--max-new-tokens", str(CONTEXT - 3), "--temperature", "0")
    cached = output(capsys, *base)
    assert cached == output(capsys, *base, "--no-cache")
    assert output(capsys, *base, "--no-cache", "--seed", "5", "--temperature", "0.8") == output(
        capsys, *base, "--seed", "5", "--temperature", "0.8"
    )


def test_numpy_numbers_are_taken_like_python_ones(runs: Runs) -> None:
    # fixed: np.float32 temperature and np.int64 top_k / max_new_tokens were refused as "not a number / integer"
    model = load_model(runs.text)
    plain = generate(model, [3, 1, 4], max_new_tokens=6, temperature=0.7, top_k=5, top_p=0.9, seed=2).tokens
    numpy = generate(
        model, [3, 1, 4], max_new_tokens=np.int64(6), temperature=np.float32(0.7), top_k=np.int64(5),
        top_p=np.float32(0.9), seed=np.int64(2),
    ).tokens  # fmt: skip
    assert numpy == plain


@pytest.mark.parametrize("limit", [2.5, True, 0, MODEL_VOCAB + 1])
def test_a_vocab_limit_that_is_not_an_id_count_is_a_config_error(runs: Runs, limit: object) -> None:
    # fixed: 2.5 and True passed the range check, and 2.5 then failed in the slicing (an internal TypeError)
    with pytest.raises(ConfigError, match=re.escape(f"vocab_limit must be in [1, {MODEL_VOCAB}]")):
        generate(load_model(runs.text), [3, 1], max_new_tokens=2, vocab_limit=limit)


# ------------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Zebra", "character 'Z' (U+005A) is not in this char tokenizer's alphabet"),
        ("héllo", "character 'é' (U+00E9) is not in this char tokenizer's alphabet"),
        ("the fox " * 8, "the prompt has 64 tokens but the model's context_length is 64"),
    ],
)
def test_a_prompt_the_run_cannot_take_is_one_error_line(
    runs: Runs, capsys: pytest.CaptureFixture[str], prompt: str, expected: str
) -> None:
    assert expected in error_for(capsys, "--run", str(runs.text), "--prompt", prompt)


def test_an_empty_prompt_starts_from_end_of_text_or_says_it_cannot(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenizer = load_token_dir(runs.root / "data").tokenizer()
    eot = tokenizer.special_token_id("<|endoftext|>")
    greedy = generate(
        load_model(runs.text), [eot], max_new_tokens=8, temperature=0, stop_tokens=eot, vocab_limit=tokenizer.vocab_size
    )
    expected = tokenizer.decode(greedy.tokens[0]) + "\n"
    assert output(capsys, "--run", str(runs.text), "--prompt", "", "--max-new-tokens", "8", "--temperature", "0") == (
        expected
    )
    line = error_for(capsys, "--run", str(runs.plain), "--prompt", "")
    assert "the prompt is empty and this tokenizer has no <|endoftext|> to start from; give --prompt TEXT" in line


@pytest.mark.parametrize(
    ("prompts", "error", "message"),
    [
        ([[3, MODEL_VOCAB]], ShapeError, f"prompt 0 holds ids in [3, {MODEL_VOCAB}] but the model's vocabulary is"),
        ([[-1, 3]], ShapeError, "prompt 0 holds ids in [-1, 3]"),
        ([[]], ShapeError, "prompt 0 is empty; give at least one token"),
        ([], ShapeError, "no prompts were given"),
    ],
)
def test_prompt_ids_the_library_cannot_take_are_one_error(runs: Runs, prompts: list, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        generate(load_model(runs.text), prompts, max_new_tokens=2)


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ("1,2,300", "--prompt-actions must lie in [0, 256), got ids in [1, 300]"),
        ("-1,2", "--prompt-actions must lie in [0, 256), got ids in [-1, 2]"),
        ("1,x", "--prompt-actions must be comma-separated integers"),
        ("", "--prompt-actions is empty; give at least one action token"),
    ],
)
def test_action_ids_out_of_range_are_one_error_line(
    runs: Runs, capsys: pytest.CaptureFixture[str], actions: str, expected: str
) -> None:
    assert expected in error_for(capsys, "--run", str(runs.traj), f"--prompt-actions={actions}")


def test_more_samples_than_memory_holds_is_one_sentence_not_a_bug(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    """10^10 copies of the prompt are refused by the allocator at once (Python's MemoryError here); it used to
    be reported as "internal error ... this is a bug in scratchlm"."""
    args = ("--run", str(runs.traj), "--prompt-actions", "1,2,3", "--max-new-tokens", "2")
    line = error_for(capsys, *args, "--num-samples", "10000000000", status=EXIT_OUT_OF_MEMORY)
    assert "ran out of memory" in line and "fewer samples" in line and "bug" not in line


def test_the_actions_prompt_takes_the_edges_of_top_k_and_top_p(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--run", str(runs.traj), "--prompt-actions", "1,2", "--max-new-tokens", "5", "--temperature", "1")
    sampled = output(capsys, *base, "--seed", "4")
    assert len(sampled.strip().split(",")) == 5
    assert output(capsys, *base, "--seed", "4", "--top-k", "300", "--top-p", "1") == sampled


# ------------------------------------------------------------------------------------------- --prompt-file


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        # fixed: these carried Python's raw "[Errno 2] ..." / codec text / "[Errno 21] ..."
        (lambda p: None, "--prompt-file {p} does not exist; check the path, or give the text itself with --prompt"),
        (lambda p: p.write_bytes(b"\xff\xfe binary"), "--prompt-file {p} is not UTF-8 text (byte 0xff at offset 0)"),
        (lambda p: p.mkdir(), "--prompt-file {p} is a directory, not a regular file; point at the file itself"),
    ],
    ids=["missing", "binary", "directory"],
)
def test_a_prompt_file_that_cannot_be_read_says_why(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, expected: str
) -> None:
    path = tmp_path / "prompt.txt"
    make(path)  # type: ignore[operator]
    assert expected.format(p=path) in error_for(capsys, "--run", str(runs.text), "--prompt-file", str(path))


def test_a_prompt_file_is_the_prompt(runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.txt").write_text("the fox", encoding="utf-8")
    base = ("--run", str(runs.text), "--max-new-tokens", "6", "--temperature", "0")
    assert output(capsys, *base, "--prompt-file", str(tmp_path / "p.txt")) == output(
        capsys, *base, "--prompt", "the fox"
    )


# ----------------------------------------------------------------------------------------- --num-samples


@pytest.mark.parametrize("count", ["0", "-2"])
def test_no_samples_is_one_error_line(runs: Runs, capsys: pytest.CaptureFixture[str], count: str) -> None:
    line = error_for(capsys, "--run", str(runs.text), "--prompt", "the", "--num-samples", count)
    assert f"--num-samples must be >= 1, got {count}." in line


# ------------------------------------------------------------------------------------------------ --json


@pytest.mark.parametrize(
    ("option", "partner", "args"),
    [
        # fixed: the FIFO was opened and read, blocking for as long as no one wrote to it
        ("--prompt-file", "write", ("--run", "{text}", "--max-new-tokens", "2")),
        # fixed: the rollout ran and printed, then the write blocked on the FIFO
        ("--json", "read", ("--run", "{traj}", "--rollout", "2")),
    ],
    ids=["prompt-file", "json"],
)
def test_a_fifo_given_as_a_file_is_refused_not_waited_on(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, partner: str, args: tuple[str, ...]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    filled = [a.format(text=runs.text, traj=runs.traj) for a in args]
    with pipe_partner(fifo, partner):  # a partner at the other end, so a bug shows as output, not a hung test
        line = error_for(capsys, *filled, option, str(fifo))
    assert f"{option} {fifo} is a device, pipe or socket, not a regular file; point at the file itself" in line


@pytest.mark.parametrize(
    ("target", "expected", "status"),
    [
        # fixed: the rollout ran and printed its table first, then the write failed (exit 5)
        ("{t}/out", "--json {t}/out is a directory, not a regular file; point at the file itself", EXIT_BAD_INPUT),
        # fixed: said "its folder {t}/notes.txt does not exist", which it does (as a file)
        ("{t}/notes.txt/m.json", "{t}/notes.txt is a file, not a folder; give a path in a folder", EXIT_BAD_INPUT),
        # already fine
        ("{t}/none/m.json", "its folder {t}/none does not exist; create it first", EXIT_BAD_INPUT),
    ],
    ids=["a directory", "under a file", "in a missing folder"],
)
def test_json_where_it_cannot_be_written_is_refused_before_the_rollout(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, expected: str, status: int
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "notes.txt").write_text("keep me\n", encoding="utf-8")
    args = ("--run", str(runs.traj), "--rollout", "2", "--json", target.format(t=tmp_path))
    assert expected.format(t=tmp_path) in error_for(capsys, *args, status=status)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "keep me\n"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no one can create files")
def test_json_into_an_unwritable_folder_fails_before_the_rollout(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    # fixed: the rollout ran and printed its table, and only then was the write refused
    line = error_for(capsys, "--run", str(runs.traj), "--rollout", "2", "--json", "/proc/metrics.json", status=EXIT_IO)
    assert line.startswith("scratchlm: error: cannot write /proc/metrics.json: ") and "nothing was computed" in line


@pytest.mark.parametrize("target", ["checkpoints/last.pt", "config.toml", "checkpoints/metrics.json"])
def test_json_onto_the_run_being_read_is_refused(runs: Runs, capsys: pytest.CaptureFixture[str], target: str) -> None:
    # fixed: the metrics overwrote the checkpoint (or config) they were computed from; the autouse
    # fixture checks the run is untouched
    line = error_for(capsys, "--run", str(runs.traj), "--rollout", "2", "--json", str(runs.traj / target))
    assert "points at the checkpoint, the config or the checkpoints/ of the run being read" in line
    assert f"--json {runs.traj / 'rollout.json'}" in line


def test_json_is_written_whole(runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old\n", encoding="utf-8")
    assert gen("--run", str(runs.traj), "--rollout", "2", "--json", str(target)) == 0
    metrics = json.loads(target.read_text(encoding="utf-8"))
    assert metrics["num_trajectories"] == 2 and metrics["checkpoint"].endswith("best.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no probe or temporary file left


def test_the_walked_runs_are_trained_by_the_debug_preset(runs: Runs) -> None:
    # Guards the fixture: the walk's runs are real trained runs of the debug preset, not hand-saved weights.
    model = load_model(runs.text)
    assert isinstance(model, TransformerLM) and model.config.context_length == CONTEXT
    assert model.config.vocab_size == MODEL_VOCAB
    assert json.loads((runs.text / "summary.json").read_text(encoding="utf-8"))["steps"] == 4
