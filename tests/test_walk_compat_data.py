"""A Scratch-1 student's walk through data generation, the compat training script and its checkpoints:
problems found there, pinned down (memory checks, the version of a bare course pickle, attention maps)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from scratchlm.analysis.attention import describe_attention
from scratchlm.cli import main as cli_main
from scratchlm.compat import scratch1, scratch1_data
from scratchlm.data import trajectories
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import load_trajectories, save_trajectories, sidecar_path
from scratchlm.data.trajectory_metrics import loss_floor
from scratchlm.errors import EXIT_OUT_OF_MEMORY, DataError, OutOfMemoryError

# ------------------------------------------------------------------------------ memory before allocating


@pytest.fixture
def little_memory(monkeypatch):
    """A machine with 1 MiB to spare: 1,000 course trajectories (~2.4 MB) cannot be generated on it."""
    monkeypatch.setattr(trajectories, "available_memory_bytes", lambda: 2**20)


def _one_error_line(capsys, prefix):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(prefix), err
    return err[0]


def test_the_cli_refuses_a_dataset_larger_than_memory_in_one_sentence(tmp_path, capsys, little_memory):
    out = tmp_path / "t.pkl"
    argv = ["data", "trajectories", "--num-trajectories", "1000", "--seq-length", "50", "--no-progress"]
    assert cli_main([*argv, "--out", str(out)]) == EXIT_OUT_OF_MEMORY
    line = _one_error_line(capsys, "scratchlm: error: ")
    assert "1,000 trajectories x 50 steps needs about" in line and "only 1.0 MiB is available" in line
    assert line.endswith("lower num_trajectories or seq_length.")
    assert not out.exists()


def test_the_course_data_script_refuses_it_too(tmp_path, capsys, little_memory):
    out = tmp_path / "t.pkl"
    assert scratch1_data.main(["--num_trajectories", "1000", "--output", str(out)]) == EXIT_OUT_OF_MEMORY
    assert "needs about" in _one_error_line(capsys, "scratchlm.compat.scratch1_data: error: ")
    assert not out.exists()


def test_library_generation_checks_before_it_allocates(monkeypatch, little_memory):
    def no_allocation(*args, **kwargs):
        raise AssertionError("allocated before checking")

    monkeypatch.setattr(trajectories.np, "empty", no_allocation)
    for fast in (False, True):
        with pytest.raises(OutOfMemoryError, match=r"1,000 trajectories x 50 steps needs about"):
            generate_trajectories(1000, 50, fast=fast)


def test_an_absurd_seq_length_is_an_out_of_memory_sentence_not_an_internal_error(tmp_path, capsys):
    # It used to reach np.empty and surface as "internal error (MemoryError ...) this is a bug", status 1.
    argv = ["data", "trajectories", "--num-trajectories", "10", "--seq-length", str(10**12), "--no-progress"]
    assert cli_main([*argv, "--out", str(tmp_path / "t.pkl")]) == EXIT_OUT_OF_MEMORY
    line = _one_error_line(capsys, "scratchlm: error: ")
    assert "10 trajectories x 1,000,000,000,000 steps needs about" in line and "TiB" in line


def test_where_memory_is_unknown_numpys_refusal_becomes_the_same_sentence(monkeypatch):
    monkeypatch.setattr(trajectories, "available_memory_bytes", lambda: None)
    with pytest.raises(OutOfMemoryError, match=r"needs about .* but the system refused it; lower"):
        generate_trajectories(10, 10**12)


def test_the_course_size_fits_and_the_estimate_covers_the_arrays_and_their_pickle():
    trajectories.check_generation_memory(10000, 50, save=True)  # any machine that runs the tests has ~80 MB to spare
    arrays = 10000 * 50 * (10 * 4 + 8)
    assert arrays < trajectories.estimate_generation_bytes(10000, 50) < 2 * arrays
    assert trajectories.estimate_generation_bytes(10000, 50, save=True) >= 3 * arrays  # the payload and torch's buffers
    assert (
        trajectories.estimate_generation_bytes(10, 10**6, fast=True) > 10 * 10**6 * 200
    )  # the float64 chunk dominates


# ----------------------------------------------------------------- the version of a bare course pickle


def _bare_pickle(path, data):
    """As the course's generate_data.py writes it: the dict of tensors, no sidecar beside it."""
    payload = {"states": torch.from_numpy(data.states_NTS), "actions": torch.from_numpy(data.actions_NT)}
    sidecar_path(path).unlink(missing_ok=True)
    path.write_bytes(pickle.dumps(payload, protocol=4))
    return path


@pytest.mark.parametrize(
    ("name", "version"), [("course_v2_seed42_1000.pkl", "v2"), ("course_v1_trajectories_1000.pkl", "v1")]
)
def test_the_course_files_are_recognized_without_a_sidecar(shared_data, name, version):
    assert load_trajectories(shared_data / "scratch1" / name).version == version


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_bare_pickle_gets_the_version_its_arrays_show(tmp_path, version, fast):
    data = generate_trajectories(12, 50, seed=5, version=version, fast=fast)
    loaded = load_trajectories(_bare_pickle(tmp_path / "course.pkl", data))
    assert loaded.version == version
    assert loss_floor(loaded.version) == (pytest.approx(math.log(5)) if version == "v2" else None)


def test_an_explicit_version_and_a_valid_sidecar_still_win(tmp_path):
    data = generate_trajectories(12, 50, seed=5, version="v2")
    path = _bare_pickle(tmp_path / "course.pkl", data)
    assert load_trajectories(path, version="v1").version == "v1"
    save_trajectories(generate_trajectories(12, 50, seed=5, version="v1"), path)
    assert load_trajectories(path).version == "v1"


def test_a_stale_sidecar_falls_back_to_the_arrays(tmp_path):
    path = tmp_path / "t.pkl"
    save_trajectories(generate_trajectories(12, 50, seed=1, version="v2"), path)
    sidecar = sidecar_path(path).read_bytes()
    _bare_pickle(path, generate_trajectories(12, 50, seed=2, version="v1"))
    sidecar_path(path).write_bytes(sidecar)  # it now describes another file than the one beside it
    assert load_trajectories(path).version == "v1"


def test_data_that_is_not_the_course_arm_or_too_small_to_tell_stays_unknown():
    rng = np.random.default_rng(0)
    random_states = rng.standard_normal((20, 50, 10)).astype(np.float32)
    assert trajectories.detect_version(random_states, rng.integers(0, 256, (20, 50))) is None
    v2 = generate_trajectories(20, 50, seed=3, version="v2")
    assert (
        trajectories.detect_version(v2.states_NTS, rng.integers(0, 256, (20, 50))) is None
    )  # course arm, other tokens
    assert trajectories.detect_version(v2.states_NTS[..., :7], v2.actions_NT) is None  # not the course's 10 state dims
    tiny = generate_trajectories(2, 10, seed=3, version="v2")
    assert trajectories.detect_version(tiny.states_NTS, tiny.actions_NT) is None  # 18 steps cannot tell v2 from chance
    tiny_v1 = generate_trajectories(3, 10, seed=3, version="v1")
    assert trajectories.detect_version(tiny_v1.states_NTS, tiny_v1.actions_NT) == "v1"  # v1 is exact from 27 steps


# --------------------------------------------------------------------- attention maps of a checkpoint


TINY = {"vocab_size": 256, "dim": 16, "num_layers": 2, "num_heads": 2, "ff_hidden_dim": 32, "max_seq_len": 11}


@pytest.fixture
def course_run(tmp_path):
    """A trajectory file and a best_model.pt in the layout the compat training script writes."""
    data = tmp_path / "data" / "trajectories.pkl"
    assert scratch1_data.main(["--num_trajectories", "30", "--seq_length", "12", "--output", str(data)]) == 0
    torch.manual_seed(0)
    model = scratch1.DecoderOnlyTransformer(**TINY, dropout=0.0)
    checkpoint = tmp_path / "checkpoints" / "best_model.pt"
    scratch1.atomic_save(scratch1._checkpoint_state(model, {**TINY, "dropout": 0.0}, 0, 5.0), checkpoint)
    return data, checkpoint, model


def test_visualize_writes_the_attention_figures_of_a_compat_checkpoint(course_run, capsys):
    pytest.importorskip("matplotlib")
    data, checkpoint, _ = course_run
    small = {**TINY, "num_layers": 1, "num_heads": 1, "dropout": 0.0}  # one panel pair: drawing is the cost here
    model = scratch1.DecoderOnlyTransformer(**small)
    scratch1.atomic_save(scratch1._checkpoint_state(model, small, 0, 5.0), checkpoint)
    argv = ["visualize", "--checkpoint", str(checkpoint), "--data", str(data), "--sample", "1", "--seed", "7"]
    assert scratch1.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    grid, means = checkpoint.parent / "attention_maps.png", checkpoint.parent / "attention_maps_mean.png"
    assert out[:2] == [str(grid), str(means)]
    assert grid.read_bytes().startswith(b"\x89PNG") and means.read_bytes().startswith(b"\x89PNG")
    # The sentences are those of validation trajectory 1 of training's split (seed 7), as training fed it.
    ids_T = scratch1.validation_actions(data, seed=7)[1, :-1]
    assert out[2:] == describe_attention(scratch1.course_attention_maps(model.eval(), ids_T))


def test_the_maps_are_the_probabilities_the_course_model_attends_with(course_run):
    data, _, model = course_run
    ids_T = scratch1.validation_actions(data, seed=7)[2, :-1]
    maps_LHTT = scratch1.course_attention_maps(model, ids_T)
    assert maps_LHTT.shape == (2, 2, 11, 11)
    assert torch.allclose(maps_LHTT.sum(-1), torch.ones(2, 2, 11))
    assert torch.all(maps_LHTT.triu(1) == 0)  # causal
    # Weighting layer 0's values by its maps reproduces the attention module's own output.
    model.eval()
    block = model.blocks[0]
    x_1TD = block.norm1(model.token_embedding(ids_T[None]))
    attn = block.attention
    v_HTd = attn.v_proj(x_1TD[0]).reshape(11, 2, 8).transpose(0, 1)
    mixed_TD = (maps_LHTT[0] @ v_HTd).transpose(0, 1).reshape(11, 16)
    assert torch.allclose(attn.output_proj(mixed_TD), attn(x_1TD)[0], atol=1e-5)


def test_the_validation_trajectory_is_the_one_training_held_out(course_run):
    data, _, _ = course_run
    loaded = load_trajectories(data)
    dataset = {"states": torch.from_numpy(loaded.states_NTS), "actions": torch.from_numpy(loaded.actions_NT)}
    scratch1.seed_everything(7)  # what _train does before create_dataloaders
    _, val_loader = scratch1_data.create_dataloaders(dataset, batch_size=4)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    held_out = scratch1.validation_actions(data, seed=7)
    assert torch.equal(held_out, val_loader.dataset.tensors[1])
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG is left alone


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("missing", "does not exist; train first"),
        ("scratchlm", "was written by `scratchlm train`, not by scratchlm.compat.scratch1; draw its attention"),
        ("bare", "has no 'model_state_dict' and 'config', so scratchlm.compat.scratch1 did not write it"),
        ("mismatch", "the weights do not fit its config"),
        ("sample", "--sample 99 is not a validation trajectory"),
    ],
)
def test_visualize_errors_are_one_sentence(course_run, capsys, setup, needle):
    data, checkpoint, model = course_run
    sample = "99" if setup == "sample" else "0"
    if setup == "missing":
        checkpoint.unlink()
    elif setup == "scratchlm":
        torch.save({"model": model.state_dict(), "run_config": {}, "config": {}}, checkpoint)
    elif setup == "bare":
        torch.save(model.state_dict(), checkpoint)
    elif setup == "mismatch":
        torch.save({"model_state_dict": model.state_dict(), "config": {**TINY, "dim": 32}}, checkpoint)
    argv = ["visualize", "--checkpoint", str(checkpoint), "--data", str(data), "--sample", sample]
    assert scratch1.main(argv) == 2
    assert needle in _one_error_line(capsys, "scratchlm.compat.scratch1 visualize: error: ")


def test_load_model_rebuilds_the_checkpoint_in_eval_mode(course_run):
    _, checkpoint, model = course_run
    loaded = scratch1.load_model(checkpoint)
    assert not loaded.training
    ids = torch.randint(0, 256, (2, 11))
    assert torch.equal(loaded(ids)[0], model.eval()(ids)[0])


# ------------------------------------------------------------------------- further walk-through finds


def test_the_validation_loss_is_the_mean_over_tokens_whatever_the_batch_size():
    # It was the mean of batch means: with 5 trajectories in batches of 2, the last (1 row) counted double.
    torch.manual_seed(0)
    model = scratch1.DecoderOnlyTransformer(**TINY, dropout=0.0)
    actions = torch.randint(0, 256, (5, 12))
    pairs = TensorDataset(torch.zeros(5, 12, 10), actions)
    whole = scratch1._validation_loss(model, DataLoader(pairs, batch_size=5), "cpu")
    in_pieces = scratch1._validation_loss(model, DataLoader(pairs, batch_size=2), "cpu")
    assert in_pieces == pytest.approx(whole, rel=1e-6)
    assert whole == pytest.approx(model(actions[:, :-1], actions[:, 1:])[1].item(), rel=1e-6)


@pytest.mark.parametrize(
    ("start", "target", "needle"),
    [
        (np.zeros(6), np.zeros(3), "start_joints must hold 7 finite numbers"),
        (np.zeros(7), np.zeros(2), "target_pos must hold 3 finite numbers"),
        (np.full(7, np.nan), np.zeros(3), "start_joints must hold 7 finite numbers"),
        (np.zeros(7), [0.0, math.inf, 0.0], "target_pos must hold 3 finite numbers"),
    ],
)
def test_generate_trajectory_names_a_bad_start_or_target(start, target, needle):
    # A wrong size was NumPy's "cannot reshape"; a NaN ran through and returned NaN states.
    with pytest.raises(DataError, match=needle):
        scratch1_data.generate_trajectory(start, target, seq_length=4)
