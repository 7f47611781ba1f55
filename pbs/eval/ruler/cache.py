"""A disk cache of generated RULER samples, so sweeps do not regenerate them in every job.

Generating one 32K-token sample measured with a real tokenizer takes about a second (binary search over the
haystack size); a sweep of 40 jobs x 8 tasks x 4 lengths x 10 samples would spend most of its time there.
:func:`cached_generate` stores each (task, length, num_samples, seed, tokenizer) set as gzipped JSON in
:func:`cache_dir`. The key includes a hash of the generator's source and of the tokenizer file, so a changed
generator or tokenizer never reads stale samples. Where the cache lives is a place, not a setting (no result depends
on it), so like ``HF_HOME`` it may come from the environment: ``$PBS_RULER_CACHE``, else ``$HF_HOME/pbs_ruler``,
else ``~/.cache/pbs/ruler``.

Fill it ahead of a GPU run (and carry the folder):
    python -m pbs.eval.ruler.cache --tokenizer models/pbs-proxy-llama-v2 --lengths 4096,8192,16384,32768 --samples 25
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from . import generate as gen


def cache_dir() -> Path:
    """The cache folder (see the module docstring)."""
    if os.environ.get("PBS_RULER_CACHE"):
        return Path(os.environ["PBS_RULER_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "pbs_ruler"
    return Path.home() / ".cache" / "pbs" / "ruler"


@lru_cache(maxsize=8)
def _fingerprint(tokenizer: str | None) -> str:
    h = hashlib.sha1(Path(gen.__file__).read_bytes())
    if tokenizer is None:
        h.update(b"approx")
    else:
        tj = Path(tokenizer) / "tokenizer.json"
        h.update(tj.read_bytes() if tj.exists() else tokenizer.encode())
    return h.hexdigest()[:16]


def cache_path(task: str, length: int, num_samples: int, seed: int, tokenizer: str | None) -> Path:
    return cache_dir() / f"{task}-{length}-{num_samples}-{seed}-{_fingerprint(tokenizer)}.json.gz"


def cached_generate(task: str, length: int, num_samples: int, seed: int, tokenizer: str | None) -> list[dict]:
    """:func:`pbs.eval.ruler.generate.generate` with ``tokenizer`` (a path/hub id; None = the whitespace estimate),
    read from the cache when present, else generated and written there."""
    path = cache_path(task, length, num_samples, seed, tokenizer)
    if path.exists():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    count = gen.hf_count_tokens(tokenizer) if tokenizer else gen.approx_count_tokens
    records = gen.generate(task, length, num_samples, seed, count_tokens=count)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(records, f)
    tmp.replace(path)
    return records


def _fill(args: tuple) -> str:
    task, length, samples, seed, tokenizer = args
    cached_generate(task, length, samples, seed, tokenizer)
    return f"{task}@{length}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Pre-generate RULER samples into the cache.")
    p.add_argument("--tokenizer", default=None, help="tokenizer path or hub id (default: whitespace estimate)")
    p.add_argument("--lengths", default="4096,8192,16384,32768")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tasks", default=",".join(gen.TASKS))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    jobs = [(t, int(n), a.samples, a.seed, a.tokenizer) for n in a.lengths.split(",") for t in a.tasks.split(",")]
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    with ProcessPoolExecutor(a.workers) as pool:
        for _ in tqdm(pool.map(_fill, jobs), total=len(jobs), desc="ruler cache"):
            pass
    print(f"cache: {cache_dir()}")


if __name__ == "__main__":
    main()
