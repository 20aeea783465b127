#!/usr/bin/env bash
# Evaluate an LLM judge on MemoryRewardBench with verl's validation loop. Usage:
#   bash recipes/memoryrewardbench/run_judge.sh JUDGE_DIR DATA_DIR RUN_DIR [--dual] [--greedy] [--official-prompts=REPO]
#        [extra hydra overrides...]
# DATA_DIR holds the three task files (Hugging Face 6-field schema or the raw evaluator schema). Re-running with the
# same RUN_DIR resumes: pairs already in RUN_DIR/records.jsonl are not sent to the judge again.
set -euo pipefail
if [ $# -lt 3 ]; then sed -n '2,6p' "$0"; exit 2; fi
JUDGE=$1 DATA=$2 RUN=$3; shift 3
ORDER=seeded; SAMPLING=t0.7_p0.95; EXTRA=(); PROMPTS=()
for arg in "$@"; do
  case $arg in
    --dual) ORDER=dual ;;
    --greedy) SAMPLING=greedy; EXTRA+=(actor_rollout_ref.rollout.val_kwargs.temperature=0 actor_rollout_ref.rollout.val_kwargs.do_sample=false) ;;
    --official-prompts=*) PROMPTS=(--official-prompts "${arg#*=}") ;;
    *) EXTRA+=("$arg") ;;
  esac
done
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$RUN"
STATS=$(python -m verl_ext.memrm.convert "$DATA" "$RUN/val.parquet" --tokenizer "$JUDGE" --order "$ORDER" \
  --records "$RUN/records.jsonl" --model "$JUDGE" --sampling "$SAMPLING" "${PROMPTS[@]}" | tail -1)
echo "$STATS"
if [ "$(python -c 'import json,sys; print(json.loads(sys.argv[1])["rows"])' "$STATS")" != 0 ]; then
VERL_FILE_LOGGER_PATH="$RUN/metrics.jsonl" python -m verl.trainer.main_ppo --config-path="$HERE/config" \
  --config-name=memrm_judge actor_rollout_ref.model.path="$JUDGE" \
  data.train_files="$RUN/val.parquet" data.val_files="$RUN/val.parquet" trainer.validation_data_dir="$RUN/generations" \
  +reward.custom_reward_function.reward_kwargs.records_path="$RUN/records.jsonl" \
  +reward.custom_reward_function.reward_kwargs.model="$JUDGE" \
  +reward.custom_reward_function.reward_kwargs.sampling="$SAMPLING" "${EXTRA[@]}"
fi
python -m verl_ext.memrm.report "$RUN/records.jsonl" --out "$RUN/report"
