#!/usr/bin/env bash
# The wheels the GPU device machines lack (they have torch, triton, transformers, pandas, matplotlib, pyyaml, tqdm,
# accelerate, sacrebleu, but no package index), git-ignored; those published as source archives only are built here
# into pure-Python wheels:
#   .whl/       the Hydra apps: hydra-core 1.3.2, omegaconf 2.3.0, antlr4-python3-runtime 4.9.3 (0.4 MB)
#   .whl-eval/  with `eval`: lm-eval 0.4.13 and what it needs beyond the image (datasets, evaluate, dill,
#               multiprocess, nltk, pytablewriter and its helpers, rouge-score, sqlitedict, word2number; 4 MB:
#               lm-eval's wheel without the built-in task folders this project does not run,
#               scripts/slim_lm_eval_wheel.py).
#               wandb is not among them: evaluation commands there pass wandb.mode=disabled.
# Separate folders because the device's working tree holds 64 MiB: a training call carries .whl and the corpus,
# # an evaluation call .whl and .whl-eval. Run it here, where pip reaches PyPI (`bash scripts/fetch_gpu_wheels.sh
# [eval]`); then carry the folders to the device machine and install there with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl [.whl-eval/*.whl] && export PYTHONPATH=/tmp/site
# (the whole command: results/speed/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
mkdir -p .whl
rm -f .whl/*.whl  # one version of each
download() {
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 "$@"
}
download -d .whl hydra-core==1.3.2 omegaconf==2.3.0
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w .whl antlr4-python3-runtime==4.9.3
if [ "${1:-}" = eval ]; then
    mkdir -p .whl-eval
    rm -f .whl-eval/*.whl
    download -d .whl-eval lm-eval==0.4.13 datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 more-itertools==11.2.1 \
    nltk==3.10.4 pytablewriter==1.2.1 dataproperty==1.1.1 mbstrdecoder==1.1.5 pathvalidate==3.3.1 tabledata==1.3.5 \
    tcolorpy==0.1.7 typepy==1.3.5 chardet==6.0.0.post1
    "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w .whl-eval rouge-score==0.1.2 sqlitedict==2.1.0 \
        word2number==1.1
    "$PY" scripts/slim_lm_eval_wheel.py .whl-eval/lm_eval-0.4.13-py3-none-any.whl
fi
ls -l .whl .whl-eval 2>/dev/null
