"""The Scratch-1 course's `backbone.py` API, as thin wrappers over scratchlm's from-scratch layers.

Drop this module in place of the course's `backbone.py`: the class names, constructor signatures and
attribute names the course's tests and training script use are all here, and each class delegates its
math to the library (RMSNorm, RoPE, causal attention, Linear/Embedding, cross-entropy, AdamW, clipping).
Differences from the course template that do not change the API: RoPE rotates interleaved pairs
(x[2i], x[2i+1]), as the library does; layers use the library's initialization.

Shapes: B = batch, H = heads, T = positions, D = model dim, Dh = head dim, V = vocabulary.
`python -m scratchlm.compat.scratch1 --data data/trajectories.pkl --epochs 10` trains the course model.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Iterable, Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from scratchlm.errors import DataError, ShapeError
from scratchlm.infer.sampling import sample_next_token
from scratchlm.nn.attention import CausalSelfAttention as LibraryAttention
from scratchlm.nn.functional import causal_mask, cross_entropy, dropout, scaled_dot_product_attention, silu
from scratchlm.nn.layers import Embedding, Linear
from scratchlm.nn.layers import RMSNorm as LibraryRMSNorm
from scratchlm.nn.positions import RotaryPositionalEmbedding as LibraryRoPE
from scratchlm.optim import clip_grad_norm

logger = logging.getLogger(__name__)

ROPE_BASE = 10000.0


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
) -> float:
    """One epoch of teacher forcing on the action tokens: predict actions[:, 1:] from actions[:, :-1].

    Each batch is (states, actions); gradients are clipped to global norm 1.0. Returns the mean batch loss.
    """
    model.train()
    total_loss, num_batches = 0.0, 0
    for step, (_, actions_BT) in enumerate(dataloader):
        actions_BT = actions_BT.to(device)
        _, loss = model(actions_BT[:, :-1], actions_BT[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        total_loss += loss.item()
        num_batches += 1
        if step % 100 == 0:
            logger.info("epoch %d step %d: loss %.4f, perplexity %.2f", epoch, step, loss.item(), math.exp(loss.item()))
    if num_batches == 0:
        raise DataError("train_epoch: the dataloader yielded no batches; check the dataset and batch size.")
    return total_loss / num_batches


@torch.no_grad()
def _validation_loss(model: nn.Module, dataloader: Iterable[Sequence[Tensor]], device: str | torch.device) -> float:
    model.eval()
    losses = [model(a.to(device)[:, :-1], a.to(device)[:, 1:])[1].item() for _, a in dataloader]
    return sum(losses) / max(len(losses), 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Train the course model on a trajectory file; the best model goes to <checkpoint-dir>/best_model.pt."""
    from scratchlm.compat.scratch1_data import create_dataloaders
    from scratchlm.data.trajectory_io import load_trajectories
    from scratchlm.device import resolve_device
    from scratchlm.fileio import atomic_write, signals_deferred
    from scratchlm.optim import AdamW

    parser = argparse.ArgumentParser(description="Train the Scratch-1 backbone on trajectory action tokens.")
    parser.add_argument("--data", default="data/trajectories.pkl")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint-dir", default="checkpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = resolve_device(args.device)
    data = load_trajectories(args.data)
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
    best = math.inf
    for epoch in range(args.epochs):
        train_loss = train_epoch(model, train_loader, optimizer, device, epoch)
        val_loss = _validation_loss(model, val_loader, device)
        logger.info("epoch %d: train loss %.4f, val loss %.4f", epoch, train_loss, val_loss)
        if val_loss < best:
            best = val_loss
            state = {"model_state_dict": model.state_dict(), "config": config, "epoch": epoch, "val_loss": val_loss}
            # Ctrl-C waits for the save: torch.save's zip writer cannot be cut off cleanly.
            with signals_deferred(), atomic_write(os.path.join(args.checkpoint_dir, "best_model.pt")) as fh:
                torch.save(state, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
