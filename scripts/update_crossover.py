"""Write pbs/crossover.json from a kernel benchmark CSV (results/kernels/<gpu>.csv).

For each method at its default kwargs, the crossover is the shortest measured length from which its end-to-end
time stayed within 5% of the fastest dense SDPA at every longer measured length. A method never within 5% at
any measured length gets (longest measured length + 1): dense everywhere we measured.

    python scripts/update_crossover.py results/kernels/nvidia-h200.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

DEFAULT_VARIANTS = ("pbs", "meanpool", "xattention", "minference", "flexprefill")
TOLERANCE = 1.05


def crossovers(rows: list[dict]) -> dict[str, int]:
    dense: dict[int, float] = {}
    for r in rows:
        ms = float(r["median_ms"] or "nan")
        if r["section"] == "dense" and r["variant"].startswith("sdpa") and not math.isnan(ms):
            n = int(r["seq_len"])
            dense[n] = min(dense.get(n, math.inf), ms)
    out = {}
    for variant in DEFAULT_VARIANTS:
        times = {int(r["seq_len"]): float(r["total_ms"] or r["median_ms"] or "nan") for r in rows
                 if r["section"] == "methods" and r["variant"] == variant}
        lengths = sorted(n for n in times if n in dense and not math.isnan(times[n]))
        if not lengths:
            continue
        crossover = lengths[-1] + 1
        for n in reversed(lengths):
            if times[n] > TOLERANCE * dense[n]:
                break
            crossover = n
        out[variant] = crossover
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "pbs" / "crossover.json")
    args = parser.parse_args()
    with args.csv.open() as f:
        rows = list(csv.DictReader(f))
    md = args.csv.with_suffix(".md").read_text().splitlines()  # provenance block: "gpu: NVIDIA H200"
    gpu = next(line.split(":", 1)[1].strip() for line in md if line.startswith("gpu: "))
    table = json.loads(args.out.read_text()) if args.out.exists() else {}
    table[gpu] = crossovers(rows)
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(json.dumps({gpu: table[gpu]}, indent=1))


if __name__ == "__main__":
    main()
