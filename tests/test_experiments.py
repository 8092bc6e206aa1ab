"""Experiments on tiny debug runs: the trainer's monitor hook, resumable runs, lr sweeps with divergence,
ablation studies, scaling fits, the causal-mask audit and the prefix-only evaluation it rests on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from scratchlm.analysis.ablate import Study, grid_variants, parse_grid, run_study, study_from_tables
from scratchlm.analysis.accounting import flops_per_token
from scratchlm.analysis.audit import causal_mask_audit
from scratchlm.analysis.causal_eval import prefix_logits
from scratchlm.analysis.scaling import Size, _reading, parse_sizes, scaling_study, size_overrides
from scratchlm.analysis.study_runs import read_outcome, run_or_reuse
from scratchlm.analysis.sweep import DivergenceMonitor, lr_sweep
from scratchlm.cli import main
from scratchlm.config import ModelConfig
from scratchlm.errors import ConfigError, DataError
from scratchlm.model import TransformerLM
from scratchlm.presets import load_toml_file, resolve_run_config
from scratchlm.studies import list_studies, load_study_tables
from scratchlm.train.tracking import read_metrics
from scratchlm.train.trainer import train
from tests.experiment_helpers import debug_overrides, tiny_trajectories


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_trajectories(tmp_path_factory.mktemp("data"))


# ------------------------------------------------------------------------------------- monitor and reuse


def test_a_monitor_stops_the_run_and_the_summary_says_why(tmp_path: Path, data: Path) -> None:
    seen: list[int] = []

    def monitor(row: dict) -> str | None:
        seen.append(row["step"])
        return "enough" if row["step"] >= 6 else None

    summary = train(resolve_run_config("debug", None, debug_overrides(data, 12)), tmp_path / "run", monitor=monitor)
    assert seen == [2, 4, 6] and summary["steps"] == 6 and summary["stopped"] == "enough"
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped"] == "enough"


def test_the_divergence_monitor_waits_for_warmup_then_catches_explosions_and_undone_learning() -> None:
    monitor = DivergenceMonitor(warmup_steps=10, factor=1.5)
    assert monitor({"step": 5, "train_loss": 5.0}) is None
    assert monitor({"step": 8, "train_loss": 9.0}) is None  # during warmup a spike is tolerated
    assert monitor({"step": 12, "train_loss": 2.0}) is None
    assert "exploded above 1.5x its best 2.000" in monitor({"step": 14, "train_loss": 3.5})
    undone = DivergenceMonitor(warmup_steps=0, factor=10.0)
    undone({"step": 1, "train_loss": 5.0})
    undone({"step": 2, "train_loss": 4.0})
    assert undone({"step": 3, "train_loss": 5.2}) is None  # within the 5% margin: noise of a barely moving run
    assert "rose above its first logged value 5.000" in undone({"step": 4, "train_loss": 5.3})
    assert "nan" in DivergenceMonitor(0)({"step": 1, "train_loss": math.nan})


def test_a_finished_run_is_reused_and_a_changed_config_refused(tmp_path: Path, data: Path) -> None:
    config = resolve_run_config("debug", None, debug_overrides(data, 6))
    first = run_or_reuse(config, tmp_path / "run")
    assert first.status == "finished" and not first.reused
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    again = run_or_reuse(config, tmp_path / "run")
    assert again.reused and again.final_val_loss == first.final_val_loss
    assert read_metrics(tmp_path / "run" / "metrics.jsonl") == rows
    other = resolve_run_config("debug", None, [*debug_overrides(data, 6), "model.d_model=64"])
    with pytest.raises(ConfigError, match="holds a run with a different config"):
        run_or_reuse(other, tmp_path / "run")


def test_a_finished_run_on_data_that_changed_since_is_not_reused(tmp_path: Path) -> None:
    data = tiny_trajectories(tmp_path)
    config = resolve_run_config("debug", None, debug_overrides(data, 4))
    assert run_or_reuse(config, tmp_path / "run").status == "finished"
    assert run_or_reuse(config, tmp_path / "run").reused  # the same data: read back
    from scratchlm.data.trajectories import generate_trajectories
    from scratchlm.data.trajectory_io import save_trajectories

    save_trajectories(generate_trajectories(300, seq_length=20, seed=9, fast=True), data)
    with pytest.raises(DataError, match=r"was trained on .* reused, it would share a table"):
        run_or_reuse(config, tmp_path / "run")


def test_a_finished_run_resumed_for_more_steps_reads_as_interrupted_until_it_ends(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchlm.analysis.runs_table import runs_table
    from scratchlm.train import trainer

    train(resolve_run_config("debug", None, debug_overrides(data, 4)), tmp_path / "run")
    real_step, calls = trainer.train_step, []

    def killed_on_the_third(run):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        longer = resolve_run_config("debug", None, [*debug_overrides(data, 4), "train.max_steps=40"])
        train(longer, tmp_path / "run", resume=True)
    assert read_outcome(tmp_path / "run") is None  # not "finished at step 4" any more: resumable
    assert runs_table(tmp_path / "run")[0].status != "finished"


def test_a_run_cut_short_is_resumed_and_a_nan_is_recorded_not_raised(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = resolve_run_config("debug", None, debug_overrides(data, 8))
    train(config, tmp_path / "cut", stop_after=4)
    assert read_outcome(tmp_path / "cut") is None  # resumable, not done
    resumed = run_or_reuse(config, tmp_path / "cut")
    assert resumed.status == "finished" and resumed.summary["steps"] == 8

    original = TransformerLM.forward

    def poisoned(self: TransformerLM, idx: torch.Tensor, targets: torch.Tensor | None = None, **kw: object):
        logits, loss = original(self, idx, targets, **kw)
        return logits, (loss * math.nan if loss is not None else None)

    monkeypatch.setattr(TransformerLM, "forward", poisoned)
    outcome = run_or_reuse(config, tmp_path / "nan")
    assert outcome.diverged and "non-finite" in outcome.reason
    assert outcome.steps == 1 and outcome.summary["total_steps"] > 1  # for the tables' "steps run" column
    assert read_outcome(tmp_path / "nan").diverged  # a second invocation reuses the verdict


# ------------------------------------------------------------------------------------------- lr sweep


def test_an_lr_sweep_marks_the_divergent_rate_and_reports_the_best(tmp_path: Path, data: Path) -> None:
    overrides = [*debug_overrides(data, 16), "optim.warmup_steps=2", "optim.grad_clip=0.0"]
    results = lr_sweep("debug", [3e-3, 1e-4, 30.0], tmp_path / "sweep", overrides)
    by_lr = {r["lr"]: r for r in results["runs"]}
    assert list(by_lr) == [1e-4, 3e-3, 30.0]
    assert by_lr[30.0]["status"] == "diverged" and by_lr[30.0]["steps"] < 16
    assert by_lr[3e-3]["status"] == by_lr[1e-4]["status"] == "finished"
    assert results["best_lr"] == 3e-3 and results["smallest_diverged_lr"] == 30.0
    assert results["largest_stable_lr"] == 3e-3
    for name in ("results.md", "results.json", "curves.png", "curves.svg", "lr_vs_loss.png"):
        assert (tmp_path / "sweep" / name).is_file(), name
    text = (tmp_path / "sweep" / "results.md").read_text()
    assert "Best learning rate: **0.003**" in text
    assert "None" not in text and f"{by_lr[30.0]['steps']} / 16" in text
    assert "with seed 1337 (`train.seed`" in text and "preset `debug`" in text  # which recipe and seed, stated


def test_the_sweep_keeps_a_presets_min_lr_ratio(tmp_path: Path, data: Path) -> None:
    overrides = [*debug_overrides(data, 4), "optim.min_lr=1e-3"]  # debug: lr 3e-3, so min_lr = lr / 3
    lr_sweep("debug", [3e-4], tmp_path / "sweep", overrides)
    saved = load_toml_file(str(tmp_path / "sweep" / "lr=0.0003" / "config.toml"))
    assert saved["optim"]["min_lr"] == pytest.approx(1e-4)
    text = (tmp_path / "sweep" / "results.md").read_text()  # one rate: no best rate claimed
    assert "Only one rate was tried (0.0003, finished)" in text and "Best learning rate" not in text


def test_the_sweep_command_refuses_one_rate_and_rates_sharing_a_run_name(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", "lr", "--preset", "debug", "--values", "1e-3", "--out", str(tmp_path / "s")]) == 2
    assert "a sweep compares at least 2 learning rates, got '1e-3'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"both round to lr=0\.001"):
        lr_sweep("debug", [1e-3, 1.0001e-3], tmp_path / "s", debug_overrides(data, 2))
    assert not (tmp_path / "s").exists()  # refused before anything ran


def test_an_out_holding_another_experiment_is_refused_and_its_results_kept(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "out"
    lr_sweep("debug", [1e-3, 3e-3], out, debug_overrides(data, 4))
    saved = (out / "results.md").read_text()
    study = Study("t", "debug", grid_variants({"model.norm": ["rmsnorm", "layernorm"]}), [0], debug_overrides(data, 4))
    with pytest.raises(ConfigError, match="already holds the results of a learning-rate sweep, not an ablation"):
        run_study(study, out)
    with pytest.raises(ConfigError, match=r"leaves out \(lr=0.003\)"):  # a narrower sweep would drop a rate
        lr_sweep("debug", [1e-3], out, debug_overrides(data, 4))
    assert (out / "results.md").read_text() == saved and not (out / "norm=rmsnorm_seed0").exists()
    wider = lr_sweep("debug", [1e-3, 3e-3, 1e-2], out, debug_overrides(data, 4))  # extending is fine
    assert [r["lr"] for r in wider["runs"]] == [1e-3, 3e-3, 1e-2]
    assert json.loads((out / "results.json").read_text())["experiment"] == "lr-sweep"


def test_a_changed_config_is_refused_before_any_run_trains(tmp_path: Path, data: Path) -> None:
    study = Study("t", "debug", grid_variants({"model.norm": ["rmsnorm", "layernorm"]}), [0], debug_overrides(data, 4))
    run_or_reuse(resolve_run_config("debug", None, debug_overrides(data, 9)), tmp_path / "s" / "norm=layernorm_seed0")
    with pytest.raises(ConfigError, match="norm=layernorm_seed0 holds a run with a different config"):
        run_study(study, tmp_path / "s")
    assert not (tmp_path / "s" / "norm=rmsnorm_seed0").exists()  # the first run was not trained for nothing


# ------------------------------------------------------------------------------------------- ablation


def test_a_config_file_study_names_its_recipe_and_plots_no_diverged_seed(tmp_path: Path, data: Path) -> None:
    from scratchlm.analysis.ablate import finished_seed_losses
    from scratchlm.presets import to_toml

    recipe = tmp_path / "recipe.toml"
    tables = resolve_run_config("debug", None, [*debug_overrides(data, 6), "optim.grad_clip=0.0"]).to_tables()
    recipe.write_text(to_toml(tables), encoding="utf-8")
    grid = grid_variants({"optim.lr": [3e-3, 50.0]})
    results = run_study(Study("t", None, grid, [0], config_file=str(recipe)), tmp_path / "study", command="x")
    text = (tmp_path / "study" / "results.md").read_text()
    assert "None" not in text and "No preset with `--config" in text
    assert [r["status"] for r in results["runs"]] == ["finished", "diverged"]
    assert len(finished_seed_losses(results, "lr=0.003")) == 1 and finished_seed_losses(results, "lr=50.0") == []
    sizes = parse_sizes(["1x8,1x16,2x16"])
    scaled = scaling_study(None, sizes, tmp_path / "scaling", [], config_file=str(recipe), tokens=400)
    assert "# Scaling: recipe.toml (fixed tokens)" in (tmp_path / "scaling" / "results.md").read_text()
    assert scaled["param_range"] is not None


def test_grids_parse_into_every_combination() -> None:
    grid = parse_grid(["model.positional=rope,none", "optim.betas=[0.9,0.95],[0.9,0.99]"])
    assert grid == {"model.positional": ["rope", "none"], "optim.betas": [[0.9, 0.95], [0.9, 0.99]]}
    names = [v.name for v in grid_variants(grid)]
    assert names == [
        "positional=rope,betas=[0.9, 0.95]",
        "positional=rope,betas=[0.9, 0.99]",
        "positional=none,betas=[0.9, 0.95]",
        "positional=none,betas=[0.9, 0.99]",
    ]
    with pytest.raises(ConfigError, match="--grid expects"):
        parse_grid(["model.positional"])


def test_grid_and_seed_mistakes_are_refused_in_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"--grid model\.norm is given twice"):  # the second would replace the first
        parse_grid(["model.norm=rmsnorm", "model.norm=layernorm"])
    with pytest.raises(ConfigError, match='lists "rmsnorm" more than once'):
        parse_grid(["model.norm=rmsnorm,layernorm,rmsnorm"])
    with pytest.raises(ConfigError, match="give the seeds with --seeds N"):
        parse_grid(["train.seed=1,2"])
    with pytest.raises(ConfigError, match="seeds must not repeat"):
        study_from_tables("t", {"preset": "debug", "seeds": [0, 0], "grid": {"model.norm": ["rmsnorm", "none"]}})


def test_an_ablation_tables_means_over_seeds_and_reuses_finished_runs(tmp_path: Path, data: Path) -> None:
    study = Study("t", "debug", grid_variants({"model.positional": ["rope", "none"]}), [0, 1], debug_overrides(data, 6))
    results = run_study(study, tmp_path / "study", command="scratchlm ablate ...")
    assert {v["variant"] for v in results["variants"]} == {"positional=rope", "positional=none"}
    for variant in results["variants"]:
        final = variant["final_val_loss"]
        assert final["n"] == 2 and final["min"] <= final["mean"] <= final["max"] and final["std"] >= 0
    seeds = {(r["variant"], r["seed"]): r["final_val_loss"] for r in results["runs"]}
    assert seeds[("positional=rope", 0)] != seeds[("positional=rope", 1)]  # a seed per run
    text = (tmp_path / "study" / "results.md").read_text()
    assert "positional=rope" in text and "±" in text and "Reproduce: `scratchlm ablate ...`" in text
    assert (tmp_path / "study" / "curves.svg").is_file()
    stamp = (tmp_path / "study" / "positional=rope_seed0" / "metrics.jsonl").stat().st_mtime_ns
    study.seeds = [0, 1, 2]  # a resumed, extended study trains only the new seed
    extended = run_study(study, tmp_path / "study")
    assert (tmp_path / "study" / "positional=rope_seed0" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert all(v["final_val_loss"]["n"] == 3 for v in extended["variants"])


@pytest.mark.parametrize("name", list_studies())
def test_every_shipped_study_resolves_to_valid_configs(name: str) -> None:
    study = study_from_tables(name, load_study_tables(name))
    assert len(study.variants) >= 2 and len(study.seeds) >= 3 and study.description
    for variant in study.variants:
        study.run_config(variant, study.seeds[0])
    assert {"positions-trajectories", "positions-shakespeare", "norms", "ffn"} <= set(list_studies())


def test_the_ffn_study_compares_at_matched_parameter_counts() -> None:
    from scratchlm.analysis.accounting import param_counts

    study = study_from_tables("ffn", load_study_tables("ffn"))
    counts = [param_counts(study.run_config(v, 0).model).non_embedding for v in study.variants]
    assert abs(counts[0] - counts[1]) / max(counts) < 0.002


def test_ablate_command_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablate", "--preset", "debug"]) == 2
    assert "at least one --grid" in capsys.readouterr().err
    assert main(["ablate", "--study", "nope"]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err
    assert main(["ablate", "--list"]) == 0
    assert "positions-trajectories" in capsys.readouterr().out


# -------------------------------------------------------------------------------------------- scaling


def test_a_scaling_study_fits_a_power_law_over_sizes(tmp_path: Path, data: Path) -> None:
    sizes = parse_sizes(["1x8,1x16", "2x32"])
    assert sizes == [Size(1, 8), Size(1, 16), Size(2, 32)]
    overrides = [*debug_overrides(data, 10), "model.num_heads=2"]
    results = scaling_study("debug", sizes, tmp_path / "fixed", overrides, tokens=1200)
    points = results["points"]
    assert [p["num_heads"] for p in points] == [1, 1, 2]  # the base head dim (32 / 2 = 16) is kept
    assert all(p["tokens"] == points[0]["tokens"] for p in points)
    assert results["param_range"] > 10 and set(results["fit"]) == {"a", "alpha", "c", "r2", "rmse"}
    assert (tmp_path / "fixed" / "scaling.png").is_file() and (tmp_path / "fixed" / "scaling.svg").is_file()
    matched = scaling_study("debug", sizes, tmp_path / "compute", overrides, compute=2e8)
    tokens = [p["tokens"] for p in matched["points"]]
    assert tokens[0] > tokens[1] > tokens[2]  # smaller models get more tokens for the same compute
    flops = [p["train_flops"] for p in matched["points"]]
    assert max(flops) / min(flops) < 1.2
    with pytest.raises(ConfigError, match="LAYERSxD_MODEL"):
        parse_sizes(["2by64"])
    # FLOPs as the trainer counts them: at the trained sequence length (20-step trajectories: 19), not the context.
    assert results["seq_len"] == 19
    for p, config in zip(
        results["points"],
        (resolve_run_config("debug", None, [*overrides, *size_overrides(s, "debug", None, overrides)]) for s in sizes),
        strict=True,
    ):
        assert p["train_flops"] == flops_per_token(config.model, 19) * p["tokens"]
    text = (tmp_path / "fixed" / "results.md").read_text()
    assert "with seed 1337" in text and "at T = 19" in text
    assert " at 0 tokens per" not in text  # a ratio under 1 is written with its digits


def test_scaling_refuses_repeated_sizes_and_widths_that_change_the_head_dimension() -> None:
    with pytest.raises(ConfigError, match="lists 1x8 more than once"):
        parse_sizes(["1x8,2x16,1x8"])
    with pytest.raises(ConfigError, match="d_model 20 is not a multiple of the head dimension 8; use 16 or 24"):
        size_overrides(Size(2, 20), "debug", None, [])  # debug: 4 heads of 8
    assert "model.num_heads=1" in size_overrides(Size(1, 4), "debug", None, [])  # narrower than a head: one head


def test_scaling_leaves_diverged_sizes_out_and_still_writes_its_table(tmp_path: Path, data: Path) -> None:
    overrides = [*debug_overrides(data, 10), "optim.lr=50.0", "optim.grad_clip=0.0", "optim.warmup_steps=1"]
    results = scaling_study("debug", parse_sizes(["1x8,1x16,2x32"]), tmp_path / "s", overrides)
    assert all(p["status"] == "diverged" and p["final_val_loss"] is None for p in results["points"])
    assert results["fit"] is None and results["param_range"] is None  # no fitted sizes, no range
    assert "Every size diverged" in (tmp_path / "s" / "results.md").read_text()


def test_the_scaling_reading_matches_the_mode_and_flags_an_undetermined_offset() -> None:
    point = {"size": "2x32", "final_val_loss": 3.0, "tokens": 500, "non_embedding_params": 1000}
    fixed = {"mode": "fixed tokens", "points": [point], "fit": {"alpha": -0.2, "c": 1.0}, "fit_c_at_bound": None}
    assert "every size saw the same tokens" in _reading(fixed) and "at 0.5 tokens per" in _reading(fixed)
    assert "which see more tokens" in _reading({**fixed, "mode": "compute-matched"})
    at_zero = {**fixed, "fit": {"alpha": 0.3, "c": 0.0}, "fit_c_at_bound": "zero"}
    assert "read c as unknown, not as zero" in _reading(at_zero) and "toward c" not in _reading(at_zero)


# ---------------------------------------------------------------------------------------------- audit


def test_prefix_logits_equal_the_full_pass_only_with_the_mask() -> None:
    idx = torch.randint(0, 32, (3, 12))
    targets = torch.randint(0, 32, (3, 12))
    for causal in (True, False):
        model = TransformerLM(ModelConfig(32, 16, 16, 2, 2, causal=causal)).eval()
        full = model(idx)[0]
        prefix = prefix_logits(model, idx, targets)
        assert torch.allclose(prefix[:, -1], full[:, -1], atol=1e-5)  # the last position sees the same tokens
        assert torch.allclose(prefix, full, atol=1e-5) == causal


def test_the_audit_trains_both_models_and_explains_from_measured_numbers(tmp_path: Path, data: Path) -> None:
    overrides = [*debug_overrides(data, 40), "train.eval_interval=40", "train.log_interval=5"]
    record = causal_mask_audit("debug", tmp_path / "audit", overrides, eval_rows=8)
    masked, unmasked = record["runs"]["masked"], record["runs"]["unmasked"]
    assert masked["teacher_forced"]["rows"] == 8
    assert masked["causal"]["loss"] == pytest.approx(masked["teacher_forced"]["loss"], abs=1e-4)
    assert unmasked["teacher_forced"]["loss"] < unmasked["causal"]["loss"]
    assert 0 <= record["next_token_attention"]["mean"] <= record["next_token_attention"]["max_head"] <= 1
    text = (tmp_path / "audit" / "audit.md").read_text()
    assert f"{unmasked['causal']['loss']:.3f}" in text and f"{masked['final_train_loss']:.4f}" in text
    assert 'Why the Model "Cheats"' in text
    for name in ("audit.json", "audit_curves.png", "attention_unmasked.png"):
        assert (tmp_path / "audit" / name).is_file()
    saved = (tmp_path / "audit" / "unmasked" / "config.toml").read_text()
    assert "causal = false" in saved and "causal = true" in (tmp_path / "audit" / "masked" / "config.toml").read_text()


def test_an_ablation_gap_within_the_seed_noise_is_marked() -> None:
    from scratchlm.analysis.ablate import format_delta

    best = {"mean": 2.000, "std": 0.010, "n": 3}
    assert format_delta(best, best) == "+0.0000"
    # standard error of the gap: sqrt(0.01²/3 + 0.01²/3) = 0.0082, so 2 SE = 0.0163
    assert format_delta({"mean": 2.015, "std": 0.010, "n": 3}, best) == "+0.0150 ≈"
    assert format_delta({"mean": 2.020, "std": 0.010, "n": 3}, best) == "+0.0200"
    assert format_delta({"mean": 2.001, "std": 0.0, "n": 1}, best) == "+0.0010"  # one seed: no spread to judge


def test_the_runs_config_diff_pastes_back_into_set() -> None:
    from scratchlm.analysis.runs_table import _flatten, config_diff
    from scratchlm.presets import parse_override, resolve_run_config

    presets = {"debug": _flatten(resolve_run_config("debug").to_tables())}
    changed = resolve_run_config("debug", None, ["model.fast=true", "optim.lr=2e-05", 'model.positional="learned"'])
    preset, changes = config_diff(changed.to_tables(), presets)
    assert preset == "debug" and "model.fast=true" in changes
    again = resolve_run_config("debug", None, changes)  # each entry is a valid --set
    assert again.to_tables() == changed.to_tables() and [parse_override(c)[1] for c in changes].count(True) == 1
