#!/usr/bin/env bash
# The open GPU figures of issues 5, 8 and 9, prepared for a session lent one H100/H200 with ~15 minutes of
# device time: two calls of the device tool, each well inside its 10-minute limit.
#
#   bash benchmarks/gpu_session.sh train    # ~6 min: tinystories-17m throughput, Shakespeare time-to-loss
#   bash benchmarks/gpu_session.sh decode   # ~4 min: benchmarks/gpu_decode_check.sh (issue 9)
#
# Tiny Shakespeare must travel with the tree (../shared stays behind): once, on this side,
#   mkdir -p .carry && cp ../shared/data/text/tinyshakespeare.txt .carry/ && echo /.carry/ >> .git/info/exclude
# then run with carry [".carry"] and SHAKESPEARE=.carry/tinyshakespeare.txt.
# Results go to a work folder that is packed into $OUT/gpu-session-<part>.tgz (the device tool returns at
# most 8 files), with the console log beside it; without $OUT they stay in benchmarks/results/gpu-session/.
#
# train:
# 0. The Triton QKV-split + RoPE kernel: its CUDA tests (exact against PyTorch, compiled model parity) and
#    benchmarks/kernels.py (the kernel against inductor's fusion of the same ops; SDPA's flash, cuDNN and
#    memory-efficient kernels at head dim 32).
# 1. `scratchlm bench train --preset tinystories-17m --set train.batch_size=128` on the fast path (whole
#    model compiled, CUDA graphs, bf16 residual stream), with model.kernels = torch and = triton, side by
#    side (issues 5, 8); the bf16 residual stream's gain was measured on 2026-11-23 (NOTES.md §2).
# 2. Shakespeare characters: four architectures train side by side (benchmarks/fast_path.py
#    --sections shakespeare-search), each to the end of its own cosine schedule; the one that reaches
#    validation <= 1.47 first (else the lowest) is trained again alone and timed from a cold compiler
#    cache. The candidates come from the CPU study benchmarks/results/experiments/
#    architecture-shakespeare-proxy (read NOTES.md §5 first: that proxy does not reproduce the GPU
#    ranking, so the GPU decides): nanoGPT's architecture as built from ModelConfig switches, the same
#    with RoPE, and this library's architecture with GPT-2's initialization and a tied head, at dropout
#    0.2 and 0.3.
set -uo pipefail
cd "$(dirname "$0")/.."
part="${1:-}"
[[ "$part" == train || "$part" == decode ]] || { echo "usage: $0 train|decode" >&2; exit 2; }
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
WORK="${OUT:+/tmp/gpu-session}"
WORK="${WORK:-benchmarks/results/gpu-session}"
mkdir -p "$WORK"
started=$SECONDS
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1

pack() {
    if [[ -n "${OUT:-}" ]]; then
        tar czf "$OUT/gpu-session-$part.tgz" -C "$WORK" . && echo "gpu_session: packed $WORK into $OUT"
    fi
    echo "gpu_session: $part done in $((SECONDS - started)) s"
}

if [[ "$part" == decode ]]; then
    OUT="$WORK" bash benchmarks/gpu_decode_check.sh 2>&1 | tee "$WORK/decode.log"
    pack
    exit 0
fi

echo "--- triton kernel: CUDA tests, then kernels.py (${SECONDS} s)"
timeout 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_triton_rope.py -m cuda 2>&1 | tail -15 \
    | tee "$WORK/test-triton-rope-cuda.txt"
timeout 120 "$PYTHON" benchmarks/kernels.py --out "$WORK/kernels.json" 2>&1 | tee "$WORK/kernels.txt"
FAST=(--set model.fast=true --set train.compile=true --set train.compile_scope=model
      --set train.compile_mode=reduce-overhead --set model.low_precision_residual=true)
for kernels in torch triton; do
    echo "--- tinystories-17m b128, kernels=$kernels (${SECONDS} s)"
    timeout 150 "$PYTHON" -m scratchlm bench train --preset tinystories-17m --set train.batch_size=128 \
        "${FAST[@]}" --set "model.kernels=\"$kernels\"" --steps 30 --json \
        | tee -a "$WORK/bench-train-tinystories-b128.jsonl"
done

TEXT="${SHAKESPEARE:-../shared/data/text/tinyshakespeare.txt}"
if [[ ! -f "$TEXT" ]]; then
    echo "gpu_session: no Tiny Shakespeare at $TEXT (set SHAKESPEARE=PATH; carry it into the repo)" >&2
    pack
    exit 1
fi
COMPILE="train.compile_scope=model;train.compile_mode=reduce-overhead"
NANOGPT="model.positional=\"learned\";model.ffn=\"gelu\";model.norm=\"layernorm\";model.init=\"gpt2\";model.tie_embeddings=true"
NANOGPT_ROPE="model.ffn=\"gelu\";model.norm=\"layernorm\";model.init=\"gpt2\";model.tie_embeddings=true"
TIED="model.init=\"gpt2\";model.tie_embeddings=true"
echo "--- shakespeare-search (${SECONDS} s)"
# A cold compiler cache for every run: the goal's wall time includes compilation.
TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 timeout 330 "$PYTHON" benchmarks/fast_path.py \
    --sections shakespeare-search --shakespeare "$TEXT" --out "$WORK/shakespeare" \
    --search "$NANOGPT;train.max_steps=2000;$COMPILE" \
    --search "$NANOGPT_ROPE;train.max_steps=2000;$COMPILE" \
    --search "$TIED;train.max_steps=2000;$COMPILE" \
    --search "$TIED;model.dropout=0.3;train.max_steps=2500;$COMPILE" \
    --final "$COMPILE" 2>&1 | tee "$WORK/shakespeare.log"
pack
