#!/usr/bin/env bash
# DAPO baseline under Re²'s generated-response budget. Usage:
#   bash recipes/re2/run_dapo_baseline.sh MODEL_DIR TRAIN_PARQUET VAL_PARQUET EXPERIMENT [extra hydra overrides...]
# Build its parquet with the baseline template (no redo instruction), as the paper's baseline:
#   python -m verl_ext.re2.data dapo_math_17k.parquet train.parquet --template recipes/re2/prompts/baseline.txt
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,5p' "$0"; exit 2
fi
MODEL=$1 TRAIN=$2 VAL=$3 NAME=$4; shift 4
HERE="$(cd "$(dirname "$0")" && pwd)"
python -m verl.trainer.main_ppo --config-path="$HERE/config" --config-name=dapo_baseline \
  actor_rollout_ref.model.path="$MODEL" data.train_files="$TRAIN" data.val_files="$VAL" \
  trainer.experiment_name="$NAME" "$@"
