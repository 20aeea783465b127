#!/usr/bin/env bash
# Routers for Qwen3-4B (paper setup). Usage:
#   bash recipes/elastic_attention/run_qwen3_4b.sh MODEL_DIR TRAIN_PARQUET OUT_DIR [extra hydra overrides...]
set -euo pipefail
bash "$(dirname "$0")/run_router_training.sh" "$@" 
