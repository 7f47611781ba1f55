"""One benchmark row per (section, variant, sequence length): its columns and helpers."""

from __future__ import annotations

import math

COLUMNS = [
    "section", "variant", "seq_len", "batch", "q_heads", "kv_heads", "head_dim", "dtype", "density",
    "median_ms", "p10_ms", "p90_ms", "tflops_dense_equiv", "tflops_computed", "peak_mem_gib",
    "permutation_ms", "selection_ms", "plan_ms", "attention_ms", "total_ms", "overhead_pct",
    "speedup_vs_fastest_dense", "plan_peak_gib", "planner", "error",
]
INT_COLUMNS = {"seq_len", "batch", "q_heads", "kv_heads", "head_dim"}
STR_COLUMNS = {"section", "variant", "dtype", "planner", "error"}
SECTIONS = ("dense", "block_sparse", "methods")


def new_row(cfg, section: str, variant: str, seq_len: int) -> dict:
    """A row with every column, numbers NaN until measured; ``cfg`` is a :class:`benchmarks.config.BenchConfig`."""
    row = {c: float("nan") for c in COLUMNS}
    row.update(section=section, variant=variant, seq_len=seq_len, batch=cfg.batch, q_heads=cfg.q_heads,
               kv_heads=cfg.kv_heads, head_dim=cfg.head_dim, dtype=cfg.dtype, error="")
    return row


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def is_ok(row: dict) -> bool:
    """Measured, and failed at nothing (a ``note:`` such as a dense fallback is not a failure)."""
    return (not row.get("error") or str(row["error"]).startswith("note:")) and finite(row.get("median_ms"))


def find(rows: list[dict], section: str, variant: str, seq_len: int) -> dict | None:
    for r in rows:
        if r["section"] == section and r["variant"] == variant and r["seq_len"] == seq_len:
            return r
    return None


def fastest_dense_ms(rows: list[dict], seq_len: int) -> float:
    """Fastest dense SDPA backend (kv-repeat fallbacks included) at ``seq_len``; NaN if none ran."""
    times = [r["median_ms"] for r in rows if r["section"] == "dense" and r["seq_len"] == seq_len
             and r["variant"].startswith("sdpa_") and is_ok(r)]
    return min(times) if times else float("nan")


def add_speedups(rows: list[dict]) -> None:
    """``speedup_vs_fastest_dense`` of every row: the fastest dense SDPA at its length / its time (methods: total)."""
    for seq_len in {r["seq_len"] for r in rows}:
        ref = fastest_dense_ms(rows, seq_len)
        for r in rows:
            if r["seq_len"] == seq_len:
                ms = r["total_ms"] if r["section"] == "methods" else r["median_ms"]
                r["speedup_vs_fastest_dense"] = ref / ms if finite(ms) and ms > 0 and finite(ref) else float("nan")
