"""`scratchlm presets`: the shipped presets, one line each; `scratchlm presets show NAME`: one preset as TOML.

`show` prints the preset resolved over every default, in the same form a run writes as its config.toml, so
the output saved to a file is a complete `--config` (`scratchlm train --config FILE.toml`).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "list the shipped presets; `scratchlm presets show NAME` prints one as a complete TOML config "
        "(save it and pass it to --config)"
    )
    parser.add_argument(
        "words",
        nargs="*",
        metavar="show NAME",
        help="print preset NAME resolved over every default, as TOML (`presets NAME` does the same)",
    )


def run(args: argparse.Namespace) -> int:
    from scratchlm.errors import ConfigError
    from scratchlm.presets import list_presets, model_config_from_preset

    words = list(args.words)
    if words[:1] == ["show"]:
        words = words[1:]
        if not words:
            raise ConfigError(f"`presets show` needs a preset name; one of: {', '.join(list_presets())}.")
    if len(words) > 1:
        raise ConfigError(f"`presets show` takes one preset name, got {len(words)}: {' '.join(words)}.")
    if words:
        print(preset_toml(words[0]), end="")
        return 0
    for name in list_presets():
        c = model_config_from_preset(name)
        print(
            f"{name:18s} d_model={c.d_model:<5d} layers={c.num_layers:<3d} heads={c.num_heads:<3d} "
            f"context={c.context_length:<5d} vocab={c.vocab_size}"
        )
    return 0


def preset_toml(name: str) -> str:
    """Preset `name` as the TOML of its resolved RunConfig (every key, defaults included)."""
    from scratchlm.presets import resolve_run_config, to_toml

    config = resolve_run_config(name)
    header = (
        f"# preset {name}, every key resolved (unset ones commented out); save as FILE.toml and pass "
        "--config FILE.toml\n"
    )
    return header + to_toml(config.to_tables(), show_unset=True)
