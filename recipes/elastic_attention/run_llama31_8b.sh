#!/usr/bin/env bash
# Routers for Llama-3.1-8B-Instruct (paper setup). Usage:
#   bash recipes/elastic_attention/run_llama31_8b.sh MODEL_DIR TRAIN_PARQUET OUT_DIR [extra hydra overrides...]
set -euo pipefail
# Llama 3.1's chat template has no thinking switch: drop the recipe's enable_thinking=false.
bash "$(dirname "$0")/run_router_training.sh" "$@" data.apply_chat_template_kwargs={}
