#!/usr/bin/env bash
# The distribution as a user gets it: builds the sdist, then the wheel FROM the sdist (as pip does), installs the
# wheel with its [all] extra into a fresh virtualenv outside the checkout (torch==2.13.0 first, as the README
# says) and runs a smoke test there -- imports of the three packages (from site-packages, with their py.typed
# markers and the LICENSE), `qwen3-rag --help`, and a tiny index + search on checkpoints built by
# `python -m qwen3_rag.testing` with its tiny vocabulary (no test dependency needed). A file missing from the
# sdist or the wheel fails here, not on a user's machine.
#
# Needs git, python3 with venv and PyPI (the build backend and the [all] extra; pip's cache makes reruns fast).
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOUT="$(pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/qwen3-rag-package.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
log() { echo "package-smoke: $*" >&2; }

log "fresh virtualenv in $WORK/venv"
"$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q --upgrade pip build

log "building the sdist, and the wheel from it"
# From a copy of the files git tracks (or would: untracked, not ignored): no build output in the checkout (.venv,
# *.egg-info) leaks into the package, and `make test` may install into the checkout meanwhile (.ci/run).
mkdir "$WORK/src"
(cd "$CHECKOUT" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$CHECKOUT" && tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
"$PY" -m build --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
WHEEL="$(ls "$WORK"/dist/qwen3_rag-*.whl)"
ls "$WORK"/dist/qwen3_rag-*.tar.gz >/dev/null

log "installing torch==2.13.0, then $(basename "$WHEEL")[all]"
"$PY" -m pip install -q --no-compile torch==2.13.0
"$PY" -m pip install -q --no-compile "$WHEEL[all]"

cd "$WORK"  # outside the checkout: nothing can be imported from the source tree
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" - <<'PYEOF'
import importlib.metadata
import importlib.resources

import langchain_qwen3
import llama_index_qwen3
import qwen3_rag
import qwen3_rag.chroma
import qwen3_rag.remote

for package in (qwen3_rag, langchain_qwen3, llama_index_qwen3):
    assert "site-packages" in package.__file__, f"{package.__name__} imported from {package.__file__}"
    assert (importlib.resources.files(package) / "py.typed").is_file(), f"{package.__name__} has no py.typed"
files = {str(path) for path in importlib.metadata.distribution("qwen3-rag").files}
assert any(path.endswith("LICENSE") for path in files), "the wheel carries no LICENSE"
print("package-smoke: imports, py.typed and LICENSE ok")
PYEOF
"$WORK/venv/bin/qwen3-rag" --help >/dev/null

"$PY" -m qwen3_rag.testing "$WORK/models" >/dev/null
mkdir "$WORK/corpus"
printf '# Bees\n\nForagers perform a waggle dance to share directions to flowers.\n' >"$WORK/corpus/bees.md"
printf 'Tides rise and fall twice a day because of the pull of the moon.\n' >"$WORK/corpus/tides.txt"
"$WORK/venv/bin/qwen3-rag" index "$WORK/corpus" --db "$WORK/db" --embedding-model "$WORK/models/embedding" -q
"$WORK/venv/bin/qwen3-rag" search "How do bees share directions?" --db "$WORK/db" \
    --embedding-model "$WORK/models/embedding" --reranker-model "$WORK/models/reranker" --json -q >"$WORK/search.json"
"$PY" - "$WORK/search.json" <<'PYEOF'
import json
import sys

results = json.load(open(sys.argv[1]))["results"]
assert len(results) == 2 and {r["source"].rsplit("/", 1)[-1] for r in results} == {"bees.md", "tides.txt"}, results
assert all(0.0 <= r["rerank_score"] <= 1.0 for r in results), results
print("package-smoke: qwen3-rag --help, index and search ok")
PYEOF
