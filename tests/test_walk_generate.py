"""A user's walk through `scratchlm generate` and `scratchlm.generate`: what broke and now holds.

Tiny seeded char-level runs with random weights; every case runs in well under a second.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from scratchlm.cli import main
from scratchlm.config import ModelConfig
from scratchlm.data.text import prepare_text_corpus
from scratchlm.errors import ConfigError
from scratchlm.infer import compiled_step
from scratchlm.infer.generate import generate
from scratchlm.model import TransformerLM
from scratchlm.presets import resolve_run_config, to_toml
from scratchlm.train.checkpoint import save_checkpoint
from tests.test_generate import one_error_line

TEXT = "the quick brown fox jumps over the lazy dog.<|endoftext|>" * 40


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A char-level text run whose checkpoints/ holds last.pt and step_000000100.pt (different weights)."""
    root = tmp_path_factory.mktemp("walk-gen")
    (root / "in.txt").write_text(TEXT, encoding="utf-8")
    meta = prepare_text_corpus(root / "in.txt", root / "data", "char", special_tokens=["<|endoftext|>"], progress=False)
    overrides = [
        'data.kind="tokens"',
        f"data.path={json.dumps(str(root / 'data'))}",
        f"model.vocab_size={meta['vocab_size']}",
    ]
    config = resolve_run_config("debug", None, overrides)
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text(to_toml(config.to_tables()), encoding="utf-8")
    extra = {"run_config": config.to_tables()}  # what the trainer stores in every checkpoint
    torch.manual_seed(0)
    save_checkpoint(TransformerLM(config.model), None, 0, run / "checkpoints" / "last.pt", extra)
    torch.manual_seed(1)
    save_checkpoint(TransformerLM(config.model), None, 100, run / "checkpoints" / "step_000000100.pt", extra)
    return run


def generated(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["generate", *args, "--prompt", "the fox", "--max-new-tokens", "10", "--seed", "4"]) == 0
    return capsys.readouterr().out


# ------------------------------------------------------------------------------------------- --seed


@pytest.mark.parametrize("seed", ["100000000000000000000000", str(2**64), str(-(2**63) - 1)])
def test_a_seed_past_64_bits_is_one_error_line_not_an_internal_error(
    run_dir: Path, capsys: pytest.CaptureFixture[str], seed: str
) -> None:
    assert main(["generate", "--run", str(run_dir), "--prompt", "fox", "--seed", seed]) == 2
    assert "--seed" in one_error_line(capsys)


def test_the_library_refuses_a_seed_torch_cannot_take_and_keeps_every_one_it_can() -> None:
    model = TransformerLM(ModelConfig(vocab_size=11, context_length=16, d_model=16, num_layers=1, num_heads=2))
    for bad in (2**64, 1.5, True):
        with pytest.raises(ConfigError, match="seed"):
            generate(model, [1, 2], max_new_tokens=2, seed=bad)
    for edge in (-(2**63), -1, 2**64 - 1):
        first = generate(model, [1, 2], max_new_tokens=4, seed=edge).tokens
        assert generate(model, [1, 2], max_new_tokens=4, seed=edge).tokens == first


# ------------------------------------------------------------------------------- a huge temperature


def test_top_k_one_stays_greedy_at_an_infinite_temperature(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    greedy = generated(capsys, "--run", str(run_dir), "--temperature", "0")
    assert generated(capsys, "--run", str(run_dir), "--temperature", "inf", "--top-k", "1") == greedy
    assert generated(capsys, "--run", str(run_dir), "--temperature", "1e39", "--top-k", "1") == greedy


# ---------------------------------------------------------------------------- which checkpoint


def test_a_checkpoint_file_given_as_the_run_generates_as_its_run_does(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = generated(capsys, "--run", str(run_dir), "--checkpoint", "last")
    assert generated(capsys, "--run", str(run_dir / "checkpoints" / "last.pt")) == expected
    # Moved out of its run, the checkpoint still knows its data (the run config the trainer stores in it).
    moved = tmp_path / "last.pt"
    shutil.copy(run_dir / "checkpoints" / "last.pt", moved)
    assert generated(capsys, "--run", str(moved)) == expected


def test_a_loose_checkpoint_without_a_run_config_and_a_doubled_choice_are_one_error_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare.pt"
    save_checkpoint(TransformerLM(ModelConfig(vocab_size=40, context_length=64, d_model=32, num_layers=1, num_heads=4)),
                    None, 0, bare)  # fmt: skip
    assert main(["generate", "--run", str(bare), "--prompt", "fox"]) == 2
    assert "--run runs/NAME --checkpoint PATH" in one_error_line(capsys)
    last = str(run_dir / "checkpoints" / "last.pt")
    assert main(["generate", "--run", last, "--checkpoint", "best", "--prompt", "fox"]) == 2
    assert "drop one of them" in one_error_line(capsys)


def test_a_step_checkpoint_is_chosen_by_its_step_or_its_name(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    by_step = generated(capsys, "--run", str(run_dir), "--checkpoint", "100")
    assert by_step == generated(capsys, "--run", str(run_dir), "--checkpoint", "step_000000100")
    assert by_step == generated(capsys, "--run", str(run_dir), "--checkpoint", "step_000000100.pt")
    assert by_step != generated(capsys, "--run", str(run_dir), "--checkpoint", "last")  # other weights
    assert main(["generate", "--run", str(run_dir), "--checkpoint", "200", "--prompt", "fox"]) == 2
    line = one_error_line(capsys)
    assert "holds last, step_000000100" in line and "a step" in line


# -------------------------------------------------------------------------- flags that do nothing


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--prompt", "fox", "--json", "out.json"], "--json writes rollout metrics"),
        (["--from-val", "0", "--num-samples", "2"], "--num-samples applies to --prompt"),
        (["--rollout", "4", "--json", "/no/such/folder/metrics.json"], "does not exist; create it first"),
    ],
)
def test_a_flag_that_would_be_ignored_or_fail_late_is_refused_first(
    run_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    assert main(["generate", "--run", str(run_dir), *extra]) == 2
    assert match in one_error_line(capsys)


def test_a_text_run_given_a_rollout_names_the_flag_that_fits(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--run", str(run_dir), "--rollout", "3"]) == 2
    assert "give it --prompt TEXT" in one_error_line(capsys)


# ------------------------------------------------------------------------------------ tokens/s


class SlowToBuildStep:
    """Stands in for a compiled step: building it takes SETUP_S, each step is the eager static-cache forward."""

    SETUP_S = 0.5

    def __init__(self, model: TransformerLM, cache: object) -> None:
        time.sleep(self.SETUP_S)
        self.model, self.cache = model, cache

    def __call__(self, tokens_B: torch.Tensor) -> torch.Tensor:
        logits_B1V, _ = self.model(tokens_B.view(-1, 1), kv_cache=self.cache)
        return logits_B1V[:, -1]


def test_tokens_per_second_leave_the_step_s_compile_out(
    run_dir: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compiled_step, "CompiledDecodeStep", SlowToBuildStep)
    eager = generated(capsys, "--run", str(run_dir))
    for samples in ("1", "2"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="scratchlm.commands.generate"):
            out = generated(capsys, "--run", str(run_dir), "--compile", "--num-samples", samples)
        assert out == eager if samples == "1" else out.count("--- sample ") == 2
        (speed,) = [m for m in caplog.messages if m.startswith("generated ")]
        seconds = float(re.match(r"generated \d+ tokens in ([\d.]+) s", speed).group(1))
        assert seconds < SlowToBuildStep.SETUP_S, speed  # the half second of "compiling" is not decoding
        assert re.search(r"; 0\.5\d\d s compiling/capturing the step excluded\)", speed), speed

    model = TransformerLM(ModelConfig(vocab_size=11, context_length=16, d_model=16, num_layers=1, num_heads=2))
    out = generate(model, [1, 2], max_new_tokens=4, compile=True, temperature=0)
    assert out.setup_s >= SlowToBuildStep.SETUP_S
    assert out.tokens == generate(model, [1, 2], max_new_tokens=4, temperature=0).tokens
    assert generate(model, [1, 2], max_new_tokens=4, temperature=0).setup_s == 0.0
