#!/usr/bin/env bash
# One device command of the Step 11 proxy's training (conf/train_proxy_v2.yaml), on the GPU machine:
#   bash scripts/train_proxy_v2_gpu.sh [hydra overrides...]       # e.g. resume=true, or continue_from=<folder>
# carry: [".whl", ".corpus/debian-kjv"]. It installs the Hydra wheels (scripts/fetch_gpu_wheels.sh), builds the
# Python part of the corpus from the packages installed there unless /tmp already holds it (the machine keeps /tmp
# while warm), trains for train.stop_after_minutes, then packs the export (weights in bf16 shards, tokenizer,
# training log, the corpus manifests) into $OUT as 15 MiB pieces (the device returns at most 8 files of 16 MiB)
# beside the log and summary.json. Here: `cat v2.tar.part-* | tar xf - -C models/pbs-proxy-llama-v2` unpacks it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder whose files come back}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
[ -f .corpus/debian-kjv/train.txt.xz ] || { echo "carry .corpus/debian-kjv (scripts/build_corpus.py)"; exit 1; }
if [ ! -f /tmp/pbs-corpus-python/train.txt.xz ]; then
    t0=$(date +%s)
    python3 scripts/build_corpus.py --sources python --out /tmp/pbs-corpus-python --no-progress || exit 1
    echo "python corpus built in $(( $(date +%s) - t0 )) s"
fi
export_dir=/tmp/pbs-proxy-v2-export
python3 -m experiments.train_proxy --config-name train_proxy_v2 out_dir=$export_dir "$@" 2>&1 | tee "$OUT/train.log" \
    | grep -v "^\[train_proxy\] step=" | tail -40
rc=${PIPESTATUS[0]}
cp /tmp/pbs-proxy-v2/summary.json "$OUT/" 2>/dev/null
if [ -d $export_dir ]; then  # the corpus it was trained on travels with the model
    cp /tmp/pbs-corpus-python/manifest.json $export_dir/corpus-python-manifest.json
    cp .corpus/debian-kjv/manifest.json $export_dir/corpus-debian-kjv-manifest.json
    tar cf - -C $export_dir . | split -b 15M - "$OUT/v2.tar.part-"
fi
xz -9 -T0 "$OUT/train.log"
exit "$rc"
