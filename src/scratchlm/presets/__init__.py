"""Presets (the TOML files beside this module), config files and `--set` overrides.

Precedence: command-line `--set section.key=value` > `--config FILE.toml` > preset > dataclass defaults.
"""

from __future__ import annotations

import sys
from importlib import resources
from typing import Any

from scratchlm.config import ModelConfig, RunConfig
from scratchlm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


def list_packaged(package: str) -> list[str]:
    """Names of the TOML files shipped in `package` (presets, studies)."""
    files = resources.files(package).iterdir()
    return sorted(p.name.removesuffix(".toml") for p in files if p.name.endswith(".toml"))


def load_packaged(package: str, name: str, kind: tuple[str, str]) -> dict[str, Any]:
    """The raw tables of `package`'s TOML file `name`; `kind` (singular, plural) names it in the error."""
    path = resources.files(package) / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown {kind[0]} {name!r}; available {kind[1]}: {', '.join(list_packaged(package))}.")
    return tomllib.loads(path.read_text(encoding="utf-8"))


def list_presets() -> list[str]:
    """Names of the presets shipped in the package."""
    return list_packaged("scratchlm.presets")


def load_preset(name: str) -> dict[str, Any]:
    """The raw tables of preset `name`."""
    return load_packaged("scratchlm.presets", name, ("preset", "presets"))


def load_toml_file(path: str) -> dict[str, Any]:
    """A user config file, with a clear message when it is missing or malformed."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist; check the path.") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path!r} is a directory; pass a .toml file.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurd nesting
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
    if not sep or len(path) < 2 or not all(path):
        raise ConfigError(f"--set expects section.key=value (e.g. model.d_model=128), got {assignment!r}.")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(tables: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """A copy of `tables` with each `section.key=value` assignment applied."""
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


BUDGET_KEYS = ("max_steps", "max_tokens", "epochs")


def resolve_tables(preset: str | None, config_file: str | None, overrides: list[str]) -> dict[str, Any]:
    """Preset, then file, then overrides, as raw tables.

    A layer that sets a training budget (train.max_steps, max_tokens or epochs) replaces the budget of the
    layers below it: `--set train.epochs=3` on a preset budgeted in steps means 3 epochs, not a conflict.
    """
    tables = load_preset(preset) if preset else {}
    if config_file:
        tables = _replace_budget(tables, load_toml_file(config_file))
        tables = merge_tables(tables, load_toml_file(config_file))
    layer = apply_overrides({}, overrides)
    return apply_overrides(_replace_budget(tables, layer), overrides)


def _replace_budget(below: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    layer_train = layer.get("train", {})
    if not isinstance(layer_train, dict) or not any(key in layer_train for key in BUDGET_KEYS):
        return below
    train = {k: v for k, v in below.get("train", {}).items() if k not in BUDGET_KEYS}
    return {**below, "train": train}


def resolve_run_config(
    preset: str | None, config_file: str | None = None, overrides: list[str] | None = None
) -> RunConfig:
    return RunConfig.from_tables(resolve_tables(preset, config_file, overrides or []))


def model_config_from_preset(name: str, overrides: list[str] | None = None) -> ModelConfig:
    """The ModelConfig of a preset, with `--set model.key=value` overrides applied."""
    tables = resolve_tables(name, None, overrides or [])
    if "model" not in tables:
        raise ConfigError(f"preset {name!r} has no [model] table.")
    return ModelConfig.from_dict(tables["model"])


def to_toml(tables: dict[str, dict[str, Any]]) -> str:
    """Serialize section tables of scalars and flat lists (None values are left out: they mean the default)."""
    lines: list[str] = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """A scalar or flat list as a TOML literal (what `--set section.key=<literal>` accepts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) to TOML.")
