"""A Scratch-1 student's walk through the course scripts: problems found there, pinned down."""

from __future__ import annotations

import pytest

from scratchlm.compat import scratch1_data


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--num_trajectories", "0"], "num_trajectories must be a positive integer, got 0."),
        (["--seq_length", "1"], "seq_length must be an integer >= 2"),
        (["--seed", "-1"], "seed must be an integer from 0 to 2**32 - 1"),
    ],
)
def test_the_data_script_reports_bad_arguments_in_one_line(tmp_path, capsys, args, needle):
    out = tmp_path / "trajectories.pkl"
    assert scratch1_data.main([*args, "--output", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("scratchlm.compat.scratch1_data: error: ") and needle in err[0]
    assert not out.exists()


def test_generate_dataset_rejects_a_bad_seed_as_a_value_error():
    # The course's generate_dataset raises NumPy's ValueError; ours still is one (ConfigError subclasses it).
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 2"):
        scratch1_data.generate_dataset(2, 3, seed=-1)
