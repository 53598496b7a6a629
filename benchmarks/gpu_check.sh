#!/usr/bin/env bash
# One command for a CUDA machine: the GPU tests, then the harness on 17m / 150m / 1b shapes at
# max_length 512, our defaults (bf16 + unpadded attention) against predict's defaults (float32,
# batch 32) and predict in bf16 with a large fixed batch, all in one run.
#
#   bash benchmarks/gpu_check.sh            # writes benchmarks/out/gpu/results.{json,md}
#
# Needs torch with CUDA plus this package's dependencies already installed (the device machines
# here have no network: carry wheels, see README "Benchmarks").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/out}/gpu}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
python -m pytest -q -p no:cacheprovider -m gpu tests/test_varlen.py -rs
python -m benchmarks.run --device cuda --max-length 512 --sizes 17m 150m 1b \
  --queries 40 --k 50 --repeats 3 --variants predict predict_bf16_bs64 ours ours_bt32768 --out "$out"
