"""Host time of the per-token staleness check of the decode-time packed weights (infer/packed_weights.py).

Every decoded token first asks each layer whether a source weight of its packed q|k|v and W_1|W_3 copies
changed. This times that check for the tinystories-17m model (4 layers x 5 weights), the current
`PackedLayer.refresh` against the previous form (a tuple of (id, address, version) stamps built and
compared per layer), side by side in one process, three rounds. Prints a table, then the JSON.

    python benchmarks/packed_refresh.py [--out benchmarks/results/packed-refresh-cpu-2core.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from machine_info import describe_machine, emit, require, run_main
from scratchlm.infer.packed_weights import PackedLayer, pack_projections
from scratchlm.model import TransformerLM
from scratchlm.presets import model_config_from_preset


def stamp(layer: PackedLayer) -> tuple:
    """The previous check's stamp: rebuilt for every token and compared with the stored one."""
    weights = [m._parameters["weight"] for m in (*layer._qkv_sources, *layer._gate_up_sources)]
    return tuple((id(w), w.data_ptr(), -1 if w.is_inference() else w._version) for w in weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20000, help="checks timed per round, after 10%% untimed")
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args()
    require(args.tokens >= 1, f"--tokens must be at least 1, got {args.tokens}.")
    config = model_config_from_preset("tinystories-17m")
    config.fast = True
    layers = pack_projections(TransformerLM(config).eval())
    stamps = [stamp(layer) for layer in layers]

    def previous() -> None:
        for layer, saved in zip(layers, stamps, strict=True):
            if stamp(layer) != saved:
                raise AssertionError("nothing changed, yet the stamps differ")

    def current() -> None:
        for layer in layers:
            layer.refresh()

    times: dict[str, list[float]] = {"previous": [], "current": []}
    with torch.no_grad():
        for _ in range(3):
            for name, check in (("previous", previous), ("current", current)):
                for _ in range(args.tokens // 10):
                    check()
                start = time.perf_counter()
                for _ in range(args.tokens):
                    check()
                times[name].append((time.perf_counter() - start) / args.tokens * 1e6)
    weights = sum(len(layer._watch) for layer in layers)
    print(f"{'check':<10} {'µs per token (median of 3)':>27} {'µs per weight':>14}")
    for name, runs in times.items():
        print(f"{name:<10} {statistics.median(runs):>27.2f} {statistics.median(runs) / weights:>14.3f}")
    emit(
        {
            "benchmark": "packed_refresh",
            "device": "cpu",  # a host-side check: no device work
            "model": "tinystories-17m",
            "weights_checked_per_token": weights,
            "us_per_token": {name: runs for name, runs in times.items()},
            "torch": torch.__version__,
            "machine": describe_machine(),
        },
        args.out,
    )


if __name__ == "__main__":
    run_main(main)
