#!/usr/bin/env bash
# The GPU benchmark check (benchmarks/gpu_check.py: bf16, attention kernel, tokens/s, peak memory), prepared for
# a session that is lent a GPU. The device image already has python3 with CUDA torch, transformers and
# sentence-transformers (see the device tool's KINDS.md); only the real Qwen vocabulary files travel.
#
#   1. here, once (no GPU needed; writes ~7 MB to benchmarks/.cache/gpu-carry):
#        bash benchmarks/gpu_check.sh --prepare
#   2. through the device tool, from the repository root:
#        run(command="bash benchmarks/gpu_check.sh", carry=["benchmarks/.cache/gpu-carry"], timeout_s=540)
#      Results come back as $OUT/gpu_check.{md,json,log}; extra arguments go to gpu_check.py
#      (e.g. --layers 28 --docs 1000 --rerank-docs 100 --long-docs 100, the defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=benchmarks/.cache/gpu-carry

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p "$CARRY"
    # qwen3_rag.testing looks for the vocabulary under $QWEN3_RAG_CACHE/qwen-vocab-<hash>: build it there
    QWEN3_RAG_CACHE="$CARRY" python -c "from qwen3_rag.testing import qwen_vocabulary_files; print(*qwen_vocabulary_files())"
    du -sh "$CARRY"
    exit 0
fi

OUT="${OUT:-benchmarks/.cache/results}"
mkdir -p "$OUT"
[[ -d "$CARRY" ]] || { echo "missing $CARRY: run 'bash benchmarks/gpu_check.sh --prepare' here and carry it" >&2; exit 2; }
export QWEN3_RAG_CACHE="$PWD/$CARRY" QWEN3_RAG_BENCH_CACHE="${QWEN3_RAG_BENCH_CACHE:-/tmp/qwen3-rag-bench}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PY" -c "import sys, torch, transformers, sentence_transformers as st; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'transformers', transformers.__version__, 'sentence-transformers', st.__version__)"
    timeout 500 "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
} 2>&1 | tee "$OUT/gpu_check.log"
