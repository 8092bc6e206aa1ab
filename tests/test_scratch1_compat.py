"""The Scratch-1 course API (`scratchlm.compat.scratch1`, `scratch1_data`): names, signatures, behaviour."""

from __future__ import annotations

import inspect
import json
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from scratchlm.compat import scratch1, scratch1_data
from scratchlm.compat.scratch1 import (
    CausalSelfAttention,
    DecoderOnlyTransformer,
    FeedForward,
    RMSNorm,
    RotaryPositionalEmbedding,
    TransformerBlock,
    train_epoch,
)
from scratchlm.compat.scratch1_data import (
    create_dataloaders,
    forward_kinematics_7dof,
    generate_dataset,
    generate_trajectory,
)
from scratchlm.data.trajectory_io import load_trajectories
from scratchlm.errors import DataError
from scratchlm.optim import AdamW

SIGNATURES = {
    scratch1_data.forward_kinematics_7dof: "(joint_angles)",
    scratch1_data.generate_trajectory: "(start_joints, target_pos, seq_length=50, noise_std=0.02)",
    scratch1_data.generate_dataset: "(num_trajectories=10000, seq_length=50, seed=42)",
    scratch1_data.create_dataloaders: "(dataset, batch_size=32, train_split=0.9)",
    RMSNorm: "(dim, eps=1e-06)",
    RotaryPositionalEmbedding: "(dim, max_seq_len=2048, base=10000.0)",
    RotaryPositionalEmbedding.forward: "(self, q, k)",
    CausalSelfAttention: "(dim, num_heads, dropout=0.1, max_seq_len=2048)",
    CausalSelfAttention.forward: "(self, x, mask=None)",
    FeedForward: "(dim, hidden_dim, dropout=0.1)",
    TransformerBlock.forward: "(self, x, mask=None)",
    DecoderOnlyTransformer: "(vocab_size, dim, num_layers, num_heads, ff_hidden_dim, max_seq_len=2048, dropout=0.1)",
    DecoderOnlyTransformer.forward: "(self, input_ids, targets=None)",
    DecoderOnlyTransformer.generate: "(self, input_ids, max_new_tokens, temperature=1.0, top_k=None)",
}


@pytest.mark.parametrize("obj", list(SIGNATURES), ids=lambda o: o.__qualname__)
def test_names_and_signatures_match_the_course(obj):
    signature = inspect.signature(obj)
    text = (
        "("
        + ", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
            for p in signature.parameters.values()
        )
        + ")"
    )
    assert text == SIGNATURES[obj]


def test_train_epoch_takes_the_courses_five_positionals_and_only_optional_keyword_only_hooks():
    params = list(inspect.signature(train_epoch).parameters.values())
    assert [(p.name, p.kind, p.default) for p in params[:5]] == [
        (name, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty)
        for name in ("model", "dataloader", "optimizer", "device", "epoch")
    ]
    extra = params[5:]
    assert [(p.name, p.kind, p.default) for p in extra] == [("on_step", inspect.Parameter.KEYWORD_ONLY, None)]


def test_block_signature_starts_as_the_courses():
    params = list(inspect.signature(TransformerBlock).parameters.values())
    assert [(p.name, p.default) for p in params[:4]] == [
        ("dim", inspect.Parameter.empty),
        ("num_heads", inspect.Parameter.empty),
        ("ff_hidden_dim", inspect.Parameter.empty),
        ("dropout", 0.1),
    ]


# ------------------------------------------------------------------------------------------------ data


def test_generate_dataset_equals_the_course_file(shared_data):
    reference = load_trajectories(shared_data / "scratch1" / "course_v2_seed42_1000.pkl")
    dataset = generate_dataset(1000, 50, seed=42)
    assert dataset["states"].dtype == torch.float32 and dataset["actions"].dtype == torch.int64
    assert np.array_equal(dataset["states"].numpy(), reference.states_NTS)
    assert np.array_equal(dataset["actions"].numpy(), reference.actions_NT)


def test_generate_trajectory_draws_from_numpys_global_generator_like_the_course(shared_data):
    reference = load_trajectories(shared_data / "scratch1" / "course_v2_seed42_1000.pkl")
    np.random.seed(42)
    for i in range(3):
        start = np.random.uniform(-np.pi / 2, np.pi / 2, size=7)
        target = np.random.uniform(-1.5, 1.5, size=3)
        states, actions = generate_trajectory(start, target, seq_length=50)
        assert states.dtype == np.float64 and states.shape == (50, 10)
        assert actions.dtype == np.int64 and actions.shape == (50,)
        assert np.array_equal(states.astype(np.float32), reference.states_NTS[i])
        assert np.array_equal(actions, reference.actions_NT[i])


def test_forward_kinematics_7dof():
    ee = forward_kinematics_7dof(np.zeros(7))
    assert ee.shape == (3,) and np.allclose(ee, [1.55, 0.0, 0.0])


def test_create_dataloaders_splits_by_randperm_and_shuffles_only_train():
    dataset = generate_dataset(50, 6, seed=0)
    torch.manual_seed(0)
    train_loader, val_loader = create_dataloaders(dataset, batch_size=8, train_split=0.9)
    assert len(train_loader.dataset) == 45 and len(val_loader.dataset) == 5
    states, actions = next(iter(train_loader))
    assert states.shape == (8, 6, 10) and actions.shape == (8, 6)
    first = torch.cat([a for _, a in val_loader])
    assert torch.equal(first, torch.cat([a for _, a in val_loader]))  # val order is fixed
    handout = {"trajectories": dataset["states"], "tokenized": dataset["actions"]}
    assert len(create_dataloaders(handout, batch_size=8)[0].dataset) == 45


def test_the_data_script_writes_a_course_format_file(tmp_path):
    out = tmp_path / "data" / "trajectories.pkl"
    assert scratch1_data.main(["--num_trajectories", "12", "--seq_length", "5", "--output", str(out)]) == 0
    with open(out, "rb") as fh:
        raw = pickle.load(fh)
    assert raw["states"].shape == (12, 5, 10) and raw["actions"].shape == (12, 5)
    assert load_trajectories(out).version == "v2"


# ----------------------------------------------------------------------------------------------- model


def test_rmsnorm_has_a_scale_parameter_and_is_stable_at_extreme_scales():
    norm = RMSNorm(64)
    assert isinstance(norm.scale, torch.nn.Parameter) and norm.scale.shape == (64,)
    assert list(dict(norm.named_parameters())) == ["scale"]
    x = torch.randn(2, 10, 64)
    for scale in (1e-6, 1.0, 1e6):
        out = norm(x * scale)
        assert torch.isfinite(out).all()
        rms = out.pow(2).mean(-1).sqrt()
        expected = 1.0 / (1.0 + norm.eps / (x * scale).pow(2).mean(-1)).sqrt()  # eps matters only when tiny
        assert torch.allclose(rms, expected, rtol=1e-4)
    with torch.no_grad():
        norm.scale.fill_(2.0)
    assert torch.allclose(norm(x).pow(2).mean(-1).sqrt(), torch.full((2, 10), 2.0), rtol=1e-4)


def test_the_readme_sanity_checks():
    norm = RMSNorm(256)
    x = torch.randn(2, 10, 256)
    out = norm(x)
    assert out.shape == x.shape and not torch.isnan(out).any()
    attn = CausalSelfAttention(256, 8)
    assert attn(x).shape == x.shape


def test_rope_rotates_q_and_k_preserving_norms_and_depends_on_relative_position():
    rope = RotaryPositionalEmbedding(16, max_seq_len=32)
    q, k = torch.randn(2, 4, 10, 16), torch.randn(2, 4, 10, 16)
    q_rot, k_rot = rope(q, k)
    assert q_rot.shape == q.shape and k_rot.shape == k.shape
    assert torch.allclose(q_rot.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    assert torch.allclose(q_rot[..., 0, :], q[..., 0, :])  # position 0 is not rotated
    # The same vectors placed at positions (i, j) and (i + s, j + s) give the same dot product.
    vec_q, vec_k = torch.randn(16), torch.randn(16)
    seq_q = torch.zeros(1, 1, 10, 16)
    seq_k = torch.zeros(1, 1, 10, 16)
    seq_q[..., 2, :], seq_k[..., 5, :] = vec_q, vec_k
    seq_q[..., 6, :], seq_k[..., 9, :] = vec_q, vec_k
    rq, rk = rope(seq_q, seq_k)
    near = (rq[0, 0, 2] * rk[0, 0, 5]).sum()
    far = (rq[0, 0, 6] * rk[0, 0, 9]).sum()
    assert torch.allclose(near, far, atol=1e-4) and not torch.allclose(near, (vec_q * vec_k).sum(), atol=1e-3)


@pytest.mark.parametrize("use_mask", [False, True])
def test_attention_is_causal_with_or_without_a_mask(use_mask):
    torch.manual_seed(0)
    attn = CausalSelfAttention(32, 4, dropout=0.0).eval()
    x = torch.randn(2, 12, 32)
    mask = torch.tril(torch.ones(12, 12)) if use_mask else None
    base = attn(x, mask)
    perturbed = x.clone()
    perturbed[:, 7:] += torch.randn(2, 5, 32) * 10
    out = attn(perturbed, mask)
    assert torch.allclose(out[:, :7], base[:, :7], atol=1e-5)
    assert not torch.allclose(out[:, 7:], base[:, 7:], atol=1e-3)


def test_a_passed_mask_can_only_remove_keys_and_an_all_ones_mask_stays_causal():
    torch.manual_seed(0)
    attn = CausalSelfAttention(32, 4, dropout=0.0).eval()
    x = torch.randn(1, 6, 32)
    assert torch.allclose(attn(x, torch.ones(6, 6)), attn(x), atol=1e-6)
    diagonal_only = torch.eye(6)
    out = attn(x, diagonal_only)  # each position sees itself alone: output = W_O W_V x
    v_only = attn.output_proj(attn.v_proj(x))
    assert torch.allclose(out, v_only, atol=1e-5)


def test_feed_forward_and_block_have_the_course_attributes():
    ff = FeedForward(16, 64, dropout=0.0)
    assert ff.fc1.weight.shape == (64, 16) and ff.fc2.weight.shape == (16, 64)
    assert ff(torch.randn(3, 16)).shape == (3, 16)
    block = TransformerBlock(32, 4, 64, dropout=0.0)
    assert isinstance(block.attention, CausalSelfAttention) and isinstance(block.feed_forward, FeedForward)
    assert isinstance(block.norm1, RMSNorm) and isinstance(block.norm2, RMSNorm)
    assert block(torch.randn(2, 5, 32)).shape == (2, 5, 32)


def _tiny_model(**overrides) -> DecoderOnlyTransformer:
    config = {
        "vocab_size": 256,
        "dim": 64,
        "num_layers": 2,
        "num_heads": 4,
        "ff_hidden_dim": 128,
        "max_seq_len": 64,
        "dropout": 0.0,
        **overrides,
    }
    return DecoderOnlyTransformer(**config)


def test_model_shapes_attributes_loss_and_causality():
    torch.manual_seed(0)
    model = _tiny_model().eval()
    assert model.token_embedding.num_embeddings == 256 and model.token_embedding.embedding_dim == 64
    assert model.lm_head.out_features == 256 and len(model.blocks) == 2 and isinstance(model.norm_final, RMSNorm)
    ids = torch.randint(0, 256, (3, 20))
    logits, loss = model(ids)
    assert logits.shape == (3, 20, 256) and loss is None
    _, loss = model(ids[:, :-1], ids[:, 1:])
    assert loss.ndim == 0 and abs(loss.item() - np.log(256)) < 1.5
    changed = ids.clone()
    changed[:, 15:] = (changed[:, 15:] + 1) % 256
    assert torch.allclose(model(changed)[0][:, :15], logits[:, :15], atol=1e-5)


def test_generate_appends_tokens_and_respects_top_k():
    torch.manual_seed(0)
    model = _tiny_model(max_seq_len=8)
    model.train()
    prompt = torch.randint(0, 256, (2, 5))
    out = model.generate(prompt, max_new_tokens=6, temperature=0.8, top_k=5)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    assert model.training  # restored after generating
    greedy_a = model.generate(prompt, 4, temperature=0.0)
    greedy_b = model.generate(prompt, 4, temperature=0.0)
    assert torch.equal(greedy_a, greedy_b)


def test_a_short_training_run_lowers_the_loss():
    torch.manual_seed(0)
    dataset = generate_dataset(128, 50, seed=0)
    train_loader, _ = create_dataloaders(dataset, batch_size=32)
    model = _tiny_model(dropout=0.1)
    optimizer = AdamW(model.parameters(), lr=3e-3)
    _, initial = model.eval()(dataset["actions"][:64, :-1], dataset["actions"][:64, 1:])
    losses = [train_epoch(model, train_loader, optimizer, "cpu", epoch) for epoch in range(4)]
    assert all(np.isfinite(losses))
    assert losses[-1] < initial.item() - 1.0 and losses[-1] < losses[0] - 1.0


def test_train_epoch_rejects_an_empty_dataloader():
    model = _tiny_model()
    with pytest.raises(DataError, match="no batches"):
        train_epoch(model, [], AdamW(model.parameters()), "cpu", 0)


def test_the_training_script_runs_and_saves_the_best_model(tmp_path):
    data_path = tmp_path / "trajectories.pkl"
    assert scratch1_data.main(["--num_trajectories", "40", "--seq_length", "10", "--output", str(data_path)]) == 0
    checkpoints = tmp_path / "checkpoints"
    argv = ["--data", str(data_path), "--epochs", "1", "--device", "cpu", "--checkpoint-dir", str(checkpoints)]
    assert scratch1.main(argv) == 0
    state = torch.load(checkpoints / "best_model.pt", weights_only=True)
    model = DecoderOnlyTransformer(**state["config"])
    model.load_state_dict(state["model_state_dict"])
    assert np.isfinite(state["val_loss"])


def test_train_epoch_reports_each_step_to_on_step_with_one_host_sync_per_step(monkeypatch):
    torch.manual_seed(0)
    model = _tiny_model()
    optimizer = AdamW(model.parameters(), lr=1e-3)
    batches = [(None, torch.randint(0, 256, (2, 9))) for _ in range(3)]
    seen = []
    syncs = []
    for name in ("item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            syncs.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    mean = train_epoch(model, batches, optimizer, "cpu", 0, on_step=lambda loss, norm: seen.append((loss, norm)))
    monkeypatch.undo()
    assert len(syncs) == len(batches)
    assert len(seen) == 3 and all(isinstance(v, float) and math.isfinite(v) for pair in seen for v in pair)
    assert mean == pytest.approx(sum(loss for loss, _ in seen) / 3)
    assert seen[0][1] > 1.0  # the first gradient norm of a fresh model is large: the pre-clip value is reported


# ---------------------------------------------------------------------------------------- training script

STEP_KEYS = {"step", "epoch", "loss", "perplexity", "grad_norm", "lr"}
EPOCH_KEYS = {"step", "epoch", "val_loss", "val_perplexity"}


def _strict_rows(path):
    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _train_argv(data_path, checkpoints, *extra):
    # 40 trajectories -> 36 train / 4 val; batch 4 -> 9 steps per epoch.
    return [
        "--data",
        str(data_path),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--save-every",
        "5",
        "--checkpoint-dir",
        str(checkpoints),
        *extra,
    ]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data_path = tmp_path_factory.mktemp("scratch1_data") / "trajectories.pkl"
    assert scratch1_data.main(["--num_trajectories", "40", "--seq_length", "10", "--output", str(data_path)]) == 0
    return data_path


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    checkpoints = tmp_path_factory.mktemp("scratch1_run") / "checkpoints"
    assert scratch1.main(_train_argv(tiny_data, checkpoints, "--epochs", "2", "--seed", "7")) == 0
    return checkpoints


def test_the_script_logs_one_strict_row_per_step_and_per_epoch(tiny_run):
    rows = _strict_rows(tiny_run / "metrics.jsonl")
    step_rows = [r for r in rows if "loss" in r]
    epoch_rows = [r for r in rows if "val_loss" in r]
    assert len(rows) == 20 and len(step_rows) == 18 and len(epoch_rows) == 2
    assert all(set(r) == STEP_KEYS for r in step_rows) and all(set(r) == EPOCH_KEYS for r in epoch_rows)
    assert [r["step"] for r in step_rows] == list(range(1, 19))
    assert [r["epoch"] for r in step_rows] == [0] * 9 + [1] * 9
    assert [(r["step"], r["epoch"]) for r in epoch_rows] == [(9, 0), (18, 1)]
    assert rows[9] == epoch_rows[0]  # the epoch row follows its last step
    for r in step_rows:
        assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
        assert r["lr"] == pytest.approx(1e-4) and r["grad_norm"] > 0
    assert step_rows[0]["grad_norm"] > 1.0  # before clipping to 1.0
    for r in epoch_rows:
        assert r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"]))
    best = torch.load(tiny_run / "best_model.pt", weights_only=True)
    assert set(best) == {"model_state_dict", "config", "epoch", "val_loss"}
    assert best["val_loss"] == pytest.approx(min(r["val_loss"] for r in epoch_rows))


def test_the_script_saves_a_checkpoint_every_save_every_global_steps(tiny_run):
    assert sorted(p.name for p in tiny_run.glob("checkpoint_step_*.pt")) == [
        "checkpoint_step_10.pt",
        "checkpoint_step_15.pt",
        "checkpoint_step_5.pt",
    ]
    rows = _strict_rows(tiny_run / "metrics.jsonl")
    first_val = next(r["val_loss"] for r in rows if "val_loss" in r)
    best_keys = set(torch.load(tiny_run / "best_model.pt", weights_only=True))
    for step, epoch, val_loss in ((5, 0, None), (10, 1, first_val), (15, 1, first_val)):
        state = torch.load(tiny_run / f"checkpoint_step_{step}.pt", weights_only=True)
        assert set(state) == best_keys | {"step", "optimizer_state_dict"}
        assert (state["step"], state["epoch"], state["val_loss"]) == (step, epoch, val_loss)
        model = DecoderOnlyTransformer(**state["config"])
        model.load_state_dict(state["model_state_dict"])
        optimizer = AdamW(model.parameters())
        optimizer.load_state_dict(state["optimizer_state_dict"])
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
        assert all(s["step"] == step for s in optimizer.state_dict()["state"].values())


def test_the_script_draws_the_loss_curve(tiny_run):
    pytest.importorskip("matplotlib")
    assert (tiny_run / "loss_curve.png").read_bytes().startswith(b"\x89PNG")


def test_without_matplotlib_the_curve_is_skipped_with_one_log_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    rows = [{"step": 1, "epoch": 0, "loss": 5.0}, {"step": 1, "epoch": 0, "val_loss": 5.1}]
    with caplog.at_level("INFO", logger=scratch1.__name__):
        assert scratch1._plot_loss_curve(rows, tmp_path / "loss_curve.png") is None
    assert not (tmp_path / "loss_curve.png").exists()
    assert [r.getMessage() for r in caplog.records if "matplotlib" in r.getMessage()] == [
        f"matplotlib is not installed (pip install matplotlib); skipping {tmp_path / 'loss_curve.png'}"
    ]


def test_the_same_seed_gives_the_same_metrics_and_each_run_starts_them_fresh(tiny_data, tiny_run, tmp_path):
    again = tmp_path / "again"
    again.mkdir()
    (again / "metrics.jsonl").write_text('{"step": 99, "loss": 1.0}\n')  # a previous run's rows
    assert scratch1.main(_train_argv(tiny_data, again, "--epochs", "2", "--seed", "7")) == 0
    assert (again / "metrics.jsonl").read_bytes() == (tiny_run / "metrics.jsonl").read_bytes()
    other = tmp_path / "other_seed"
    assert scratch1.main(_train_argv(tiny_data, other, "--epochs", "1", "--seed", "8")) == 0
    assert _strict_rows(other / "metrics.jsonl") != _strict_rows(tiny_run / "metrics.jsonl")[:10]


def test_a_missing_data_file_is_one_line_and_a_nonzero_exit(tmp_path):
    missing = tmp_path / "missing.pkl"
    result = subprocess.run(
        [sys.executable, "-m", "scratchlm.compat.scratch1", "--data", str(missing), "--checkpoint-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"scratchlm.compat.scratch1: error: trajectory file {str(missing)!r} does not exist; create it with "
        f"`python -m scratchlm.compat.scratch1_data --output {missing}` or pass --data."
    ]
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--save-every", "0"), ("--save-every", "-3"), ("--epochs", "0"), ("--batch-size", "0")]
)
def test_a_bad_count_is_one_sentence(tiny_data, tmp_path, capsys, flag, value):
    argv = ["--data", str(tiny_data), "--checkpoint-dir", str(tmp_path / "ck"), flag, value]
    assert scratch1.main(argv) == 2
    assert capsys.readouterr().err == f"scratchlm.compat.scratch1: error: {flag} must be at least 1, got {value}.\n"
    assert not (tmp_path / "ck").exists()
