#!/usr/bin/env bash
# Build .venv-llmlingua: the separate environment the LLMLingua / LongLLMLingua peers run in.
#
# llmlingua 0.2.2 needs transformers 4.x while crossprefill-agents needs transformers 5.x, so
# the peers live in their own virtualenv and are driven over a pipe by benchmarks/peers/llmlingua.py.
# Idempotent: an existing, complete environment is left as it is (delete the folder to rebuild).
# torch is installed first from the CPU wheel on disk so that pip never resolves a CUDA torch.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${LLMLINGUA_VENV:-$ROOT/.venv-llmlingua}"
PY="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0"
LLMLINGUA_SPEC="llmlingua==0.2.2"
TRANSFORMERS_SPEC="transformers==4.45.2"
STAMP="$VENV/.crossprefill-llmlingua-ok"

if [[ -f "$STAMP" ]] && "$VENV/bin/python" -c "import llmlingua, torch, transformers" 2>/dev/null; then
    echo "setup_llmlingua: $VENV is ready" >&2
    "$VENV/bin/python" "$ROOT/benchmarks/peers/convert_draft_tf445.py" || true
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --quiet)

# 1. CPU torch only: the local wheel (pip's find-links) or the CPU index, never the default CUDA build.
#    The local-version spec (+cpu) matches only CPU builds: a wheel in pip's find-links, else the CPU index.
"${PIP[@]}" "${TORCH_SPEC}+cpu" 2>/dev/null \
    || "${PIP[@]}" "${TORCH_SPEC}+cpu" --timeout 30 --extra-index-url https://download.pytorch.org/whl/cpu
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if '+cpu' in torch.__version__ or not torch.version.cuda else 1)"; then
    echo "setup_llmlingua: torch in $VENV is not a CPU build; remove $VENV and install a CPU wheel first" >&2
    exit 1
fi

# 2. The peer and the transformers it works with; torch is pinned so that pip keeps the CPU build.
"${PIP[@]}" "$LLMLINGUA_SPEC" "$TRANSFORMERS_SPEC" "$TORCH_SPEC"

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("llmlingua", "transformers", "torch", "tiktoken", "nltk", "accelerate"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
PY
touch "$STAMP"
echo "setup_llmlingua: $VENV ready" >&2

# 3. The draft, re-saved for transformers 4.45 (needs `crossprefill download smollm2-135m` first).
if ! "$VENV/bin/python" "$ROOT/benchmarks/peers/convert_draft_tf445.py"; then
    echo "setup_llmlingua: no SmolLM2 draft to convert yet: run '.venv/bin/crossprefill download smollm2-135m'," >&2
    echo "then 'python benchmarks/peers/convert_draft_tf445.py'" >&2
fi
