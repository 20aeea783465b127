#!/usr/bin/env bash
# Create .venv-stack: verl-ext on verl's GPU stack versions (torch 2.11.0, transformers 5.9.0, the triton that torch
# 2.11 brings), as `pip install "verl[vllm]==0.9.1"` gives them, without vllm itself (GPU-only). torch 2.11.0's
# default wheel is the CUDA build; it installs and runs on a machine without a GPU (a large download).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-stack}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# setuptools new enough for this project's metadata, old enough for torch 2.11 (.ci/check_stacks.py builds here
# without isolation)
"${PIP[@]}" install --upgrade pip "setuptools>=77,<82" wheel
"${PIP[@]}" install -c third_party/verl_stack_pins.txt torch transformers numpy -e ".[test]"
"$VENV/bin/python" - <<'PY'
import torch, transformers, triton, verl, verl_ext
print(f"stack: torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), transformers "
      f"{transformers.__version__}, triton {triton.__version__}, verl {verl.__version__}, verl-ext {verl_ext.__version__}")
PY
