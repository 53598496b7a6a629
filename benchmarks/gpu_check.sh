#!/usr/bin/env bash
# One command for a CUDA machine: the GPU tests, then the harness on 17m / 150m / 1b shapes at
# max_length 512, our defaults (bf16 + unpadded attention) against predict's defaults (float32,
# batch 32) and predict in bf16 with a large fixed batch, all in one run: cold and warm passes,
# the per-query stage breakdown, the token cache, torch.compile with and without CUDA graphs (compile
# time and graph memory under each table), a batch_tokens sweep (to choose the CUDA default), and the
# bulk table of the model cards' shape for all six sizes.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # writes OUT_DIR/results.{json,md}
#
# Needs torch with CUDA and this package's dependencies (sentence-transformers, transformers,
# scipy); with them installed, PYTHONPATH=. runs it from a checkout without installing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-ettin-bench-out}/gpu}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
# -o addopts=: one process (the GPU image may lack pytest-xdist, and a handful of tests need no workers).
python -m pytest -o addopts= -q -p no:cacheprovider -m gpu tests/test_varlen.py tests/test_reliability.py tests/test_compilation.py -rs
python -m ettin_integrations.benchmarking.run --device cuda --max-length 512 --sizes ${SIZES:-17m 150m 1b} \
  --queries ${QUERIES:-40} --k 50 --repeats 3 --out "$out" \
  --variants predict predict_bf16_bs64 ours ours_cache ours_compile ours_graphs ours_bt8192 ours_bt16384 ours_bt32768 ours_bt131072
# The model cards' shape: all queries' pairs in one call, six sizes, printed beside the cards' H100 figures
# (every table carries model GFLOP/s and MFU against a timed bf16 GEMM in the same process).
python -m ettin_integrations.benchmarking.run --device cuda --max-length 512 --bulk \
  --sizes ${BULK_SIZES:-17m 32m 68m 150m 400m 1b} --queries ${BULK_QUERIES:-100} --k 50 --repeats 3 --no-overhead \
  --out "$out/bulk" --variants predict_bf16_bs64 ours
# Precision on the trained fixture (built there, once: training needs the [distill] extra, i.e.
# sentence-transformers[train], bm25s and ir-measures; carry their wheels to a machine without network).
if python -c "import datasets, accelerate, bm25s, ir_measures" 2>/dev/null; then
  python -m ettin_integrations.benchmarking.precision --trained 17m --device cuda --out "$out/precision"
else
  echo "precision: skipped (pip install 'sentence-transformers[train]' bm25s ir-measures to run it)"
fi
# The cascade's quality/cost table on the real family (17m -> 150m, 32m -> 1b), when the hub models are in the
# Hugging Face cache and CASCADE_DATA names a BEIR folder (e.g. scifact): BM25 top 100, bf16, one query at a time.
if [ -n "${CASCADE_DATA:-}" ]; then
  for pair in "17m 150m" "32m 1b"; do
    set -- $pair
    python -m ettin_integrations.benchmarking.cascade --cheap "$1" --expensive "$2" --data "$CASCADE_DATA" \
      --device cuda --dtype bfloat16 --max-length 512 --keep 10 20 30 50 --out "$out/cascade-$1-$2" \
      || echo "cascade $1 -> $2: failed (are both models in the cache?)"
  done
else
  echo "cascade: skipped (set CASCADE_DATA=<BEIR folder>, with the hub models in the cache)"
fi
