#!/usr/bin/env bash
# Elastic Attention router training on one node. Usage:
#   bash recipes/elastic_attention/run_router_training.sh MODEL_DIR TRAIN_PARQUET OUT_DIR [extra hydra overrides...]
# TRAIN_PARQUET: chat rows with a task column (python -m verl_ext.elastic_attention.sft_data converts the released
# data). NGPUS (default 8) processes under torchrun; the routers land in OUT_DIR/router_adapter.safetensors.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,5p' "$0"; exit 2
fi
MODEL=$1 TRAIN=$2 OUT=$3; shift 3
HERE="$(cd "$(dirname "$0")" && pwd)"
torchrun --standalone --nproc_per_node="${NGPUS:-8}" -m verl_ext.elastic_attention.train_routers \
  --config-path="$HERE/config" --config-name=router_training \
  model.path="$MODEL" data.train_files="$TRAIN" trainer.default_local_dir="$OUT" \
  trainer.n_gpus_per_node="${NGPUS:-8}" trainer.experiment_name="$(basename "$OUT")" "$@"
