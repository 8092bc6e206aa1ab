"""The Scratch-1 course's `backbone.py` API, as thin wrappers over scratchlm's from-scratch layers.

Drop this module in place of the course's `backbone.py`: the class names, constructor signatures and
attribute names the course's tests and training script use are all here, and each class delegates its
math to the library (RMSNorm, RoPE, causal attention, Linear/Embedding, cross-entropy, AdamW, clipping).
Differences from the course template that do not change the API: RoPE rotates interleaved pairs
(x[2i], x[2i+1]), as the library does; layers use the library's initialization. `FeedForward` is the
template code's two-matrix MLP (fc1, SiLU, fc2), although the template README's diagram labels the block
SwiGLU: the `scratch1` preset of `scratchlm train` follows the diagram, and `--set model.ffn=silu` gives
it this MLP.

Shapes: B = batch, H = heads, T = positions, D = model dim, Dh = head dim, V = vocabulary.

`python -m scratchlm.compat.scratch1 --data data/trajectories.pkl --epochs 10` trains the course model
(Task C: teacher forcing, gradient clipping at norm 1.0) and writes into `--checkpoint-dir` (checkpoints/):

- `metrics.jsonl`: one JSON object per line, started empty by each run and appended and flushed row by row
  (a crash keeps the rows so far). Per training step: `step` (global, from 1), `epoch` (from 0), `loss`,
  `perplexity`, `grad_norm` (before clipping), `lr`; at each epoch end: `step`, `epoch`, `val_loss`,
  `val_perplexity`. Non-finite numbers are written as null.
- `checkpoint_step_<N>.pt` every `--save-every` global steps (default 1000, as the course asks):
  best_model.pt's dict plus `step` and `optimizer_state_dict` (`val_loss` is the last epoch's, None
  before the first validation).
- `best_model.pt` whenever the validation loss improves: `model_state_dict`, `config`, `epoch`, `val_loss`.
- `loss_curve.png` at the end, the report's loss curve: training loss per step, validation loss per epoch
  (skipped, with a log line, when matplotlib is not installed).

`--seed` (default 42) seeds Python's `random`, NumPy and torch before the train/val split and the model
initialization, so two runs with the same seed and device write the same metrics. A missing data file or
a bad argument prints one line (`--debug` adds the traceback) and exits with the `scratchlm.errors` status.

`python -m scratchlm.compat.scratch1 visualize --checkpoint checkpoints/best_model.pt` (the course's
`visualize.py` step) draws the attention maps of a checkpoint on validation trajectory `--sample K`
(default 0) of `--data`, split with `--seed` exactly as training split it: `attention_maps.png` (every
layer and head, plus the head mean) and `attention_maps_mean.png` (each layer's head mean) beside the
checkpoint (or in `--out`), through `scratchlm.analysis.attention`; it prints where they are and one
measured sentence per layer. `load_model(path)` rebuilds the model of any checkpoint this script wrote.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from scratchlm.errors import CheckpointError, ConfigError, DataError, ShapeError, first_line
from scratchlm.fileio import atomic_write
from scratchlm.infer.sampling import sample_next_token
from scratchlm.nn.attention import CausalSelfAttention as LibraryAttention
from scratchlm.nn.functional import (
    causal_mask,
    cross_entropy,
    dropout,
    perplexity_from_loss,
    scaled_dot_product_attention,
    silu,
)
from scratchlm.nn.layers import Embedding, Linear
from scratchlm.nn.layers import RMSNorm as LibraryRMSNorm
from scratchlm.nn.positions import RotaryPositionalEmbedding as LibraryRoPE
from scratchlm.optim import clip_grad_norm
from scratchlm.train.checkpoint import atomic_save, load_safely

if TYPE_CHECKING:
    from scratchlm.analysis.attention_runs import AttentionFigures

logger = logging.getLogger(__name__)

ROPE_BASE = 10000.0
SCRIPT = "scratchlm.compat.scratch1"


class RMSNorm(LibraryRMSNorm):
    """The library's RMSNorm with the course's names: gain `scale` (dim,), eps 1e-6 by default."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        # The library layer calls its gain `weight`; here the parameter is registered as `scale` (the
        # course's state-dict key) and `weight` reads it, so the inherited forward runs unchanged.
        nn.Module.__init__(self)
        self.dim = self.d_model = dim
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    @property
    def weight(self) -> nn.Parameter:
        return self.scale

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.scale.fill_(1.0)


class RotaryPositionalEmbedding(nn.Module):
    """Course API over the library's RoPE: forward(q, k) rotates (B, H, T, Dh) queries and keys at 0..T-1."""

    def __init__(self, dim: int, max_seq_len: int = 2048, base: float = ROPE_BASE) -> None:
        super().__init__()
        self.dim = dim
        self.max_seq_len = max_seq_len
        self.base = base
        self.rope = LibraryRoPE(base, dim, max_seq_len)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        for name, x in (("q", q), ("k", k)):
            if x.shape[-1] != self.dim or x.shape[-2] > self.max_seq_len:
                raise ShapeError(
                    f"RoPE: `{name}` {tuple(x.shape)} must end in (seq <= {self.max_seq_len}, head_dim {self.dim})."
                )
        q_positions = torch.arange(q.shape[-2], device=q.device)
        k_positions = torch.arange(k.shape[-2], device=k.device)
        return self.rope(q, q_positions), self.rope(k, k_positions)


class CausalSelfAttention(LibraryAttention):
    """The library's causal multi-head attention (with RoPE) under the course's constructor.

    forward(x (B, T, D), mask=None) -> (B, T, D). It is causal with or without `mask`; a given mask
    (broadcastable to (T, T) or (B, H, T, T), nonzero = may attend, as built with torch.tril) can only
    remove more keys. `dropout` applies to the attention probabilities in training mode.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1, max_seq_len: int = 2048) -> None:
        if dim % num_heads:
            raise ShapeError(f"`dim` ({dim}) must be divisible by `num_heads` ({num_heads}).")
        super().__init__(dim, num_heads, rope=LibraryRoPE(ROPE_BASE, dim // num_heads, max_seq_len), dropout=dropout)
        self.dim = dim
        self.head_dim = dim // num_heads
        self.max_seq_len = max_seq_len

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if x.shape[-2] > self.max_seq_len:
            raise ShapeError(f"attention input has {x.shape[-2]} positions; max_seq_len is {self.max_seq_len}.")
        if mask is None:
            return super().forward(x)
        # With an extra mask the library's backends (causal flag only) do not apply; the same projections,
        # rotation and from-scratch attention run with the combined mask.
        seq_len = x.shape[-2]
        positions_T = torch.arange(seq_len, device=x.device)
        q_BHTd = self.rope(rearrange(self.q_proj(x), "b t (h d) -> b h t d", h=self.num_heads), positions_T)
        k_BHTd = self.rope(rearrange(self.k_proj(x), "b t (h d) -> b h t d", h=self.num_heads), positions_T)
        v_BHTd = rearrange(self.v_proj(x), "b t (h d) -> b h t d", h=self.num_heads)
        allowed_TT = (mask != 0) & causal_mask(seq_len, seq_len, device=x.device)
        dropout_p = self.dropout if self.training else 0.0
        o_BHTd = scaled_dot_product_attention(
            q_BHTd, k_BHTd, v_BHTd, allowed_TT, dropout_p=dropout_p, training=self.training
        )
        return self.output_proj(rearrange(o_BHTd, "b h t d -> b t (h d)"))


class FeedForward(nn.Module):
    """fc2(dropout(SiLU(fc1(x)))) then dropout: the course template's MLP, bias-free library Linears."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.fc2 = Linear(hidden_dim, dim)
        self.dropout_p = dropout

    def forward(self, x: Tensor) -> Tensor:
        hidden = dropout(silu(self.fc1(x)), self.dropout_p, self.training)
        return dropout(self.fc2(hidden), self.dropout_p, self.training)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + dropout(attention(norm1(x))), then x + feed_forward(norm2(x))."""

    def __init__(
        self, dim: int, num_heads: int, ff_hidden_dim: int, dropout: float = 0.1, max_seq_len: int = 2048
    ) -> None:
        super().__init__()
        self.attention = CausalSelfAttention(dim, num_heads, dropout, max_seq_len=max_seq_len)
        self.feed_forward = FeedForward(dim, ff_hidden_dim, dropout)
        self.norm1 = RMSNorm(dim)
        self.norm2 = RMSNorm(dim)
        self.dropout_p = dropout

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + dropout(self.attention(self.norm1(x), mask), self.dropout_p, self.training)
        return x + self.feed_forward(self.norm2(x))


class DecoderOnlyTransformer(nn.Module):
    """Token embedding -> TransformerBlocks -> RMSNorm -> LM head; forward(input_ids, targets) -> (logits, loss)."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        num_layers: int,
        num_heads: int,
        ff_hidden_dim: int,
        max_seq_len: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.dim = dim
        self.max_seq_len = max_seq_len
        self.token_embedding = Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, ff_hidden_dim, dropout, max_seq_len=max_seq_len) for _ in range(num_layers)
        )
        self.norm_final = RMSNorm(dim)
        self.lm_head = Linear(dim, vocab_size)

    def forward(self, input_ids: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """input_ids (B, T) -> logits (B, T, V), and the mean cross-entropy against targets (B, T) if given.

        Targets equal to -100 are ignored.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] > self.max_seq_len:
            raise ShapeError(f"input_ids must be (batch, seq <= {self.max_seq_len}), got {tuple(input_ids.shape)}.")
        x_BTD = self.token_embedding(input_ids)
        for block in self.blocks:
            x_BTD = block(x_BTD)
        logits_BTV = self.lm_head(self.norm_final(x_BTD))
        if targets is None:
            return logits_BTV, None
        return logits_BTV, cross_entropy(logits_BTV, targets)

    @torch.no_grad()
    def generate(
        self, input_ids: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> Tensor:
        """Append max_new_tokens sampled tokens to input_ids (B, T); temperature 0 is greedy. Eval mode inside."""
        was_training = self.training
        self.eval()
        try:
            ids_BT = input_ids
            for _ in range(max_new_tokens):
                logits_BTV, _ = self(ids_BT[:, -self.max_seq_len :])
                next_B = sample_next_token(logits_BTV[:, -1], temperature=temperature, top_k=top_k)
                ids_BT = torch.cat([ids_BT, next_B.unsqueeze(-1)], dim=-1)
        finally:
            self.train(was_training)
        return ids_BT


def train_epoch(
    model: nn.Module,
    dataloader: Iterable[Sequence[Tensor]],
    optimizer: torch.optim.Optimizer,
    device: str | torch.device,
    epoch: int,
    *,
    on_step: Callable[[float, float], None] | None = None,
) -> float:
    """One epoch of teacher forcing on the action tokens: predict actions[:, 1:] from actions[:, :-1].

    Each batch is (states, actions); gradients are clipped to global norm 1.0. Returns the mean batch loss.
    `on_step(loss, grad_norm)`, if given, runs after each optimizer step with the batch loss and the pre-clip
    gradient norm as floats (both read from the device in one transfer per step).
    """
    model.train()
    total_loss, num_batches = 0.0, 0
    for step, (_, actions_BT) in enumerate(dataloader):
        actions_BT = actions_BT.to(device)
        _, loss = model(actions_BT[:, :-1], actions_BT[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        # One device->host sync per step for both numbers.
        loss_value, grad_norm_value = torch.stack(
            [loss.detach().float(), grad_norm.to(loss.device, torch.float32)]
        ).tolist()
        total_loss += loss_value
        num_batches += 1
        if on_step is not None:
            on_step(loss_value, grad_norm_value)
        if step % 100 == 0:
            logger.info(
                "epoch %d step %d: loss %.4f, perplexity %.2f",
                epoch,
                step,
                loss_value,
                perplexity_from_loss(loss_value),
            )
    if num_batches == 0:
        raise DataError("train_epoch: the dataloader yielded no batches; check the dataset and batch size.")
    return total_loss / num_batches


@torch.no_grad()
def _validation_loss(model: nn.Module, dataloader: Iterable[Sequence[Tensor]], device: str | torch.device) -> float:
    """Mean cross-entropy over every validation target token.

    Each batch's mean is weighted by its token count: a plain mean of batch means would over-weight the
    last, smaller batch and make the validation loss depend on --batch-size.
    """
    model.eval()
    total, count = torch.zeros((), device=device), 0
    for _, actions_BT in dataloader:
        actions_BT = actions_BT.to(device)
        targets_BT = actions_BT[:, 1:]
        total += model(actions_BT[:, :-1], targets_BT)[1].float() * targets_BT.numel()
        count += targets_BT.numel()
    return (total / count).item() if count else 0.0


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def _plot_loss_curve(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Training loss per step (thin line) and validation loss per epoch (points), in the style of
    `scratchlm plot`; returns the PNG, or None (with one log line) when matplotlib is not installed."""
    try:
        from scratchlm.analysis.plots import pyplot, save_figure

        plt = pyplot()
    except ImportError:
        logger.info("matplotlib is not installed (pip install matplotlib); skipping %s", path)
        return None
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if train:
        ax.plot(*zip(*train, strict=True), color="C0", alpha=0.45, lw=1, label="train")
    if val:
        ax.plot(*zip(*val, strict=True), color="C0", lw=2, marker="o", ms=3, label="val (per epoch)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, svg=False)[0]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=SCRIPT,
        description="Train the Scratch-1 backbone on trajectory action tokens.",
        epilog=f"Attention maps of a trained checkpoint: python -m {SCRIPT} visualize --help",
    )
    parser.add_argument("--data", default="data/trajectories.pkl")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4, as the scratch1 preset)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint-dir", default="checkpoints")
    parser.add_argument("--seed", type=int, default=42, help="seeds random, NumPy and torch (default 42)")
    parser.add_argument(
        "--save-every", type=int, default=1000, help="write checkpoint_step_<N>.pt every N steps (default 1000)"
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train the course model on a trajectory file, or with `visualize` first, draw a checkpoint's attention
    maps (see the module docstring for what each writes).

    Returns the exit status; a bad argument or data file prints one line on stderr (`--debug` adds the
    traceback) and returns the `scratchlm.errors` exit code, as the `scratchlm` CLI does. `argv=None` (the
    script itself) is the whole process and exits with the status, as `scratchlm.cli.main` does.
    """
    from scratchlm.cli import exit_process, run_guarded

    exiting = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["visualize"]:  # training flags all start with "--", so the word cannot be one of them
        status = visualize_main(argv[1:], exiting=exiting)
    else:
        args = _build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        # Ctrl-C or SIGTERM leave the checkpoints and metrics rows already written intact (atomic writes).
        status = run_guarded(lambda: _train(args), args.debug, prog=SCRIPT, exiting=exiting)
    if exiting:
        exit_process(status)
    return status


def _train(args: argparse.Namespace) -> int:
    from scratchlm.compat.scratch1_data import create_dataloaders
    from scratchlm.config import TrackConfig
    from scratchlm.data.trajectory_io import load_trajectories
    from scratchlm.device import resolve_device
    from scratchlm.optim import AdamW
    from scratchlm.train.tracking import MetricsLogger, read_metrics

    for name, value in (
        ("--epochs", args.epochs),
        ("--batch-size", args.batch_size),
        ("--save-every", args.save_every),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}.")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}.")
    if not os.path.exists(args.data):
        raise DataError(
            f"trajectory file {args.data!r} does not exist; create it with "
            f"`python -m scratchlm.compat.scratch1_data --output {args.data}` or pass --data."
        )
    device = resolve_device(args.device)
    data = load_trajectories(args.data)
    seed_everything(args.seed)
    dataset = {"states": torch.from_numpy(data.states_NTS), "actions": torch.from_numpy(data.actions_NT)}
    train_loader, val_loader = create_dataloaders(dataset, batch_size=args.batch_size)
    config = {
        "vocab_size": 256,
        "dim": 256,
        "num_layers": 4,
        "num_heads": 8,
        "ff_hidden_dim": 1024,
        "max_seq_len": data.seq_length,
        "dropout": 0.1,
    }
    model = DecoderOnlyTransformer(**config).to(device)
    optimizer = AdamW(model.parameters(), lr=args.lr)

    checkpoint_dir = Path(args.checkpoint_dir)
    metrics_path = checkpoint_dir / "metrics.jsonl"
    with atomic_write(metrics_path, "w", encoding="utf-8"):
        pass  # each run starts its metrics file empty; rows are then appended and flushed one by one
    metrics = MetricsLogger(checkpoint_dir, TrackConfig(), "scratch1", {})
    global_step, epoch, last_val_loss = 0, 0, None

    def on_step(loss: float, grad_norm: float) -> None:
        nonlocal global_step
        global_step += 1
        metrics.log(
            {
                "step": global_step,
                "epoch": epoch,
                "loss": loss,
                "perplexity": perplexity_from_loss(loss),
                "grad_norm": grad_norm,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        if global_step % args.save_every == 0:
            state = _checkpoint_state(model, config, epoch, last_val_loss)
            state.update(step=global_step, optimizer_state_dict=optimizer.state_dict())
            atomic_save(state, checkpoint_dir / f"checkpoint_step_{global_step}.pt")

    best = math.inf
    try:
        for epoch in range(args.epochs):  # on_step reads `epoch` and `last_val_loss` as they are now
            train_loss = train_epoch(model, train_loader, optimizer, device, epoch, on_step=on_step)
            val_loss = last_val_loss = _validation_loss(model, val_loader, device)
            metrics.log(
                {
                    "step": global_step,
                    "epoch": epoch,
                    "val_loss": val_loss,
                    "val_perplexity": perplexity_from_loss(val_loss),
                }
            )
            logger.info("epoch %d: train loss %.4f, val loss %.4f", epoch, train_loss, val_loss)
            if val_loss < best:
                best = val_loss
                atomic_save(_checkpoint_state(model, config, epoch, val_loss), checkpoint_dir / "best_model.pt")
    finally:
        metrics.close()
    curve = _plot_loss_curve(read_metrics(metrics_path), checkpoint_dir / "loss_curve.png")
    if curve is not None:
        logger.info("wrote %s", curve)
    return 0


def _checkpoint_state(model: nn.Module, config: dict[str, Any], epoch: int, val_loss: float | None) -> dict[str, Any]:
    """best_model.pt's layout; step checkpoints add `step` and `optimizer_state_dict`."""
    return {"model_state_dict": model.state_dict(), "config": config, "epoch": epoch, "val_loss": val_loss}


# ------------------------------------------------------------------------------------ attention maps


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> DecoderOnlyTransformer:
    """The course model of a checkpoint this script wrote (best_model.pt or checkpoint_step_<N>.pt), in eval mode.

    The file is read with `weights_only=True` (nothing in it can run), and its config is checked against its
    weights before the model is built.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise CheckpointError(
            f"checkpoint {name!r} does not exist; train first (`python -m {SCRIPT}`) or fix the path."
        )
    state = load_safely(name)  # the same safe load (and its errors) as every scratchlm checkpoint
    if isinstance(state, dict) and "model" in state and "run_config" in state:
        raise CheckpointError(
            f"checkpoint {name!r} was written by `scratchlm train`, not by {SCRIPT}; draw its attention maps with "
            "`scratchlm attention RUN`."
        )
    if not isinstance(state, dict) or not {"model_state_dict", "config"} <= set(state):
        raise CheckpointError(
            f"checkpoint {name!r} has no 'model_state_dict' and 'config', so {SCRIPT} did not write it; pass the "
            "best_model.pt or a checkpoint_step_<N>.pt of its --checkpoint-dir."
        )
    config, weights = state["config"], state["model_state_dict"]
    _check_config_fits_weights(config, weights, name)
    model = DecoderOnlyTransformer(**config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {name!r}: the weights do not fit its config ({first_line(exc, 160)}); the file is damaged "
            "or was edited."
        ) from None
    return model.to(device).eval()


def _check_config_fits_weights(config: Any, weights: Any, name: str) -> None:
    """CheckpointError unless `config` builds a model no larger than `weights` (load_state_dict then checks
    the rest): a damaged config must not allocate gigabytes before the mismatch is found.

    (Building on the meta device would check every shape, but its first use costs seconds.)
    """
    expected = _constructor_arguments(DecoderOnlyTransformer)
    if not isinstance(config, dict) or set(config) - set(expected) or not isinstance(weights, dict):
        raise CheckpointError(
            f"checkpoint {name!r}: its config must hold DecoderOnlyTransformer's arguments "
            f"({', '.join(expected)}) and its weights a state dict; the file is damaged."
        )
    sizes = {key: config.get(key, 2048 if key == "max_seq_len" else None) for key in expected if key != "dropout"}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes.values()):
        raise CheckpointError(f"checkpoint {name!r}: its config {config} must give positive integer sizes.")
    vocab, dim, layers, ff = sizes["vocab_size"], sizes["dim"], sizes["num_layers"], sizes["ff_hidden_dim"]
    claimed = {
        "token_embedding.weight": (vocab, dim),
        "lm_head.weight": (vocab, dim),
        f"blocks.{layers - 1}.feed_forward.fc1.weight": (ff, dim),
    }
    for key, shape in claimed.items():
        found = weights.get(key)
        if not isinstance(found, Tensor) or tuple(found.shape) != shape:
            got = tuple(found.shape) if isinstance(found, Tensor) else "absent"
            raise CheckpointError(
                f"checkpoint {name!r}: the weights do not fit its config ({key} is {got}, the config needs {shape}); "
                "the file is damaged or was edited."
            )
    if any(key.startswith(f"blocks.{layers}.") for key in weights):
        raise CheckpointError(f"checkpoint {name!r}: it holds more blocks than its num_layers {layers}; it is damaged.")
    # RoPE's cos/sin tables are derived, not stored: 4 bytes x max_seq_len x head_dim per layer.
    tables = 4 * sizes["max_seq_len"] * dim // sizes["num_heads"] * layers
    stored = sum(t.numel() * t.element_size() for t in weights.values() if isinstance(t, Tensor))
    if tables > max(stored, 2**28):
        raise CheckpointError(
            f"checkpoint {name!r}: max_seq_len {sizes['max_seq_len']} would need {tables / 2**30:.1f} GiB of "
            "position tables; the config is damaged."
        )


def _constructor_arguments(cls: type) -> list[str]:
    import inspect

    return [name for name in inspect.signature(cls).parameters if name != "self"]


class _AttentionView(nn.Module):
    """The course model as `scratchlm.analysis.attention.attention_maps` reads a TransformerLM: `layers[i].attn`
    and a forward over token ids. Its attention modules are the library's own (with RoPE), so the analysis
    recomputes the very probabilities the course model uses."""

    def __init__(self, model: DecoderOnlyTransformer) -> None:
        super().__init__()
        self.model = model
        self.layers = [SimpleNamespace(attn=block.attention) for block in model.blocks]

    def forward(self, input_ids: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.model(input_ids)


def course_attention_maps(model: DecoderOnlyTransformer, ids_T: Tensor) -> Tensor:
    """(L, H, T, T) attention probabilities of the course model on one action sequence ids (T,)."""
    from scratchlm.analysis.attention import attention_maps

    device = next(model.parameters()).device
    return attention_maps(_AttentionView(model), ids_T.to(device))  # type: ignore[arg-type]  # duck-typed view


def validation_actions(data_path: str | os.PathLike, seed: int = 42) -> Tensor:
    """The validation trajectories' action tokens (N_val, T), split from `data_path` as training with `--seed` did."""
    from scratchlm.compat.scratch1_data import create_dataloaders
    from scratchlm.data.trajectory_io import load_trajectories

    data = load_trajectories(data_path)
    dataset = {"states": torch.from_numpy(data.states_NTS), "actions": torch.from_numpy(data.actions_NT)}
    # Training's split is the first torch draw after seed_everything(seed); forking keeps the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, val_loader = create_dataloaders(dataset)
    return val_loader.dataset.tensors[1]


def attention_figures(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike = "data/trajectories.pkl",
    *,
    sample: int = 0,
    seed: int = 42,
    out_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> AttentionFigures:
    """Attention maps of a checkpoint on validation trajectory `sample`: attention_maps.png (every layer and
    head, plus the head mean) and attention_maps_mean.png in `out_dir` (default: the checkpoint's folder)."""
    from scratchlm.analysis.attention import plot_attention_maps, plot_layer_means
    from scratchlm.analysis.attention_runs import AttentionFigures
    from scratchlm.device import resolve_device

    model = load_model(checkpoint, resolve_device(device))
    actions_NT = validation_actions(data, seed)
    if not 0 <= sample < len(actions_NT):
        raise ConfigError(
            f"--sample {sample} is not a validation trajectory of {os.fspath(data)}; pick 0..{len(actions_NT) - 1}."
        )
    # What training feeds the model: every action but the last, within its context.
    ids_T = actions_NT[sample, :-1][: model.max_seq_len]
    labels = [str(i) for i in ids_T.tolist()]
    maps_LHTT = course_attention_maps(model, ids_T)
    folder = Path(out_dir) if out_dir is not None else Path(checkpoint).parent
    what = f"validation trajectory {sample}"
    title = f"{Path(checkpoint).name}: attention on {what} (action tokens)"
    grid = plot_attention_maps(maps_LHTT, labels, folder / "attention_maps.png", title)
    means = plot_layer_means(maps_LHTT, labels, folder / "attention_maps_mean.png", title)
    return AttentionFigures(grid, means, labels, maps_LHTT, what)


def _build_visualize_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{SCRIPT} visualize", description="Draw the attention maps of a Scratch-1 checkpoint."
    )
    parser.add_argument("--checkpoint", default="checkpoints/best_model.pt", help="default checkpoints/best_model.pt")
    parser.add_argument("--data", default="data/trajectories.pkl", help="the trajectory file the model trained on")
    parser.add_argument("--sample", type=int, default=0, help="validation trajectory K (default 0)")
    parser.add_argument("--seed", type=int, default=42, help="the training run's --seed, which chose its split")
    parser.add_argument("--out", help="folder for the figures (default: the checkpoint's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def visualize_main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """`python -m scratchlm.compat.scratch1 visualize ...`: write the attention figures, print their paths and
    one measured sentence per layer; errors are one line and a `scratchlm.errors` exit status. `exiting`: the
    process ends with the status (see `scratchlm.cli.run_guarded`)."""
    from scratchlm.cli import run_guarded

    args = _build_visualize_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_guarded(lambda: _visualize(args), args.debug, prog=f"{SCRIPT} visualize", exiting=exiting)


def _visualize(args: argparse.Namespace) -> int:
    from scratchlm.analysis.attention import describe_attention

    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}.")
    figures = attention_figures(
        args.checkpoint, args.data, sample=args.sample, seed=args.seed, out_dir=args.out, device=args.device
    )
    print(figures.grid)
    print(figures.means)
    for sentence in describe_attention(figures.maps_LHTT):
        print(sentence)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
