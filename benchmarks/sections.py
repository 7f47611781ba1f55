"""The benchmark run: the configured sections at every sequence length, one row per (section, variant, length).

* ``dense``: SDPA with each backend (cuDNN, flash, memory-efficient; causal, GQA-native), FlexAttention causal
  (compiled) and ours on a plan that lists every causal tile (``ours_dense``).
* ``block_sparse``: random causal block masks at fixed densities (diagonal tile and block 0 always on), the same
  plan run by our kernel (``pbs.attend``), by our FlexAttention backend (``pbs.attend(backend="flex")``, which
  builds the BlockMask inside each call) and by FlexAttention alone on a BlockMask built once.
* ``methods``: each method end to end (planning + our kernel), with the paper's Table 7 breakdown
  (:func:`benchmarks.methods.method_breakdown`).

Speedups are against the fastest dense SDPA backend at the same sequence length in the same run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

import pbs

from .config import BenchConfig, method_kwargs
from .inputs import make_inputs, random_block_plan
from .methods import method_breakdown
from .rows import add_speedups, new_row
from .timing import describe, free_memory, peak_mem_gib, tflops, time_cuda
from .variants import KV_REPEAT_SUFFIX, SDPA_BACKENDS, dense_variants, failing, flex_prebuilt_fn, sdpa_kv_repeat


def run_benchmark(cfg: BenchConfig) -> list[dict]:
    """Run the configured sections at every sequence length; one dict per (section, variant, length) (rows.COLUMNS)."""
    from tqdm import tqdm

    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch.cuda.is_available() is False; pass device=cpu for a smoke run")
    rows: list[dict] = []
    lengths = tqdm(cfg.seq_lens, desc="seq_len", unit="N", disable=not cfg.progress)
    for seq_len in lengths:
        q, k, v = make_inputs(cfg, seq_len)
        here: list[dict] = []
        if "dense" in cfg.sections:
            here += _dense_section(cfg, q, k, v, seq_len, lengths.set_postfix_str)
        if "block_sparse" in cfg.sections:
            here += _block_sparse_section(cfg, q, k, v, seq_len, lengths.set_postfix_str)
        if "methods" in cfg.sections:
            here += _methods_section(cfg, q, k, v, seq_len, lengths.set_postfix_str)
        add_speedups(here)
        rows.extend(here)
        del q, k, v
        free_memory(cfg.device)
    return rows


def _measure(cfg: BenchConfig, row: dict, fn: Callable[[], Tensor]) -> dict:
    """Fill timing, TFLOP/s and peak memory of ``fn`` into ``row`` (density must be set); errors go to ``error``."""
    try:
        with torch.no_grad():
            fn()  # first call: a variant that raises here is absent
            t = time_cuda(fn, cfg.warmup, cfg.reps, device=cfg.device, flush_l2=cfg.flush_l2,
                          max_seconds=cfg.max_seconds_per_measurement)
            row.update(median_ms=t["median_ms"], p10_ms=t["p10_ms"], p90_ms=t["p90_ms"])
            row["peak_mem_gib"] = peak_mem_gib(fn, cfg.device)
        dense, computed = tflops(row["batch"], row["q_heads"], row["head_dim"], row["seq_len"], row["median_ms"],
                                 row["density"])
        row.update(tflops_dense_equiv=dense, tflops_computed=computed)
    except Exception as exc:  # noqa: BLE001
        row["error"] = describe(exc)
    return row


def _dense_section(cfg, q, k, v, seq_len, status) -> list[dict]:
    out = []
    variants = dense_variants(q, k, v, kernel_backend=cfg.kernel_backend, block_size=cfg.block_size,
                              include=cfg.dense_variants, compile_flex=cfg.flex_compile)
    for name in list(variants):
        status(f"dense {name}")
        row = new_row(cfg, "dense", name, seq_len)
        row["density"] = 1.0
        out.append(_measure(cfg, row, variants.pop(name)))
        free_memory(cfg.device)
        if row["error"] and name in SDPA_BACKENDS and cfg.kv_repeat_fallback:
            status(f"dense {name}{KV_REPEAT_SUFFIX}")
            rep = new_row(cfg, "dense", name + KV_REPEAT_SUFFIX, seq_len)
            rep["density"] = 1.0
            try:
                fn = sdpa_kv_repeat(q, k, v, name)
            except Exception as exc:  # noqa: BLE001
                fn = failing(exc)
            out.append(_measure(cfg, rep, fn))
            del fn
            free_memory(cfg.device)
    return out


def _block_sparse_section(cfg, q, k, v, seq_len, status) -> list[dict]:
    out = []
    scale = 1.0 / math.sqrt(cfg.head_dim)
    for i, target in enumerate(cfg.densities):
        plan = random_block_plan(cfg.batch, cfg.q_heads, cfg.kv_heads, seq_len, cfg.block_size, target,
                                 cfg.seed * 1000 + i, cfg.device)
        density = plan.density()
        for name in ("ours_sparse", "flex_sparse", "flexmask_sparse"):
            status(f"block {name} d={target}")
            row = new_row(cfg, "block_sparse", f"{name}_d{target:g}", seq_len)
            row["density"] = density
            try:
                if name == "ours_sparse":
                    fn = functools.partial(pbs.attend, q, k, v, plan, scale=scale, backend=cfg.kernel_backend)
                elif name == "flex_sparse":  # our flex backend: plan -> BlockMask inside each call
                    fn = functools.partial(pbs.attend, q, k, v, plan, scale=scale, backend="flex")
                else:  # FlexAttention alone: the BlockMask built once, outside the timed call
                    fn = flex_prebuilt_fn(q, k, v, plan, scale, cfg.flex_compile)
            except Exception as exc:  # noqa: BLE001
                fn = failing(exc)
            out.append(_measure(cfg, row, fn))
            del fn
            free_memory(cfg.device)
        del plan
    return out


def _methods_section(cfg, q, k, v, seq_len, status) -> list[dict]:
    out = []
    for name in cfg.methods:
        status(f"method {name}")
        row = new_row(cfg, "methods", name, seq_len)
        try:
            method, kwargs = method_kwargs(cfg, name)
            res = method_breakdown(q, k, v, method, kwargs, kernel_backend=cfg.kernel_backend, planner=cfg.planner,
                                   warmup=cfg.warmup, reps=cfg.reps, device=cfg.device, flush_l2=cfg.flush_l2,
                                   max_seconds=cfg.max_seconds_per_measurement)
        except Exception as exc:  # noqa: BLE001  (bad method name or kwargs)
            res = {"error": describe(exc)}
        note = res.pop("note", "")
        row.update(res)
        if note and not row["error"]:
            row["error"] = f"note: {note}"
        dense, computed = tflops(cfg.batch, cfg.q_heads, cfg.head_dim, seq_len, row["total_ms"], row["density"])
        row.update(tflops_dense_equiv=dense, tflops_computed=computed)
        out.append(row)
        free_memory(cfg.device)
    return out
