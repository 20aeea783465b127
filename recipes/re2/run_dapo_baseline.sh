#!/usr/bin/env bash
# DAPO baseline under Re²'s generated-response budget. Usage:
#   bash recipes/re2/run_dapo_baseline.sh MODEL_DIR TRAIN_PARQUET VAL_PARQUET EXPERIMENT [extra hydra overrides...]
# Build its parquet with the baseline template (no redo instruction), as the paper's baseline:
#   python -m verl_ext.re2.data dapo_math_17k.parquet train.parquet --template recipes/re2/prompts/baseline.txt
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,5p' "$0"; exit 2
fi
RE2_CONFIG_NAME=dapo_baseline exec bash "$(dirname "$0")/run_re2.sh" "$@"
