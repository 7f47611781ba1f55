"""Launch variants of our sparse attention kernel on one GPU, with cuDNN SDPA timed in the same run (Step 9).

Every variant is checked against a reference output before it is timed (dense: cuDNN SDPA; plans: the first
variant of the part), then timed with CUDA events (median, L2 flushed, ``benchmarks.timing``). Rows go to
``kernel_sweep.jsonl`` as they are measured (a crash keeps what came before) and a table ends the log.

Parts (``--parts``, comma separated):

* ``dense``: all causal tiles, natural order (Llama-3.1-8B heads 32/8, D 128 at 32K and 128K; D 64 at 32K);
* ``permuted``: PBS's plan (fused planner) against the same tiles in natural order (its plan with the key
  permutation dropped: equal tile count, equal masks), read by in-kernel gather or from a permuted copy of K/V;
* ``block64``: random block plans at block 64 against block 128, same density;
* ``minference``: MInference's column + slash-window plan against a block-64 plan of the same density;
* ``ws``: Triton's warp specialisation of the tile loop (may fail to compile: the error is recorded);
* ``profile``: one launch each of cuDNN SDPA, our kernel on all causal tiles, on PBS's plan and on a random block
  mask (with compiled FlexAttention on the same mask), between ``cudaProfilerStart``/``Stop`` after their warm-ups,
  for ``ncu --profile-from-start off`` (hardware counters; see results/kernels/step9/README.md for the command).

    python -m benchmarks.kernel_sweep --out $OUT --parts dense,permuted,block64,minference
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time

import torch

import pbs
from pbs.backends import dense_plan
from pbs.kernels.block_sparse_attn import KernelConfig, pbs_attn_fwd, permuted_kv_copy
from pbs.synthetic import structured_qkv

from .inputs import random_block_plan
from .timing import time_cuda

DEVICE = "cuda"  # --device cpu: a smoke run under TRITON_INTERPRET=1 (tiny shapes)
V2 = KernelConfig(128, 128, 8, 2, kv_descriptors=False, permuted_copy=False, schedule="rows", fold_scale=False,
                  warp_specialize=False, q_descriptors=False, k_row_major=False)


def _cfg(base: KernelConfig = V2, **changes) -> KernelConfig:
    return dataclasses.replace(base, **changes)


FOLD = _cfg(fold_scale=True)
FOLD_DESC = _cfg(FOLD, kv_descriptors=True)
DENSE_VARIANTS = {
    "v2 (128x128 w8 s2)": V2,
    "fold": FOLD,
    "fold+desc": FOLD_DESC,
    "fold+desc s3": _cfg(FOLD_DESC, num_stages=3),
    "fold+desc rows_reversed": _cfg(FOLD_DESC, schedule="rows_reversed"),
    "fold+desc heavy_first": _cfg(FOLD_DESC, schedule="heavy_first"),
    "fold+desc gqa_rows": _cfg(FOLD_DESC, schedule="gqa_rows"),
    "fold+desc+qdesc": _cfg(FOLD_DESC, q_descriptors=True),
    "fold+desc w4 s2": _cfg(FOLD_DESC, num_warps=4),
    "fold+desc w4 s3": _cfg(FOLD_DESC, num_warps=4, num_stages=3),
}
D64_VARIANTS = {
    "v2 (128x128 w8 s2)": V2,
    "fold+desc": FOLD_DESC,
    "fold+desc w4 s2": _cfg(FOLD_DESC, num_warps=4),
    "fold+desc w4 s3": _cfg(FOLD_DESC, num_warps=4, num_stages=3),
    "fold+desc w4 s4": _cfg(FOLD_DESC, num_warps=4, num_stages=4),
    "fold+desc+qdesc w4 s3": _cfg(FOLD_DESC, num_warps=4, num_stages=3, q_descriptors=True),
    "fold+desc w4 s3 gqa_rows": _cfg(FOLD_DESC, num_warps=4, num_stages=3, schedule="gqa_rows"),
}
WS_VARIANTS = {
    "fold+desc+ws w8 s2": _cfg(FOLD_DESC, warp_specialize=True),
    "fold+desc+ws w4 s2": _cfg(FOLD_DESC, warp_specialize=True, num_warps=4),
}
PERMUTED_VARIANTS = {
    "v2 gather": V2,
    "default (auto)": None,
    "gather (k_row_major)": KernelConfig(permuted_copy=False),
    "copy, all heads at once": KernelConfig(permuted_copy=True, copy_budget=100.0),
    "copy, all heads at once s3": KernelConfig(permuted_copy=True, copy_budget=100.0, num_stages=3),
    "copy, chunks of 25% K+V": KernelConfig(permuted_copy=True, copy_budget=0.25),
    "copy, chunks of 25% K+V s3": KernelConfig(permuted_copy=True, copy_budget=0.25, num_stages=3),
    "copy, chunks of 25% K+V rows_reversed": KernelConfig(permuted_copy=True, copy_budget=0.25,
                                                          schedule="rows_reversed"),
    "copy, chunks of 50% K+V": KernelConfig(permuted_copy=True, copy_budget=0.5),
}
B64 = _cfg(FOLD_DESC, block_m=64, block_n=64, num_warps=4, num_stages=3)
B64_VARIANTS = {
    "v2 (64x64 w8 s2)": _cfg(V2, block_m=64, block_n=64),
    "fold+desc 64x64 w4 s2": _cfg(B64, num_stages=2),
    "fold+desc 64x64 w4 s3": B64,
    "fold+desc 64x64 w4 s3 gqa_rows": _cfg(B64, schedule="gqa_rows"),
    "fold+desc+qdesc 64x64 w4 s3": _cfg(B64, q_descriptors=True),
}


class Sweep:
    """Checks, times and records one variant after another."""

    def __init__(self, out_dir: str, warmup: int, reps: int, max_seconds: float):
        self.rows: list[dict] = []
        self.path = f"{out_dir}/kernel_sweep.jsonl"
        self.log_path = f"{out_dir}/kernel_sweep.log"
        self.warmup, self.reps, self.max_seconds = warmup, reps, max_seconds

    def log(self, msg: str) -> None:
        print(msg, flush=True)
        with open(self.log_path, "a") as f:
            f.write(msg + "\n")

    def measure(self, part: str, case: str, variant: str, fn, flops: float, ref: torch.Tensor | None = None,
                **extra) -> dict:
        row = dict(part=part, case=case, variant=variant, **extra)
        try:
            if DEVICE == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            out = fn()
            if DEVICE == "cuda":
                torch.cuda.synchronize()
                row["extra_peak_mib"] = (torch.cuda.max_memory_allocated() - before - out.numel()
                                         * out.element_size()) / 2**20
            if ref is not None:
                err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                row["rel_err"] = err
                if not err < 2e-2:
                    raise AssertionError(f"relative error {err:.3g} against the reference")
            del out
            t = time_cuda(fn, warmup=self.warmup, reps=self.reps, max_seconds=self.max_seconds, device=DEVICE)
            row.update(ms=t["median_ms"], p10_ms=t["p10_ms"], p90_ms=t["p90_ms"], reps=t["reps"],
                       tflops=flops / t["median_ms"] / 1e9)
            self.log(f"{part:10s} {case:28s} {variant:40s} {t['median_ms']:9.3f} ms {row['tflops']:6.0f} TFLOP/s"
                     + (f"  err {row['rel_err']:.1e}" if "rel_err" in row else "")
                     + (f"  +{row['extra_peak_mib']:.0f} MiB" if "extra_peak_mib" in row else ""))
        except Exception as exc:  # noqa: BLE001  (a variant that does not compile or is wrong is recorded)
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            self.log(f"{part:10s} {case:28s} {variant:40s} FAILED {row['error'][:200]}")
        self.rows.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        return row


def _dense_flops(heads: int, dim: int, n: int) -> float:
    return 4 * heads * dim * n * (n + 1) / 2


def _sdpa(backend: str, q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if DEVICE != "cuda":
        backend = "MATH"
    with sdpa_kernel(getattr(SDPBackend, backend)):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def _inputs(n: int, dim: int = 128, heads: int = 32, kv_heads: int = 8, seed: int = 0):
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float16  # the interpreter's bf16 dots are wrong
    return structured_qkv(1, heads, kv_heads, n, dim, seed=seed, dtype=dtype, device=DEVICE)


def dense(sw: Sweep, lengths=(32768, 131072)) -> None:
    for dim, variants, ns in ((128, DENSE_VARIANTS, lengths), (64, D64_VARIANTS, lengths[:1])):
        for n in ns:
            q, k, v = _inputs(n, dim)
            flops = _dense_flops(32, dim, n)
            case = f"N={n} D={dim}"
            ref = _sdpa("CUDNN_ATTENTION", q, k, v)
            for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION"):
                sw.measure("dense", case, f"sdpa {backend.split('_')[0].lower()}",
                           functools.partial(_sdpa, backend, q, k, v), flops, ref)
            plan = dense_plan(1, 32, 8, n, n, 128, DEVICE)
            for name, cfg in variants.items():
                sw.measure("dense", case, name, functools.partial(pbs_attn_fwd, q, k, v, plan, dim**-0.5, cfg),
                           flops, ref)
            del q, k, v, ref, plan


def defaults(sw: Sweep, lengths=(32768, 131072)) -> None:
    """The shipped defaults (config=None) beside cuDNN: dense D 128 and D 64, block 64, MInference."""
    for n in lengths:
        for dim in (128, 64):
            q, k, v = _inputs(n, dim)
            flops = _dense_flops(32, dim, n)
            ref = _sdpa("CUDNN_ATTENTION", q, k, v)
            case = f"N={n} D={dim}"
            sw.measure("defaults", case, "sdpa cudnn", functools.partial(_sdpa, "CUDNN_ATTENTION", q, k, v), flops, ref)
            plan = dense_plan(1, 32, 8, n, n, 128, DEVICE)
            sw.measure("defaults", case, "default", functools.partial(pbs_attn_fwd, q, k, v, plan, dim**-0.5), flops,
                       ref)
            del q, k, v, ref, plan


def qwen(sw: Sweep, lengths=(32768, 131072)) -> None:
    """Qwen2.5-7B heads (28 q / 4 KV, D 128): the default against v2 and cuDNN."""
    for n in lengths:
        q, k, v = _inputs(n, heads=28, kv_heads=4)
        flops = _dense_flops(28, 128, n)
        ref = _sdpa("CUDNN_ATTENTION", q, k, v)
        case = f"N={n} qwen 28/4"
        sw.measure("qwen", case, "sdpa cudnn", functools.partial(_sdpa, "CUDNN_ATTENTION", q, k, v), flops, ref)
        plan = dense_plan(1, 28, 4, n, n, 128, DEVICE)
        for name, cfg in (("v2", V2), ("fold+desc", FOLD_DESC), ("default", None)):
            sw.measure("qwen", case, name, functools.partial(pbs_attn_fwd, q, k, v, plan, 128**-0.5, cfg), flops, ref)
        del q, k, v, ref, plan


def ws(sw: Sweep, n: int = 32768) -> None:
    q, k, v = _inputs(n)
    ref = _sdpa("CUDNN_ATTENTION", q, k, v)
    plan = dense_plan(1, 32, 8, n, n, 128, DEVICE)
    flops = _dense_flops(32, 128, n)
    sw.measure("ws", f"N={n} D=128", "sdpa cudnn", functools.partial(_sdpa, "CUDNN_ATTENTION", q, k, v), flops, ref)
    for name, cfg in {"fold+desc": FOLD_DESC, **WS_VARIANTS}.items():
        sw.measure("ws", f"N={n} D=128", name, functools.partial(pbs_attn_fwd, q, k, v, plan, 128**-0.5, cfg), flops,
                   ref)


def permuted(sw: Sweep, lengths=(32768, 131072)) -> None:
    for n in lengths:
        q, k, v = _inputs(n, seed=3)
        plan = pbs.plan(q, k, "pbs", planner="triton", short_seq_policy=False)
        natural = dataclasses.replace(plan, key_perm=None)
        d = plan.density()
        flops = _dense_flops(32, 128, n) * d
        case = f"N={n} pbs d={d:.3f}"
        scale = 128**-0.5
        ref = pbs_attn_fwd(q, k, v, plan, scale, V2)
        ref_nat = pbs_attn_fwd(q, k, v, natural, scale, V2)
        for name, cfg in (("v2", V2), ("default", None), ("default s3", KernelConfig(num_stages=3))):
            sw.measure("permuted", case, f"natural order, {name}",
                       functools.partial(pbs_attn_fwd, q, k, v, natural, scale, cfg), flops, ref_nat, density=d)
        for name, cfg in PERMUTED_VARIANTS.items():
            sw.measure("permuted", case, f"permuted, {name}",
                       functools.partial(pbs_attn_fwd, q, k, v, plan, scale, cfg), flops, ref, density=d)
        perm = plan.key_perm.to(torch.int32)
        sw.measure("permuted", case, "permuted K+V copy alone",
                   lambda k=k, v=v, perm=perm: (permuted_kv_copy(k, perm), permuted_kv_copy(v, perm))[0], 0.0,
                   copy_bytes=2 * 2 * perm.numel() * 128 * 2)
        del q, k, v, plan, natural, ref, ref_nat


def block64(sw: Sweep, n: int = 65536, density: float = 0.3) -> None:
    q, k, v = _inputs(n, seed=5)
    scale = 128**-0.5
    p128 = random_block_plan(1, 32, 8, n, 128, density, 11, DEVICE)
    p64 = random_block_plan(1, 32, 8, n, 64, density, 12, DEVICE)
    base = _dense_flops(32, 128, n)
    ref128, ref64 = pbs_attn_fwd(q, k, v, p128, scale, V2), pbs_attn_fwd(q, k, v, p64, scale, _cfg(V2, block_m=64,
                                                                                                       block_n=64))
    for name, cfg in (("v2", V2), ("fold+desc", FOLD_DESC)):
        sw.measure("block64", f"N={n} block 128 d={p128.density():.3f}", name,
                   functools.partial(pbs_attn_fwd, q, k, v, p128, scale, cfg), base * p128.density(), ref128,
                   density=p128.density())
    for name, cfg in B64_VARIANTS.items():
        sw.measure("block64", f"N={n} block 64 d={p64.density():.3f}", name,
                   functools.partial(pbs_attn_fwd, q, k, v, p64, scale, cfg), base * p64.density(), ref64,
                   density=p64.density())


def minference(sw: Sweep, n: int = 131072) -> None:
    q, k, v = _inputs(n, seed=7)
    scale = 128**-0.5
    plan = pbs.plan(q, k, "minference", planner="triton", short_seq_policy=False)
    d = plan.density()
    block = random_block_plan(1, 32, 8, n, 64, d, 13, DEVICE)
    base = _dense_flops(32, 128, n)
    ref = pbs_attn_fwd(q, k, v, plan, scale, _cfg(V2, block_m=64, block_n=64))
    ref_block = pbs_attn_fwd(q, k, v, block, scale, _cfg(V2, block_m=64, block_n=64))
    variants = B64_VARIANTS
    for name, cfg in variants.items():
        sw.measure("minference", f"N={n} columns+windows d={d:.3f}", name,
                   functools.partial(pbs_attn_fwd, q, k, v, plan, scale, cfg), base * d, ref, density=d)
    for name, cfg in variants.items():
        sw.measure("minference", f"N={n} block 64 d={block.density():.3f}", name,
                   functools.partial(pbs_attn_fwd, q, k, v, block, scale, cfg), base * block.density(), ref_block,
                   density=block.density())


def profile(sw: Sweep, n: int = 32768, density: float = 0.3) -> None:
    """Warm every kernel, then launch each once inside the profiler range (what ncu records)."""
    from pbs.kernels.flex import attend_block_mask, plan_block_mask

    q, k, v = _inputs(n, seed=3)
    scale = 128**-0.5
    dense = dense_plan(1, 32, 8, n, n, 128, DEVICE)
    pbs_plan = pbs.plan(q, k, "pbs", planner="triton", short_seq_policy=False)
    mask_plan = random_block_plan(1, 32, 8, n, 128, density, 11, DEVICE)
    block_mask = plan_block_mask(mask_plan)
    calls = {
        "sdpa cudnn, all causal tiles": functools.partial(_sdpa, "CUDNN_ATTENTION", q, k, v),
        "ours, all causal tiles": functools.partial(pbs_attn_fwd, q, k, v, dense, scale),
        f"ours, pbs plan d={pbs_plan.density():.3f}": functools.partial(pbs_attn_fwd, q, k, v, pbs_plan, scale),
        f"ours, random mask d={mask_plan.density():.3f}": functools.partial(pbs_attn_fwd, q, k, v, mask_plan, scale),
        "flex (compiled), same mask": functools.partial(attend_block_mask, q, k, v, block_mask, scale),
    }
    for name, fn in calls.items():
        for _ in range(3):
            fn()
    on_gpu = DEVICE == "cuda"
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
    for name, fn in calls.items():
        fn()
        sw.log(f"profile    N={n}  launched: {name}")
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--parts", default="dense,permuted,block64,minference")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=1.5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lengths", default="32768,131072", help="dense and permuted parts")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    import triton

    lengths = tuple(int(x) for x in args.lengths.split(","))

    sw = Sweep(args.out, args.warmup, args.reps, args.max_seconds)
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    sw.log(f"{name} torch {torch.__version__} triton {triton.__version__} "
           f"date {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    parts = {"dense": functools.partial(dense, lengths=lengths), "permuted": functools.partial(permuted, lengths=lengths),
             "block64": functools.partial(block64, n=lengths[0]), "minference": functools.partial(minference, n=lengths[-1]),
             "ws": functools.partial(ws, n=lengths[0]), "defaults": functools.partial(defaults, lengths=lengths), "qwen": functools.partial(qwen, lengths=lengths),
             "profile": functools.partial(profile, n=lengths[0])}
    for part in args.parts.split(","):
        parts[part](sw)


if __name__ == "__main__":
    main()
