"""Mistakes found by walking the experiment commands end to end: a --set that no run gets, rates and factors
that slip past the checks, an exploding ablation variant counted as a result, one damaged run that took the
whole experiment log down."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from scratchlm.analysis.ablate import Study, grid_variants, parse_grid, run_study
from scratchlm.analysis.runs_table import runs_table
from scratchlm.analysis.sweep import lr_sweep
from scratchlm.cli import main
from scratchlm.errors import EXIT_OUT_OF_MEMORY, ConfigError
from scratchlm.presets import resolve_run_config
from scratchlm.train.trainer import train
from tests.experiment_helpers import debug_overrides, tiny_trajectories


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_trajectories(tmp_path_factory.mktemp("data"))


def _study(grid: dict, overrides: list[str], seeds: list[int] | None = None) -> Study:
    return Study("walk", "debug", grid_variants(grid), seeds or [0], overrides=overrides)


# ------------------------------------------------------------------------------------------------ ablate


@pytest.mark.parametrize("extra", ["model.positional=none", "train.seed=5"])
def test_an_ablation_refuses_a_set_that_no_run_would_get(tmp_path: Path, data: Path, extra: str) -> None:
    # Each run's seed and the grid's own keys replace the --set, while results.md would list it as the recipe.
    study = _study({"model.positional": ["rope", "learned"]}, [*debug_overrides(data, 2), extra])
    with pytest.raises(ConfigError, match=re.escape(f"--set {extra} would be replaced")):
        run_study(study, tmp_path / "s")
    assert not (tmp_path / "s").exists()  # refused before any run trained


def test_a_set_that_some_variants_keep_is_allowed(tmp_path: Path, data: Path) -> None:
    study = Study(
        "walk",
        "debug",
        [grid_variants({"model.norm": ["layernorm"]})[0], grid_variants({"model.ffn": ["gelu"]})[0]],
        [0],
        overrides=[*debug_overrides(data, 2), "model.norm=rmsnorm"],  # the gelu variant runs with rmsnorm
    )
    results = run_study(study, tmp_path / "s")
    assert {v["variant"] for v in results["variants"]} == {"norm=layernorm", "ffn=gelu"}


def test_a_grid_without_a_section_is_refused_naming_grid(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"^--grid expects section.key"):
        parse_grid(["foo=1,2"])
    assert main(["ablate", "--preset", "debug", "--grid", "model=1,2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scratchlm: error: --grid expects")


@pytest.mark.parametrize("command", ["ablate", "sweep"])
def test_a_model_too_large_for_memory_is_the_trainers_sentence_before_any_run(
    tmp_path: Path, data: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Studies measure the untrained model's loss before the first run (`sweep.start_loss`): a model the
    allocator refuses used to fail there with the generic out-of-memory line, not the trainer's advice."""
    sets = [arg for item in debug_overrides(data, 2) for arg in ("--set", item)]
    huge = "model.d_model=100000000000"  # a 10^11-wide embedding: refused at once
    args = {
        "ablate": ["ablate", "--preset", "debug", *sets, "--grid", f"{huge},64"],
        "sweep": ["sweep", "lr", "--preset", "debug", *sets, "--set", huge, "--values", "1e-3", "1e-2"],
    }[command]
    assert main([*args, "--out", str(tmp_path / "study")]) == EXIT_OUT_OF_MEMORY
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scratchlm: error: building the model (")
    assert "choose a smaller model (model.d_model" in err[0]


def test_an_exploding_variant_is_marked_diverged_and_left_out_of_the_means(tmp_path: Path, data: Path) -> None:
    # lr 30 finishes without a NaN at a loss far above ln V: it is no result for that variant.
    study = _study({"optim.lr": [3e-3, 30.0]}, debug_overrides(data, 12), seeds=[0, 1])
    results = run_study(study, tmp_path / "s")
    by_name = {v["variant"]: v for v in results["variants"]}
    assert by_name["lr=30.0"]["seeds_diverged"] == 2 and by_name["lr=30.0"]["final_val_loss"] is None
    assert by_name["lr=0.003"]["seeds_diverged"] == 0 and by_name["lr=0.003"]["final_val_loss"]["n"] == 2
    assert results["variants"][0]["variant"] == "lr=0.003"
    table = (tmp_path / "s" / "results.md").read_text()
    assert "| lr=30.0 | diverged |" in table and "0 (+2 diverged)" in table
    again = run_study(study, tmp_path / "s")  # reused runs are judged the same way
    assert {v["variant"]: v["seeds_diverged"] for v in again["variants"]} == {"lr=0.003": 0, "lr=30.0": 2}


# ------------------------------------------------------------------------------------------------- sweep


@pytest.mark.parametrize("rates", [[math.nan, 1e-3], [math.inf, 1e-3]])
def test_a_sweep_refuses_rates_that_are_not_finite(tmp_path: Path, data: Path, rates: list[float]) -> None:
    with pytest.raises(ConfigError, match="positive learning rates and finite numbers"):
        lr_sweep("debug", rates, tmp_path / "s", debug_overrides(data, 2))
    assert not (tmp_path / "s").exists()


def test_a_sweep_refuses_a_nan_factor_and_a_set_rate(tmp_path: Path, data: Path) -> None:
    with pytest.raises(ConfigError, match="explosion factor must be > 1"):
        lr_sweep("debug", [1e-3, 1e-2], tmp_path / "s", debug_overrides(data, 2), factor=math.nan)
    with pytest.raises(ConfigError, match=re.escape("--set optim.lr=5e-3 would be replaced by each rate")):
        lr_sweep("debug", [1e-3, 1e-2], tmp_path / "s", [*debug_overrides(data, 2), "optim.lr=5e-3"])
    assert not (tmp_path / "s").exists()


def test_a_sweep_refuses_another_explode_factor_in_the_same_out(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "s"
    lr_sweep("debug", [1e-3, 1e-2], out, debug_overrides(data, 2))
    before = (out / "results.md").read_text()
    with pytest.raises(ConfigError, match=re.escape("judged with --explode-factor 1.5, not 3")):
        lr_sweep("debug", [1e-3, 1e-2, 3e-2], out, debug_overrides(data, 2), factor=3.0)
    assert (out / "results.md").read_text() == before and not (out / "lr=0.03").exists()
    wider = lr_sweep("debug", [1e-3, 1e-2, 3e-2], out, debug_overrides(data, 2), factor=1.5)
    assert len(wider["runs"]) == 3


# -------------------------------------------------------------------------------------------------- runs


def test_the_experiment_log_lists_a_run_whose_summary_is_damaged(tmp_path: Path, data: Path) -> None:
    good = tmp_path / "runs" / "good"
    train(resolve_run_config("debug", None, debug_overrides(data, 2)), good)
    for name, summary in (("truncated", '{"steps": 2'), ("list", "[]"), ("wrong-type", '{"steps": "x"}')):
        shutil.copytree(good, tmp_path / "runs" / name)
        (tmp_path / "runs" / name / "summary.json").write_text(summary)
    wrong = json.loads((good / "summary.json").read_text())
    wrong["steps"] = wrong["total_steps"] = "x"  # "finished" by the equality check, but no step count
    shutil.copytree(good, tmp_path / "runs" / "equal-strings")
    (tmp_path / "runs" / "equal-strings" / "summary.json").write_text(json.dumps(wrong))
    rows = {r.name: r for r in runs_table(tmp_path / "runs")}
    assert rows["good"].status == "finished" and rows["good"].steps == 2
    for name in ("truncated", "list", "equal-strings"):
        assert rows[name].status.startswith("damaged"), name
        assert rows[name].steps == 2  # from metrics.jsonl
    assert rows["wrong-type"].status == "incomplete"  # steps != total_steps: read as cut short
