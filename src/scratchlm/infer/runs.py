"""What generation needs from a run directory: its config, a checkpoint's model, and its data's vocabulary.

A run directory (`runs/NAME`) holds `config.toml` and `checkpoints/{best,last,step_*}.pt`. Text runs take
their tokenizer from the data directory the config names (`data.path` / `tokenizer/`); trajectory runs
rebuild their validation split and token layout from the config exactly as training did.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scratchlm.config import RunConfig
from scratchlm.errors import CheckpointError, ConfigError, DataError
from scratchlm.fileio import refuse_special_file
from scratchlm.model import TransformerLM
from scratchlm.tokenizers.base import END_OF_TEXT, TextTokenizer

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("best", "last")


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    checkpoint: Path
    model: TransformerLM


def load_run(run_dir: str | Path, checkpoint: str | None = None, device: str | torch.device = "cpu") -> LoadedRun:
    """The run's config and the model of `checkpoint` (see `resolve_checkpoint`; None: best, else last).

    `run_dir` may also be a checkpoint file, as `load_model` takes one: its run is the directory around
    checkpoints/, or, for a file moved out of its run, the run config the trainer stores in every checkpoint.
    """
    from scratchlm.presets import load_toml_file
    from scratchlm.train.checkpoint import load_model

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise DataError(
            f"{run_dir} does not exist; give the directory of a trained run (runs/NAME) or a checkpoint file in it."
        )
    if not run_dir.is_dir():
        # A pipe or device would hang torch.load (or read forever), and is named as what it is.
        refuse_special_file(run_dir, "run")
    path = None
    if run_dir.is_file():
        if checkpoint is not None:
            raise ConfigError(
                f"--run {run_dir} is already a checkpoint file, so --checkpoint {checkpoint} has nothing to "
                "choose; drop one of them."
            )
        path, run_dir = run_dir, run_dir.parent.parent
        if not (run_dir / "config.toml").is_file():
            model = check_finite_weights(load_model(path, device=device), path)
            return LoadedRun(path.parent, _run_config_in_checkpoint(path), path, model)
    config_path = run_dir / "config.toml"
    refuse_special_file(config_path, "run config")  # not "no config.toml" when a folder or pipe sits there
    if not config_path.is_file():
        raise DataError(
            f"{run_dir} is not a run directory (no config.toml); give the directory of a trained run, runs/NAME."
        )
    config = RunConfig.from_tables(load_toml_file(str(config_path)))
    if path is None:
        path = resolve_checkpoint(run_dir, checkpoint)
    model = check_finite_weights(load_model(path, device=device), path)
    if model.config.vocab_size != config.model.vocab_size:
        # Its ids mean another tokenizer's (or trajectory layout's) tokens: decoding them here prints noise.
        raise CheckpointError(
            f"{path} was trained with a vocabulary of {model.config.vocab_size} ids but the run in {run_dir} has "
            f"{config.model.vocab_size}, so it comes from another run; give --run the run it was trained in."
        )
    if model.config.to_dict() != config.model.to_dict():
        logger.warning("%s was built with another [model] than %s says; using the checkpoint's", path, config_path)
    return LoadedRun(run_dir, config, path, model)


def check_finite_weights(model: TransformerLM, path: Path) -> TransformerLM:
    """Refuse a checkpoint of a diverged model: NaN logits sample nothing (and argmax of NaN is noise)."""
    bad = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not tensor.isfinite().all()
    ]
    if bad:
        raise CheckpointError(
            f"{path} holds NaN or infinite weights ({bad[0]}{' and more' if len(bad) > 1 else ''}): the run had "
            "diverged when it was saved; use an earlier checkpoint (--checkpoint STEP) or retrain with a lower lr."
        )
    return model


def _run_config_in_checkpoint(path: Path) -> RunConfig:
    from scratchlm.train.checkpoint import read_checkpoint

    tables = read_checkpoint(path).get("run_config")
    if not isinstance(tables, dict):
        raise DataError(
            f"{path} is a checkpoint outside any run directory and holds no run config, so its data and tokenizer "
            "are unknown; give --run runs/NAME --checkpoint PATH for the run it came from."
        )
    return RunConfig.from_tables(tables)


def resolve_checkpoint(run_dir: Path, choice: str | None) -> Path:
    """The checkpoint file `choice` names: None prefers best.pt and falls back to last.pt; "best", "last" or
    any other file of checkpoints/ by its name (with or without .pt); a step number (its step_*.pt); or a path."""
    folder = run_dir / "checkpoints"
    if choice is None:
        for name in CHECKPOINT_NAMES:
            # A folder or pipe named best.pt is a damaged run: said so, rather than falling back to last.pt unseen.
            refuse_special_file(folder / f"{name}.pt", "checkpoint")
            if (folder / f"{name}.pt").is_file():
                return folder / f"{name}.pt"
        raise CheckpointError(
            f"{folder} holds neither best.pt nor last.pt; train the run first (or pass --checkpoint PATH)."
        )
    candidates = [folder / f"{choice}.pt", folder / choice, Path(choice)]
    if choice.isdigit():
        candidates.insert(0, folder / f"step_{int(choice):09d}.pt")  # the trainer's name for a step checkpoint
    for path in candidates:
        if path.is_file():
            return path
    for path in candidates:
        # Something of that name exists but is no file (a directory x.pt, a FIFO): "does not exist" would mislead.
        if path.exists():
            refuse_special_file(path, "--checkpoint")
    held = sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []
    have = f"{folder} holds {', '.join(held)}" if held else f"{folder} holds no checkpoints"
    raise CheckpointError(
        f"checkpoint {choice!r} does not exist ({have}); use --checkpoint best, last, a step or a .pt file."
    )


def text_tokenizer(config: RunConfig, model: TransformerLM) -> TextTokenizer:
    """The tokenizer of a text run's data directory, after checking the model can read its ids."""
    from scratchlm.data.text import load_token_dir

    if config.data.kind != "tokens":
        raise ConfigError("this is a trajectory run; give it --prompt-actions or --from-val instead of a text prompt.")
    tokenizer = load_token_dir(config.data.path).tokenizer()
    check_vocabulary(model.config.vocab_size, tokenizer.vocab_size, f"the tokenizer in {config.data.path}")
    return tokenizer


def end_of_text_ids(tokenizer: TextTokenizer) -> list[int]:
    """[the id of <|endoftext|>] where the tokenizer has it, else []: the stop tokens of text generation."""
    return [tokenizer.special_token_id(END_OF_TEXT)] if END_OF_TEXT in tokenizer.special_tokens else []


def sampling_vocab_limit(tokenizer: TextTokenizer, model: TransformerLM) -> int | None:
    """The tokenizer's vocabulary size where the model's is padded beyond it (ids past it have no text), else None."""
    return tokenizer.vocab_size if tokenizer.vocab_size < model.config.vocab_size else None


def check_vocabulary(model_vocab: int, data_vocab: int, source: str) -> None:
    """A model must know every id its data can produce; a larger (padded) model vocabulary is fine."""
    if model_vocab < data_vocab:
        raise CheckpointError(
            f"the checkpoint's vocabulary has {model_vocab} ids but {source} has {data_vocab}: they come from "
            "different vocabularies; generate with the data and tokenizer the checkpoint was trained on."
        )


@dataclass
class ValidationTrajectories:
    """The validation rows of a trajectory run, tokenized in its layout."""

    tokens_NL: np.ndarray
    tokens_per_step: int
    action_offset: int
    action_vocab: int
    version: str | None

    @property
    def steps(self) -> int:
        return self.tokens_NL.shape[1] // self.tokens_per_step


def validation_trajectories(
    config: RunConfig, model: TransformerLM, checkpoint: Path | None = None
) -> ValidationTrajectories:
    """Every validation trajectory of the run, rebuilt through the training data path (same split, same bins);
    with `checkpoint`, refused if the data at data.path is no longer what that checkpoint trained on."""
    from scratchlm.data.actions import layout_from_dict
    from scratchlm.model import IGNORE_INDEX
    from scratchlm.train.datasets import build_training_data
    from scratchlm.train.distributed import DistInfo

    if config.data.kind != "trajectories":
        raise ConfigError(
            "--prompt-actions, --from-val and --rollout need a trajectory run; this one trains on text, so give "
            "it --prompt TEXT."
        )
    all_rows = dataclasses.replace(config, train=dataclasses.replace(config.train, eval_batches=0))
    data = build_training_data(all_rows, torch.device("cpu"), DistInfo())
    if checkpoint is not None:
        check_trained_on(data.fingerprint, config, checkpoint)
    layout = layout_from_dict(data.info["layout"])
    check_vocabulary(model.config.vocab_size, layout.vocab_size, "the run's trajectory layout")
    rows = []
    for inputs_BT, targets_BT in data.val_batches():
        # Batches are (tokens[:-1], tokens[1:]) with non-action targets ignored; every row ends in an action.
        assert bool((targets_BT[:, -1] != IGNORE_INDEX).all())
        rows.append(torch.cat([inputs_BT, targets_BT[:, -1:]], dim=1))
    tokens_NL = torch.cat(rows).numpy()
    per_step = getattr(layout, "tokens_per_step", 1)
    return ValidationTrajectories(tokens_NL, per_step, layout.action_offset, layout.action_vocab, data.info["version"])


def check_trained_on(
    fingerprint: str | None,
    config: RunConfig,
    checkpoint: Path,
    *,
    harm: str = "its validation split would hold other rows, some of them trained on",
    fix: str = "put the run's data back there, or train a new run on this data",
) -> None:
    """Refuse data whose `fingerprint` differs from the one `checkpoint` was trained on (regenerated
    trajectories, a corpus prepared again), saying the `harm` and the `fix`. Checkpoints from before
    fingerprints were kept are not checked."""
    from scratchlm.train.checkpoint import read_checkpoint

    saved = read_checkpoint(checkpoint).get("data_fingerprint")
    if saved is None or fingerprint is None or saved == fingerprint:
        return
    raise DataError(
        f"the data at {config.data.path} is not what {checkpoint} was trained on (it changed since), so {harm}; {fix}."
    )
