"""Checkpoints: round trips through paths and file objects, atomic writes, safe loading, and unwrapping."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from scratchlm.errors import CheckpointError, WriteError
from scratchlm.model import TransformerLM
from scratchlm.optim import AdamW
from scratchlm.presets import model_config_from_preset
from scratchlm.train import checkpoint as ckpt_module
from scratchlm.train.checkpoint import load_checkpoint, load_model, read_checkpoint, save_checkpoint


def trained_pair(steps: int = 3) -> tuple[TransformerLM, AdamW]:
    model = TransformerLM(model_config_from_preset("debug"))
    opt = AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, 256, (2, 16))
        _, loss = model(idx, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("target", ["path", "fileobj"])
def test_round_trip_restores_model_optimizer_and_iteration(tmp_path: Path, target: str) -> None:
    model, opt = trained_pair()
    out: str | io.BytesIO = str(tmp_path / "ckpt.pt") if target == "path" else io.BytesIO()
    save_checkpoint(model, opt, 1234, out)
    if isinstance(out, io.BytesIO):
        out.seek(0)
    fresh = TransformerLM(model.config)
    fresh_opt = AdamW(fresh.parameters(), lr=1e-2)
    assert load_checkpoint(out, fresh, fresh_opt) == 1234
    assert_same_state(fresh.state_dict(), model.state_dict())
    assert_same_state(fresh_opt.state_dict()["state"], opt.state_dict()["state"])


def test_a_checkpoint_alone_rebuilds_the_model(tmp_path: Path) -> None:
    model, opt = trained_pair()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, opt, 3, path)
    rebuilt = load_model(path)
    assert rebuilt.config == model.config
    idx = torch.randint(0, 256, (2, 10))
    torch.testing.assert_close(rebuilt(idx)[0], model(idx)[0], rtol=0, atol=0)


def test_load_model_keeps_the_checkpoints_precision_returns_eval_mode_and_takes_a_run_dir(tmp_path: Path) -> None:
    model, opt = trained_pair()
    model = model.double()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    save_checkpoint(model, opt, 3, tmp_path / "run" / "checkpoints" / "last.pt")
    rebuilt = load_model(tmp_path / "run")  # a run directory stands for its best.pt, else last.pt
    assert rebuilt.token_embeddings.weight.dtype == torch.float64 and not rebuilt.training
    idx = torch.randint(0, 256, (2, 10))
    torch.testing.assert_close(rebuilt(idx)[0], model.eval()(idx)[0], rtol=0, atol=0)
    assert load_model(tmp_path / "run", dtype=torch.float32).lm_head.weight.dtype == torch.float32
    with pytest.raises(CheckpointError, match=r"is a directory; pass a \.pt file"):
        load_model(tmp_path)  # no checkpoints/ inside


def test_a_compiled_wrapper_saves_the_plain_state_dict_layout(tmp_path: Path) -> None:
    model, opt = trained_pair(1)
    compiled = torch.compile(model)  # wrapping is lazy: nothing is compiled unless it is called
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    save_checkpoint(compiled, opt, 1, tmp_path / "c.pt")
    keys = read_checkpoint(tmp_path / "c.pt")["model"].keys()
    assert keys == model.state_dict().keys()


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, opt = trained_pair(1)
    path = tmp_path / "last.pt"
    save_checkpoint(model, opt, 1, path)
    before = path.read_bytes()

    def failing_save(obj: object, fh: object) -> None:
        fh.write(b"partial bytes")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_module.torch, "save", failing_save)
    expected = r"cannot write .*last\.pt: disk full \(ENOSPC\); the previous file is intact"
    with pytest.raises(WriteError, match=expected) as info:
        save_checkpoint(model, opt, 2, path)
    assert isinstance(info.value, OSError) and info.value.errno == 28
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch should-not-exist",))


def test_checkpoints_that_carry_code_are_refused_and_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "iteration": 0, "hook": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        read_checkpoint(evil)
    assert not (tmp_path / "should-not-exist").exists()
    plain_pickle = tmp_path / "plain.pt"
    plain_pickle.write_bytes(pickle.dumps({"model": _Payload()}))
    with pytest.raises(CheckpointError):
        read_checkpoint(plain_pickle)
    assert not (tmp_path / "should-not-exist").exists()


def test_missing_truncated_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    model, opt = trained_pair(1)
    good = tmp_path / "good.pt"
    save_checkpoint(model, opt, 1, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        read_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a scratchlm checkpoint"):
        read_checkpoint(foreign)
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)  # the usual PyTorch habit: the fix is named, not just the failure
    with pytest.raises(CheckpointError, match=r"bare state dict .* model\.load_state_dict\(torch\.load\(path\)\)"):
        load_model(bare)
    other = TransformerLM(model_config_from_preset("debug", ["model.d_model=64"]))
    with pytest.raises(CheckpointError, match="do not fit this model"):
        load_checkpoint(good, other)
