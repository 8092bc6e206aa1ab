"""`scratchlm presets`: the shipped presets, one line each."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from scratchlm.presets import list_presets, model_config_from_preset

    for name in list_presets():
        c = model_config_from_preset(name)
        print(
            f"{name:18s} d_model={c.d_model:<5d} layers={c.num_layers:<3d} heads={c.num_heads:<3d} "
            f"context={c.context_length:<5d} vocab={c.vocab_size}"
        )
    return 0
