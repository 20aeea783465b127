#!/usr/bin/env bash
# Re² training (Table 1 setup). Usage:
#   bash recipes/re2/run_re2.sh MODEL_DIR TRAIN_PARQUET VAL_PARQUET EXPERIMENT [extra hydra overrides...]
# Build the parquet files with the redo-instruction template:
#   python -m verl_ext.re2.data dapo_math_17k.parquet train.parquet --template recipes/re2/prompts/redo_instruction.txt
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,5p' "$0"; exit 2
fi
MODEL=$1 TRAIN=$2 VAL=$3 NAME=$4; shift 4
HERE="$(cd "$(dirname "$0")" && pwd)"
# RE2_CONFIG_NAME=dapo_baseline is how run_dapo_baseline.sh reuses this script.
python -m verl.trainer.main_ppo --config-path="$HERE/config" --config-name="${RE2_CONFIG_NAME:-re2_trainer}" \
  actor_rollout_ref.model.path="$MODEL" data.train_files="$TRAIN" data.val_files="$VAL" \
  trainer.experiment_name="$NAME" "$@"
