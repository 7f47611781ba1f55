"""A one-screen table of an Nsight Compute raw CSV (``ncu --import R --page raw --csv``): per profiled kernel, time,
tensor-pipe activity, issue rate, the other pipes and the top stall reasons (cycles per issued instruction).

    python scripts/ncu_summary.py results/kernels/step9/ncu-32k-raw.csv.xz --ids 0,2,6,53,54
"""

from __future__ import annotations

import argparse
import csv
import io
import lzma
from pathlib import Path

METRICS = {
    "time ms": "gpu__time_duration.sum",
    "tensor pipe % active": "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active",
    "issue % active": "smsp__issue_active.avg.pct_of_peak_sustained_active",
    "MUFU (xu) %": "sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active",
    "FMA pipe %": "sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active",
    "ALU pipe %": "sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active",
    "registers/thread": "launch__registers_per_thread",
    "threads/CTA": "launch__block_size",
    "CTAs": "launch__grid_size",
    "warps active %": "sm__warps_active.avg.pct_of_peak_sustained_active",
    "L2 hit %": "lts__t_sector_hit_rate.pct",
}
STALL = "smsp__average_warps_issue_stalled_{}_per_issue_active.ratio"
STALLS = ("barrier", "wait", "long_scoreboard", "mio_throttle", "not_selected", "short_scoreboard", "gmma",
          "dispatch_stall", "math_pipe_throttle")


def read_raw(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of an ncu raw CSV (plain or .xz); the units row is dropped."""
    if path.suffix == ".xz":
        with lzma.open(path, "rt") as fh:
            text = fh.read()
    else:
        text = path.read_text()
    rows = [r for r in csv.reader(io.StringIO(text))]
    start = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
    return rows[start], rows[start + 2:]


def summary(path: Path, ids: list[int] | None = None) -> str:
    header, rows = read_raw(path)
    col = {name: header.index(name) for name in header}
    picked = [r for r in rows if ids is None or int(r[col["ID"]]) in ids]
    names = [f"{r[col['ID']]}: {r[col['Kernel Name']][:28]}" for r in picked]
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, metric in {**METRICS, **{f"stall {s}": STALL.format(s) for s in STALLS}}.items():
        if metric in col:
            vals = []
            for r in picked:
                v = r[col[metric]].replace(",", "")
                try:
                    vals.append(f"{float(v):.3g}")
                except ValueError:
                    vals.append(v)
            lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_csv", type=Path)
    parser.add_argument("--ids", default=None, help="comma-separated profiled-kernel IDs (default: all)")
    args = parser.parse_args()
    print(summary(args.raw_csv, [int(x) for x in args.ids.split(",")] if args.ids else None))


if __name__ == "__main__":
    main()
