"""Demo: every method on structured synthetic attention inputs; density and output error vs full attention.

Inputs (pbs.synthetic): Llama-like heads scaled down (8 query heads, 2 KV heads, head_dim 64, fp32, CPU) with
a sink at token 0, local windows and scattered heavy-hitter keys. Error is the relative L2 error of the
output against dense causal attention (SDPA) on the same inputs.

    python scripts/demo.py --lengths 1024 2048 4096
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

import pbs
from pbs.synthetic import Structure, structured_qkv

SETTINGS = [
    ("full", {}),
    ("pbs", {}),
    ("pbs", {"permute": "none"}),
    ("pbs", {"permute": "query"}),
    ("pbs", {"scoring": "antidiagonal"}),
    ("pbs", {"share_permutation": "kv_head"}),
    ("meanpool", {}),
    ("xattention", {}),
    ("minference", {}),
    ("flexprefill", {}),
    ("oracle", {}),
    ("oracle", {"permute": "key"}),
]
STRUCTURE = Structure(sink_logit=10.0, local_logit=6.0, heavy_logit=12.0, heavy_fraction=0.15)


def run(lengths: list[int], heads: tuple[int, int], head_dim: int, seed: int) -> list[dict]:
    rows = []
    jobs = [(n, m, kw) for n in lengths for m, kw in SETTINGS]
    inputs = {}
    for n, method, kwargs in tqdm(jobs, desc="methods x lengths", unit="run"):
        if n not in inputs:
            q, k, v = structured_qkv(1, heads[0], heads[1], n, head_dim, structure=STRUCTURE, seed=seed)
            inputs[n] = (q, k, v, pbs.sparse_attention(q, k, v, method="full"))
        q, k, v, dense = inputs[n]
        start = time.perf_counter()
        out, stats = pbs.sparse_attention(q, k, v, method=method, return_stats=True, **kwargs)
        seconds = time.perf_counter() - start
        err = ((out - dense).norm() / dense.norm()).item()
        label = method + "".join(f" {k}={v}" for k, v in kwargs.items())
        rows.append(dict(seq_len=n, method=label, density=stats.density, rel_err=err, cpu_s=seconds,
                         note=stats.dense_fallback or ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--heads", type=int, nargs=2, default=[8, 2], metavar=("HQ", "HKV"))
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rows = run(args.lengths, tuple(args.heads), args.head_dim, args.seed)
    print(f"\npbs {pbs.__version__} demo: torch reference backend on CPU, B=1, heads={args.heads[0]}q/{args.heads[1]}kv, "
          f"D={args.head_dim}, fp32; inputs: {STRUCTURE}")
    print(f"{'N':>6}  {'method':<36} {'density':>8} {'rel_err':>8} {'cpu_s':>6}  note")
    for r in rows:
        print(f"{r['seq_len']:>6}  {r['method']:<36} {r['density']:8.3f} {r['rel_err']:8.4f} {r['cpu_s']:6.2f}  {r['note']}")


if __name__ == "__main__":
    main()
