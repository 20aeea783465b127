#!/usr/bin/env bash
# GRPO with an Elastic Attention actor and an elastic vLLM rollout. Usage:
#   bash recipes/elastic_attention/run_grpo_elastic_vllm.sh MODEL_DIR ROUTERS TRAIN_PARQUET VAL_PARQUET EXPERIMENT [overrides...]
# Needs vLLM (GPU); the elastic model class comes from the verl_ext plugin (vllm.general_plugins entry point).
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,4p' "$0"; exit 2
fi
MODEL=$1 ROUTERS=$2 TRAIN=$3 VAL=$4 NAME=$5; shift 5
HERE="$(cd "$(dirname "$0")" && pwd)"
# Qwen2ForCausalLM -> ElasticQwen2ForCausalLM, ...; an unsupported architecture stops here with the list.
ARCH=$(python -c 'import json, sys
from verl_ext.elastic_attention.vllm_plugin import elastic_architecture
print(elastic_architecture(json.load(open(sys.argv[1] + "/config.json"))["architectures"][0]))' "$MODEL")
python -m verl.trainer.main_ppo --config-path="$HERE/config" --config-name=grpo_elastic_vllm \
  actor_rollout_ref.model.path="$MODEL" actor_rollout_ref.model.override_config.elastic_adapter="$ROUTERS" \
  "actor_rollout_ref.rollout.engine_kwargs.vllm.hf_overrides.architectures=[$ARCH]" \
  data.train_files="$TRAIN" data.val_files="$VAL" trainer.experiment_name="$NAME" "$@"
