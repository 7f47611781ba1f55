"""Regenerate ``pbs/eval/ruler/data/kjv.txt.gz``: the King James Bible (public domain) as plain prose, one verse a
line, the haystack of the RULER-style synthetic suite (:mod:`pbs.eval.ruler`).

Needs Debian's ``bible-kjv`` reader and its ``bible-kjv-text`` data::

    apt-get update -qq && apt-get install -y -qq bible-kjv bible-kjv-text
    python scripts/make_corpus.py            # [--out PATH] [--check]

The text comes from ``bible -f "Gen1:1-Rev22:21"`` (31,102 verses); each line loses its ``Ge1:1`` style
reference, whitespace is collapsed and empty lines dropped. The gzip is written with ``mtime=0`` so the output is
byte-for-byte reproducible. ``--check`` compares against the shipped file instead of writing it.
"""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "pbs" / "eval" / "ruler" / "data" / "kjv.txt.gz"
RANGE = "Gen1:1-Rev22:21"
_REF = re.compile(r"^\s*[1-3]?[A-Za-z]+\d+:\d+\s+")


def read_bible() -> str:
    try:
        proc = subprocess.run(["bible", "-f", RANGE], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("`bible` not found: apt-get update -qq && apt-get install -y -qq bible-kjv bible-kjv-text")
    return proc.stdout


def clean(raw: str) -> list[str]:
    lines = []
    for line in raw.splitlines():
        line = _REF.sub("", line)
        line = " ".join(line.split())
        if line:
            lines.append(line)
    return lines


def compress(lines: list[str]) -> bytes:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    return gzip.compress(data, compresslevel=9, mtime=0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 when the shipped file differs")
    args = ap.parse_args(argv)
    lines = clean(read_bible())
    if len(lines) < 31000:
        sys.exit(f"only {len(lines)} verses read: is bible-kjv-text installed?")
    blob = compress(lines)
    if args.check:
        same = args.out.exists() and gzip.decompress(args.out.read_bytes()) == gzip.decompress(blob)
        print("up to date" if same else f"stale: {args.out}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(lines)} lines, {len(blob) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
