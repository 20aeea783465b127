#!/usr/bin/env bash
# Create .venv and install verl-ext with its test extra, CPU build of torch first.
#
# torch goes in first and alone: every later requirement (torch>=2.11 from verl-ext, unpinned torch from verl's
# tensordict/torchdata) is then already satisfied, so pip never pulls a CUDA build. Where plain
# `pip install torch==2.13.0` resolves to the CUDA build, point TORCH_INDEX_URL at PyTorch's CPU wheel index.
# torch's CPU build brings no triton; the version its CUDA build pins (3.7.1) runs the kernels' interpreter tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${PIP[@]}" install "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
  else
    "${PIP[@]}" install "torch==2.13.0"
  fi
fi
"${PIP[@]}" install -e ".[test]" "triton==3.7.1"
.venv/bin/python - <<'PY'
import torch, verl, verl_ext
print(f"torch {torch.__version__} (cuda {torch.version.cuda}), verl {verl.__version__}, verl-ext {verl_ext.__version__}")
PY
