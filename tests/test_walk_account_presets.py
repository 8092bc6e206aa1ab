"""A user's walk through `scratchlm account`, `presets` and `info`: what each was found missing or misleading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchlm.cli import main
from scratchlm.config import ModelConfig
from scratchlm.model import TransformerLM
from scratchlm.presets import list_presets, resolve_run_config
from scratchlm.train.checkpoint import save_checkpoint


@pytest.mark.parametrize("name", list_presets())
def test_presets_show_prints_a_config_file_that_resolves_to_the_preset(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["presets", "show", name]) == 0
    config = tmp_path / "pasted.toml"
    config.write_text(capsys.readouterr().out, encoding="utf-8")
    assert resolve_run_config(None, str(config)) == resolve_run_config(name)


def test_presets_show_of_a_typo_names_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "show", "debg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown preset 'debg'; available presets:" in err and "debug" in err
    assert main(["presets", "show"]) == 2
    assert "needs a preset name" in capsys.readouterr().err


def test_account_reaches_gpt2_xl_itself_with_set(capsys: pytest.CaptureFixture[str]) -> None:
    # GPT-2 XL: GELU MLP, tied head, learned positions, LayerNorm; 1,557,611,200 with its 691,200 biases,
    # which this architecture does not have.
    argv = ["account", "--model", "gpt2-xl", "--ffn", "gelu", "--json"]
    argv += ["--set", "model.tie_embeddings=true", "--set", "model.positional=learned", "--set", "model.norm=layernorm"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"]["total"] == 1_557_611_200 - 48 * 9 * 1600 == 1_556_920_000
    assert main(["account", "--model", "gpt2-xl", "--set", "train.lr=3"]) == 2
    assert "--set takes model.KEY=VALUE" in capsys.readouterr().err


def test_account_says_its_bf16_line_is_not_what_autocast_training_keeps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["account", "--model", "gpt2-xl"]) == 0
    out = capsys.readouterr().out
    assert "bf16 autocast too; activations excluded): weights 7.92 GiB" in out
    assert "all in bf16 (pure bf16, not autocast): weights 3.96 GiB" in out


def _fake_run(run_dir: Path, **model: object) -> ModelConfig:
    config = ModelConfig(vocab_size=40, context_length=16, d_model=16, num_layers=2, num_heads=2, **model)  # type: ignore[arg-type]
    save_checkpoint(TransformerLM(config), None, 7, run_dir / "checkpoints" / "last.pt")
    return config


@pytest.mark.parametrize("tied", [False, True])
def test_info_describes_a_run_and_its_checkpoint(
    tmp_path: Path, tied: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "checkpoints").mkdir()
    config = _fake_run(tmp_path, tie_embeddings=tied, positional="learned")
    built = TransformerLM(config).num_params()
    for source in (tmp_path, tmp_path / "checkpoints" / "last.pt"):
        assert main(["info", str(source), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["model"] == config.to_dict()
        assert report["params"]["total"] == report["checkpoint"]["stored_params"] == built
        assert report["checkpoint"]["iteration"] == 7
    assert main(["info", str(tmp_path)]) == 0
    assert "checkpoints/last.pt (step 7)" in capsys.readouterr().out
    assert main(["info", str(tmp_path), "--preset", "debug"]) == 2
    assert "cannot change it; drop it" in capsys.readouterr().err


def test_info_prints_values_as_the_toml_literals_set_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--preset", "debug"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  causal                  true" in lines and '  ffn                     "swiglu"' in lines
    # every value starts in one column, the longest key (low_precision_residual) included
    assert len({len(line) - len(line[2:].split("  ", 1)[1].lstrip()) for line in lines}) == 1
