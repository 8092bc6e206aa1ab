"""Configuration: the ModelConfig dataclass and TOML presets.

A preset is a TOML file in `scratchlm/presets/` with one table per config section (`[model]` here; the
training engine adds its own sections). Precedence everywhere: command-line `--set` > config file > preset
> dataclass defaults. A checkpoint stores `ModelConfig.to_dict()`, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass
from importlib import resources
from typing import Any

from scratchlm.errors import ConfigError
from scratchlm.nn.attention import ATTENTION_BACKENDS
from scratchlm.nn.ffn import default_d_ff

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

NORMS = ("rmsnorm", "layernorm", "none")
NORM_POSITIONS = ("pre", "post")
FFNS = ("swiglu", "silu")
POSITIONALS = ("rope", "sinusoidal", "learned", "none")


@dataclass
class ModelConfig:
    """Everything needed to build a TransformerLM; validated and completed in __post_init__."""

    vocab_size: int
    context_length: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int | None = None  # None: ~8/3·d_model for SwiGLU (multiple of 64), 4·d_model for SiLU
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

    def __post_init__(self) -> None:
        _coerce_and_check_types(self)
        for name in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {getattr(self, name)}.")
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("ffn", self.ffn, FFNS)
        _check_choice("positional", self.positional, POSITIONALS)
        _check_choice("attention_backend", self.attention_backend, tuple(ATTENTION_BACKENDS))
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.num_heads ({self.num_heads}); "
                f"try num_heads in {_divisors(self.d_model)}."
            )
        if self.positional == "rope" and self.head_dim % 2:
            raise ConfigError(
                f"RoPE rotates pairs, so the head dim d_model/num_heads must be even, got {self.head_dim}; "
                "change d_model or num_heads, or pick another model.positional."
            )
        if self.d_ff is None:
            self.d_ff = default_d_ff(self.d_model, self.ffn)
        elif self.d_ff < 1:
            raise ConfigError(f"model.d_ff must be a positive integer, got {self.d_ff}.")
        if not self.rope_theta > 0:
            raise ConfigError(f"model.rope_theta must be positive, got {self.rope_theta}.")
        if not self.norm_eps > 0:
            raise ConfigError(f"model.norm_eps must be positive, got {self.norm_eps}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}.")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict (a TOML table or a checkpoint), rejecting unknown keys."""
        if not isinstance(values, dict):
            raise ConfigError(f"model config must be a table of key = value pairs, got {type(values).__name__}.")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"unknown model key(s) {unknown}; valid keys: {', '.join(valid)}.")
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"model config is missing required key(s) {missing}.")
        return cls(**values)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"model.{name} = {value!r} is not one of {', '.join(map(repr, choices))}.")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0]


def _coerce_and_check_types(config: Any) -> None:
    """Check each field against its annotation; ints are accepted where floats are expected."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        expected = hints[f.name]
        optional = type(None) in typing.get_args(expected)
        base = next((a for a in typing.get_args(expected) if a is not type(None)), expected)
        base = typing.get_origin(base) or base
        if value is None and optional:
            continue
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(config, f.name, float(value))
            continue
        ok = isinstance(value, base) and not (base is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(
                f"{type(config).__name__.removesuffix('Config').lower()}.{f.name} must be "
                f"{base.__name__}, got {value!r} ({type(value).__name__})."
            )


# ---------------------------------------------------------------------------------------------- presets


def list_presets() -> list[str]:
    """Names of the presets shipped in the package."""
    files = resources.files("scratchlm.presets").iterdir()
    return sorted(p.name.removesuffix(".toml") for p in files if p.name.endswith(".toml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw tables of preset `name`."""
    path = resources.files("scratchlm.presets") / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(list_presets())}.")
    return tomllib.loads(path.read_text(encoding="utf-8"))


def load_toml_file(path: str) -> dict[str, Any]:
    """A user config file, with a clear message when it is missing or malformed."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist; check the path.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML ({exc}); fix the line it names.") from None


def merge_tables(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Section-wise merge: keys in `top` win, sections present only in one side are kept."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """'model.d_model=64' -> (['model', 'd_model'], 64). Values are TOML literals; bare words are strings."""
    key, sep, raw = assignment.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise ConfigError(f"--set expects section.key=value (e.g. model.d_model=128), got {assignment!r}.")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(tables: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Return a copy of `tables` with each `section.key=value` assignment applied."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in tables.items()}
    for assignment in assignments:
        path, value = parse_override(assignment)
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {assignment!r}: {part!r} is a value, not a section.")
        node[path[-1]] = value
    return merged


def model_config_from_preset(name: str, overrides: list[str] | None = None) -> ModelConfig:
    """The ModelConfig of a preset, with `--set model.key=value` overrides applied."""
    tables = apply_overrides(load_preset(name), overrides or [])
    if "model" not in tables:
        raise ConfigError(f"preset {name!r} has no [model] table.")
    return ModelConfig.from_dict(tables["model"])
