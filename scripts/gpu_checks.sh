#!/usr/bin/env bash
# The kernels' GPU checks in one go: the GPU tests (correctness first), then the benchmark.
# Runs on a bare CUDA image with torch and triton but without verl or this package installed: the kernels need
# neither, so an empty `verl` module stands in for the import that verl_ext/__init__.py makes, and kernels/ is
# linked where the installed package would put it.
# Usage: bash scripts/gpu_checks.sh OUT_DIR [benchmark args...]
set -uo pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR [benchmark args]}
shift
shim=$(mktemp -d)
mkdir -p "$shim/verl" && : >"$shim/verl/__init__.py"
[ -e verl_ext/kernels ] || ln -s ../kernels verl_ext/kernels
export PYTHONPATH="$shim:$PWD"
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/kernels/test_elastic_attention_triton_gpu.py 2>&1 | tail -25
python3 benchmarks/elastic_attention_gpu.py --out "$out/gpu_bench.json" "$@" 2>&1 | tee "$out/gpu_bench.log" | tail -40
