"""GPU check and timing of the fused planners against the torch planners (run on an H100/H200).

1. Equality: ``pbs.plan(planner="triton")`` vs ``planner="torch"`` on random and structured bf16 inputs, odd N,
   Nq < Nk, GQA: tile Jaccard, identical key permutations, identical list counts.
2. No host synchronisation: the fused plan runs under ``torch.cuda.set_sync_debug_mode("error")``.
3. Timing (CUDA events, median) of planning per method and length, torch vs fused, with attention on the plan
   and cuDNN SDPA in the same run, and the planner's extra peak memory.

    python scripts/gpu_planners.py --out $OUT [--lengths 8192 32768 131072] [--methods pbs meanpool]
"""

from __future__ import annotations

import argparse
import csv
import functools
import time
from pathlib import Path

import torch

import pbs
from benchmarks.timing import peak_mem_gib, time_cuda
from pbs.provenance import provenance
from pbs.synthetic import Structure, structured_qkv

BENCH_STRUCTURE = Structure(sink_logit=10.0, local_logit=6.0, heavy_logit=12.0, heavy_fraction=0.15, noise=1.0,
                            recency_logit=8.0)

CHECKS = [
    ("pbs", {}),
    ("pbs", {"permute": "none"}),
    ("pbs", {"share_permutation": "kv_head"}),
    ("pbs", {"budget": 0.3}),
    ("pbs", {"block_size": 64, "segment_size": 256, "threshold": 0.8}),
    ("pbs", {"scoring": "antidiagonal"}),
    ("meanpool", {}),
    ("meanpool", {"budget": 0.25}),
    ("xattention", {}),
    ("xattention", {"budget": 0.3}),
    ("flexprefill", {}),
    ("minference", {}),
]

TIMED = [
    ("pbs", {}),
    ("pbs", {"permute": "none"}),
    ("pbs", {"budget": 0.219}),
    ("pbs", {"scoring": "antidiagonal"}),
    ("meanpool", {}),
    ("xattention", {}),
    ("minference", {}),
    ("flexprefill", {}),
]


def _events(fn) -> float:
    """Median CUDA-event milliseconds of ``fn`` (the benchmark's timer: warm-up, L2 flushed between reps)."""
    return time_cuda(fn, warmup=3, reps=10)["median_ms"]


def _compare(a, b) -> dict:
    if isinstance(a, pbs.Dense) or isinstance(b, pbs.Dense):
        return {"jaccard": float("nan"), "perm_equal": float("nan"), "note": f"dense: {a!r} / {b!r}"}
    if a.win_starts is not None or a.col_indices is not None:  # MInference: compare listed keys, not tiles
        ma, mb = a.key_counts() > 0, b.key_counts() > 0
    else:
        ma, mb = a.block_mask(), b.block_mask()
    inter, union = (ma & mb).sum().item(), (ma | mb).sum().item()
    perm = float("nan")
    if a.key_perm is not None and b.key_perm is not None:
        perm = (a.key_perm.long() == b.key_perm.long()).float().mean().item()
    return {"jaccard": inter / max(union, 1), "perm_equal": perm, "density_torch": a.density(),
            "density_fused": b.density(), "note": b.planner_note or ""}


def check(out_rows: list, seed: int) -> None:
    shapes = [(1, 32, 8, 4096, 4096, 128), (1, 32, 8, 7777, 7777, 128), (1, 28, 4, 3000, 9001, 128),
              (2, 8, 8, 5000, 5000, 64)]
    for batch, hq, hkv, nq, nk, dim in shapes:
        for kind in ("random", "structured"):
            gen = torch.Generator(device="cuda").manual_seed(seed)
            if kind == "random":
                q = torch.randn(batch, hq, nq, dim, device="cuda", generator=gen, dtype=torch.bfloat16)
                k = torch.randn(batch, hkv, nk, dim, device="cuda", generator=gen, dtype=torch.bfloat16)
            else:
                q, k, _ = structured_qkv(batch, hq, hkv, nk, dim, structure=BENCH_STRUCTURE, seed=seed,
                                         dtype=torch.bfloat16, device="cuda")
                q = q[:, :, nk - nq:].contiguous()
            for method, kwargs in CHECKS:
                row = {"part": "check", "method": method, "kwargs": repr(kwargs), "shape": f"{batch}x{hq}/{hkv}x{nq}/{nk}x{dim}",
                       "inputs": kind}
                try:
                    a = pbs.plan(q, k, method, planner="torch", short_seq_policy=False, **kwargs)
                    b = pbs.plan(q, k, method, planner="triton", short_seq_policy=False, **kwargs)
                    row.update(_compare(a, b))
                    if b.planner == "triton":
                        torch.cuda.synchronize()
                        torch.cuda.set_sync_debug_mode("error")
                        try:
                            pbs.plan(q, k, method, planner="triton", short_seq_policy=False, **kwargs)
                            row["sync_free"] = True
                        except RuntimeError as exc:
                            row["sync_free"] = f"no: {str(exc).splitlines()[0][:120]}"
                        finally:
                            torch.cuda.set_sync_debug_mode(0)
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                out_rows.append(row)
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)


def timing(out_rows: list, lengths: list[int], methods: list[str] | None) -> None:
    for n in lengths:
        q, k, v = structured_qkv(1, 32, 8, n, 128, structure=BENCH_STRUCTURE, seed=0, dtype=torch.bfloat16,
                                 device="cuda")
        dense = _events(functools.partial(torch.nn.functional.scaled_dot_product_attention, q, k, v, is_causal=True,
                                          enable_gqa=True))
        for method, kwargs in TIMED:
            if methods and method not in methods:
                continue
            row = {"part": "timing", "method": method, "kwargs": repr(kwargs), "seq_len": n, "sdpa_ms": dense}
            try:
                for planner in ("triton", "torch"):
                    if planner == "torch" and n > 32768 and (kwargs.get("scoring") == "antidiagonal"
                                                             or method == "xattention"):
                        continue
                    fn = functools.partial(pbs.plan, q, k, method, planner=planner, short_seq_policy=False, **kwargs)
                    the_plan = fn()
                    row[f"plan_{planner}_ms"] = _events(fn)
                    row[f"plan_{planner}_peak_gib"] = peak_mem_gib(fn)
                    if planner == "triton":
                        row["fused"] = the_plan.planner if not isinstance(the_plan, pbs.Dense) else "dense"
                        row["note"] = getattr(the_plan, "planner_note", None) or ""
                        row["density"] = the_plan.density() if not isinstance(the_plan, pbs.Dense) else 1.0
                        row["attend_ms"] = _events(functools.partial(pbs.attend, q, k, v, the_plan))
                    del the_plan
                row["total_ms"] = row["plan_triton_ms"] + row["attend_ms"]
                row["overhead_pct"] = 100 * row["plan_triton_ms"] / row["total_ms"]
                row["speedup_vs_sdpa"] = dense / row["total_ms"]
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            out_rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            torch.cuda.empty_cache()
        del q, k, v
        torch.cuda.empty_cache()


def profile(out_dir: Path, lengths: list[int]) -> None:
    """Where the fused planners' time goes: host time per call (no sync) and a CUDA-time table per kernel."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    lines = []
    for n in lengths:
        q, k, _ = structured_qkv(1, 32, 8, n, 128, structure=BENCH_STRUCTURE, seed=0, dtype=torch.bfloat16,
                                 device="cuda")
        for method, kwargs in (("pbs", {}), ("pbs", {"permute": "none"}), ("meanpool", {})):
            fn = functools.partial(pbs.plan, q, k, method, planner="triton", short_seq_policy=False, **kwargs)
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            host_ms = (time.perf_counter() - t0) / 20 * 1e3
            torch.cuda.synchronize()
            gpu_ms = _events(fn)
            with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60)
            head = f"## {method} {kwargs} N={n}: host {host_ms:.3f} ms/call (no sync), events {gpu_ms:.3f} ms/call"
            lines += [head, "```", table, "```", ""]
            print(head, flush=True)
        del q, k
        torch.cuda.empty_cache()
    (out_dir / "profile.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--parts", nargs="+", default=["check", "timing"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[8192, 16384, 32768, 65536, 131072])
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    t0 = time.time()
    if "check" in args.parts:
        check(rows, args.seed)
    if "profile" in args.parts:
        profile(out, [n for n in args.lengths if n in (8192, 131072)] or args.lengths[:1])
    if "timing" in args.parts:
        timing(rows, args.lengths, args.methods)
    keys = sorted({k for r in rows for k in r}, key=lambda c: (c not in ("part", "method", "kwargs"), c))
    with open(out / "planners.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    command = "python scripts/gpu_planners.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items())
    prov = provenance(command)
    (out / "planners.md").write_text(
        "# Fused planners vs torch planners\n\n" + "\n".join(f"- {k}: {v}" for k, v in prov.items())
        + f"\n- wall time: {time.time() - t0:.0f} s\n"
    )
    print(f"done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
