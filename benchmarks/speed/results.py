"""The speed benchmark's rows: columns, the CSV (written atomically after every run, merged across commands),
speedups against the fastest SDPA backend, and the console summary."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from .config import SDPA_VARIANTS

COLUMNS = [
    "model", "regime", "protocol", "seq_len", "variant", "method", "kwargs", "status",
    "target_density", "density", "density_min", "density_max",
    "ttft_ms", "p10_ms", "p90_ms", "reps", "warmup",
    "attention_ms", "plan_ms", "kernel_ms", "rest_ms", "attention_pct",
    "speedup", "attention_speedup", "baseline",
    "peak_mem_gib", "peak_extra_gib", "planner", "dense_fallbacks",
    "layers", "q_heads", "kv_heads", "head_dim", "batch", "dtype",
    "error", "gpu", "torch", "triton", "transformers", "cuda", "date_utc", "git_commit", "command",
]
INT_COLUMNS = {"seq_len", "reps", "warmup", "layers", "q_heads", "kv_heads", "head_dim", "batch"}
STR_COLUMNS = {"model", "regime", "protocol", "variant", "method", "kwargs", "status", "baseline", "planner",
               "dense_fallbacks", "dtype", "error", "gpu", "torch", "triton", "transformers", "cuda", "date_utc",
               "git_commit", "command"}
STATUSES = ("ok", "failed", "unavailable")
PROVENANCE = ("gpu", "torch", "triton", "transformers", "cuda", "date_utc", "git_commit", "command")


def new_row(**fields) -> dict:
    row = {c: ("" if c in STR_COLUMNS else float("nan")) for c in COLUMNS}
    row.update(fields)
    return row


def key(row: dict) -> tuple:
    """A run's identity (benchmarks.speed.runs.Run.key)."""
    return (row["model"], row["protocol"], int(row["seq_len"]), row["variant"])


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a results CSV with their types back (missing numbers: NaN; integers stay ints)."""
    rows = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            row = new_row()
            for c in COLUMNS:
                val = rec.get(c, "")
                if c in STR_COLUMNS:
                    row[c] = val or ""
                elif val in ("", None):
                    row[c] = float("nan")
                else:
                    row[c] = int(float(val)) if c in INT_COLUMNS else float(val)
            rows.append(row)
    return rows


def add_speedups(rows: list[dict]) -> None:
    """Per (model, regime, protocol, N): the fastest ok SDPA variant is the baseline; ``speedup`` = its TTFT / the
    row's, ``attention_speedup`` = its attention time / the row's."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["regime"], r["protocol"], r["seq_len"]), []).append(r)
    for group in groups.values():
        dense = [r for r in group if r["variant"] in SDPA_VARIANTS and r["status"] == "ok" and finite(r["ttft_ms"])]
        base = min(dense, key=lambda r: r["ttft_ms"]) if dense else None
        for r in group:
            ok = base is not None and r["status"] == "ok" and finite(r["ttft_ms"]) and r["ttft_ms"] > 0
            r["baseline"] = base["variant"] if base is not None else ""
            r["speedup"] = base["ttft_ms"] / r["ttft_ms"] if ok else float("nan")
            att = r.get("attention_ms")
            r["attention_speedup"] = (base["attention_ms"] / att if ok and finite(att) and att > 0
                                      and finite(base["attention_ms"]) else float("nan"))


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows whose run is not in ``new``, then ``new``; sorted by model, protocol, N (stable)."""
    mine = {key(r) for r in new}
    rows = [r for r in old if key(r) not in mine] + list(new)
    return sorted(rows, key=lambda r: (r["model"], r["protocol"] != "forward", r["seq_len"]))


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write ``rows`` (speedups recomputed) to ``path`` atomically: a killed command leaves the last complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    add_speedups(rows)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: _cell(r.get(c, "")) for c in COLUMNS})
    os.replace(tmp, path)
    return path


def summary(rows: list[dict], not_started: int = 0) -> str:
    """One screen: per run status, TTFT, speedup and density; failures with their errors; what is left."""
    lines = [(f"{'model':<24}{'proto':<9}{'N':>7}  {'variant':<19}{'status':<12}{'TTFT ms':>10}{'speedup':>9}"
             f"{'density':>9}{'target':>8}{'attn%':>7}")]
    for r in rows:
        lines.append(f"{r['model'][:23]:<24}{r['protocol']:<9}{r['seq_len']:>7}  {r['variant'][:18]:<19}"
                     f"{r['status']:<12}{_short(r['ttft_ms']):>10}{_short(r['speedup']):>9}{_short(r['density']):>9}"
                     f"{_short(r['target_density']):>8}{_short(r['attention_pct']):>7}")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", f"FAILED ({len(failed)}):"]
        lines += [f"  {r['model']} {r['protocol']} N={r['seq_len']} {r['variant']}: {r['error'][:150]}" for r in failed]
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    tail = f"{counts['ok']} ok, {counts['failed']} failed, {counts['unavailable']} unavailable"
    if not_started:
        tail += f"; {not_started} not started (time budget): run the same command again to continue"
    else:
        tail += "; the sweep is complete" if not failed else ""
    return "\n".join([*lines, "", tail])


def _short(x) -> str:
    return f"{x:.3g}" if finite(x) else "—"
