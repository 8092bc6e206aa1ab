"""`scratchlm scaling` as a user meets it: compute budgets kept to whole optimizer steps, --set values the sizes
would replace, and odd budgets and sizes refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchlm.analysis.accounting import flops_per_token
from scratchlm.analysis.scaling import Size, parse_sizes, scaling_study, size_overrides
from scratchlm.cli import main
from scratchlm.errors import ConfigError
from scratchlm.presets import resolve_run_config
from tests.experiment_helpers import debug_overrides, tiny_trajectories

SIZES = "1x8,1x16,2x32"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_trajectories(tmp_path_factory.mktemp("data"))


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["scaling", "--preset", "debug", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_compute_matched_runs_spend_at_most_their_budget_in_whole_steps(tmp_path: Path, data: Path) -> None:
    # 8 sequences of 19 positions, 2 micro-batches a step: 304 tokens per optimizer step.
    overrides = [*debug_overrides(data, 10), "train.grad_accum=2"]
    compute = 6e7
    results = scaling_study("debug", parse_sizes([SIZES]), tmp_path / "s", overrides, compute=compute)
    for p in results["points"]:
        extra = size_overrides(Size(p["num_layers"], p["d_model"]), "debug", None, overrides)
        config = resolve_run_config("debug", None, [*overrides, *extra])
        step_flops = flops_per_token(config.model, 19) * 304
        assert p["tokens"] % 304 == 0  # whole steps, as the trainer runs them
        # At or under the budget, and not a whole step under it: the most steps the budget buys.
        assert compute - step_flops < p["train_flops"] <= compute
    assert results["tokens_per_step"] == 304
    saved = json.loads((tmp_path / "s" / "results.json").read_text())
    assert [p["train_flops"] for p in saved["points"]] == [p["train_flops"] for p in results["points"]]
    text = (tmp_path / "s" / "results.md").read_text()
    assert "rounded down to whole optimizer steps of 304 tokens" in text
    lowest = min(p["train_flops"] for p in results["points"]) / compute
    assert f"{100 * lowest:.1f}%" in text


def test_a_compute_budget_below_one_step_is_refused_before_training(tmp_path: Path, data: Path) -> None:
    with pytest.raises(ConfigError, match=r"--compute 1000 buys size 2x32 less than one optimizer step") as err:
        scaling_study("debug", parse_sizes([SIZES]), tmp_path / "s", debug_overrides(data, 10), compute=1e3)
    assert "give --compute" in str(err.value)
    assert not (tmp_path / "s").exists()


def test_fixed_tokens_say_what_the_runs_trained(tmp_path: Path, data: Path) -> None:
    results = scaling_study("debug", parse_sizes([SIZES]), tmp_path / "s", debug_overrides(data, 10), tokens=300)
    assert {p["tokens"] for p in results["points"]} == {304}  # the trainer's whole steps: 2 x 152
    text = (tmp_path / "s" / "results.md").read_text()
    assert "`--tokens 300` (304 trained: whole optimizer steps of 152 tokens)" in text


@pytest.mark.parametrize("item", ["model.num_layers=4", "model.d_model=64", " model . num_layers = 3"])
def test_a_set_that_every_size_replaces_is_refused(
    item: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "".join(item.split("=")[0].split())
    with pytest.raises(ConfigError, match=f"--set {item} would be replaced in every run: every size sets {key}"):
        scaling_study("debug", parse_sizes([SIZES]), tmp_path / "s", [*debug_overrides(data, 10), item], tokens=300)
    assert not (tmp_path / "s").exists()
    code, _, err = _cli(capsys, "--sizes", SIZES, "--set", item, "--out", str(tmp_path / "cli"))
    assert code == 2 and err.count("\n") == 1 and "--sizes" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_a_compute_budget_that_is_not_a_finite_number_is_one_line(
    value: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--sizes", SIZES, f"--compute={value}", "--set", f"data.path={json.dumps(str(data))}"]
    code, _, err = _cli(capsys, *args, "--out", str(tmp_path / "s"))
    assert code == 2 and err.count("\n") == 1
    assert "--compute must be a positive, finite number of FLOPs" in err and "internal error" not in err
    with pytest.raises(ConfigError, match="positive, finite"):
        scaling_study("debug", parse_sizes([SIZES]), tmp_path / "s", debug_overrides(data), compute=float(value))
    with pytest.raises(ConfigError, match="--tokens must be positive"):
        scaling_study("debug", parse_sizes([SIZES]), tmp_path / "s", debug_overrides(data), tokens=0)


def test_a_size_with_no_layers_or_no_width_names_the_size() -> None:
    for bad in ("0x8", "2x0"):
        with pytest.raises(ConfigError, match=f"--sizes {bad}: layers and d_model must both be at least 1"):
            parse_sizes([f"{bad},1x16,2x32"])


def test_tokens_take_the_e_notation_that_compute_takes(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--sizes", SIZES, "--set", f"data.path={json.dumps(str(data))}", "--set", "train.progress=false"]
    code, out, _ = _cli(capsys, *args, "--tokens", "3e2", "--out", str(tmp_path / "s"))
    assert code == 0 and out.count("tokens=       304") == 3
    assert "`--tokens 300`" in (tmp_path / "s" / "results.md").read_text()
    for bad in ("2.5", "1e400", "lots"):
        with pytest.raises(SystemExit) as exit_:
            _cli(capsys, *args, "--tokens", bad, "--out", str(tmp_path / "bad"))
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1
        assert f"argument --tokens: want a whole number of tokens such as 1000000 or 1e6, not '{bad}'" in err


def test_the_reproduce_command_and_the_table_keep_every_digit_of_the_compute_budget(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--sizes", SIZES, "--set", f"data.path={json.dumps(str(data))}", "--set", "train.progress=false"]
    assert _cli(capsys, *args, "--compute", "60000001", "--out", str(tmp_path / "s"))[0] == 0
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["compute"] == 60000001 and " --compute 60000001 " in results["command"]
    assert "`--compute 60000001` FLOPs each" in (tmp_path / "s" / "results.md").read_text()
    assert all(p["train_flops"] <= 60000001 for p in results["points"])


def test_a_size_the_model_cannot_take_is_named(tmp_path: Path, data: Path) -> None:
    # 1x3 is narrower than a head of 8: one head of 3, which RoPE (pairs of dimensions) cannot rotate.
    refused = r"^--sizes 1x3 gives a model the config refuses \(RoPE rotates pairs.*\); pick another width"
    with pytest.raises(ConfigError, match=refused):
        scaling_study("debug", parse_sizes(["1x3,1x16,2x32"]), tmp_path / "s", debug_overrides(data), tokens=300)
