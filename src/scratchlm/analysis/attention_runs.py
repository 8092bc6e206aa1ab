"""Attention figures for a trained run: pick a sequence (a validation sample or a text prompt), label its
tokens the way its data reads, and draw every layer and head plus the head-averaged map of each layer.

Labels: actions-only trajectory runs show the action token ids; unified runs show `s<dim>:<bin>` for
state tokens and `a<token>` for actions; text runs show the decoded text of each token (space as `·`,
newline as `\\n`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from scratchlm.analysis.attention import attention_maps, plot_attention_maps, plot_layer_means
from scratchlm.config import RunConfig
from scratchlm.errors import ConfigError
from scratchlm.infer.runs import LoadedRun, check_trained_on, load_run, text_tokenizer
from scratchlm.model import TransformerLM


@dataclass
class AttentionFigures:
    grid: Path  # every layer (rows) and head (columns), plus the head mean
    means: Path  # the head-averaged map of each layer, larger
    labels: list[str]  # the token labels, in order
    maps_LHTT: Tensor
    what: str = "validation sequence 0"  # what the maps were taken on, e.g. "validation trajectory 3"


def run_attention_figures(
    run_dir: str | Path,
    *,
    sample: int | None = None,
    prompt: str | None = None,
    checkpoint: str | None = None,
    out_dir: str | Path | None = None,
    loaded: LoadedRun | None = None,
) -> AttentionFigures:
    """Write attention_<tag>.png and attention_<tag>_mean.png (tag: val<K> or prompt) to out_dir (RUN/plots)."""
    loaded = loaded if loaded is not None else load_run(run_dir, checkpoint)  # a caller may pass it, loaded once
    config, model = loaded.config, loaded.model
    if prompt is not None:
        ids, labels = _prompt_tokens(config, model, prompt)
        tag, what = "prompt", f"prompt {prompt[:40]!r}"
    else:
        k = 0 if sample is None else sample
        ids, labels = validation_sequence(config, k, loaded.checkpoint)
        tag, what = f"val{k}", f"validation {'trajectory' if config.data.kind == 'trajectories' else 'window'} {k}"
    if checkpoint is not None and loaded.checkpoint.name != "best.pt":
        # Another checkpoint's maps get their own files: the default ones (best's) are what the report shows.
        tag += f"_{loaded.checkpoint.stem}"
        what += f" ({loaded.checkpoint})"
    ids = ids[: model.config.context_length]
    labels = labels[: len(ids)]
    maps = attention_maps(model, torch.as_tensor(ids))
    folder = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    name = Path(run_dir).name
    mask = "" if model.config.causal else ", NO causal mask"
    grid = plot_attention_maps(maps, labels, folder / f"attention_{tag}.png", f"{name}: attention on {what}{mask}")
    means = plot_layer_means(maps, labels, folder / f"attention_{tag}_mean.png", f"{name}: {what}{mask}")
    return AttentionFigures(grid, means, labels, maps, what)


def validation_sequence(config: RunConfig, k: int, checkpoint: Path | None = None) -> tuple[list[int], list[str]]:
    """The model input of validation row k (as evaluation feeds it) and its token labels; with `checkpoint`,
    refused if the data at data.path is no longer what that checkpoint trained on."""
    from scratchlm.train.datasets import build_training_data
    from scratchlm.train.distributed import DistInfo

    every_row = dataclasses.replace(config, train=dataclasses.replace(config.train, eval_batches=0))
    data = build_training_data(every_row, torch.device("cpu"), DistInfo())
    if checkpoint is not None:
        check_trained_on(data.fingerprint, config, checkpoint)
    if k < 0:
        raise ConfigError(f"--sample must be >= 0, got {k}.")
    seen = 0
    for inputs_BT, _ in data.val_batches():
        if k < seen + len(inputs_BT):
            ids = inputs_BT[k - seen].tolist()
            return ids, token_labels(ids, config, data.info)
        seen += len(inputs_BT)
    raise ConfigError(f"--sample {k} is past the end of the validation set ({seen} sequences); pick 0..{seen - 1}.")


def token_labels(ids: list[int], config: RunConfig, data_info: dict) -> list[str]:
    """How each id reads in this run's data: action ids, s<dim>:<bin> / a<action>, or decoded text."""
    if config.data.kind == "trajectories":
        from scratchlm.data.actions import UnifiedLayout, layout_from_dict

        layout = layout_from_dict(data_info["layout"])
        if not isinstance(layout, UnifiedLayout):
            return [str(i) for i in ids]
        bins = layout.binner.num_bins
        return [
            f"a{i - layout.action_offset}" if i >= layout.action_offset else f"s{i // bins}:{i % bins}" for i in ids
        ]
    from scratchlm.data.text import load_token_dir

    tokenizer = load_token_dir(config.data.path).tokenizer()
    return [_printable(tokenizer.decode([i])) for i in ids]


def _prompt_tokens(config: RunConfig, model: TransformerLM, prompt: str) -> tuple[list[int], list[str]]:
    if config.data.kind != "tokens":
        raise ConfigError(
            "--prompt needs a text run; for a trajectory run pick a validation trajectory with --sample K."
        )
    tokenizer = text_tokenizer(config, model)
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ConfigError("--prompt is empty after tokenization; give some text.")
    if len(ids) > model.config.context_length:
        raise ConfigError(
            f"--prompt is {len(ids)} tokens but the model's context_length is {model.config.context_length}; "
            "shorten the prompt (the attention maps are of one forward pass, which cannot slide)."
        )
    return ids, [_printable(tokenizer.decode([i])) for i in ids]


def _printable(text: str) -> str:
    return text.replace(" ", "·").replace("\n", "\\n").replace("\t", "\\t")[:10] or "∅"
