#!/usr/bin/env bash
# One device command of the proxy evaluation (scripts/run_proxy_eval.py) on the GPU machine:
#   bash scripts/eval_proxy_gpu.sh --parts table --procs 8 --deadline 480     # then: --parts sweeps,ablations ...
# carry: [".whl", ".whl-eval"] (bash scripts/fetch_gpu_wheels.sh eval). It installs the wheels, fills the RULER
# sample cache for the committed proxy with every CPU core (25 samples per task at 4K-32K), runs the jobs into
# /tmp/proxy-v2/eval (a warm machine keeps it: the next command skips finished jobs) and packs that folder into
# $OUT/eval.tar.xz. Here: `tar xJf eval.tar.xz -C results/proxy/v2 && make reproduce-tables`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder whose files come back}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl .whl-eval/*.whl || { echo "carry .whl and .whl-eval (scripts/fetch_gpu_wheels.sh eval)"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf PBS_RULER_CACHE=/tmp/pbs-ruler
t0=$(date +%s)
python3 -m pbs.eval.ruler.cache --tokenizer models/pbs-proxy-llama-v2 --lengths 4096,8192,16384,32768 --samples 25 \
    --workers "$(nproc)" 2>&1 | tail -1
echo "RULER cache ready in $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 scripts/run_proxy_eval.py --results /tmp/proxy-v2/eval "$@" wandb.mode=disabled 2>&1 | tail -30
rc=${PIPESTATUS[0]}
tar cf - -C /tmp/proxy-v2 eval | xz -T0 > "$OUT/eval.tar.xz"
exit "$rc"
