"""The training engine end to end on tiny runs: run directory, metrics, checkpoints, exact resume,
non-finite guards, schedules and config conflicts."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from scratchlm.analysis.runs_table import runs_table
from scratchlm.config import OptimConfig, RunConfig
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import CheckpointError, ConfigError
from scratchlm.model import TransformerLM
from scratchlm.presets import resolve_run_config
from scratchlm.train import trainer
from scratchlm.train.checkpoint import load_model, read_checkpoint
from scratchlm.train.tracking import dumps_strict, read_metrics
from scratchlm.train.trainer import NonFiniteLossError, lr_at, setup, train

TIMING_KEYS = {"tokens_per_s", "elapsed_s", "mfu"}


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "traj.pkl"
    save_trajectories(generate_trajectories(240, seq_length=20, seed=3, fast=True), path)
    return path


@pytest.fixture(scope="module")
def char_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scratchlm.data.text import prepare_text_corpus

    root = tmp_path_factory.mktemp("text")
    text = root / "corpus.txt"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400)))
    prepare_text_corpus(text, root / "corpus", "char", val_fraction=0.1, progress=False)
    return root / "corpus"


def debug_config(data_path: Path, *overrides: str) -> RunConfig:
    return resolve_run_config(
        "debug",
        None,
        [f"data.path={json.dumps(str(data_path))}", "train.progress=false", "train.max_steps=12",
         "train.eval_interval=6", "train.log_interval=3", "train.checkpoint_interval=6", *overrides],
    )  # fmt: skip


def test_a_run_writes_config_metrics_checkpoints_and_summary(tmp_path: Path, trajectories: Path) -> None:
    run_dir = tmp_path / "run"
    summary = train(debug_config(trajectories), run_dir)
    assert summary["steps"] == 12
    assert (run_dir / "config.toml").is_file()
    saved = RunConfig.from_tables(__import__("tomllib").loads((run_dir / "config.toml").read_text()))
    assert saved == debug_config(trajectories)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step_000000006.pt", "step_000000012.pt"]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [3, 6, 9, 12]
    for key in (
        "step",
        "tokens",
        "epoch",
        "train_loss",
        "train_ppl",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "mfu",
        "elapsed_s",
    ):
        assert key in rows[0]
    assert {"val_loss", "val_ppl", "val_action_acc", "val_action_within2"} <= rows[1].keys()
    assert "val_loss" not in rows[0]
    assert rows[-1]["tokens"] == 12 * 8 * 19
    assert rows[0]["train_loss"] > rows[-1]["train_loss"]  # it learns
    assert json.loads((run_dir / "summary.json").read_text())["best_val_loss"] == min(r["val_loss"] for r in rows[1::2])
    model = load_model(run_dir / "checkpoints" / "best.pt")
    assert isinstance(model, TransformerLM)


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.mark.parametrize("overrides", [(), ("train.grad_accum=2",), ("model.dropout=0.1",)])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path: Path, trajectories: Path, overrides: tuple) -> None:
    config = debug_config(trajectories, *overrides)
    train(config, tmp_path / "straight")
    train(config, tmp_path / "split", stop_after=6)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config, tmp_path / "split")
    train(config, tmp_path / "split", resume=True)
    straight = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    split = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    for key, value in straight["model"].items():
        assert torch.equal(value, split["model"][key]), key
    assert _without_timing(read_metrics(tmp_path / "straight" / "metrics.jsonl")) == _without_timing(
        read_metrics(tmp_path / "split" / "metrics.jsonl")
    )


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_is_bit_identical_for_random_windows_of_a_token_corpus(
    tmp_path: Path, char_corpus: Path, accum: int
) -> None:
    config = debug_config(char_corpus, "data.kind=tokens", "model.context_length=24", f"train.grad_accum={accum}")
    first = train(config, tmp_path / "straight")
    train(config, tmp_path / "split", stop_after=5)
    second = train(config, tmp_path / "split", resume=True)
    assert first["final_val_loss"] == second["final_val_loss"]
    straight = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    split = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert all(torch.equal(v, split["model"][k]) for k, v in straight["model"].items())
    assert straight["sampler"] == split["sampler"]
    assert _without_timing(read_metrics(tmp_path / "straight" / "metrics.jsonl")) == _without_timing(
        read_metrics(tmp_path / "split" / "metrics.jsonl")
    )


def test_a_corpus_with_more_ids_than_the_model_is_refused(tmp_path: Path, char_corpus: Path) -> None:
    config = debug_config(char_corpus, "data.kind=tokens", "model.vocab_size=10")
    with pytest.raises(ConfigError, match=r"model\.vocab_size >= "):
        setup(config, tmp_path / "run")


def test_resume_drops_metrics_rows_newer_than_the_checkpoint(tmp_path: Path, trajectories: Path) -> None:
    config = debug_config(trajectories)
    run_dir = tmp_path / "run"
    train(config, run_dir, stop_after=6)
    with open(run_dir / "metrics.jsonl", "a") as fh:  # rows written after the checkpoint, then a torn line
        fh.write(json.dumps({"step": 9, "train_loss": 1.0}) + "\n" + '{"step": 12, "tr')
    train(config, run_dir, resume=True)
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [3, 6, 9, 12]


def test_resume_refuses_missing_runs_and_conflicting_configs(tmp_path: Path, trajectories: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        setup(debug_config(trajectories), tmp_path / "nothing", resume=True)
    train(debug_config(trajectories), tmp_path / "run", stop_after=3)
    with pytest.raises(ConfigError, match=r"optim\.lr differ"):
        train(debug_config(trajectories, "optim.lr=0.1"), tmp_path / "run", resume=True)


def test_extending_a_finished_run_continues_its_metrics_and_recomputes_the_schedule(
    tmp_path: Path, trajectories: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    train(debug_config(trajectories), run_dir)
    longer = debug_config(trajectories, "train.max_steps=18")
    with caplog.at_level(logging.INFO):
        summary = train(longer, run_dir, resume=True)
    assert summary["steps"] == summary["total_steps"] == 18
    assert any("now trains for 18 steps instead of 12" in m and "not identical" in m for m in caplog.messages)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [3, 6, 9, 12, 15, 18]  # no gap, no duplicate
    for row in rows[4:]:  # the steps after the resume follow the schedule over 18 steps
        assert row["lr"] == lr_at(row["step"] - 1, longer.optim, 18)
    assert RunConfig.from_tables(__import__("tomllib").loads((run_dir / "config.toml").read_text())) == longer
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["run_config"] == longer.to_tables()
    assert (run_dir / "checkpoints" / "step_000000018.pt").is_file()
    # Cut short and resumed with the new budget: an ordinary resume, no second extension.
    longest = debug_config(trajectories, "train.max_steps=24")
    train(longest, run_dir, resume=True, stop_after=3)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert train(longest, run_dir, resume=True)["steps"] == 24
    assert not any("now trains for" in m for m in caplog.messages)
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [3, 6, 9, 12, 15, 18, 21, 24]


def test_a_budget_below_the_steps_done_is_refused_and_other_changes_still_are(
    tmp_path: Path, trajectories: Path
) -> None:
    run_dir = tmp_path / "run"
    train(debug_config(trajectories), run_dir, stop_after=6)
    with pytest.raises(ConfigError, match=r"train\.max_steps = 5 is fewer than the 6 steps .* at least 6 steps"):
        train(debug_config(trajectories, "train.max_steps=5"), run_dir, resume=True)
    with pytest.raises(ConfigError, match=r"\(train\.batch_size differ\)"):
        train(debug_config(trajectories, "train.max_steps=20", "train.batch_size=4"), run_dir, resume=True)
    assert "max_steps = 12" in (run_dir / "config.toml").read_text()  # a refused resume changes nothing
    assert train(debug_config(trajectories), run_dir, resume=True)["steps"] == 12


def epochs_config(data_path: Path, epochs: int) -> RunConfig:
    return resolve_run_config(
        "debug", None, [f"data.path={json.dumps(str(data_path))}", "train.progress=false", f"train.epochs={epochs}",
                        "train.eval_interval=1000", "train.checkpoint_interval=1000", "train.log_interval=9"],
    )  # fmt: skip


def test_raising_an_epochs_budget_continues_the_batch_order_into_the_next_epoch(
    tmp_path: Path, trajectories: Path
) -> None:
    run_dir = tmp_path / "run"
    assert train(epochs_config(trajectories, 1), run_dir)["steps"] == 27  # 216 trajectories // 8
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["sampler"]["epoch"] == 0
    assert train(epochs_config(trajectories, 2), run_dir, resume=True)["steps"] == 54
    train(epochs_config(trajectories, 2), tmp_path / "straight")
    extended, straight = (read_checkpoint(d / "checkpoints" / "last.pt") for d in (run_dir, tmp_path / "straight"))
    assert extended["sampler"] == straight["sampler"]  # the same batches, in the same order
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [9, 18, 27, 36, 45, 54] and rows[-1]["epoch"] == 2.0


def test_json_written_by_the_trainer_has_no_nan_or_infinity() -> None:
    value = {"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf, "e": "x"}, "f": 2}
    assert dumps_strict(value) == '{"a": null, "b": [null, 1.5], "c": {"d": null, "e": "x"}, "f": 2}'


def test_a_nan_stops_the_run_names_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, trajectories: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = TransformerLM.forward

    def poisoned(self: TransformerLM, idx: torch.Tensor, targets: torch.Tensor | None = None, **kw: object):
        logits, loss = original(self, idx, targets, **kw)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] == 8:  # the 8th training forward: step 8
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(TransformerLM, "forward", poisoned)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="at step 8"):
        train(debug_config(trajectories), run_dir)
    last = read_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["iteration"] == 6
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    # The run leaves a record of how it ended, which `scratchlm runs` and the experiments read.
    assert json.loads((run_dir / "outcome.json").read_text()) == {
        "status": "diverged", "reason": "non-finite loss or gradients at step 8", "step": 8, "total_steps": 12,
    }  # fmt: skip
    (row,) = runs_table(tmp_path)
    assert (row.status, row.steps, row.total_steps) == ("diverged (non-finite loss or gradients at step 8)", 8, 12)


def test_a_nan_before_the_first_checkpoint_still_leaves_a_diverged_run(
    tmp_path: Path, trajectories: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TransformerLM.forward

    def poisoned(self: TransformerLM, idx: torch.Tensor, targets: torch.Tensor | None = None, **kw: object):
        logits, loss = original(self, idx, targets, **kw)
        return logits, (loss * float("nan") if targets is not None and self.training else loss)

    monkeypatch.setattr(TransformerLM, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="at step 1 and the run stopped; no checkpoint had been written"):
        train(debug_config(trajectories), tmp_path / "run")
    (row,) = runs_table(tmp_path)  # not "not started": nothing else in the directory says it ran
    assert (row.status, row.steps, row.total_steps) == ("diverged (non-finite loss or gradients at step 1)", 1, 12)


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_nan_gradient_with_a_finite_loss_is_caught(
    tmp_path: Path, trajectories: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    original = trainer.clip_grad_norm
    calls = {"n": 0}

    def poisoned(params, max_norm: float) -> torch.Tensor:
        params = list(params)
        calls["n"] += 1
        if calls["n"] == 8:  # step 8: one gradient entry turns NaN after a finite loss
            params[0].grad.view(-1)[0] = float("nan")
        return original(params, max_norm)

    monkeypatch.setattr(trainer, "clip_grad_norm", poisoned)
    run_dir = tmp_path / "run"
    config = debug_config(trajectories, f"train.on_nonfinite={mode}")
    if mode == "skip":
        assert train(config, run_dir)["steps"] == 12
        last = read_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert last["train_state"]["skipped_steps"] == 1
        assert all(torch.isfinite(v).all() for v in last["model"].values())
        return
    with pytest.raises(NonFiniteLossError, match=r"at step 8 and the run stopped; the last good checkpoint .* step 6"):
        train(config, run_dir)
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == 6
    monkeypatch.setattr(trainer, "clip_grad_norm", original)  # the glitch is gone: resume from the good checkpoint
    assert (run_dir / "outcome.json").is_file()
    train(config, run_dir, resume=True)
    assert not (run_dir / "outcome.json").exists()  # the run finished after all: no stale "diverged"
    train(config, tmp_path / "straight")
    resumed, straight = (read_checkpoint(d / "checkpoints" / "last.pt") for d in (run_dir, tmp_path / "straight"))
    assert all(torch.equal(v, resumed["model"][k]) for k, v in straight["model"].items())
    assert _without_timing(read_metrics(run_dir / "metrics.jsonl")) == _without_timing(
        read_metrics(tmp_path / "straight" / "metrics.jsonl")
    )


def test_under_fp16_loss_scaling_an_overflowing_gradient_is_left_to_the_scaler(
    tmp_path: Path, trajectories: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = torch.amp.GradScaler.unscale_
    calls = {"n": 0}

    def overflowing(self: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # step 2's scaled gradients overflow, as they do when the loss scale is too high
            optimizer.param_groups[0]["params"][0].grad.view(-1)[0] = float("inf")
        original(self, optimizer)

    monkeypatch.setattr(torch.amp.GradScaler, "unscale_", overflowing)
    config = debug_config(
        trajectories, "train.dtype=float16", "train.max_steps=4", "train.eval_interval=4", "train.eval_batches=1"
    )
    assert train(config, tmp_path / "run")["steps"] == 4  # not stopped as non-finite
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert last["scaler"]["scale"] == 2.0**15  # the scaler skipped that step and halved its scale


def test_skip_mode_skips_the_bad_update_and_finishes(
    tmp_path: Path, trajectories: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TransformerLM.forward
    calls = {"n": 0}

    def poisoned(self: TransformerLM, idx: torch.Tensor, targets: torch.Tensor | None = None, **kw: object):
        logits, loss = original(self, idx, targets, **kw)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] == 4:
                loss = loss * float("inf")
        return logits, loss

    monkeypatch.setattr(TransformerLM, "forward", poisoned)
    summary = train(debug_config(trajectories, "train.on_nonfinite=skip"), tmp_path / "run")
    assert summary["steps"] == 12
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["train_state"]["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_an_epochs_budget_replaces_the_presets_steps_and_counts_whole_passes(
    tmp_path: Path, trajectories: Path
) -> None:
    config = resolve_run_config(
        "debug", None, [f"data.path={json.dumps(str(trajectories))}", "train.progress=false", "train.epochs=2"]
    )
    assert config.train.epochs == 2 and config.train.max_steps is None
    run = setup(config, tmp_path / "run")
    # 240 trajectories, 24 held out: 216 // 8 = 27 full batches per epoch
    assert run.total_steps == 54
    assert run.data.info["train_trajectories"] == 216


def test_epochs_are_for_trajectories_only() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs applies to trajectory data only"):
        resolve_run_config("debug", None, ["data.kind=tokens", "train.epochs=1"])


def test_lr_schedule_warms_up_and_ends_at_min_lr_on_the_last_step() -> None:
    optim = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, optim, 100) == 0.0
    assert lr_at(5, optim, 100) == pytest.approx(0.5)
    assert lr_at(10, optim, 100) == pytest.approx(1.0)
    assert lr_at(99, optim, 100) == pytest.approx(0.1)
    constant = OptimConfig(lr=1.0, warmup_steps=4, schedule="constant")
    assert [lr_at(s, constant, 10) for s in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    assert lr_at(0, OptimConfig(lr=1.0, warmup_steps=0), 1) == 1.0
    assert math.isclose(lr_at(1, OptimConfig(lr=1.0, warmup_steps=50), 3), 0.5)  # warmup clamped to the run


def test_unified_layout_with_a_state_subset_trains_on_action_targets_only(tmp_path: Path, trajectories: Path) -> None:
    config = debug_config(
        trajectories, "data.layout=unified", "data.states=ee", "model.vocab_size=1024", "model.context_length=80",
        "train.max_steps=2", "train.eval_interval=2",
    )  # fmt: skip
    run = setup(config, tmp_path / "run")
    assert run.data.seq_len == 20 * 4 - 1  # 20 steps of 3 ee bins + 1 action
    assert run.data.vocab_size == 3 * 256 + 256
    inputs, targets = run.data.train.next_batch()
    assert inputs.shape == (8, 79)
    assert (targets != -100).sum(1).eq(20).all()  # every action of the 20 steps is predicted, no state token
    summary = train(config, tmp_path / "run2")
    assert "final_val_action_within2" in summary


def test_a_vocabulary_much_larger_than_the_tokenizers_is_warned_about(
    tmp_path: Path, char_corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A student who trains a smaller tokenizer than the preset's vocab_size (tinystories-17m's 10000 on a
    1000-token BPE) is told, once, at setup; padding to the next multiple of 64 is not worth a warning."""
    vocab = json.loads((char_corpus / "meta.json").read_text())["vocab_size"]
    with caplog.at_level("WARNING", logger="scratchlm.train.trainer"):
        setup(debug_config(char_corpus, "data.kind=tokens", f"model.vocab_size={vocab + 63}"), tmp_path / "padded")
        assert "never trained" not in caplog.text
        setup(debug_config(char_corpus, "data.kind=tokens", f"model.vocab_size={vocab + 1000}"), tmp_path / "oversized")
    assert f"model.vocab_size is {vocab + 1000} but the data's tokenizer has {vocab} tokens" in caplog.text
    assert f"set model.vocab_size={vocab}" in caplog.text


def test_a_resume_refuses_data_that_changed_but_not_the_same_data_saved_again(tmp_path: Path) -> None:
    data = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(240, seq_length=20, seed=3, fast=True), data)
    config, run_dir = debug_config(data), tmp_path / "run"
    train(config, run_dir, stop_after=6)
    # Written again from the same trajectories: other pickle bytes (torch writes storage addresses), same data.
    before = data.read_bytes()
    save_trajectories(generate_trajectories(240, seq_length=20, seed=3, fast=True), data)
    assert data.read_bytes() != before
    train(config, run_dir, resume=True, stop_after=3)
    save_trajectories(generate_trajectories(240, seq_length=20, seed=4, fast=True), data)
    with pytest.raises(ConfigError, match=r"is not what this run trained on until step 9 .* or start a new run"):
        train(config, run_dir, resume=True)


def test_a_corpus_fingerprint_is_its_content_not_its_paths_or_timings(tmp_path: Path) -> None:
    from scratchlm.train.datasets import _corpus_fingerprint

    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "vocab.json").write_text("[1, 2]")
    meta = {
        "vocab_size": 500, "splits": {"train": {"tokens": 100}}, "timings_s": {"encode": 1.0}, "created_by": "a",
        "sources": [{"path": "/a/text.txt", "bytes": 9, "sha256": "ab"}],
        "val_split": {"kind": "fraction", "fraction": 0.1, "file": "/a/text.txt", "byte_offset": 8},
    }  # fmt: skip
    fingerprint = _corpus_fingerprint(meta, tokenizer)
    again = {**meta, "timings_s": {"encode": 2.5}, "created_by": "b"}
    moved = {**meta, "sources": [{"path": "/b/copy.txt", "bytes": 9, "sha256": "ab"}],
             "val_split": {**meta["val_split"], "file": "/b/copy.txt"}}  # fmt: skip
    assert _corpus_fingerprint(again, tokenizer) == _corpus_fingerprint(moved, tokenizer) == fingerprint
    assert _corpus_fingerprint({**meta, "splits": {"train": {"tokens": 101}}}, tokenizer) != fingerprint
    assert _corpus_fingerprint({**meta, "sources": [{**meta["sources"][0], "sha256": "cd"}]}, tokenizer) != fingerprint
    (tokenizer / "vocab.json").write_text("[1, 3]")  # a tokenizer retrained in place
    assert _corpus_fingerprint(meta, tokenizer) != fingerprint


def test_resuming_from_an_older_checkpoint_keeps_the_later_best(tmp_path: Path, trajectories: Path) -> None:
    config = debug_config(trajectories)
    run_dir = tmp_path / "run"
    train(config, run_dir)
    ckpts = run_dir / "checkpoints"
    best = read_checkpoint(ckpts / "best.pt")
    assert best["train_state"]["step"] == 12  # the loss still falls: step 6 was best once, step 12 is now
    (ckpts / "step_000000006.pt").replace(ckpts / "last.pt")  # the rollback the damaged-last.pt message suggests
    train(debug_config(trajectories, "train.max_steps=14"), run_dir, resume=True, stop_after=1)
    kept = read_checkpoint(ckpts / "best.pt")
    assert kept["train_state"]["step"] == 12
    assert all(torch.equal(v, kept["model"][k]) for k, v in best["model"].items())
    assert read_checkpoint(ckpts / "last.pt")["train_state"]["best_step"] == 12


def test_eval_and_checkpoint_time_stay_out_of_throughput_and_elapsed_time(
    tmp_path: Path, trajectories: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time as real_time
    from types import SimpleNamespace

    from scratchlm.train import log_window

    offset = [0.0]  # a clock that jumps 1000 s during every save and every eval
    monkeypatch.setattr(log_window, "time", SimpleNamespace(perf_counter=lambda: real_time.perf_counter() + offset[0]))

    def slow(real):
        def wrapped(*args, **kwargs):
            offset[0] += 1000.0
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(trainer, "save", slow(trainer.save))
    monkeypatch.setattr(trainer, "evaluate", slow(trainer.evaluate))
    train(debug_config(trajectories), tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [3, 6, 9, 12]
    assert rows[-1]["elapsed_s"] < 1000
    assert min(r["tokens_per_s"] for r in rows) > 3 * 8 * 19 / 1000


def test_mfu_under_data_parallelism_is_per_device(
    tmp_path: Path, trajectories: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchlm.train.distributed import DistInfo
    from scratchlm.train.log_window import LogWindow

    run = setup(debug_config(trajectories), tmp_path / "run")
    run.dist = DistInfo(world_size=2)  # what rank 0 of two sees; tokens_per_step stays the global batch's
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor: tensor)
    window = LogWindow(run.device, {})
    window.add(torch.tensor(2.0), torch.tensor(1.0))
    window.seconds = 1.0
    row = window.row(run, flops=1.0, peak=run.tokens_per_step * 1.0)  # one device's peak = the global rate
    assert row["tokens_per_s"] == run.tokens_per_step
    assert row["mfu"] == 0.5


def test_resume_reads_the_checkpoint_onto_the_cpu_whatever_the_device(tmp_path: Path, trajectories: Path) -> None:
    from types import SimpleNamespace

    from scratchlm.train.resume import _read_last

    train(debug_config(trajectories), tmp_path / "run", stop_after=6)
    run = SimpleNamespace(device=torch.device("meta"), checkpoint_dir=tmp_path / "run" / "checkpoints")
    ckpt = _read_last(run.checkpoint_dir / "last.pt", run)  # type: ignore[arg-type]
    devices = set()

    def collect(value: object) -> None:
        if isinstance(value, torch.Tensor):
            devices.add(value.device.type)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v)

    collect(ckpt)
    assert devices == {"cpu"}  # the RNG and sampler states cannot be restored from another device


@pytest.mark.cuda
def test_a_cuda_run_resumes(tmp_path: Path, trajectories: Path) -> None:
    config = debug_config(trajectories, 'train.device="cuda"')
    train(config, tmp_path / "run", stop_after=6)
    summary = train(config, tmp_path / "run", resume=True)
    assert summary["steps"] == 12
