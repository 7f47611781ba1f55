#!/usr/bin/env bash
# The wheels the H200 device machine lacks for the Hydra apps (it has torch, triton, transformers, pandas,
# matplotlib, pyyaml, tqdm, but no package index and no hydra): hydra-core 1.3.2, omegaconf 2.3.0 and
# antlr4-python3-runtime 4.9.3 (published as a source archive only: built here into a pure-Python wheel), in .whl/
# (git-ignored). Run it here, where pip reaches PyPI; then carry .whl to the device machine and install there with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && export PYTHONPATH=/tmp/site
# (the whole command: results/speed/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
mkdir -p .whl
rm -f .whl/hydra_core-*.whl .whl/omegaconf-*.whl .whl/antlr4_python3_runtime-*.whl  # one version of each
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d .whl hydra-core==1.3.2 omegaconf==2.3.0
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -l .whl
