"""The benchmark's results: ``<out_dir>/<gpu-slug>.csv`` (every row) and ``.md`` (provenance, inputs, one table per
section, the targets), and a compact console table."""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

from .config import BenchConfig, method_kwargs
from .rows import COLUMNS, INT_COLUMNS, SECTIONS, STR_COLUMNS
from .targets import evaluate_targets

_SECTION_COLUMNS = {
    "dense": [("variant", "variant"), ("seq_len", "N"), ("median_ms", "median ms"), ("p10_ms", "p10"),
              ("p90_ms", "p90"), ("tflops_dense_equiv", "TFLOP/s"), ("speedup_vs_fastest_dense", "vs fastest SDPA"),
              ("peak_mem_gib", "peak GiB"), ("error", "error")],
    "block_sparse": [("variant", "variant"), ("seq_len", "N"), ("density", "density"), ("median_ms", "median ms"),
                     ("p10_ms", "p10"), ("p90_ms", "p90"), ("tflops_dense_equiv", "TFLOP/s dense-equiv"),
                     ("tflops_computed", "TFLOP/s computed"), ("speedup_vs_fastest_dense", "vs fastest SDPA"),
                     ("peak_mem_gib", "peak GiB"), ("error", "error")],
    "methods": [("variant", "variant"), ("seq_len", "N"), ("density", "density"), ("permutation_ms", "perm ms"),
                ("selection_ms", "select ms"), ("plan_ms", "plan ms"), ("attention_ms", "attn ms"),
                ("total_ms", "total ms"), ("overhead_pct", "overhead %"), ("tflops_dense_equiv", "TFLOP/s dense-equiv"),
                ("speedup_vs_fastest_dense", "vs fastest SDPA"), ("plan_peak_gib", "plan peak GiB"),
                ("peak_mem_gib", "peak GiB"), ("planner", "planner"), ("error", "error")],
}
_TITLES = {"dense": "Dense causal attention", "block_sparse": "Same block mask: ours vs FlexAttention",
           "methods": "Methods end to end (Table 7 breakdown)"}


def gpu_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def _fmt(x, digits: int = 3) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "—"
        return f"{x:.{digits}g}" if abs(x) < 1e5 else f"{x:.0f}"
    return str(x)


def _md_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(label for _, label in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c, ""))[:120].replace("|", "/") for c, _ in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def read_csv(path: Path) -> list[dict]:
    """Rows of a results CSV, with the columns' types back (missing numbers: NaN)."""
    rows = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            row = {}
            for c in COLUMNS:
                val = rec.get(c, "")
                if c in STR_COLUMNS:
                    row[c] = val
                elif c in INT_COLUMNS:
                    row[c] = int(val)
                else:
                    row[c] = float(val) if val not in ("", None) else float("nan")
            rows.append(row)
    return rows


def write_results(rows: list[dict], prov: dict, out_dir: str | os.PathLike, merge: bool = False,
                  cfg: BenchConfig | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<gpu-slug>.csv`` and ``.md``; returns their paths.

    ``merge``: keep the rows of an existing CSV whose sequence lengths this run did not measure (so a long sweep
    can be split over several commands; each length's rows, speedups included, still come from one run).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = gpu_slug(prov["gpu"])
    csv_path, md_path = out_dir / f"{slug}.csv", out_dir / f"{slug}.md"
    cfg = cfg or BenchConfig()
    kept_lengths: list[int] = []
    if merge and csv_path.exists():
        mine = {r["seq_len"] for r in rows}
        old = [r for r in read_csv(csv_path) if r["seq_len"] not in mine]
        kept_lengths = sorted({r["seq_len"] for r in old})
        rows = old + list(rows)
    rows = sorted(rows, key=lambda r: (SECTIONS.index(r["section"]) if r["section"] in SECTIONS else 9, r["seq_len"]))

    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: ("" if isinstance(r.get(c), float) and math.isnan(r[c]) else
                                 (f"{r[c]:.6g}" if isinstance(r.get(c), float) else r.get(c, ""))) for c in COLUMNS})

    lines = [f"# Kernel benchmark: {prov['gpu']}", "", "## Provenance", "", "```"]
    lines += [f"{key}: {value}" for key, value in prov.items()]
    lines += ["```", ""]
    if kept_lengths:
        lines += [(f"Rows for N = {kept_lengths} were kept from an earlier run in this CSV (merge=true); the "
                  "provenance above is the latest command's."), ""]
    lines += _inputs_section(rows[0] if rows else {}, cfg, on_gpu=prov["gpu"] != "cpu")
    for section, cols in _SECTION_COLUMNS.items():
        sec_rows = [r for r in rows if r["section"] == section]
        if sec_rows:
            lines += [f"## {_TITLES[section]}", "", _md_table(sec_rows, cols), ""]
    lines += ["## Targets", ""]
    for t in evaluate_targets(rows):
        lines.append(f"- **{t['status']}**: {t['target']} ({t['measured']})")
    lines.append("")
    md_path.write_text("\n".join(lines))
    return csv_path, md_path


def _inputs_section(first: dict, cfg: BenchConfig, on_gpu: bool) -> list[str]:
    s = cfg.structure
    builder = "`pbs.synthetic.structured_qkv`" + (" (built on the GPU)" if on_gpu else "")
    timer = ("CUDA events around each call, L2 flushed (256 MiB memset) before each call outside the timed region"
             if on_gpu else "`time.perf_counter` around each call (CPU run)")
    return [
        "## Inputs",
        "",
        (f"- Structured synthetic attention inputs ({builder}): batch {first.get('batch')}, "
        f"{first.get('q_heads')} query heads, "
        f"{first.get('kv_heads')} KV heads (GQA), head_dim {first.get('head_dim')}, {first.get('dtype')}, seed "
        f"{cfg.seed}; planted patterns with logit strengths (pre-softmax, after the 1/sqrt(D) scale): sink at "
        f"token 0 +{s['sink_logit']}, local window +{s['local_logit']} at distance 0 (falling off over ~100 tokens), "
        f"scattered heavy hitters +{s['heavy_logit']} on a fraction {s['heavy_fraction']} of the keys, long-range "
        f"recency +{s.get('recency_logit', 0.0)} (0 = off); Gaussian noise std {s['noise']}."),
        ("- Causal prefill, Nq = Nk = N. Dense causal FLOPs = 4·B·Hq·D·N(N+1)/2; `TFLOP/s dense-equiv` = that / "
        "time, "
        "`TFLOP/s computed` = dense-equiv × block density."),
        (f"- `block_sparse`: random causal block masks (block {cfg.block_size}), diagonal tile and key block 0 "
        "always on, other causal tiles chosen uniformly at random per head to hit the target density; the same "
        "SparsePlan runs on our kernel (`ours_sparse_d<target>`), through our FlexAttention backend "
        "(`flex_sparse_d<target>`: `pbs.attend(..., backend=\"flex\")`, which converts the plan to a BlockMask inside "
        "each call) and through compiled FlexAttention on a BlockMask built once outside the timed call "
        "(`flexmask_sparse_d<target>`: the kernel alone, `pbs.kernels.flex.plan_block_mask` + `attend_block_mask`). "
        "The `density` column is the plan's measured tile density."),
        "- `methods`: end to end = `pbs.sparse_attention(method, backend=..., planner=...)`; plan = `pbs.plan` "
        "alone (the `planner` column says which planner built it: `triton` = fused kernels, `torch` = the PyTorch "
        "reference, with the reason), attn = `pbs.attend` on the prebuilt plan, perm = PBS's permutation step "
        "alone, select = plan − perm, total = end to end, overhead = plan / total; plan peak = extra memory of "
        "`pbs.plan` alone (its plan included). Kwargs: "
        + ", ".join(f"`{n}` = {method_kwargs(cfg, n)[0]} {method_kwargs(cfg, n)[1] or '(defaults)'}"
                    for n in cfg.methods) + ".",
        (f"- Timing: {timer}, median (p10/p90) of up to {cfg.reps} reps after {cfg.warmup} warm-up call(s) "
        f"(reps capped so that a measurement takes about <= {cfg.max_seconds_per_measurement} s, but at "
        f"least {min(5, cfg.reps)}; warm-up stopped after a quarter of that). Speedups are against the fastest "
        "dense SDPA "
        "backend at the same N in the same run (`_kvrep` = that backend on K/V repeated to the query heads, run "
        "only when it rejects enable_gqa). Peak memory: max allocated during one call minus allocated before it "
        "(the output included)."),
        "",
    ]


def format_table(rows: list[dict]) -> str:
    """A compact plain-text table for the console: section, variant, N, ms, TFLOP/s, speedup, density, overhead."""
    header = f"{'section':<13}{'variant':<26}{'N':>8}{'ms':>10}{'TFLOP/s':>9}{'speedup':>9}{'density':>9}" \
             f"{'ovh%':>7}  error"
    lines = [header, "-" * len(header)]
    for r in rows:
        ms = r["total_ms"] if r["section"] == "methods" else r["median_ms"]
        lines.append(f"{r['section']:<13}{r['variant']:<26}{r['seq_len']:>8}{_fmt(ms):>10}"
                     f"{_fmt(r['tflops_dense_equiv']):>9}{_fmt(r['speedup_vs_fastest_dense']):>9}"
                     f"{_fmt(r['density']):>9}{_fmt(r['overhead_pct']):>7}  {str(r['error'])[:60]}")
    return "\n".join(lines)
