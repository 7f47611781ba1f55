"""Step 9's figure, from its committed results: results/kernels/step9/throughput.png.

    python scripts/plot_kernel_throughput.py            # also part of make reproduce-tables

Panels (TFLOP/s computed, H200, one run each): (1) all causal tiles per length: cuDNN, flash, our kernel before
Step 9 (results/kernels/nvidia-h200.csv, commit 580e2e2) and after (step9/llama-nvidia-h200.csv); (2) the same random
block mask through our kernel and compiled FlexAttention, per density at 32K and 128K; (3) PBS's plan with
permuted tiles (gather, chunked permuted copy) against the same tiles in natural order (step9/sweep-3.jsonl).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open())) if path.exists() else []


def _tflops(rows, section, variant) -> dict[int, float]:
    return {int(r["seq_len"]): float(r["tflops_computed"]) for r in rows
            if r["section"] == section and r["variant"] == variant and r["tflops_computed"] and not r["error"]}


def _provenance(step9: Path) -> str:
    """One footer line: the benchmark run's GPU, versions, date, commit and command; the sweep's date and commit."""
    import re

    md = (step9 / "llama-nvidia-h200.md").read_text()
    prov = dict(re.findall(r"^(\w+): (.*)$", md.split("```")[1], re.MULTILINE))
    sweep = (step9 / "sweep-3.log").read_text().splitlines()[0]
    commit = prov.get("git_commit", "?").split()[0]
    return (f"{prov.get('gpu')}, torch {prov.get('torch')}, triton {prov.get('triton')}, CUDA {prov.get('cuda')}. "
            f"Panels 1-2: {prov.get('date_utc')}, commit {commit}, python -m experiments.bench_kernels "
            "'sections=[dense,block_sparse]' (step9/llama-nvidia-h200.md; Step 8 line: results/kernels/nvidia-h200.md). "
            f"Panel 3: python -m benchmarks.kernel_sweep --parts defaults,permuted, commit a7f4365, "
            f"{sweep.split('date ')[-1]} (step9/sweep-3.log).")


def plot(kernels: Path, out: Path) -> Path | None:
    """Draw the figure into ``out``; None when Step 9's results are absent."""
    step9 = kernels / "step9"
    after = _rows(step9 / "llama-nvidia-h200.csv")
    sweep = step9 / "sweep-3.jsonl"
    if not after or not sweep.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = _rows(kernels / "nvidia-h200.csv")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for rows, variant, label, style in ((after, "sdpa_cudnn", "cuDNN SDPA", "k-o"), (after, "sdpa_flash", "flash SDPA",
                                                                                        "k:s"),
                                        (before, "ours_dense", "ours, Step 8 kernel", "C1--^"),
                                        (after, "ours_dense", "ours, Step 9 kernel", "C0-^")):
        pts = sorted(_tflops(rows, "dense", variant).items())
        if pts:
            ax.plot([n / 1024 for n, _ in pts], [t for _, t in pts], style, label=label)
    ax.set(xscale="log", xlabel="sequence length (K tokens)", ylabel="TFLOP/s", title="all causal tiles (D 128)")
    ax.set_xticks([4, 8, 16, 32, 64, 128], labels=["4", "8", "16", "32", "64", "128"])
    ax.legend(fontsize=8)

    ax = axes[1]
    for n, marker in ((32768, "o"), (131072, "s")):
        for prefix, label, color in (("ours_sparse_d", "ours", "C0"), ("flexmask_sparse_d", "FlexAttention", "C2")):
            pts = sorted((float(r["density"]), float(r["tflops_computed"])) for r in after
                         if r["section"] == "block_sparse" and r["variant"].startswith(prefix)
                         and int(r["seq_len"]) == n and not r["error"])
            ax.plot([d for d, _ in pts], [t for _, t in pts], f"{color}-{marker}", label=f"{label}, {n // 1024}K")
    ax.set(xlabel="block density", ylabel="TFLOP/s computed", title="same random block mask (block 128)")
    ax.legend(fontsize=8)

    ax = axes[2]
    rows = [json.loads(line) for line in sweep.read_text().splitlines() if line.strip()]
    series = {"natural order (same tiles)": "natural order, default s3", "permuted: in-kernel gather":
              "permuted, gather (k_row_major)", "permuted: copy in 25% K+V chunks (at 8K forced;\nthe kernel gathers there)":
              "permuted, copy, chunks of 25% K+V rows_reversed"}
    lengths = sorted({int(r["case"].split()[0].removeprefix("N=")) for r in rows if r["part"] == "permuted"})
    width = 0.8 / len(series)
    for i, (label, variant) in enumerate(series.items()):
        vals = [next((r["tflops"] for r in rows if r["part"] == "permuted" and r["variant"] == variant
                      and r["case"].startswith(f"N={n} ") and "tflops" in r), 0.0) for n in lengths]
        ax.bar([j + (i - 1) * width for j in range(len(lengths))], vals, width, label=label)
    ax.set_xticks(range(len(lengths)), labels=[f"{n // 1024}K" for n in lengths])
    ax.set(ylabel="TFLOP/s computed", title="PBS plan (d ≈ 0.8): permuted vs natural tiles", ylim=(0, 820))
    ax.legend(fontsize=8, loc="upper left")

    fig.suptitle("Step 9 kernel throughput, NVIDIA H200 (bf16, Llama-3.1-8B heads 32/8)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.text(0.005, 0.01, _provenance(step9), fontsize=6.5, ha="left", va="bottom", wrap=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out


if __name__ == "__main__":
    path = plot(ROOT / "results" / "kernels", ROOT / "results" / "kernels" / "step9" / "throughput.png")
    print(f"wrote {path}" if path else "no Step 9 results", file=sys.stderr)
