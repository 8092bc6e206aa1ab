#!/usr/bin/env bash
# Issue 9's GPU decode check, for one H100 or H200, in under 4 minutes.
#
#   bash benchmarks/gpu_decode_check.sh          # JSON under $OUT if set, else benchmarks/results/
#   GPU_CHECK_TESTS=1 bash benchmarks/gpu_decode_check.sh   # first the CUDA tests (about 2 minutes more)
#
# The tinystories-17m shape (d_model 512, 4 layers, 16 heads, context 256, vocabulary 10,000), random
# weights, greedy, batch 1 and 16, prompt 16, 240 new tokens, in bf16 and fp32; modes: eager cached,
# graph, compiled, compiled+graph, and HF transformers' generate (--hf, when transformers is installed).
# All with --fast (decoding reads the projections packed once per generation); a last short run repeats
# eager cached and graph without --fast, the configuration of the README's earlier figures (1,673 and
# 24,871 tokens/s graphed on an H100). Goals: compiled+graph >= 3,000 tokens/s at batch 1 and >= 30,000
# at batch 16.
#
# One decode.py process per dtype, each under its own timeout; decode.py rewrites its JSON after every
# batch ("complete": false until the end), so a slow compile loses only what had not run. Each process
# compiles once per batch size (compile_s is in its JSON rows); compiled+graph reuses the compiled mode's
# code (same shapes). The limits are estimates (no GPU has run this yet): raise them if a run is cut off.
# Needs: python3 with torch (CUDA, Triton), numpy, einops, regex, tiktoken, tqdm, matplotlib; the
# project itself is taken from src/ (no install needed).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
started=$SECONDS

"$PYTHON" -c "import sys, torch
if not torch.cuda.is_available():
    sys.exit('gpu_decode_check: this script measures a CUDA GPU, and none is visible here (torch ' + torch.__version__ + ').')
print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1

if [[ "${GPU_CHECK_TESTS:-0}" == 1 ]]; then
    timeout 150 "$PYTHON" -m pytest -q -m cuda tests/test_compiled_decode.py tests/test_kv_cache.py \
        || echo "gpu_decode_check: the CUDA tests failed or timed out" >&2
fi

run_cell() {  # run_cell SECONDS NAME ARGS...: one decode.py process, its JSON at $OUT_DIR/decode-gpu-NAME.json
    local limit=$1 name=$2
    shift 2
    echo "--- $name (limit ${limit} s, ${SECONDS} s since start)"
    timeout "$limit" "$PYTHON" benchmarks/decode.py --device cuda --model tinystories-17m --batches 1 16 \
        --prompts 16 --new-tokens 240 --skip-uncached --repeats 3 --out "$OUT_DIR/decode-gpu-$name.json" "$@"
    local rc=$?
    [[ $rc == 0 ]] || echo "gpu_decode_check: $name exited with $rc (124: timed out)" >&2
}

run_cell 105 bfloat16 --dtype bfloat16 --fast --hf
run_cell 95 float32 --dtype float32 --fast --hf
run_cell 30 bfloat16-reference --dtype bfloat16 --modes cached graph
echo "gpu_decode_check: done in $((SECONDS - started)) s"
