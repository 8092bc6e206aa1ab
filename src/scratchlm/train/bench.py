"""`scratchlm bench train`: training throughput of a preset on random tokens, through the real train_step.

Times the first step alone (it includes torch.compile when enabled: compile_s is that step's time beyond a
steady one), the other warm-up steps, and then N steps with one device sync at the end, so the figure is
steady-state throughput. The first step is always a warm-up step, so at least one runs untimed. MFU is
against the GPU's datasheet peak for the step's compute dtype (bf16 or fp16 autocast, else TF32, which
`configure_cuda` turns on), and null on a CPU or a GPU with no known peak. On a GPU the peak memory
allocated is reported too.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from scratchlm.analysis.accounting import flops_per_token, param_counts
from scratchlm.config import RunConfig
from scratchlm.device import configure_cuda, resolve_device
from scratchlm.errors import ConfigError, OutOfMemoryError, is_out_of_memory
from scratchlm.train.datasets import TrainingData
from scratchlm.train.distributed import DistInfo
from scratchlm.train.run import step_peak_flops
from scratchlm.train.trainer import Run, build_model_and_optimizer, out_of_memory_error, train_step


class RandomTokens:
    """Uniform random token windows: data that costs nothing to produce, for timing the step alone."""

    def __init__(self, vocab_size: int, batch_size: int, seq_len: int, device: torch.device, seed: int) -> None:
        self.shape = (batch_size, seq_len + 1)
        self.vocab_size, self.device = vocab_size, device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.tokens_per_batch = batch_size * seq_len

    def next_batch(self) -> tuple[Tensor, Tensor]:
        window = torch.randint(0, self.vocab_size, self.shape, device=self.device, generator=self.generator)
        return window[:, :-1], window[:, 1:]

    def epoch(self) -> float:
        return 0.0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def bench_run(config: RunConfig, total_steps: int, data: TrainingData | None = None) -> Run:
    """A Run for timing train_step outside `train()`: no run directory, random tokens unless `data` is given.

    Token ids are not re-checked each step (random ones are in range; real data was checked when loaded),
    as the trainer does on a GPU.
    """
    device = resolve_device(config.train.device)
    configure_cuda(device, config.train.sdpa_kernel)
    torch.manual_seed(config.train.seed)
    model, step_model, optimizer, autocast_dtype, scaler = build_model_and_optimizer(config, device)
    model.check_token_ids = False
    if data is None:
        seq_len, vocab = config.model.context_length, config.model.vocab_size
        source = RandomTokens(vocab, config.train.batch_size, seq_len, device, config.train.seed)
        data = TrainingData(train=source, val_batches=list, seq_len=seq_len, vocab_size=vocab)
    return Run(
        config, None, model, step_model, optimizer, data, total_steps, device, autocast_dtype, DistInfo(), scaler
    )  # type: ignore[arg-type]


def timed_steps(run: Run, steps: int) -> float:
    """Run `steps` training steps and return their wall seconds, the device synchronized at both ends."""
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(run)
        run.state.step += 1
    sync()
    return time.perf_counter() - start


def warmup_steps(warmup: int) -> int:
    """The untimed steps `benchmark_training` runs for a requested `warmup`: the first step always is one."""
    return max(warmup, 1)


def benchmark_training(config: RunConfig, steps: int = 20, warmup: int = 3) -> dict[str, Any]:
    if steps < 1 or warmup < 0:
        raise ConfigError(f"the benchmark needs steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}.")
    untimed = warmup_steps(warmup)
    run: Run | None = None  # None while the model is being built (the error message differs)
    try:
        run = bench_run(config, untimed + steps)
        if run.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.device)
        first_step_s = timed_steps(run, 1)
        warmup_s = first_step_s + timed_steps(run, untimed - 1)
        seconds = timed_steps(run, steps) / steps
    except OutOfMemoryError:
        raise  # already the sentence (the model does not fit, said before building it)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if is_out_of_memory(exc):
            raise out_of_memory_error(config, run, checkpoints=False) from None
        raise
    device, autocast_dtype, seq_len = run.device, run.autocast_dtype, run.data.seq_len
    tokens_per_s = run.tokens_per_step / seconds
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    peak = step_peak_flops(device, autocast_dtype)
    flops = flops_per_token(config.model, seq_len)
    return {
        "tokens_per_s": round(tokens_per_s, 1),
        "ms_per_step": round(seconds * 1e3, 3),
        "mfu": round(flops * tokens_per_s / peak, 4) if peak else None,
        "tflops": round(flops * tokens_per_s / 1e12, 4),
        "params": param_counts(config.model).total,
        "tokens_per_step": run.tokens_per_step,
        "device": device_name,
        "dtype": str(autocast_dtype or torch.float32).removeprefix("torch."),
        "fast": config.model.fast,
        "attention_backend": config.model.attention_backend,
        "kernels": config.model.kernels,
        "sdpa_kernel": config.train.sdpa_kernel,
        "low_precision_residual": config.model.low_precision_residual,
        "compile": config.train.compile,
        "compile_scope": config.train.compile_scope if config.train.compile else None,
        "compile_mode": config.train.compile_mode if config.train.compile else None,
        "compile_s": round(max(first_step_s - seconds, 0.0), 3) if config.train.compile else None,
        "warmup_s": round(warmup_s, 3),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3) if device.type == "cuda" else None,
        "steps": steps,
        "warmup_steps": untimed,
    }
