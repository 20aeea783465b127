#!/usr/bin/env bash
# Re² on DeepSeek-R1-Distill-Llama-8B (Table 1). Usage: bash recipes/re2/run_r1_distill_llama_8b.sh MODEL_DIR TRAIN_PARQUET VAL_PARQUET
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2p "$0"; exit 2; }
exec bash "$(dirname "$0")/run_re2.sh" "$1" "$2" "$3" re2_r1_distill_llama_8b \
  "${@:4}"
