"""Configuration schemas: one validated dataclass per TOML section, gathered in RunConfig.

Sections: [model] ModelConfig, [optim] OptimConfig, [data] DataConfig, [train] TrainConfig and [track]
TrackConfig. Each checks itself in __post_init__ and names the offending `section.key` in one sentence.
A checkpoint stores `ModelConfig.to_dict()` (and the whole RunConfig), so a checkpoint alone rebuilds its
model. Presets, config files and `--set` overrides are resolved into a RunConfig in `presets.py`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch

from scratchlm.errors import ConfigError
from scratchlm.nn.attention import ATTENTION_BACKENDS
from scratchlm.nn.ffn import default_d_ff

T = TypeVar("T")
_FLOAT32_MAX = 3.4028234663852886e38


class _Section:
    """Shared behaviour of the section dataclasses: type checks, choices, dict round trips."""

    SECTION: ClassVar[str]

    def _check_types(self) -> None:
        """Check each field against its annotation; ints are accepted (and converted) where floats are expected,
        and NumPy's numbers (sizes computed in a notebook) become the Python int or float they stand for."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            base = hints[f.name]
            if typing.get_origin(base) in (typing.Union, types.UnionType):  # X | None
                if value is None:
                    continue
                base = next(a for a in typing.get_args(base) if a is not type(None))
            origin = typing.get_origin(base) or base
            if origin in (int, float) and _is(value, origin) and type(value) is not origin:
                setattr(self, f.name, origin(value))
            elif origin is tuple and isinstance(value, (list, tuple)):
                elem = typing.get_args(base)[0]
                if len(value) != len(typing.get_args(base)) or not all(_is(v, elem) for v in value):
                    raise ConfigError(f"{self.SECTION}.{f.name} must be {_type_name(base)}, got {value!r}.")
                setattr(self, f.name, tuple(elem(v) for v in value))
            elif not _is(value, origin):
                # `--set x=True` reaches here as the string 'True': TOML's booleans are lowercase.
                hint = "; write true or false (lowercase)" if origin is bool and isinstance(value, str) else ""
                raise ConfigError(
                    f"{self.SECTION}.{f.name} must be {_type_name(base)}, got {value!r} ({type(value).__name__}){hint}."
                )
            numbers_in = getattr(self, f.name) if origin is tuple else (getattr(self, f.name),)
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers_in):
                # TOML spells nan and inf; neither is a usable rate, size or clip (nan > 0 is even False).
                what = "finite numbers" if origin is tuple else "a finite number"
                raise ConfigError(f"{self.SECTION}.{f.name} must be {what}, got {value!r}.")
            # Past these a value overflows inside torch (a float32 learning rate, an int64 size or seed).
            if any(isinstance(v, float) and abs(v) > _FLOAT32_MAX for v in numbers_in):
                raise ConfigError(
                    f"{self.SECTION}.{f.name} = {value!r} is beyond float32's range (3.4e38); no setting needs a "
                    "number that large."
                )
            if any(_is(v, int) and not -(2**63) <= v < 2**63 for v in numbers_in):
                raise ConfigError(
                    f"{self.SECTION}.{f.name} = {value!r} does not fit in 64 bits (at most 2**63 - 1); no setting "
                    "needs a number that large."
                )

    def _choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ConfigError(f"{self.SECTION}.{name} = {value!r} is not one of {', '.join(map(repr, choices))}.")

    def _positive(self, *names: str, allow_zero: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and (value < 0 or (value == 0 and not allow_zero)):
                bound = ">= 0" if allow_zero else "> 0"
                raise ConfigError(f"{self.SECTION}.{name} must be {bound}, got {value}.")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        """Build from a plain table (TOML or checkpoint), rejecting unknown and missing keys."""
        section = cls.SECTION  # type: ignore[attr-defined]
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table of key = value pairs, got {values!r}.")
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        valid = [f.name for f in fields]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown {section} key(s) {unknown}; valid keys: {', '.join(valid)}{_elsewhere(unknown, cls)}."
            )
        missing = [
            f.name
            for f in fields
            if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"[{section}] is missing required key(s) {missing}.")
        return cls(**values)


def _elsewhere(keys: list[str], cls: type) -> str:
    """' (did you mean optim.lr?)' for keys that belong to another section, e.g. `--set train.lr=...`."""
    homes = [
        f"{other.SECTION}.{key}"
        for key in keys
        for other in _Section.__subclasses__()
        if other is not cls and key in {f.name for f in dataclasses.fields(other)}  # type: ignore[arg-type]
    ]
    return f" (did you mean {' or '.join(homes)}?)" if homes else ""


def _is(value: Any, kind: Any) -> bool:
    # numbers.Integral / Real also hold NumPy's scalars; bools (NumPy's are not Integral) are no numbers here.
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return f"a list of {len(typing.get_args(kind))} {typing.get_args(kind)[0].__name__}s"
    return getattr(kind, "__name__", str(kind))


# ------------------------------------------------------------------------------------------------ model

NORMS = ("rmsnorm", "layernorm", "none")
NORM_POSITIONS = ("pre", "post")
FFNS = ("swiglu", "silu", "gelu")
POSITIONALS = ("rope", "sinusoidal", "learned", "none")
KERNELS = ("torch", "triton")


@dataclass
class ModelConfig(_Section):
    """Everything needed to build a TransformerLM."""

    SECTION: ClassVar[str] = "model"

    vocab_size: int
    context_length: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int | None = None  # None: ~8/3·d_model for SwiGLU (multiple of 64), 4·d_model for the MLPs
    rope_theta: float = 10000.0
    norm: str = "rmsnorm"
    norm_position: str = "pre"
    norm_eps: float = 1e-5
    ffn: str = "swiglu"
    positional: str = "rope"
    causal: bool = True
    dropout: float = 0.0
    tie_embeddings: bool = False
    attention_backend: str = "reference"
    # The fast path: one QKV matmul, one SwiGLU gate|up matmul, and the LM head fused with the loss
    # (`scratchlm.nn.fused`); same parameters and state dict as the reference path. Pair it with
    # attention_backend = "sdpa" for flash attention.
    fast: bool = False
    # Under autocast, carry the residual stream in the autocast dtype (bf16; fp16 under train.dtype =
    # "float16", with its narrow range) instead of float32: half the memory traffic of every norm and
    # residual add, at that precision for the stream (norms still compute in float32). No effect without
    # autocast.
    low_precision_residual: bool = False
    # Fast path only: "triton" splits the fused QKV output into heads and applies RoPE in one hand-written
    # kernel (`scratchlm.nn.triton_rope`, CUDA; on the CPU only under TRITON_INTERPRET=1) instead of the
    # PyTorch ops that torch.compile fuses. Training only: evaluation and decoding take the PyTorch ops.
    kernels: str = "torch"
    # Initialization: "cs336" (the handout's: Linear N(0, 2/(d_in+d_out)), embeddings N(0, 1)) or "gpt2"
    # (every matrix N(0, 0.02), the projections into the residual stream N(0, 0.02/sqrt(2·num_layers))).
    init: str = "cs336"

    def __post_init__(self) -> None:
        self._check_types()
        self._positive("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff")
        self._choice("norm", NORMS)
        self._choice("norm_position", NORM_POSITIONS)
        self._choice("ffn", FFNS)
        self._choice("positional", POSITIONALS)
        self._choice("attention_backend", tuple(ATTENTION_BACKENDS))
        self._choice("init", ("cs336", "gpt2"))
        self._choice("kernels", KERNELS)
        if self.kernels == "triton" and not (self.fast and self.positional == "rope"):
            raise ConfigError(
                "model.kernels = 'triton' fuses RoPE into the fast path's QKV split: it needs model.fast = true "
                f"and model.positional = 'rope' (got fast = {str(self.fast).lower()}, positional = "
                f"'{self.positional}'); set those or model.kernels = 'torch'."
            )
        if self.d_model % self.num_heads:
            divisors = [d for d in range(1, min(self.d_model, 64) + 1) if self.d_model % d == 0]
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.num_heads ({self.num_heads}); "
                f"try num_heads in {divisors}."
            )
        if self.positional == "rope" and self.head_dim % 2:
            raise ConfigError(
                f"RoPE rotates pairs, so the head dim d_model/num_heads must be even, got {self.head_dim}; "
                "change d_model or num_heads, or pick another model.positional."
            )
        if self.d_ff is None:
            self.d_ff = default_d_ff(self.d_model, self.ffn)
        self._positive("rope_theta", "norm_eps")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}.")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


# ------------------------------------------------------------------------------------------------ optim


@dataclass
class OptimConfig(_Section):
    """AdamW and the learning-rate schedule: linear warmup, then cosine to min_lr exactly at the last step."""

    SECTION: ClassVar[str] = "optim"

    lr: float = 1e-3
    min_lr: float | None = None  # None: lr / 10
    warmup_steps: int = 100
    schedule: str = "cosine"  # or "constant" (after warmup)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # matrices only; norm gains are never decayed
    grad_clip: float = 1.0  # global l2 norm; 0 disables clipping
    foreach: bool | None = None  # None: multi-tensor AdamW on GPU, the per-parameter loop on CPU
    fused: bool | None = None  # PyTorch's fused AdamW kernel; None: on when model.fast and on a GPU

    def __post_init__(self) -> None:
        self._check_types()
        self._positive("lr")
        # eps = 0 divides 0 by 0 wherever a gradient is exactly zero (an unused embedding row): NaN weights.
        self._positive("eps")
        self._positive("min_lr", "warmup_steps", "weight_decay", "grad_clip", allow_zero=True)
        self._choice("schedule", ("cosine", "constant"))
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must each be in [0, 1), got {list(self.betas)}.")
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ConfigError(f"optim.min_lr ({self.min_lr}) must not exceed optim.lr ({self.lr}).")

    @property
    def final_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr


# ------------------------------------------------------------------------------------------------- data

DATA_KINDS = ("trajectories", "tokens")
# Columns of the course's 10-dim state (7 joint angles, then the end effector's x, y, z).
STATE_SUBSETS = {"all": tuple(range(10)), "joints": tuple(range(7)), "ee": (7, 8, 9)}


@dataclass
class DataConfig(_Section):
    """Where the training tokens come from.

    kind = "tokens": `path` is a directory made by `scratchlm data text` (train.bin, val.bin, meta.json);
    batches are random windows. kind = "trajectories": `path` is a trajectory pickle made by
    `scratchlm data trajectories`; batches are whole trajectories, epoch by epoch, split by trajectory.
    """

    SECTION: ClassVar[str] = "data"

    kind: str = "trajectories"
    path: str = "data/trajectories.pkl"
    val_fraction: float = 0.1  # trajectories: share of trajectories held out
    split_seed: int = 42
    layout: str = "actions"  # trajectories: "actions" (the course's sequence) or "unified" (states + actions)
    state_bins: int = 256  # unified layout: uniform bins per state dimension, fitted on the training split
    states: str = "all"  # unified layout: which state dims enter the sequence: "all" (10), "joints" (7), "ee" (3)
    # trajectories: the course data version, which sets the ln 5 noise floor reports use (v2). "auto" reads
    # the sidecar `scratchlm data trajectories` writes, or, for a pickle from the course's own
    # generate_data.py (no sidecar), recognizes the version from the trajectories themselves.
    version: str = "auto"

    def __post_init__(self) -> None:
        self._check_types()
        self._choice("kind", DATA_KINDS)
        self._choice("version", ("auto", "v1", "v2"))
        self._choice("layout", ("actions", "unified"))
        self._choice("states", tuple(STATE_SUBSETS))
        self._positive("state_bins")
        self._positive("split_seed", allow_zero=True)  # NumPy's generators take no negative seed
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}.")
        if not self.path:
            raise ConfigError("data.path is empty; point it at a token directory or a trajectory pickle.")


# ------------------------------------------------------------------------------------------------ train

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_TYPES = ("cpu", "cuda", "mps")  # torch parses meta, xla, hpu... too, which nothing here runs on
COMPILE_SCOPES = ("blocks", "model")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SDPA_KERNELS = ("auto", "flash", "cudnn", "efficient", "math")


@dataclass
class TrainConfig(_Section):
    """The loop: batch and budget, evaluation, checkpoints, logging, device and speed switches.

    The budget is exactly one of max_steps, max_tokens or epochs (epochs: trajectory data only). One step
    is one optimizer update over batch_size x grad_accum sequences (x the number of processes under DDP).
    """

    SECTION: ClassVar[str] = "train"

    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int | None = None
    max_tokens: int | None = None
    epochs: float | None = None
    eval_interval: int = 200  # steps; evaluation also runs after the last step
    # Validation batches per evaluation, the same ones every time; 0 = all. Batches are of batch_size x
    # processes rows, so runs that compare batch sizes should use 0 (the course presets do).
    eval_batches: int = 20
    checkpoint_interval: int = 1000  # steps between step_*.pt files (last.pt and best.pt are kept too)
    log_interval: int = 10
    seed: int = 1337
    device: str = "auto"  # auto: cuda, then mps, then cpu
    dtype: str = "auto"  # auto: bfloat16 autocast on CUDA, float32 elsewhere
    compile: bool = False  # torch.compile the model (scratchlm.train.compile)
    compile_scope: str = "blocks"  # "blocks": each block on its own (fast to compile); "model": one graph
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead" adds CUDA graphs
    # Which CUDA kernel attention_backend = "sdpa" may use: "auto" is PyTorch's choice; any other allows that
    # kernel alone (an error, not a silent fallback, where it cannot run). CUDA only.
    sdpa_kernel: str = "auto"
    on_nonfinite: str = "stop"  # a NaN/Inf loss or gradient: "stop" the run, or "skip" the update
    progress: bool = True  # a progress bar on the console

    def __post_init__(self) -> None:
        self._check_types()
        self._positive("batch_size", "grad_accum", "max_steps", "max_tokens", "epochs")
        self._positive("eval_interval", "checkpoint_interval", "log_interval")
        self._positive("eval_batches", "seed", allow_zero=True)
        self._choice("dtype", DTYPES)
        self._choice("compile_scope", COMPILE_SCOPES)
        self._choice("compile_mode", COMPILE_MODES)
        self._choice("sdpa_kernel", SDPA_KERNELS)
        self._choice("on_nonfinite", ("stop", "skip"))
        if self.device != "auto":
            try:  # the name only: whether this machine has the device is checked when a run starts
                kind = torch.device(self.device).type
            except (RuntimeError, ValueError):
                raise ConfigError(
                    f"train.device = {self.device!r} is not a device name; use cpu, cuda, cuda:N, mps or auto."
                ) from None
            if kind not in DEVICE_TYPES:
                raise ConfigError(
                    f"train.device = {self.device!r} is a device of type '{kind}', which scratchlm does not train "
                    "on; use cpu, cuda, cuda:N, mps or auto."
                )
        budgets = [name for name in ("max_steps", "max_tokens", "epochs") if getattr(self, name) is not None]
        if len(budgets) != 1:
            raise ConfigError(
                "set exactly one training budget: train.max_steps, train.max_tokens or train.epochs"
                + (f" (got {', '.join(budgets)})." if budgets else " (none is set).")
            )


@dataclass
class TrackConfig(_Section):
    """Optional experiment trackers, each used only when asked for and installed."""

    SECTION: ClassVar[str] = "track"

    wandb: bool = False  # runs offline unless WANDB_MODE says otherwise
    tensorboard: bool = False
    project: str = "scratchlm"


# ------------------------------------------------------------------------------------------------- run


def with_defaults(tables: dict[str, Any]) -> dict[str, Any]:
    """Saved config tables with the defaults of keys added since they were written, so a run or an experiment
    from an earlier version compares equal to its config today; tables that no longer validate are returned
    as they are (the comparison then reports what differs)."""
    try:
        return RunConfig.from_tables(tables).to_tables()
    except ConfigError:
        return tables


@dataclass
class RunConfig:
    """A whole training run: every section, resolved and validated."""

    model: ModelConfig
    optim: OptimConfig
    data: DataConfig
    train: TrainConfig
    track: TrackConfig

    SECTIONS: ClassVar[dict[str, type[_Section]]] = {
        "model": ModelConfig,
        "optim": OptimConfig,
        "data": DataConfig,
        "train": TrainConfig,
        "track": TrackConfig,
    }

    def __post_init__(self) -> None:
        if self.train.epochs is not None and self.data.kind != "trajectories":
            raise ConfigError(
                "train.epochs applies to trajectory data only; for token corpora set train.max_steps "
                "or train.max_tokens."
            )

    @classmethod
    def from_tables(cls, tables: dict[str, Any]) -> RunConfig:
        # `lr = 0.1` above every [section] header of a TOML file is a key outside any section, not a section.
        loose = sorted(key for key, value in tables.items() if key not in cls.SECTIONS and not isinstance(value, dict))
        if loose:
            raise ConfigError(
                f"config key(s) {loose} are outside any [section]{_elsewhere(loose, cls)}; move them under their "
                f"section's header (valid sections: {', '.join(cls.SECTIONS)})."
            )
        unknown = sorted(set(tables) - set(cls.SECTIONS))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; valid sections: {', '.join(cls.SECTIONS)}.")
        if "model" not in tables:
            raise ConfigError("the config has no [model] section; start from a preset (--preset debug).")
        return cls(**{name: kind.from_dict(tables.get(name, {})) for name, kind in cls.SECTIONS.items()})

    def to_tables(self) -> dict[str, dict[str, Any]]:
        return {name: getattr(self, name).to_dict() for name in self.SECTIONS}
