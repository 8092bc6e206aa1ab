"""Config layers: a command's own settings below the user's --set, what an experiment varies above it, and
a training budget in any layer replacing the budgets below it (two budgets in one layer stay an error)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scratchlm.analysis.ablate import grid_variants, study_from_tables
from scratchlm.analysis.audit import QUICK_OVERRIDES
from scratchlm.cli import main
from scratchlm.config import RunConfig
from scratchlm.errors import ConfigError
from scratchlm.presets import BUDGET_KEYS, load_toml_file, resolve_run_config, resolve_tables
from scratchlm.studies import load_study_tables
from tests.experiment_helpers import tiny_trajectories


def budget(config: RunConfig) -> dict[str, Any]:
    values = {key: getattr(config.train, key) for key in BUDGET_KEYS}
    return {key: value for key, value in values.items() if value is not None}


def test_the_users_budget_replaces_a_commands_own() -> None:
    config = resolve_run_config("scratch1", None, ["train.max_steps=40"], under=[list(QUICK_OVERRIDES)])
    assert budget(config) == {"max_steps": 40}
    assert config.model.d_model == 128  # the rest of --quick's recipe still applies


def test_what_an_experiment_varies_wins_over_the_users_set() -> None:
    config = resolve_run_config("debug", None, ["train.max_steps=40", "model.d_model=64"], over=[["train.epochs=1"]])
    assert budget(config) == {"epochs": 1} and config.model.d_model == 64


def test_the_layers_stack_around_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("[train]\nmax_tokens = 5000\n")
    below_file = resolve_run_config("debug", str(path), [], under=[["train.epochs=3"]])
    assert budget(below_file) == {"max_tokens": 5000}  # the user's file wins over the command's layer
    above_file = resolve_run_config("debug", str(path), ["train.epochs=2"], under=[["train.epochs=3"]])
    assert budget(above_file) == {"epochs": 2}


def test_two_budgets_in_one_layer_are_still_an_error() -> None:
    with pytest.raises(ConfigError, match="set exactly one training budget"):
        resolve_run_config("debug", None, ["train.epochs=2", "train.max_steps=3"])
    with pytest.raises(ConfigError, match="set exactly one training budget"):
        resolve_run_config("debug", None, [], under=[["train.epochs=2", "train.max_steps=3"]])


def test_a_layer_given_as_a_bare_string_is_refused() -> None:
    with pytest.raises(TypeError, match="a layer is a list"):
        resolve_tables("debug", None, [], under=["train.epochs=2"])


def test_a_studys_budget_gives_way_to_the_users_and_the_variant_and_seed_win() -> None:
    study = study_from_tables("positions-trajectories", load_study_tables("positions-trajectories"))
    assert study.study_set == ["train.epochs=2", "train.progress=false"]
    study.overrides = ["train.max_steps=20", "train.seed=99", "model.positional=learned"]
    variant = next(v for v in study.variants if v.values == {"model.positional": "none"})
    config = study.run_config(variant, 1)
    assert budget(config) == {"max_steps": 20} and not config.train.progress
    assert config.model.positional == "none" and config.train.seed == 1
    varied = study.run_config(grid_variants({"train.max_tokens": [1000]})[0], 0)
    assert budget(varied) == {"max_tokens": 1000}  # a grid over the budget is the point of its study


def test_ablate_study_and_audit_quick_take_the_users_budget(tmp_path: Path) -> None:
    data = tiny_trajectories(tmp_path)
    path = f"data.path={json.dumps(str(data))}"
    study_out, audit_out = tmp_path / "study", tmp_path / "audit"
    args = ["--set", path, "--set", "train.max_steps=2", "--set", "train.eval_interval=2"]
    assert main(["ablate", "--study", "positions-trajectories", "--seeds", "1", *args, "--out", str(study_out)]) == 0
    saved = load_toml_file(str(study_out / "positional=rope_seed0" / "config.toml"))["train"]
    assert saved["max_steps"] == 2 and "epochs" not in saved
    results = json.loads((study_out / "results.json").read_text())
    assert results["study_set"] == ["train.epochs=2", "train.progress=false"] and "train.max_steps=2" in results["set"]
    assert "changes the study's recipe" in (study_out / "results.md").read_text()  # its "2 epochs, 3 seeds" is not
    assert (
        main(
            ["audit", "causal-mask", "--preset", "debug", "--quick", *args, "--eval-rows", "2", "--out", str(audit_out)]
        )
        == 0
    )
    saved = load_toml_file(str(audit_out / "masked" / "config.toml"))
    assert saved["train"]["max_steps"] == 2 and "epochs" not in saved["train"] and saved["model"]["d_model"] == 128
    record = json.loads((audit_out / "audit.json").read_text())
    assert record["quick_overrides"] == list(QUICK_OVERRIDES) and "train.max_steps=2" in record["set"]
