#!/usr/bin/env bash
# GPU check of the Unsloth path on a machine with a GPU and no network (issue 19): installs the uploaded wheels
# (unsloth, unsloth_zoo, trl, bitsandbytes; no vLLM, no hub weights) into a venv that sees the machine's torch,
# then runs scripts/gpu_check.py (tiny Qwen3 and Llama models built from configs, 16-bit and 4-bit, LoRA,
# SFT and GRPO steps, adapter save/reload, peak memory). Prints what ran and what did not.
#
#   scripts/gpu_check.sh WHEELS_DIR [gpu_check.py options]     e.g. scripts/gpu_check.sh wheels --archs qwen3
#
# Making WHEELS_DIR on a machine with PyPI (versions from requirements-gpu.txt; check the total stays under the
# upload limit, bitsandbytes alone is the largest):
#   scripts/gpu_check.sh --download wheels
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--download" ]; then
  dest=${2:?usage: scripts/gpu_check.sh --download DIR}
  pins=$(grep -E '^(unsloth|unsloth-zoo|trl|bitsandbytes)==' requirements-gpu.txt)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 -d "$dest" $pins
  du -sh "$dest"
  exit 0
fi
wheels=${1:?usage: scripts/gpu_check.sh WHEELS_DIR [options]}
shift
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
venv=${GPU_CHECK_VENV:-/tmp/medreason-gpu-check-venv}
[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"   # the machine's torch + CUDA
"$venv/bin/python" -m pip install -q --no-index --no-deps --find-links "$wheels" unsloth unsloth_zoo trl bitsandbytes \
  || echo "gpu_check: installing the wheels from $wheels failed; running with what is installed" >&2
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader || echo "gpu_check: nvidia-smi found no GPU" >&2
exec "$venv/bin/python" scripts/gpu_check.py "$@"
