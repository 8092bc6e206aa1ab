"""`scratchlm data trajectories`: writes a loadable course-format file; bad input is one error line."""

from __future__ import annotations

import numpy as np
import pytest

from scratchlm.cli import main
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import load_trajectories


@pytest.mark.parametrize("extra", [[], ["--fast"], ["--version", "v1"]])
def test_the_command_writes_the_requested_dataset(tmp_path, extra):
    out = tmp_path / "data" / "trajectories.pkl"
    argv = ["data", "trajectories", "--num-trajectories", "30", "--seq-length", "8", "--seed", "3", "--no-progress"]
    assert main([*argv, *extra, "--out", str(out)]) == 0
    data = load_trajectories(out)
    assert data.actions_NT.shape == (30, 8) and data.states_NTS.shape == (30, 8, 10)
    expected = generate_trajectories(30, 8, seed=3, version=data.version, fast="--fast" in extra)
    assert np.array_equal(data.actions_NT, expected.actions_NT)
    assert data.version == ("v1" if "v1" in extra else "v2")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--num-trajectories", "0"], "num_trajectories must be a positive integer"),
        (["--num-trajectories", "-5"], "num_trajectories must be a positive integer"),
        (["--seq-length", "1"], "seq_length must be an integer >= 2"),
        (["--version", "v3"], "version 'v3' is unknown"),
        # NumPy's own ValueError for these used to surface as an "internal error" with exit status 1.
        (["--seed", "-1"], "seed must be an integer from 0 to 2**32 - 1"),
        (["--seed", str(2**32)], "seed must be an integer from 0 to 2**32 - 1"),
        (["--seed", "-1", "--fast"], "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_print_one_line_and_leave_the_old_file(tmp_path, capsys, args, needle):
    out = tmp_path / "t.pkl"
    out.write_bytes(b"previous contents")
    assert main(["data", "trajectories", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scratchlm: error: ") and needle in err[0]
    assert out.read_bytes() == b"previous contents"


def test_fast_mode_keeps_seeds_past_the_legacy_generators_range(tmp_path):
    out = tmp_path / "t.pkl"
    argv = ["data", "trajectories", "--num-trajectories", "3", "--seq-length", "4", "--no-progress"]
    assert main([*argv, "--fast", "--seed", str(2**40), "--out", str(out)]) == 0
    assert load_trajectories(out).actions_NT.shape == (3, 4)


def test_other_trajectories_at_out_are_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "t.pkl"
    argv = ["data", "trajectories", "--num-trajectories", "6", "--seq-length", "4", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 0  # the same recipe makes the same tensors: written again
    first = out.read_bytes()
    assert main([*argv, "--seed", "7"]) == 2
    err = capsys.readouterr().err
    assert (
        "already holds other trajectories (version v2, num_trajectories 6, seq_length 4, mode course, seed 42)" in err
    )
    assert out.read_bytes() == first
    (tmp_path / "mine.pkl").write_bytes(b"someone's file")
    assert main([*argv[:-1], str(tmp_path / "mine.pkl")]) == 2
    assert "holds a file this command cannot vouch for" in capsys.readouterr().err
    assert main([*argv, "--seed", "7", "--overwrite"]) == 0 and out.read_bytes() != first
