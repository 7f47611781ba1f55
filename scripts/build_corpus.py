"""Build the proxy's pretraining corpus (``pbs.train.corpus``): ``train.txt.xz``, ``heldout.txt.xz`` and
``manifest.json`` (every source file, distribution and package version read, so anyone can rebuild it).

    bash scripts/fetch_corpus_debs.sh                       # the Debian text packages, into .corpus/debs
    python scripts/build_corpus.py --out corpus              # python (this interpreter's packages), debian, kjv
    python scripts/build_corpus.py --sources debian,kjv --out .corpus/debian-kjv   # here, to carry to the GPU

On the GPU machine the ``python`` source reads the packages installed there (nothing is transferred); the Debian
and KJV part is built here and carried (xz, ~4x smaller than the .deb files' text).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbs.train.corpus import CorpusConfig, build_corpus


def main(argv: list[str] | None = None) -> dict:
    defaults = CorpusConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default=",".join(defaults.sources), help="comma separated: python,debian,kjv")
    parser.add_argument("--out", default=defaults.out_dir)
    parser.add_argument("--deb-dir", default=defaults.deb_dir)
    parser.add_argument("--python-paths", default=None, help="colon separated sys.path entries (default: this "
                                                              "interpreter's)")
    parser.add_argument("--min-doc-chars", type=int, default=defaults.min_doc_chars)
    parser.add_argument("--max-doc-chars", type=int, default=defaults.max_doc_chars)
    parser.add_argument("--max-chars", default=json.dumps(defaults.max_chars),
                        help='per-source caps as JSON, e.g. \'{"python": 4e8}\'')
    parser.add_argument("--heldout-fraction", type=float, default=defaults.heldout_fraction)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = CorpusConfig(
        sources=[s for s in args.sources.split(",") if s], out_dir=args.out, deb_dir=args.deb_dir,
        python_paths=args.python_paths.split(":") if args.python_paths else None,
        min_doc_chars=args.min_doc_chars, max_doc_chars=args.max_doc_chars,
        max_chars={k: int(float(v)) for k, v in json.loads(args.max_chars).items()},
        heldout_fraction=args.heldout_fraction,
    )
    assert {f.name for f in fields(CorpusConfig)} == {"sources", "out_dir", "deb_dir", "python_paths", "min_doc_chars",
                                                      "max_doc_chars", "max_chars", "heldout_fraction", "deb_skip"}
    manifest = build_corpus(cfg, progress=not args.no_progress)
    for source, info in manifest["sources"].items():
        print(f"{source}: {info['documents']} documents, {info['chars'] / 1e6:.1f} M chars "
              f"({info['dropped_by_cap']} over the cap)")
    for name, info in manifest["outputs"].items():
        print(f"{name}: {info['documents']} documents, {info['chars'] / 1e6:.1f} M chars -> {args.out}/{info['file']}")
    return manifest


if __name__ == "__main__":
    main()
