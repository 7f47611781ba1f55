#!/usr/bin/env bash
# The proxy evaluation (scripts/run_proxy_eval.py) on the GPU machine, across several device commands:
#   bash scripts/eval_proxy_gpu.sh start 560 --parts table,sweeps,ablations --procs 10 \
#       --skip-finished results/proxy/v2/eval                                         # first command
#   bash scripts/eval_proxy_gpu.sh wait 580                                              # each next one (warm)
# carry: [".whl", ".whl-eval"] (bash scripts/fetch_gpu_wheels.sh eval) and, to skip generating the RULER samples
# there, ".rc" (a folder of `python -m pbs.eval.ruler.cache` files for the committed proxy's tokenizer).
# `start` installs the wheels, copies the tree to /tmp/proxy-v2/repo (each device call copies the working tree in
# again), fills the RULER sample cache (25 samples per task at the lengths of the jobs to run, every CPU core) and
# launches the evaluation in its own process session, so it outlives the command and goes on while the machine stays
# warm; `start` and `wait` then wait up to SECONDS (less if it ends) and pack the results so far (/tmp/proxy-v2/eval:
# finished runs, unfinished ones and the job logs) into $OUT/eval.tar.xz, the runner's log into $OUT/runner.log.
# Here: `python scripts/collect_gpu_runs.py <files_at>/eval.tar.xz` (the finished runs and their logs into
# results/proxy/v2/eval), commit, `make reproduce-tables`. To run the failed jobs again
# on the same warm machine: `start ... --skip-finished results/proxy/v2/eval --skip-finished /tmp/proxy-v2/eval`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder whose files come back}
mode=${1:?usage: eval_proxy_gpu.sh start|wait SECONDS [run_proxy_eval.py arguments]}
seconds=${2:?usage: eval_proxy_gpu.sh start|wait SECONDS [run_proxy_eval.py arguments]}
shift 2
work=/tmp/proxy-v2
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf PBS_RULER_CACHE=/tmp/pbs-ruler OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
case "$mode" in
start)
    if [ -f "$work/runner.pid" ] && [ ! -f "$work/runner.rc" ] && kill -0 "$(cat "$work/runner.pid")" 2>/dev/null; then
        echo "an evaluation is still running on this machine: use wait"; exit 1  # before the wheels under its jobs are replaced
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl .whl-eval/*.whl || { echo "carry .whl and .whl-eval (scripts/fetch_gpu_wheels.sh eval)"; exit 1; }
    rm -rf "$work/repo" "$work/runner.rc"
    mkdir -p "$PBS_RULER_CACHE" "$work"
    # the evaluation runs from its own copy of the tree: each device call copies the working tree in again, and a job
    # that starts meanwhile finds modules missing (three jobs failed so on 2026-12-07)
    cp -a . "$work/repo"
    [ -d .rc ] && cp .rc/*.json.gz "$PBS_RULER_CACHE"/ 2>/dev/null
    # only the lengths of the jobs still to run (a length missing from .rc costs device time to generate)
    joblist=$(python3 scripts/run_proxy_eval.py "$@" --list) || exit 2  # bad arguments: said before any job runs
    lengths=$(echo "$joblist" | grep -o 'task.lengths=\[[0-9]*\]' | tr -dc '0-9\n' \
        | sort -un | paste -sd,)
    [ -n "$lengths" ] && python3 -m pbs.eval.ruler.cache --tokenizer models/pbs-proxy-llama-v2 --lengths "$lengths" \
        --samples 25 --workers "$(nproc)" 2>&1 | tail -1
    echo "RULER cache ready in $(( $(date +%s) - t0 )) s"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers',
        transformers.__version__, 'triton', triton.__version__)"
    args=$(printf '%q ' "$@")  # each argument as typed: the inner shell must not expand ${now:...} or [16384]
    setsid nohup bash -c "echo \$\$ > $work/runner.pid; cd $work/repo && python3 scripts/run_proxy_eval.py --results $work/eval $args wandb.mode=disabled \
        > $work/runner.log 2>&1; echo \$? > $work/runner.rc" > /dev/null 2>&1 < /dev/null &
    echo "evaluation started at $(date -u +%FT%TZ): run_proxy_eval.py $*" ;;
wait) [ -f "$work/runner.log" ] || { echo "no evaluation started on this machine (a fresh one?)"; exit 1; } ;;
*) echo "mode must be start or wait, got mode=$mode"; exit 2 ;;
esac
while [ ! -f "$work/runner.rc" ] && [ $(( $(date +%s) - t0 )) -lt "$seconds" ]; do sleep 5; done
finished=$(grep -l '"status": "ok"' "$work"/eval/runs/*/status.json 2>/dev/null | wc -l)
echo "$(date -u +%FT%TZ): $finished runs finished; runner $( [ -f "$work/runner.rc" ] && echo "ended, rc $(cat "$work/runner.rc")" || echo running)"
tr '\r' '\n' < "$work/runner.log" | grep -v '^\s*$' | tail -5
tar cf - -C "$work" eval | xz -T0 > "$OUT/eval.tar.xz"
cp "$work/runner.log" "$OUT/runner.log"
