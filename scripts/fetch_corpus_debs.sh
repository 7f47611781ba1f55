#!/usr/bin/env bash
# The Debian text packages of the proxy's corpus (pbs.train.corpus, source "debian"), into .corpus/debs
# (git-ignored): long English documents (the Python 3.11 manual, the Linux kernel's documentation, the Debian
# reference, handbook and developer guides) and dictionary text (GCIDE, WordNet). Versions: whatever Debian
# serves today; scripts/build_corpus.py records each file's name, version and sha256 in the manifest.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .corpus/debs
cd .corpus/debs
apt-get download -q python3.11-doc linux-doc-6.1 debian-reference-en debian-handbook developers-reference \
    maint-guide dict-gcide wordnet-base
ls -l
