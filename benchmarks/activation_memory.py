"""Activation memory of one training step for the presets, reference path against fast path, per device.

`python benchmarks/activation_memory.py [--presets a,b] [--cuda]` prints a table plus one JSON line:
for each preset at its own batch size and context, the textbook count and what scratchlm's model saves
for backward, measured on the "meta" device (`scratchlm.analysis.activations`; nothing is allocated).
`--cuda` adds a real eager step on the GPU: the growth of `torch.cuda.memory_allocated` over the forward
pass (what autograd holds when the backward starts), in fp32 and under bf16 autocast, so the meta figure
can be checked against the device and the bf16 saving measured rather than assumed.
"""

from __future__ import annotations

import argparse
import json

import torch

from scratchlm.analysis.activations import activation_estimate, measure_saved_activations
from scratchlm.config import ModelConfig
from scratchlm.presets import resolve_run_config

PRESETS = "shakespeare-char,tinystories-17m,capstone-10m,scratch1"
FAST = {"fast": True, "attention_backend": "sdpa"}


def cuda_forward_bytes(config: ModelConfig, batch_size: int, autocast: bool) -> int:
    """Bytes allocated by one training forward pass and still held when it returns (saved tensors, loss)."""
    from scratchlm.model import TransformerLM

    model = TransformerLM(config, device="cuda")
    model.train()
    model.check_token_ids = False
    idx_BT = torch.randint(0, config.vocab_size, (batch_size, config.context_length), device="cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        _, loss = model(idx_BT, idx_BT)
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before
    del loss, model
    torch.cuda.empty_cache()
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=PRESETS)
    parser.add_argument("--cuda", action="store_true", help="also measure a real forward on the GPU")
    args = parser.parse_args()
    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("activation_memory: --cuda needs a CUDA GPU, and none is visible here.")
    rows = []
    for preset in args.presets.split(","):
        run = resolve_run_config(preset)
        batch = run.train.batch_size
        for path, extra in (("reference", {"fast": False, "attention_backend": "reference"}), ("fast", FAST)):
            config = ModelConfig.from_dict({**run.model.to_dict(), **extra})
            row = {
                "preset": preset, "path": path, "batch_size": batch, "seq_len": config.context_length,
                "textbook_bytes": 4 * activation_estimate(config, batch).total,
                "meta_bytes": measure_saved_activations(config, batch).total,
            }  # fmt: skip
            if args.cuda:
                row["cuda_fp32_bytes"] = cuda_forward_bytes(config, batch, autocast=False)
                row["cuda_bf16_autocast_bytes"] = cuda_forward_bytes(config, batch, autocast=True)
            rows.append(row)
    mib = 2**20
    columns = ["textbook_bytes", "meta_bytes"] + (["cuda_fp32_bytes", "cuda_bf16_autocast_bytes"] if args.cuda else [])
    print("| preset | path | B x T | " + " | ".join(c.replace("_bytes", " (MiB)") for c in columns) + " |")
    print("|---|---|---|" + "---:|" * len(columns))
    for r in rows:
        values = " | ".join(f"{r[c] / mib:,.1f}" for c in columns)
        print(f"| {r['preset']} | {r['path']} | {r['batch_size']} x {r['seq_len']} | {values} |")
    device = torch.cuda.get_device_name() if args.cuda else "meta (no device)"
    print(json.dumps({"device": device, "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
