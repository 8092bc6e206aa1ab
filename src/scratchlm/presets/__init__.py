"""Presets (the TOML files beside this module), config files and `--set` overrides.

Precedence: command-line `--set section.key=value` > `--config FILE.toml` > preset > dataclass defaults; an
experiment command adds its own layers below the file and above `--set` (see `resolve_tables`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
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
    if name not in list_packaged(package):  # a name, not a path: "../x" or "/tmp/x" is no shipped file
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
    if not path:
        raise ConfigError("--config is empty; name a .toml file (or leave --config out).")
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

Layers = Sequence[Sequence[str]]


def resolve_tables(
    preset: str | None,
    config_file: str | None,
    overrides: Sequence[str],
    *,
    under: Layers = (),
    over: Layers = (),
) -> dict[str, Any]:
    """The raw tables of a run, built in layers from the bottom: preset, `under`, config file, `overrides`,
    `over`.

    `overrides` is the user's `--set`. A command puts its own settings in `under` (`audit --quick`'s
    recipe, a study file's `set`) so that what the user asked for wins over them, and what it varies in
    `over` (an ablation variant and its seed, a swept rate, a model size), since varying it is the point.
    Each layer is one list of `section.key=value` assignments.

    A layer that sets a training budget (train.max_steps, max_tokens or epochs) replaces the budget of the
    layers below it: `--set train.epochs=3` on a preset budgeted in steps means 3 epochs, not a conflict.
    Two budgets within one layer are still an error, since nothing says which one was meant.
    """
    # `is not None`: an empty name (an unset shell variable) is an error, not "no preset" or "no file".
    tables = load_preset(preset) if preset is not None else {}
    for layer in under:
        tables = _apply_layer(tables, layer)
    if config_file is not None:
        file_tables = load_toml_file(config_file)
        tables = merge_tables(replace_budget(tables, file_tables), file_tables)
    for layer in (overrides, *over):
        tables = _apply_layer(tables, layer)
    return tables


def _apply_layer(tables: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    if isinstance(assignments, str):  # a bare string would be read as one assignment per character
        raise TypeError(f"a layer is a list of section.key=value strings, got the string {assignments!r}.")
    layer = apply_overrides({}, list(assignments))
    return apply_overrides(replace_budget(tables, layer), list(assignments))


def replace_budget(below: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`below` without its training budget when `layer` (the tables going on top of it) sets one."""
    layer_train = layer.get("train", {})
    if not isinstance(layer_train, dict) or not any(key in layer_train for key in BUDGET_KEYS):
        return below
    return without_budget(below)


def without_budget(tables: dict[str, Any]) -> dict[str, Any]:
    """The tables less the training budget (train.max_steps, max_tokens, epochs)."""
    train = tables.get("train")
    if not isinstance(train, dict):
        return tables
    return {**tables, "train": {k: v for k, v in train.items() if k not in BUDGET_KEYS}}


def resolve_run_config(
    preset: str | None,
    config_file: str | None = None,
    overrides: Sequence[str] | None = None,
    *,
    under: Layers = (),
    over: Layers = (),
) -> RunConfig:
    """The validated RunConfig of `resolve_tables`' layers."""
    return RunConfig.from_tables(resolve_tables(preset, config_file, overrides or [], under=under, over=over))


def model_config_from_preset(name: str, overrides: list[str] | None = None) -> ModelConfig:
    """The ModelConfig of a preset, with `--set model.key=value` overrides applied."""
    tables = resolve_tables(name, None, overrides or [])
    if "model" not in tables:
        raise ConfigError(f"preset {name!r} has no [model] table.")
    return ModelConfig.from_dict(tables["model"])


def to_toml(tables: dict[str, dict[str, Any]], *, show_unset: bool = False) -> str:
    """Serialize section tables of scalars and flat lists. None values (TOML has no null; they mean the
    default) are left out, or with `show_unset` listed as comments, so a reader sees every key there is."""
    lines: list[str] = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {toml_value(value)}")
            elif show_unset:
                lines.append(f"# {key} is unset (its default applies)")
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
