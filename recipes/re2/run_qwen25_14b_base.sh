#!/usr/bin/env bash
# Re² on Qwen2.5-14B base (Table 1). Usage: bash recipes/re2/run_qwen25_14b_base.sh MODEL_DIR TRAIN_PARQUET VAL_PARQUET
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2p "$0"; exit 2; }
exec bash "$(dirname "$0")/run_re2.sh" "$1" "$2" "$3" re2_qwen25_14b_base \
  trainer.nnodes=2 actor_rollout_ref.rollout.tensor_model_parallel_size=4 \
  "${@:4}"
