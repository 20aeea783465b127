#!/usr/bin/env bash
# GRPO with an Elastic Attention actor and rollout. Usage:
#   bash recipes/elastic_attention/run_grpo_elastic.sh MODEL_DIR ROUTERS TRAIN_PARQUET VAL_PARQUET EXPERIMENT [overrides...]
# ROUTERS: a router adapter from run_router_training.sh (or an official checkpoint). For Re², use
# recipes/re2/run_re2.sh with the same override_config keys (both use trainer.v1.trainer_mode=verl_ext_sync).
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,5p' "$0"; exit 2
fi
MODEL=$1 ROUTERS=$2 TRAIN=$3 VAL=$4 NAME=$5; shift 5
HERE="$(cd "$(dirname "$0")" && pwd)"
python -m verl.trainer.main_ppo --config-path="$HERE/config" --config-name=grpo_elastic \
  actor_rollout_ref.model.path="$MODEL" actor_rollout_ref.model.override_config.elastic_adapter="$ROUTERS" \
  data.train_files="$TRAIN" data.val_files="$VAL" trainer.experiment_name="$NAME" "$@"
