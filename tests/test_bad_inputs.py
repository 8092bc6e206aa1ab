"""The bad-input catalogue: malformed inputs to every command, each refused with one clear line and an exit
status from the documented table (`scratchlm.cli`), no traceback, and no change to existing outputs.

Every case runs `scratchlm ...` as a child process (forked from a warm server, see tests/cli_processes.py)
against one shared workspace -- a finished run, a token corpus, tokenizers, trajectory files and crafted bad
files -- whose every byte is hashed before and after the case. `{ws}` in an argument is the workspace,
`{scratch}` a fresh directory outside it for outputs a refused command must not need.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.data.text import prepare_text_corpus
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import EXIT_BAD_INPUT, EXIT_IO, EXIT_LOCKED, EXIT_NONFINITE
from scratchlm.presets import resolve_run_config
from scratchlm.tokenizers.bpe import train_bpe
from scratchlm.tokenizers.tokenizer import Tokenizer
from scratchlm.train.checkpoint import read_checkpoint
from scratchlm.train.lock import RunLock
from scratchlm.train.trainer import train
from tests.cli_processes import CHILD_ENV, CommandServer

MARKER = "pwned"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    message: str  # part of the one error line
    status: int = EXIT_BAD_INPUT
    locked: str | None = None  # a workspace directory the test holds locked while the command runs
    logs_first: bool = False  # fails after training started: its INFO log lines come before the error line


def train_args(*sets: str, data: str = "{ws}/traj.pkl", out: str = "{scratch}/run") -> tuple[str, ...]:
    """`scratchlm train` on the debug preset with the workspace's data, plus overrides."""
    overrides = ["train.progress=false", "train.max_steps=2", f'data.path="{data}"', *sets]
    return ("train", "--preset", "debug", *[a for o in overrides for a in ("--set", o)], "--out", out)


TOKENS = ("data.kind=tokens", "model.context_length=16")


def gen(run: str, *args: str) -> tuple[str, ...]:
    return ("generate", "--run", run, "--seed", "0", *args)


CASES: dict[str, Case] = {
    # config keys and types
    "unknown preset": Case(("train", "--preset", "nope"), "unknown preset 'nope'; available presets:"),
    "a path as a preset name": Case(("presets", "show", "../presets/debug"), "unknown preset '../presets/debug'"),
    "info with a section typo": Case(("info", "--set", "modle.d_model=128"), "unknown config section(s) ['modle']"),
    "info with a bad optim value": Case(("info", "--set", "optim.lr=abc"), "optim.lr must be float, got 'abc'"),
    "unknown model key": Case(train_args("model.depth=3"), "unknown model key(s) ['depth']; valid keys:"),
    "unknown section": Case(train_args("nonsense.key=1"), "unknown config section(s) ['nonsense']"),
    "string for an int": Case(train_args("model.d_model=big"), "model.d_model must be int, got 'big'"),
    "bool for an int": Case(train_args("train.batch_size=true"), "train.batch_size must be int, got True"),
    "negative batch size": Case(train_args("train.batch_size=-4"), "train.batch_size must be > 0, got -4"),
    "heads do not divide d_model": Case(train_args("model.num_heads=5"), "divisible by model.num_heads (5)"),
    "unknown norm": Case(train_args("model.norm=batchnorm"), "model.norm = 'batchnorm' is not one of"),
    "two budgets": Case(train_args("train.epochs=2", "train.max_steps=3"), "set exactly one training budget"),
    "dropout of 1.5": Case(("info", "--set", "model.dropout=1.5"), "model.dropout must be in [0, 1), got 1.5"),
    "indivisible model to account": Case(("account", "--preset", "debug", "--d-model", "33"), "divisible by"),
    "unknown model to account": Case(("account", "--model", "gpt2-huge"), "invalid choice: 'gpt2-huge'"),
    "betas of one value": Case(train_args("optim.betas=[0.9]"), "optim.betas must be a list of 2 floats"),
    "infinite epochs budget": Case(train_args("train.epochs=inf"), "train.epochs must be a finite number, got inf"),
    "NaN clipping threshold": Case(train_args("optim.grad_clip=nan"), "optim.grad_clip must be a finite number"),
    "NaN in the betas": Case(train_args("optim.betas=[0.9, nan]"), "optim.betas must be finite numbers, got"),
    "learning rate beyond float32": Case(train_args("optim.lr=1e39"), "optim.lr = 1e+39 is beyond float32's range"),
    "a seed beyond 64 bits": Case(train_args("train.seed=99999999999999999999"), "does not fit in 64 bits"),
    "negative seed": Case(train_args("train.seed=-1"), "train.seed must be >= 0, got -1"),
    "negative split seed": Case(train_args("data.split_seed=-1"), "data.split_seed must be >= 0, got -1"),
    "eps of zero": Case(train_args("optim.eps=0"), "optim.eps must be > 0, got 0.0"),
    "a device torch parses but nothing runs on": Case(train_args('train.device="meta"'), "device of type 'meta'"),
    "empty config path": Case(("train", "--preset", "debug", "--config", ""), "--config is empty; name a .toml"),
    "empty preset name": Case(("presets", "show", ""), "unknown preset ''; available presets:"),
    "--set without =": Case(("train", "--preset", "debug", "--set", "d_model"), "--set expects section.key=value"),
    "missing config file": Case(("train", "--config", "{ws}/none.toml"), "config file '{ws}/none.toml' does not"),
    "invalid TOML": Case(("train", "--config", "{ws}/bad/broken.toml"), "is not valid TOML"),
    "TOML nested 100k deep": Case(("info", "--config", "{ws}/bad/deep.toml"), "is not valid TOML"),
    "config is a directory": Case(("info", "--config", "{ws}/bad"), "is a directory; pass a .toml file"),
    "nothing to train": Case(("train",), "say what to train: --preset NAME"),
    # command-line syntax
    "non-integer option": Case(("train", "--stop-after", "x"), "argument --stop-after: invalid int value: 'x'"),
    "unknown option": Case(("train", "--bogus"), "unrecognized arguments: --bogus; see `scratchlm train --help`"),
    "option of another command": Case(("attention", "{ws}/run", "--run", "x"), "see `scratchlm attention --help`"),
    "bool written as Python": Case(train_args("train.compile=True"), "must be bool, got 'True' (str); write true or"),
    "key in the wrong section": Case(train_args("train.lr=1e-3"), "(did you mean optim.lr?)"),
    "device that is no device": Case(train_args("train.device=gpu"), "train.device = 'gpu' is not a device name"),
    "missing required option": Case(("data", "text", "--input", "x.txt"), "the following arguments are required"),
    "group without a command": Case(("tokenizer",), "`scratchlm tokenizer` needs a command"),
    "zero benchmark steps": Case(("bench", "train", "--steps", "0"), "--steps must be >= 1"),
    # data files
    "missing trajectory file": Case(train_args(data="{ws}/none.pkl"), "does not exist; create it with"),
    "trajectory path is a directory": Case(train_args(data="{ws}/bad"), "is a directory; pass the .pkl file"),
    "token files given as trajectories": Case(
        train_args(data="{ws}/corpus"),
        "holds token files (`scratchlm data text`), not trajectories; train on it with --set data.kind=tokens",
    ),
    "text instead of a pickle": Case(train_args(data="{ws}/bad/text.pkl"), "not a readable trajectory pickle"),
    "pickle of a list": Case(train_args(data="{ws}/bad/list.pkl"), "expected a dict with 'states' and 'actions'"),
    "pickle running os.system": Case(train_args(data="{ws}/bad/evil.pkl"), "refusing to load `posix.system`"),
    "token dir without meta.json": Case(train_args(*TOKENS, data="{ws}/bad"), "meta.json does not exist"),
    "token file with an odd size": Case(train_args(*TOKENS, data="{ws}/odd_corpus"), "not a multiple of 2"),
    "token count differs from meta": Case(train_args(*TOKENS, data="{ws}/short_corpus"), "meta.json records"),
    "missing text input": Case(("data", "text", "--input", "{ws}/none.txt", "--out", "{scratch}/d"), "none.txt"),
    "text that is not UTF-8": Case(
        ("data", "text", "--input", "{ws}/bad/latin1.txt", "--tokenizer", "char", "--out", "{scratch}/corpus"),
        "not valid UTF-8",
    ),
    "empty text": Case(("tokenizer", "train", "--input", "{ws}/bad/empty.txt", "--out", "{ws}/bpe"), "empty"),
    # token ranges
    "token id beyond the vocabulary": Case(train_args(*TOKENS, data="{ws}/big_id_corpus"), "not below the vocab"),
    "model vocabulary too small": Case(train_args("model.vocab_size=100"), "set model.vocab_size >= 256"),
    "context shorter than the data": Case(train_args("model.context_length=8"), "raise model.context_length to"),
    "action token out of range": Case(train_args(data="{ws}/bad/actions300.pkl"), "must lie in [0, 256)"),
    "unknown id to decode": Case(("tokenizer", "decode", "--tokenizer", "{ws}/tok", "--ids", "99999"), "99999"),
    "negative id to decode": Case(("tokenizer", "decode", "--tokenizer", "{ws}/tok", "--ids", "-1"), "id -1"),
    "non-integer id": Case(("tokenizer", "decode", "--tokenizer", "{ws}/tok", "--ids", "abc"), "must be integers"),
    "character outside the alphabet": Case(
        ("tokenizer", "encode", "--tokenizer", "{ws}/tok", "--text", "Ω"), "is not in this char tokenizer's"
    ),
    # tokenizer files
    "missing tokenizer": Case(("tokenizer", "encode", "--tokenizer", "{ws}/none", "--text", "a"), "does not exist"),
    "tokenizer list in a string": Case(
        ("tokenizer", "encode", "--tokenizer", "{ws}/bad/tok_types", "--text", "a"), "must be lists"
    ),
    "vocab ids as strings": Case(("tokenizer", "encode", "--tokenizer", "{ws}/bad/bpe_ids", "--text", "a"), "has id"),
    "vocab is a device": Case(
        ("tokenizer", "encode", "--tokenizer", "{ws}/bad/bpe_dev", "--text", "a"), "not a regular file"
    ),
    "vocabulary below 256 bytes": Case(
        ("tokenizer", "train", "--input", "{ws}/text.txt", "--vocab-size", "10", "--out", "{ws}/bpe"), "vocab"
    ),
    "unknown tokenizer choice": Case(
        ("data", "text", "--input", "{ws}/text.txt", "--tokenizer", "{ws}/none", "--out", "{ws}/corpus"), "neither"
    ),
    # trajectory parameters
    "zero trajectories": Case(
        ("data", "trajectories", "--num-trajectories", "0", "--out", "{ws}/traj.pkl"), "num_trajectories must be"
    ),
    "one-step trajectories": Case(
        ("data", "trajectories", "--seq-length", "1", "--out", "{ws}/traj.pkl"), "seq_length must be an integer >= 2"
    ),
    "unknown version": Case(("data", "trajectories", "--version", "v9", "--out", "{ws}/traj.pkl"), "'v9' is unknown"),
    # resume conflicts and run directories
    "resume a missing run": Case(("train", "--resume", "{ws}/none"), "cannot resume: {ws}/none does not exist; check"),
    "train into an existing run": Case(train_args(out="{ws}/run"), "already holds a run; continue it with --resume"),
    "resume with another config": Case(("train", "--resume", "{ws}/run", "--set", "optim.lr=0.5"), "optim.lr differ"),
    "resume a run in use": Case(("train", "--resume", "{ws}/run"), "is in use by process", EXIT_LOCKED, "run"),
    "resume a truncated checkpoint": Case(("train", "--resume", "{ws}/cut_run"), "cannot be loaded safely"),
    "resume a checkpoint with code": Case(("train", "--resume", "{ws}/evil_run"), "refers to `posix.system`"),
    "resume for zero steps": Case(("train", "--resume", "{ws}/run", "--stop-after", "0"), "--stop-after must be"),
    "report on a non-run": Case(("report", "{ws}/bad"), "is not a finished run"),
    "report with code in the checkpoint": Case(("report", "{ws}/evil_run"), "nothing in it ran"),
    "report in an unknown format": Case(("report", "{ws}/run", "--format", "pdf"), "invalid choice: 'pdf'"),
    "report with a missing audit": Case(("report", "{ws}/run", "--audit", "{ws}/none"), "audit.json does not exist"),
    # experiments: plots, attention, audit, ablations, sweeps, scaling, the experiment log
    "plot a non-run": Case(("plot", "{ws}/bad"), "has no metrics.jsonl"),
    "plot on an unknown axis": Case(("plot", "{ws}/run", "--x", "epochs"), "invalid choice: 'epochs'"),
    "attention with code in the checkpoint": Case(("attention", "{ws}/evil_run"), "nothing in it ran"),
    "attention prompt for a trajectory run": Case(("attention", "{ws}/run", "--prompt", "hi"), "needs a text run"),
    "attention past the validation set": Case(("attention", "{ws}/run", "--sample", "100000"), "past the end"),
    "attention prompt past the context": Case(("attention", "{ws}/text_run", "--prompt", "hello " * 20), "shorten the"),
    "attention on a non-run": Case(("attention", "{ws}/bad"), "is not a run directory (no config.toml); give the"),
    "audit with no evaluation rows": Case(("audit", "causal-mask", "--eval-rows", "0"), "--eval-rows must be >= 1"),
    "audit an unknown preset": Case(("audit", "causal-mask", "--preset", "nope", "--out", "{scratch}/a"), "'nope'"),
    "ablate without a grid": Case(("ablate", "--preset", "debug"), "at least one --grid"),
    "ablate an unknown study": Case(("ablate", "--study", "nope"), "unknown study 'nope'"),
    "ablate an unknown key": Case(
        ("ablate", "--preset", "debug", "--grid", "model.depth=1,2", "--out", "{scratch}/a"), "unknown model key(s)"
    ),
    "sweep a rate that is not a number": Case(("sweep", "lr", "--preset", "debug", "--values", "fast"), "numbers"),
    "sweep a zero rate": Case(("sweep", "lr", "--preset", "debug", "--values", "0,1e-3"), "positive learning rates"),
    "sweep one rate": Case(("sweep", "lr", "--preset", "debug", "--values", "1e-3"), "at least 2"),
    "scaling with a malformed size": Case(("scaling", "--preset", "debug", "--sizes", "2by64"), "LAYERSxD_MODEL"),
    "scaling with two sizes": Case(("scaling", "--preset", "debug", "--sizes", "1x8,1x16"), "at least 3 sizes"),
    "runs in a missing folder": Case(("runs", "{ws}/none"), "is not a directory"),
    # generation arguments (--seed: no "sampling with --seed" log line before the error)
    "generate from a non-run": Case(gen("{ws}/bad", "--prompt", "hi"), "is not a run directory (no config.toml)"),
    "text prompt to a trajectory run": Case(gen("{ws}/run", "--prompt", "hi"), "this is a trajectory run"),
    "actions prompt to a text run": Case(gen("{ws}/text_run", "--prompt-actions", "1,2"), "needs a trajectory run"),
    "actions that are not integers": Case(gen("{ws}/run", "--prompt-actions", "1,x"), "comma-separated integers"),
    "action ids out of range": Case(gen("{ws}/run", "--prompt-actions", "1,999"), "must lie in [0, 256)"),
    "negative temperature": Case(gen("{ws}/text_run", "--prompt", "hi", "--temperature", "-1"), "temperature"),
    "top-p above 1": Case(gen("{ws}/text_run", "--prompt", "hi", "--top-p", "2"), "top_p (--top-p) must be in (0, 1]"),
    "top-k of 0": Case(gen("{ws}/text_run", "--prompt", "hi", "--top-k", "0"), "top_k (--top-k) must be a positive"),
    "zero new tokens": Case(gen("{ws}/text_run", "--prompt", "hi", "--max-new-tokens", "0"), "must be >= 1"),
    "prompt outside the alphabet": Case(gen("{ws}/text_run", "--prompt", "Ω"), "is not in this char tokenizer's"),
    "prompt longer than the context": Case(gen("{ws}/text_run", "--prompt", "hello " * 20), "shorten the prompt"),
    "prompt file not UTF-8": Case(gen("{ws}/text_run", "--prompt-file", "{ws}/bad/latin1.txt"), "give a UTF-8"),
    "generate from a checkpoint with code": Case(gen("{ws}/evil_run", "--prompt-actions", "1,2"), "nothing in it ran"),
    "missing checkpoint file": Case(
        gen("{ws}/run", "--checkpoint", "{ws}/none.pt", "--prompt-actions", "1"), "checkpoint '{ws}/none.pt' does"
    ),
    "validation trajectory out of range": Case(gen("{ws}/run", "--from-val", "100000"), "--from-val must be in"),
    "no context steps": Case(gen("{ws}/run", "--from-val", "0", "--context-steps", "0"), "--context-steps must"),
    "nothing to generate from": Case(("generate", "--run", "{ws}/run"), "one of the arguments --prompt"),
    # what the operating system refuses, and numerics
    "run directory under a file": Case(
        train_args(out="{ws}/text.txt/run"),
        "cannot create {ws}/text.txt/run: a component of the path is not a directory (ENOTDIR)",
        EXIT_IO,
    ),
    "output under a file": Case(
        ("data", "trajectories", "--num-trajectories", "2", "--no-progress", "--out", "{ws}/text.txt/t.pkl"),
        "cannot write {ws}/text.txt/t.pkl: a component of the path is not a directory (ENOTDIR)",
        EXIT_IO,
    ),
    "learning rate that diverges": Case(
        train_args("optim.lr=1e30", "optim.warmup_steps=0", "train.max_steps=20"),
        "became NaN/Inf at step",
        EXIT_NONFINITE,
        logs_first=True,
    ),
}


# ----------------------------------------------------------------------------------------- the workspace


def build_workspace(ws: Path) -> None:
    bad = ws / "bad"
    bad.mkdir(parents=True)
    save_trajectories(generate_trajectories(48, seq_length=12, seed=1, fast=True), ws / "traj.pkl")
    (ws / "text.txt").write_text("".join(f"line {i}: hello world, hello tokens.\n" for i in range(150)))
    prepare_text_corpus(ws / "text.txt", ws / "corpus", "char", progress=False)
    (ws / "tok").symlink_to("corpus/tokenizer")
    vocab, merges = train_bpe(ws / "text.txt", 270, ["<|endoftext|>"], num_workers=1, progress=False)
    Tokenizer(vocab, merges, ["<|endoftext|>"]).save(ws / "bpe")
    config = resolve_run_config(
        "debug", None, [f'data.path="{ws}/traj.pkl"', "train.progress=false", "train.max_steps=2"]
    )
    train(config, ws / "run")
    text_config = resolve_run_config(
        "debug", None, [f'data.path="{ws}/corpus"', *TOKENS, "train.progress=false", "train.max_steps=2"]
    )
    train(text_config, ws / "text_run")

    # crafted bad files
    (bad / "broken.toml").write_text("[model\nd_model = \n")
    (bad / "deep.toml").write_text("a = " + "[" * 100_000)
    (bad / "text.pkl").write_text("not a pickle")
    (bad / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    (bad / "evil.pkl").write_bytes(pickle.dumps({"states": RunsCommand(f"touch {ws / MARKER}")}))
    actions = np.full((4, 6), 300, dtype=np.int64)
    states = torch.zeros(4, 6, 10)
    (bad / "actions300.pkl").write_bytes(pickle.dumps({"states": states, "actions": torch.from_numpy(actions)}))
    (bad / "latin1.txt").write_bytes("café au lait\n".encode("latin-1") * 20)
    (bad / "empty.txt").write_text("")
    (bad / "tok_types").mkdir()
    (bad / "tok_types" / "tokenizer.json").write_text(
        json.dumps({"kind": "char", "format": 1, "chars": "abc", "special_tokens": []})
    )
    for name, change in (("bpe_ids", "ids"), ("bpe_dev", "device")):
        target = bad / name
        target.mkdir()
        for file in ("tokenizer.json", "merges.txt"):
            (target / file).write_bytes((ws / "bpe" / file).read_bytes())
        if change == "ids":
            ids = json.loads((ws / "bpe" / "vocab.json").read_text())
            (target / "vocab.json").write_text(json.dumps({k: str(v) for k, v in ids.items()}))
        else:
            (target / "vocab.json").symlink_to("/dev/zero")

    corpus_variant(ws, "odd_corpus", lambda raw: raw[:-1])
    corpus_variant(ws, "short_corpus", lambda raw: raw[:-2])
    corpus_variant(ws, "big_id_corpus", lambda raw: raw[:10] + np.uint16(60000).tobytes() + raw[12:])  # token 5

    for name, damage in (("cut_run", "truncate"), ("evil_run", "payload")):
        copy = ws / name
        shutil.copytree(ws / "run", copy)
        for checkpoint in ("last.pt", "best.pt"):
            path = copy / "checkpoints" / checkpoint
            if damage == "truncate":
                path.write_bytes(path.read_bytes()[:5000])
            else:
                torch.save({**read_checkpoint(path), "hook": RunsCommand(f"touch {ws / MARKER}")}, path)


def corpus_variant(ws: Path, name: str, change: Callable[[bytes], bytes]) -> None:
    """A copy of the workspace corpus whose train.bin bytes went through `change`."""
    shutil.copytree(ws / "corpus", ws / name)
    path = ws / name / "train.bin"
    path.write_bytes(change(path.read_bytes()))


class RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def tree_digest(root: Path) -> str:
    """A hash of every path, symlink target and file content under `root`."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("workspace")
    build_workspace(ws)
    return ws


@pytest.fixture(scope="module")
def server(command_server: CommandServer) -> CommandServer:
    return command_server


# ----------------------------------------------------------------------------------------- the tests


def test_the_catalogue_spans_every_command_with_at_least_30_inputs() -> None:
    assert len(CASES) >= 30
    groups = ("data", "tokenizer", "bench", "audit", "sweep")
    commands = {" ".join(c.argv[:2] if c.argv[0] in groups else c.argv[:1]) for c in CASES.values()}
    for command in ("train", "info", "account", "bench train", "data text", "data trajectories", "report"):
        assert command in commands, command
    assert {"tokenizer train", "tokenizer encode", "tokenizer decode", "generate"} <= commands
    experiments = {"plot", "attention", "audit causal-mask", "ablate", "sweep lr", "scaling", "runs"}
    assert experiments <= commands, experiments - commands


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_is_one_clear_line_and_changes_nothing(
    name: str, workspace: Path, server: CommandServer, tmp_path: Path
) -> None:
    case = CASES[name]
    argv = [arg.format(ws=workspace, scratch=tmp_path) for arg in case.argv]
    before = tree_digest(workspace)
    with RunLock(workspace / case.locked) if case.locked else nullcontext():
        result = server.run(argv, tmp_path / "logs")
    lines = result.stderr.strip().splitlines()
    if case.logs_first:
        assert all(" INFO " in line for line in lines[:-1]), result.stderr
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("scratchlm: error: "), result.stderr
    assert case.message.format(ws=workspace) in lines[0]
    assert result.status == case.status, lines[0]
    assert tree_digest(workspace) == before
    assert not (workspace / MARKER).exists()


def test_debug_shows_the_traceback(workspace: Path, server: CommandServer, tmp_path: Path) -> None:
    result = server.run(["--debug", "train", "--resume", str(workspace / "cut_run")], tmp_path)
    assert result.status == EXIT_BAD_INPUT
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.strip().splitlines()[-1].startswith("scratchlm: error: cannot resume: checkpoint")
    after_command = server.run(["train", "--resume", str(workspace / "cut_run"), "--debug"], tmp_path)
    assert after_command.stderr == result.stderr


def test_the_console_script_behaves_like_the_forked_children(workspace: Path, server: CommandServer) -> None:
    """Children of the warm server stand in for fresh processes; check that on two kinds of failure."""
    env = {**os.environ, **CHILD_ENV}
    for name in ("unknown option", "resume a truncated checkpoint"):
        argv = [arg.format(ws=workspace) for arg in CASES[name].argv]
        fresh = subprocess.run([sys.executable, "-m", "scratchlm.cli", *argv], capture_output=True, text=True, env=env)
        forked = server.run(argv, workspace.parent / "console")
        assert (fresh.returncode, fresh.stderr) == (forked.status, forked.stderr)
