"""`scratchlm bench train` as a performance-minded user reads it: warm-up, MFU's peak, strict JSON, the line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from scratchlm.cli import main
from scratchlm.commands.bench_train import readable_line
from scratchlm.config import RunConfig
from scratchlm.errors import EXIT_OUT_OF_MEMORY, ConfigError
from scratchlm.presets import resolve_tables
from scratchlm.train.bench import benchmark_training
from scratchlm.train.run import step_peak_flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from machine_info import strict_json


def strict_loads(text: str) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def debug_config(steps: int) -> RunConfig:
    tables = resolve_tables("debug", None, [f"train.max_steps={steps}"])
    return RunConfig.from_tables(tables)


def test_the_first_step_is_always_untimed_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from scratchlm.train import bench

    timed: list[int] = []
    real = bench.timed_steps

    def recording(run: object, steps: int) -> float:
        timed.append(steps)
        return real(run, steps)  # type: ignore[arg-type]

    monkeypatch.setattr(bench, "timed_steps", recording)
    result = benchmark_training(debug_config(3), steps=2, warmup=0)
    # the first (compiling) step alone, no further warm-up, then the 2 measured steps
    assert timed == [1, 0, 2] and result["warmup_steps"] == 1 and result["steps"] == 2
    with pytest.raises(ConfigError, match="steps >= 1"):
        benchmark_training(debug_config(3), steps=0, warmup=1)


@pytest.mark.parametrize(
    ("gpu", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989e12),
        ("NVIDIA H100 80GB HBM3", None, 494e12),  # TF32
        ("Tesla V100-SXM2-16GB", torch.float16, 125e12),  # was the bf16 entry: None, so no MFU at all
        ("Tesla V100-SXM2-16GB", None, 15.7e12),  # no TF32: FP32
        ("Some Future GPU", torch.bfloat16, None),
    ],
)
def test_mfu_uses_the_peak_of_the_steps_dtype(
    monkeypatch: pytest.MonkeyPatch, gpu: str, dtype: torch.dtype | None, peak: float | None
) -> None:
    """One rule for `bench train` and the trainer's metrics rows (both call step_peak_flops)."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu)
    assert step_peak_flops(torch.device("cuda", 0), dtype) == peak
    assert step_peak_flops(torch.device("cpu"), dtype) is None


def test_cli_json_is_strict_names_the_device_and_adds_up(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train", "--preset", "debug", "--steps", "2", "--warmup", "0", "--json"]) == 0
    result = strict_loads(capsys.readouterr().out.strip())
    assert result["device"] == "cpu" and result["mfu"] is None and result["warmup_steps"] == 1
    # tokens/s is tokens per step over the step time (both rounded in the JSON)
    expected = result["tokens_per_step"] / (result["ms_per_step"] / 1e3)
    assert result["tokens_per_s"] == pytest.approx(expected, rel=1e-3)


def test_readable_line_gives_mfu_as_a_percentage_or_says_there_is_no_peak() -> None:
    result = {
        "tokens_per_s": 2546871.0,
        "ms_per_step": 12.87,
        "tokens_per_step": 32768,
        "steps": 30,
        "warmup_steps": 3,
        "mfu": 0.2881,
        "compile_s": 18.0,
        "peak_memory_gb": 3.78,
        "device": "NVIDIA H100 80GB HBM3",
        "dtype": "bfloat16",
    }
    line = readable_line("tinystories-17m", result)
    assert "2,546,871 tokens/s" in line and "MFU 28.8%" in line and "compile 18.0 s" in line
    assert "peak memory 3.78 GB" in line
    cpu = readable_line("debug", {**result, "mfu": None, "compile_s": None, "peak_memory_gb": None, "device": "cpu"})
    assert "MFU - (no peak known for this device)" in cpu and "compile" not in cpu


def test_benchmark_json_writer_turns_non_finite_values_into_null() -> None:
    text = strict_json({"a": float("nan"), "b": [1.0, float("inf")], "c": (2, -float("inf")), "d": "x"})
    assert strict_loads(text) == {"a": None, "b": [1.0, None], "c": [2, None], "d": "x"}


def test_a_batch_too_large_for_memory_is_one_sentence_with_the_batch_that_fits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real refusal: 10^10 windows of 33 positions are more than any machine holds, so it is refused before
    the model is built (it used to be reported as an internal error of scratchlm)."""
    args = ["bench", "train", "--preset", "debug", "--set", "train.batch_size=10000000000", "--steps", "1"]
    assert main(args) == EXIT_OUT_OF_MEMORY
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0 and "internal error" not in line
    assert "a training step at train.batch_size=10000000000 needs at least" in line
    assert "lower train.batch_size (raise train.grad_accum by the same factor" in line and "heckpoint" not in line


@pytest.mark.parametrize("setting", ["model.vocab_size", "model.context_length"])
def test_a_model_too_large_to_build_is_one_sentence(setting: str, capsys: pytest.CaptureFixture[str]) -> None:
    # 10^11 rows of the embedding (25.6 TB in fp32) or of RoPE's cos/sin tables (a buffer, in no parameter
    # count) are refused at once: nothing is touched before.
    args = ["bench", "train", "--preset", "debug", "--set", f"{setting}=100000000000", "--steps", "1"]
    assert main(args) == EXIT_OUT_OF_MEMORY
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0 and "for its weights, gradients and AdamW state, but only" in line and setting in line
