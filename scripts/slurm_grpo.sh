#!/bin/bash
# GRPO on several nodes with SLURM: the last node serves the rollouts (`trl vllm-serve`, TRL's server mode), the others
# train with accelerate (DeepSpeed ZeRO-3 by default), all running `medreason grpo` from a multi-GPU recipe.
# NOT RUN in this repository's tests (no GPU, no cluster): a starting point to adapt to your cluster (partition,
# account, modules, how the environment is activated). README, "Beyond one GPU".
#
#   sbatch --nodes=3 scripts/slurm_grpo.sh runs/multi            # runs/multi/sft_adapter from `medreason sft`
#   sbatch --nodes=5 scripts/slurm_grpo.sh runs/multi --max_steps 1000 --learning_rate 3.0e-6
#
# Settings (environment): RECIPE (recipes/multi_gpu/grpo.yaml), ACCELERATE_CONFIG (recipes/accelerate/zero3.yaml),
# MODEL (the SFT adapter's base model, which vLLM serves: unsloth/Qwen3-1.7B), GPUS_PER_NODE (8), PORT (8000).
#SBATCH --job-name=medreason-grpo
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --exclusive
#SBATCH --output=%x-%j.out
set -euo pipefail

RUN_DIR=${1:?usage: sbatch --nodes=N scripts/slurm_grpo.sh RUN_DIR [medreason grpo options]}
shift
RECIPE=${RECIPE:-recipes/multi_gpu/grpo.yaml}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-recipes/accelerate/zero3.yaml}
MODEL=${MODEL:-unsloth/Qwen3-1.7B}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
PORT=${PORT:-8000}

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
if (( ${#NODES[@]} < 2 )); then
  echo "needs 2 nodes or more: the last one serves vLLM (on one node, use the commands of the README)" >&2
  exit 1
fi
VLLM_NODE=${NODES[-1]}
TRAIN_NODES=("${NODES[@]:0:${#NODES[@]}-1}")
NUM_TRAIN=${#TRAIN_NODES[@]}
MAIN_NODE=${TRAIN_NODES[0]}
TRAIN_LIST=$(IFS=,; echo "${TRAIN_NODES[*]}")
EXTRA=$(printf ' %q' "$@")

# Rollouts: one vLLM engine per GPU of the last node (data parallel); the trainer waits for it (vllm_server_timeout).
srun --nodes=1 --ntasks=1 --nodelist="$VLLM_NODE" \
  trl vllm-serve --model "$MODEL" --data_parallel_size "$GPUS_PER_NODE" --host 0.0.0.0 --port "$PORT" &
VLLM_STEP=$!

# Training: one accelerate launcher per node, GPUS_PER_NODE processes each; the first node is the rendezvous.
srun --nodes="$NUM_TRAIN" --ntasks="$NUM_TRAIN" --nodelist="$TRAIN_LIST" bash -c "
  accelerate launch --config_file $ACCELERATE_CONFIG \
    --num_machines $NUM_TRAIN --num_processes $((NUM_TRAIN * GPUS_PER_NODE)) --machine_rank \$SLURM_PROCID \
    --main_process_ip $MAIN_NODE --main_process_port 29500 --rdzv_backend c10d \
    -m medreason_utils.pipeline.cli grpo --config $RECIPE --output_dir $RUN_DIR \
    --vllm_server_base_url http://$VLLM_NODE:$PORT $EXTRA"

kill "$VLLM_STEP" 2>/dev/null || true
